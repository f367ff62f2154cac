"""The chat page's fixes, in headless Chromium: ES modules that leave ``window``
alone, the CLI's reconnection policy, no invented finish_reason after a 204,
CommonMark's word-boundary rule for ``_``, incremental rendering, and a
Content-Security-Policy the page runs under. Each test fails on the page before
these fixes."""

import itertools
import json
import time

import pytest
import requests

from sse_chat.cli.ask import backoff_ms, retry_after_ms
from sse_chat.client import PERMANENT_ERROR_TYPES, RETRIED_ERROR_TYPES, RETRIED_STATUSES

from .event_reading import answer_text, events_of
from .test_chat_page import ANSWER, _answers, _ask, _normal, _wait_until_idle

pytestmark = pytest.mark.browser

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'")


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 900, "height": 700})
    yield page
    page.close()


def _import(page, module, body, arg=None):
    """Run ``body`` (a function body that sees the module as ``m`` and the
    argument as ``arg``) in the page, after a dynamic import of ``/static/{module}``."""
    return page.evaluate(f"async (arg) => {{ const m = await import('/static/{module}'); {body} }}", arg)


def _expected_answer(server, prompt, **options):
    body = {"messages": [{"role": "user", "content": prompt}], **options}
    return answer_text(events_of([requests.post(server.url + "/v1/chat", json=body, timeout=60).content]))


# -- ES modules ---------------------------------------------------------------

def test_the_page_is_modules_that_leave_window_alone(gunicorn, page):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="0")
    page.goto(server.url + "/")
    _ask(page, "hello")
    _wait_until_idle(page)
    found = page.evaluate("""() => ({
        open: Function.prototype.toString.call(window.open).includes("[native code]"),
        stop: Function.prototype.toString.call(window.stop).includes("[native code]"),
        history: history === window.history && history instanceof History,
        pushState: typeof window.history.pushState === "function",
        // typeof also sees a classic script's top-level const and let, which window does not hold
        pageNames: Object.entries({ ask: typeof ask, follow: typeof follow, renderMarkdown: typeof renderMarkdown,
                                    EventStreamParser: typeof EventStreamParser, options: typeof options,
                                    current: typeof current, messages: typeof messages, apiKey: typeof apiKey })
            .filter(([, type]) => type !== "undefined").map(([name]) => name),
        scripts: [...document.scripts].map((s) => s.type),
    })""")
    assert found == {"open": True, "stop": True, "history": True, "pushState": True, "pageNames": [],
                     "scripts": ["module"]}
    assert "Fake answer" in _answers(page).first.text_content()


# -- reconnection -------------------------------------------------------------

def test_the_reconnection_policy_is_the_clis(gunicorn, page):
    server = gunicorn()
    page.goto(server.url + "/")
    grid = [(retry, failures, jitter) for retry in (20, 1000, 7000) for failures in range(1, 9)
            for jitter in (0.0, 0.5, 0.999)]
    assert _import(page, "reconnect.js", "return arg.map(([r, f, j]) => m.backoffMs(r, f, j));", grid) == \
        pytest.approx([backoff_ms(*args) for args in grid])
    headers = [None, "", "1", "0", "2.5", " 3 ", "120", "-1", "soon", "Wed, 21 Oct 2015 07:28:00 GMT"]
    assert _import(page, "reconnect.js", "return arg.map((v) => m.retryAfterMs(v));", headers) == \
        [retry_after_ms(v) for v in headers]

    # drops in a row grow the wait; one that made progress starts over; the
    # sixth failure in a row gives up; Retry-After is the least wait
    failed = {"progressed": False}
    drops = [{"progressed": True, "retryMs": 100}, failed, failed, {"progressed": True, "retryMs": None},
             {"progressed": False, "leastWaitMs": 1000}, failed, failed, failed, failed]
    steps = _import(page, "reconnect.js", """
        let state = m.FIRST_CONNECTION;
        return arg.map((drop) => (state = m.nextReconnection(state, drop, 0)));""", drops)
    assert [(s["failures"], s["waitMs"], s["giveUp"]) for s in steps] == [
        (1, 100, False), (2, 200, False), (3, 400, False), (1, 100, False), (2, 1000, False),
        (3, 400, False), (4, 800, False), (5, 1600, False), (6, 0, True)]
    assert _import(page, "reconnect.js", "return m.nextReconnection(m.FIRST_CONNECTION, {progressed: false}, 0);") \
        == {"retryMs": 1000, "failures": 1, "giveUp": False, "waitMs": 1000}
    assert _import(page, "reconnect.js", "return [m.MAX_RECONNECTIONS, m.MAX_BACKOFF_MS, m.DEFAULT_RETRY_MS];") \
        == [5, 30000, 1000]
    answers = [(status, kind) for status in (400, 409, 422, 500, 502, 503, 504)
               for kind in ("event_log_unavailable", "backend_unavailable", "idempotency_key_in_use", "x")]
    assert _import(page, "reconnect.js", "return arg.map(([s, t]) => m.isRetriedAnswer(s, t));", answers) == \
        [(s in RETRIED_STATUSES and t not in PERMANENT_ERROR_TYPES) or t in RETRIED_ERROR_TYPES for s, t in answers]


def _frames(body):
    return [frame + b"\n\n" for frame in body.split(b"\n\n") if frame]


class _Script:
    """A ``page.route`` handler for the page's stream requests (the POST and its
    resumes, registered for both): each request gets the next action, then the
    real service. Actions: ``("cut", n)`` the real answer's first ``n`` frames,
    then the end of the body; ``("no_done",)`` all frames but the last;
    ``("status", code)``. ``arrived`` holds when each request came
    (``time.monotonic()``)."""

    def __init__(self, *actions):
        self.actions = list(actions)
        self.arrived = []

    def __call__(self, route):
        self.arrived.append(time.monotonic())
        action = self.actions.pop(0) if self.actions else ("real",)
        if action[0] == "real":
            route.fallback()
        elif action[0] == "status":
            body = json.dumps({"error": {"type": "event_log_unavailable", "message": "Redis is away"}})
            route.fulfill(status=action[1], content_type="application/json", body=body)
        else:
            frames = _frames(route.fetch().body())
            kept = frames[:action[1]] if action[0] == "cut" else frames[:-1]
            route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=b"".join(kept))


def _route_streams(page, script):
    page.route("**/v1/chat", script)
    page.route("**/v1/streams/*", script)


# Recorded in the page, on the page's own clock (performance.now(), milliseconds):
# each stream request (fetch of /v1/chat or /v1/streams/...) and each timer the
# page sets (setTimeout, with its delay). Added before the page's modules run.
_RECORD_RECONNECTIONS = """(() => {
  const log = [];
  Object.defineProperty(window, "__reconnections", { value: log });
  const realFetch = window.fetch, realSetTimeout = window.setTimeout;
  window.fetch = function (input, ...rest) {
    const url = typeof input === "string" ? input : input.url;
    if (/\\/v1\\/(chat$|streams\\/)/.test(new URL(url, location.href).pathname)) {
      log.push({ kind: "request", at: performance.now() });
    }
    return realFetch.call(this, input, ...rest);
  };
  window.setTimeout = function (callback, delay, ...rest) {
    log.push({ kind: "timer", delay: Number(delay) || 0, at: performance.now() });
    return realSetTimeout.call(this, callback, delay, ...rest);
  };
})();"""

# performance.now() is coarsened (Chromium: 100 microseconds, with jitter) and a
# timer's delay is kept in whole milliseconds: one millisecond covers both.
_CLOCK_RESOLUTION_S = 0.001


def _record_reconnections(page):
    page.add_init_script(_RECORD_RECONNECTIONS)


def _reconnection_waits(page):
    """``(chosen, waited)`` in seconds for each reconnection, from the page's own
    record: the delay of the one timer the page set between a stream request and
    the next, and the time from setting that timer to the next request. Fails when
    a reconnection came without exactly one timer before it."""
    log = page.evaluate("() => window.__reconnections")
    requests_at = [i for i, entry in enumerate(log) if entry["kind"] == "request"]
    waits = []
    for this, following in itertools.pairwise(requests_at):
        timers = [entry for entry in log[this + 1:following] if entry["kind"] == "timer"]
        assert len(timers) == 1, ("not one timer between two stream requests", log)
        waits.append((timers[0]["delay"] / 1000, (log[following]["at"] - timers[0]["at"]) / 1000))
    return waits


def _assert_waited(waits, bounds):
    """Each chosen delay lies in its ``(low, high)`` bounds (seconds), and the
    page waited it out before the next request: at least the delay (to the
    clock's resolution), at most a quarter of a second longer."""
    assert len(waits) == len(bounds), (waits, bounds)
    for (chosen, waited), (low, high) in zip(waits, bounds, strict=True):
        assert low <= chosen <= high, (waits, bounds)
        assert chosen - _CLOCK_RESOLUTION_S <= waited <= chosen + 0.25, (waits, bounds)


def test_reconnection_waits_double_per_failure_and_start_over_after_progress(gunicorn, page):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="0", SSE_CHAT_RETRY_MS="100")
    expected = _expected_answer(server, "back off", max_tokens=40)
    script = _Script(("cut", 3), ("status", 503), ("status", 503), ("status", 502), ("cut", 3), ("status", 504))
    _route_streams(page, script)
    _record_reconnections(page)
    page.goto(server.url + "/?max_tokens=40")
    _ask(page, "back off")
    _wait_until_idle(page)
    assert page.locator("#conversation li.error").count() == 0
    assert _normal(_answers(page).first.text_content()) == _normal(expected)
    # retry: 100 ms, doubled per failure in a row, times 1 to 1.5 (jitter); reset
    # by a connection that received events
    bounds = [(0.1, 0.15), (0.2, 0.3), (0.4, 0.6), (0.8, 1.2), (0.1, 0.15), (0.2, 0.3)]
    assert len(script.arrived) == 1 + len(bounds)
    _assert_waited(_reconnection_waits(page), bounds)


def test_the_page_gives_up_after_five_failed_reconnections_in_a_row(gunicorn, page):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="0", SSE_CHAT_RETRY_MS="20")
    script = _Script(("cut", 4), *[("status", 503)] * 30)
    _route_streams(page, script)
    _record_reconnections(page)
    page.goto(server.url + "/?max_tokens=40")
    _ask(page, "give up")
    _wait_until_idle(page)
    assert len(script.arrived) == 1 + 5
    note = page.locator("#conversation li.error .note").text_content()
    assert "gave up after 5 reconnection attempts" in note and "HTTP 503" in note
    assert _answers(page).first.text_content()  # what came before the cut stays
    # retry: 20 ms, doubled per failure in a row, times 1 to 1.5 (jitter)
    _assert_waited(_reconnection_waits(page), [(low, low * 1.5) for low in (0.02, 0.04, 0.08, 0.16, 0.32)])


# -- 204 on resume ------------------------------------------------------------

def test_a_204_on_resume_ends_the_answer_without_inventing_a_finish_reason(gunicorn, page):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="0", SSE_CHAT_RETRY_MS="20")
    expected = _expected_answer(server, "no reason", max_tokens=30)   # finish_reason "length"
    script = _Script(("no_done",), ("status", 204))
    _route_streams(page, script)
    page.goto(server.url + "/?max_tokens=30")
    _ask(page, "no reason")
    _wait_until_idle(page)
    item = page.locator("#conversation li.assistant").first
    assert item.locator(".note").all_text_contents() == ["ended (the finish reason was not received)"]
    assert item.get_attribute("data-finish-reason") is None
    assert page.locator("#conversation li.error").count() == 0
    assert _normal(_answers(page).first.text_content()) == _normal(expected)
    assert len(script.arrived) == 2

    _ask(page, "with its done event")   # not routed any more: the real done event
    _wait_until_idle(page)
    second = page.locator("#conversation li.assistant").nth(1)
    assert second.get_attribute("data-finish-reason") == "length"
    assert second.locator(".note").all_text_contents() == ["cut at max_tokens"]


# -- Markdown -----------------------------------------------------------------

def _html(page, source):
    return _import(page, "markdown.js", """
        const box = document.createElement("div"); box.append(m.renderMarkdown(arg)); return box.innerHTML;""", source)


def test_underscores_inside_words_are_not_emphasis(gunicorn, page):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="0")
    page.goto(server.url + "/")
    _ask(page, "max_tokens and stream_options, snake_case_name and *kept*")
    _wait_until_idle(page)
    answer = _answers(page).first
    assert "max_tokens and stream_options, snake_case_name and kept" in answer.text_content()
    assert answer.locator("em").all_text_contents() == ["kept"]

    # CommonMark 0.31, 6.2: `_` opens and closes only at word boundaries; `*` also inside words
    cases = {
        "max_tokens and stream_options": "max_tokens and stream_options",
        "foo_bar_baz 中_文_字": "foo_bar_baz 中_文_字",
        "_snake_case_": "<em>snake_case</em>",
        "__init__ and _(parenthesised)_": "<strong>init</strong> and <em>(parenthesised)</em>",
        "*a* _b_ **c** __d__ ***e***": "<em>a</em> <em>b</em> <strong>c</strong> <strong>d</strong> "
                                       "<em><strong>e</strong></em>",
        "foo*bar*baz, a * b * c": "foo<em>bar</em>baz, a * b * c",
        "`co_de` and _x `y_z` w_": "<code>co_de</code> and <em>x <code>y_z</code> w</em>",
        "**Fake answer**: 你好": "<strong>Fake answer</strong>: 你好",
        "[a_b](https://example.com/x_y_) [x](javascript:alert(1))":
            '<a href="https://example.com/x_y_" rel="noopener noreferrer" target="_blank">a_b</a>'
            " [x](javascript:alert(1))",
    }
    assert {source: _html(page, source) for source in cases} == {s: f"<p>{h}</p>" for s, h in cases.items()}


SOURCES = [
    "Hello *a* b\n\n- one\n- two\nThird para\nmore\n\n```\ncode\n\n  x\n```\n# Head\ntext _x_ y\n\n"
    "1. first\n2) second\n",
    "# Title\r\nbody text\r\n\r\n- item\r\n-\r\n- last\r\n```js\r\nlet a_b = 1;\r\n",
    "a\rb\r\r## two\u2028lines\n```\nunterminated fence\n\n- not a list",
    "para with **bold\nacross** lines\n-\n- x\n#\n# y\n\n\n   \n  - indented\n+ plus",
]


def test_rendering_piece_by_piece_equals_rendering_at_once(gunicorn, page):
    server = gunicorn()
    page.goto(server.url + "/")
    mismatches = _import(page, "markdown.js", """
        const html = (source) => {
          const d = document.createElement("div"); d.append(m.renderMarkdown(source)); return d.innerHTML;
        };
        const mismatches = [];
        for (const source of arg) {
          for (const step of [1, 2, 3, 7]) {
            const box = document.createElement("div");
            const view = new m.MarkdownView(box);
            for (let i = 0; i < source.length; i += step) {
              view.append(source.slice(i, i + step));
              view.render();
              const prefix = source.slice(0, i + step);
              if (box.innerHTML !== html(prefix)) mismatches.push([prefix, box.innerHTML, html(prefix)]);
            }
            view.render(true);
            if (box.innerHTML !== html(source)) mismatches.push([source, box.innerHTML, html(source)]);
          }
        }
        return mismatches.slice(0, 3);""", SOURCES)
    assert mismatches == []
    assert _html(page, "# Title\r\nbody") == "<h3>Title</h3><p>body</p>"   # the old page hung on "\r"


def test_a_long_answer_replaces_a_bounded_number_of_nodes_per_frame(gunicorn, page):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="1")
    expected = _expected_answer(server, "a long answer", max_tokens=3000)
    page.goto(server.url + "/?max_tokens=3000")
    # per MutationObserver callback (once per rendered frame at most): nodes
    # removed from and added to the answer's container
    page.evaluate("""() => {
        window.renders = [];
        new MutationObserver((records) => {
            const mine = records.filter((r) => r.target.classList?.contains("answer"));
            const count = (key) => mine.reduce((n, r) => n + r[key].length, 0);
            if (mine.length) window.renders.push([count("removedNodes"), count("addedNodes")]);
        }).observe(document.querySelector("#conversation"), { childList: true, subtree: true });
    }""")
    _ask(page, "a long answer")
    _wait_until_idle(page, timeout_ms=120_000)
    renders = page.evaluate("() => window.renders")
    blocks = page.locator(f"{ANSWER} > *").count()
    assert len(renders) >= 30 and blocks >= 30, (len(renders), blocks)
    assert max(removed for removed, _ in renders) <= 2, renders
    assert sum(added for _, added in renders) <= blocks + 2 * len(renders)
    rendered_at_once = _import(page, "markdown.js", """
        const d = document.createElement("div"); d.append(m.renderMarkdown(arg)); return d.innerHTML;""", expected)
    assert page.locator(ANSWER).inner_html() == rendered_at_once


# -- Content-Security-Policy --------------------------------------------------

def test_the_page_and_its_files_carry_a_csp_the_page_runs_under(gunicorn, page):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="0")
    for path in ("/", "/static/chat.js", "/static/markdown.js", "/static/eventstream.js", "/static/reconnect.js",
                 "/static/chat.css"):
        headers = requests.get(server.url + path, timeout=10).headers
        assert headers.get("Content-Security-Policy") == CSP, path
        assert headers.get("X-Content-Type-Options") == "nosniff", path
    assert "Content-Security-Policy" not in requests.get(server.url + "/healthz", timeout=10).headers

    page.add_init_script("""window.violations = [];
        document.addEventListener("securitypolicyviolation",
                                  (e) => window.violations.push(`${e.violatedDirective} ${e.blockedURI}`));""")
    problems = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(server.url + "/")
    _ask(page, "**bold** `code` [a link](https://example.com) <script>window.pwned=1</script>")
    _wait_until_idle(page)
    answer = _answers(page).first
    assert answer.locator("strong").all_text_contents() == ["bold", "Fake answer"]
    assert answer.locator("a").get_attribute("href") == "https://example.com"
    assert page.evaluate("() => window.violations") == [] and problems == []
    assert page.evaluate("() => window.pwned") is None

    # the policy is enforced: an inline script is refused and reported
    page.evaluate("""() => { const s = document.createElement("script"); s.textContent = "window.inline = 1";
                             document.body.append(s); }""")
    page.wait_for_function("() => window.violations.length > 0")
    assert page.evaluate("() => [window.inline, window.violations[0]]") == [None, "script-src-elem inline"]

"""The chat page's reconnections, in headless Chromium: the CLI's reconnection
policy (the same numbers), waits that double per failure in a row and start over
after progress (measured in the page against the timers it sets), giving up
after five failures in a row, and a 204 on resume that ends the answer without
inventing a finish_reason."""

import itertools
import json
import time

import pytest

from sse_chat.client import (
    PERMANENT_ERROR_TYPES,
    RETRIED_ERROR_TYPES,
    RETRIED_STATUSES,
    backoff_ms,
    retry_after_ms,
)

from .test_chat_page import _answers, _ask, _normal, _wait_until_idle, expected_answer, import_module

pytestmark = pytest.mark.browser


def test_the_reconnection_policy_is_the_clis(gunicorn, page):
    server = gunicorn()
    page.goto(server.url + "/")
    grid = [(retry, failures, jitter) for retry in (20, 1000, 7000) for failures in range(1, 9)
            for jitter in (0.0, 0.5, 0.999)]
    assert import_module(page, "reconnect.js", "return arg.map(([r, f, j]) => m.backoffMs(r, f, j));", grid) == \
        pytest.approx([backoff_ms(*args) for args in grid])
    headers = [None, "", "1", "0", "2.5", " 3 ", "120", "-1", "soon", "Wed, 21 Oct 2015 07:28:00 GMT"]
    assert import_module(page, "reconnect.js", "return arg.map((v) => m.retryAfterMs(v));", headers) == \
        [retry_after_ms(v) for v in headers]

    # drops in a row grow the wait; one that made progress starts over; the
    # sixth failure in a row gives up; Retry-After is the least wait
    failed = {"progressed": False}
    drops = [{"progressed": True, "retryMs": 100}, failed, failed, {"progressed": True, "retryMs": None},
             {"progressed": False, "leastWaitMs": 1000}, failed, failed, failed, failed]
    steps = import_module(page, "reconnect.js", """
        let state = m.FIRST_CONNECTION;
        return arg.map((drop) => (state = m.nextReconnection(state, drop, 0)));""", drops)
    assert [(s["failures"], s["waitMs"], s["giveUp"]) for s in steps] == [
        (1, 100, False), (2, 200, False), (3, 400, False), (1, 100, False), (2, 1000, False),
        (3, 400, False), (4, 800, False), (5, 1600, False), (6, 0, True)]
    first_failure = "return m.nextReconnection(m.FIRST_CONNECTION, {progressed: false}, 0);"
    assert import_module(page, "reconnect.js", first_failure) == \
        {"retryMs": 1000, "failures": 1, "giveUp": False, "waitMs": 1000}
    assert import_module(page, "reconnect.js", "return [m.MAX_RECONNECTIONS, m.MAX_BACKOFF_MS, m.DEFAULT_RETRY_MS];") \
        == [5, 30000, 1000]
    answers = [(status, kind) for status in (400, 409, 422, 500, 502, 503, 504)
               for kind in ("event_log_unavailable", "backend_unavailable", "idempotency_key_in_use", "x")]
    assert import_module(page, "reconnect.js", "return arg.map(([s, t]) => m.isRetriedAnswer(s, t));", answers) == \
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
    expected = expected_answer(server, "back off", max_tokens=40)
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
    expected = expected_answer(server, "no reason", max_tokens=30)   # finish_reason "length"
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


"""The chat page's scripts, in headless Chromium: ES modules that leave
``window`` alone, and a Content-Security-Policy that the page and its files
carry and that the page runs under."""

import pytest
import requests

from .test_chat_page import _answers, _ask, _wait_until_idle

pytestmark = pytest.mark.browser

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'")


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


def test_the_page_and_its_files_carry_a_csp_the_page_runs_under(gunicorn, page):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="0")
    for path in ("/", "/static/chat.js", "/static/markdown.js", "/static/eventstream.js", "/static/reconnect.js",
                 "/static/events.js",
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


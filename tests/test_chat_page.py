"""The chat page at / as a person uses it, in headless Chromium."""

import json
import os
import re
import time

import pytest
import requests

from . import ROOT
from .event_reading import answer_text, events_of
from .proxy import CuttingProxy

pytestmark = pytest.mark.browser
ANSWER = "#conversation li.assistant .answer"
# The page is served with a Content-Security-Policy without 'unsafe-eval':
# wait_for_function takes arrow functions, which Playwright does not eval.


def _normal(text):
    """Text without whitespace: rendered Markdown joins paragraphs differently, but
    every character of the answer must be there once, in order."""
    return re.sub(r"\s+", "", text)


def _ask(page, text):
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def _answers(page):
    return page.locator(ANSWER)


def _wait_until_idle(page, timeout_ms=60_000):
    page.wait_for_function("() => !document.querySelector('#conversation li.streaming')", timeout=timeout_ms)


def import_module(page, module, body, arg=None):
    """Run ``body`` (a function body that sees the module as ``m`` and the
    argument as ``arg``) in the page, after a dynamic import of ``/static/{module}``."""
    return page.evaluate(f"async (arg) => {{ const m = await import('/static/{module}'); {body} }}", arg)


def expected_answer(server, prompt, **options):
    body = {"messages": [{"role": "user", "content": prompt}], **options}
    return answer_text(events_of([requests.post(server.url + "/v1/chat", json=body, timeout=60).content]))


def test_type_enter_and_watch_the_answer_grow_then_continue_the_conversation(gunicorn, page):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="25")
    page.goto(server.url + "/?max_tokens=80")
    _ask(page, "Why is the sky blue?")
    page.wait_for_function(f"() => document.querySelector('{ANSWER}')?.textContent.length > 0")
    first_length = len(_answers(page).first.text_content())
    page.wait_for_function(f"() => document.querySelector('{ANSWER}').textContent.length > {first_length}"
                           " && document.querySelector('#conversation li.streaming') !== null")
    _wait_until_idle(page)
    messages = [{"role": "user", "content": "Why is the sky blue?"}]
    expected = answer_text(events_of([
        requests.post(server.url + "/v1/chat", json={"messages": messages, "max_tokens": 80}).content]))
    assert _normal(_answers(page).first.text_content()) == _normal(expected)

    with page.expect_request(lambda r: r.url.endswith("/v1/chat") and r.method == "POST") as second:
        _ask(page, "And at sunset?")
    _wait_until_idle(page)
    sent = json.loads(second.value.post_data)["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"] == expected and sent[2]["content"] == "And at sunset?"
    assert _answers(page).count() == 2


def test_stop_cancels_on_the_server(gunicorn, page):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="20")
    page.goto(server.url + "/?max_tokens=100000")
    _ask(page, "Talk forever")
    page.wait_for_function(f"() => document.querySelector('{ANSWER}')?.textContent.length > 20")
    with page.expect_response(lambda r: r.request.method == "DELETE") as deleted:
        page.click("#stop")
    assert deleted.value.status == 202
    _wait_until_idle(page)
    assert page.locator("#conversation li.assistant .note").text_content() == "stopped"
    assert page.is_enabled("#send") and page.is_disabled("#stop")


def test_a_cut_connection_is_resumed_without_loss_or_repeat(gunicorn, page):
    # 100 tokens/s: a resume replays what was made while the page waited in one
    # write, and Chromium may drop bytes that come in with the cut, so the backlog
    # of the page's backed-off waits (up to 5 in a row) must mostly fit the cuts
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="10", SSE_CHAT_RETRY_MS="20")
    messages = [{"role": "user", "content": "resume in the page"}]
    expected = answer_text(events_of([
        requests.post(server.url + "/v1/chat", json={"messages": messages, "max_tokens": 300}).content]))
    host, port = server.url.removeprefix("http://").split(":")
    with CuttingProxy((host, int(port)), 300, 3000, seed=3, only_event_streams=True) as proxy:
        resumes = []
        page.on("request", lambda r: resumes.append(r) if "/v1/streams/" in r.url else None)
        page.goto(proxy.url + "/?max_tokens=300")
        _ask(page, "resume in the page")
        _wait_until_idle(page)
    assert len(resumes) >= 2
    assert all(r.headers.get("last-event-id") for r in resumes)
    assert _normal(_answers(page).first.text_content()) == _normal(expected)
    assert page.locator("#conversation li.error").count() == 0


class _Refuse:
    """A ``page.route`` handler: answers the first ``count`` matching requests with
    ``status`` (and ``headers``), lets the rest through; ``times`` says when each
    matching request came (``time.monotonic()``, seconds)."""

    def __init__(self, method, status, count, headers=None):
        self.method, self.status, self.count, self.headers = method, status, count, headers or {}
        self.times = []

    def __call__(self, route):
        if route.request.method != self.method:
            return route.fallback()
        self.times.append(time.monotonic())
        if len(self.times) > self.count:
            return route.fallback()
        body = json.dumps({"error": {"type": "event_log_unavailable", "message": "Redis is away"}})
        return route.fulfill(status=self.status, headers=self.headers, content_type="application/json", body=body)


def test_502_503_504_answers_are_retried_like_a_cut_connection(gunicorn, page):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="2", SSE_CHAT_RETRY_MS="20")
    messages = [{"role": "user", "content": "retry in the page"}]
    expected = answer_text(events_of([
        requests.post(server.url + "/v1/chat", json={"messages": messages, "max_tokens": 300}).content]))
    post = _Refuse("POST", 503, 2, {"Retry-After": "1"})
    resume = _Refuse("GET", 504, 1)
    page.route("**/v1/chat", post)
    page.route("**/v1/streams/*", resume)
    # cuts far apart: the page gives up after 5 failed reconnections in a row
    with CuttingProxy(_address(server.url), 4000, 8000, seed=5, only_event_streams=True) as proxy:
        page.goto(proxy.url + "/?max_tokens=300")
        _ask(page, "retry in the page")
        page.wait_for_function("() => document.querySelector('#status').textContent.includes('HTTP 503')")
        _wait_until_idle(page)
    assert page.locator("#conversation li.error").count() == 0
    assert len(post.times) == 3 and len(resume.times) >= 2
    assert post.times[1] - post.times[0] >= 0.9  # Retry-After: 1, though retry: is 20 ms
    assert _normal(_answers(page).first.text_content()) == _normal(expected)


def _address(url):
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def test_service_errors_are_shown_plainly(gunicorn, page):
    server = gunicorn()
    page.goto(server.url + "/?model=gpt-4o")
    _ask(page, "hello")
    _wait_until_idle(page)
    error = page.locator("#conversation li.error .note").text_content()
    assert "OPENAI_BASE_URL" in error and "backend_unavailable" in error


def test_markdown_renders_and_model_output_cannot_inject_html(gunicorn, page, tmp_path):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="0")
    page.goto(server.url + "/")
    _ask(page, "<img src=x onerror=\"window.pwned=1\"> <script>window.pwned=2</script> [x](javascript:alert(1))")
    _wait_until_idle(page)
    answer = _answers(page).first
    assert answer.locator("strong").first.text_content() == "Fake answer"
    assert answer.locator("li code").text_content() == "two"
    assert answer.locator("img, script, a").count() == 0
    assert page.evaluate("window.pwned") is None
    assert "<img src=x" in answer.text_content()
    _ask(page, "Why is the sky blue?")
    _wait_until_idle(page)
    # SSE_CHAT_UPDATE_SCREENSHOT=1 refreshes the README's picture
    target = ROOT / "docs" if os.environ.get("SSE_CHAT_UPDATE_SCREENSHOT") == "1" else tmp_path
    shot = page.screenshot(path=str(target / "chat-page.png"), full_page=True)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_keyed_service_asks_for_the_key_once_and_uses_it(gunicorn, page):
    server = gunicorn(SSE_CHAT_API_KEYS="page-key", SSE_CHAT_FAKE_DELAY_MS="0")
    page.on("dialog", lambda dialog: dialog.accept("page-key"))
    page.goto(server.url + "/")
    _ask(page, "Why is the sky blue?")
    _wait_until_idle(page)
    assert "Fake answer" in _answers(page).first.text_content()
    assert page.locator("#conversation li.error").count() == 0

"""The chat page on a keyed service (headless Chromium): it asks for a key, trades
it for a session cookie once, and then sends no key; it keeps none; when the
session ends it asks again."""

import os

import pytest
import requests

from sse_chat.access.sessions import SESSION_COOKIE

from . import ROOT
from .event_reading import answer_text, events_of
from .proxy import CuttingProxy
from .test_chat_page import ANSWER, _ask, _normal, _wait_until_idle

pytestmark = pytest.mark.browser

KEY = "page-session-key"


class Dialogs:
    """Answers the page's prompt() dialogs with ``answers`` in turn, keeping their messages."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.messages: list[str] = []

    def __call__(self, dialog) -> None:
        self.messages.append(dialog.message)
        dialog.accept(self.answers.pop(0))


def _expected(server, messages, max_tokens):
    body = {"messages": messages, "max_tokens": max_tokens}
    return answer_text(events_of([requests.post(server.url + "/v1/chat", json=body,
                                                headers={"Authorization": f"Bearer {KEY}"}, timeout=60).content]))


def test_the_page_trades_the_key_for_a_session_and_then_sends_no_key(gunicorn, browser, tmp_path):
    server = gunicorn(SSE_CHAT_API_KEYS=f"{KEY},other-key", SSE_CHAT_FAKE_DELAY_MS="0")
    context = browser.new_context(viewport={"width": 900, "height": 700})
    page = context.new_page()
    dialogs = Dialogs("not-a-key", KEY, KEY)
    page.on("dialog", dialogs)
    seen = []
    page.on("request", lambda request: seen.append(request))
    page.goto(server.url + "/?max_tokens=40")

    _ask(page, "Why is the sky blue?")
    _wait_until_idle(page)
    assert len(dialogs.messages) == 2 and "refused" in dialogs.messages[1], dialogs.messages
    first = [{"role": "user", "content": "Why is the sky blue?"}]
    assert _normal(page.locator(ANSWER).first.text_content()) == _normal(_expected(server, first, 40))

    _ask(page, "And at sunset?")
    _wait_until_idle(page)
    assert len(dialogs.messages) == 2, "the session carries the second question: no new prompt"
    assert page.locator(ANSWER).count() == 2 and page.locator("#conversation li.error").count() == 0

    sessions = [r for r in seen if r.url.endswith("/v1/session")]
    assert [(r.method, r.all_headers().get("authorization")) for r in sessions] == [
        ("POST", "Bearer not-a-key"), ("POST", f"Bearer {KEY}")]
    streams = [r for r in seen if "/v1/chat" in r.url or "/v1/streams/" in r.url]
    assert len(streams) == 3, "the refused first POST, then one per question"
    assert [r.all_headers().get("authorization") for r in streams] == [None, None, None]
    assert page.evaluate("() => [document.cookie, Object.keys(sessionStorage), Object.keys(localStorage)]") == [
        "", [], []], "the page keeps no key: the HttpOnly cookie is the session"
    assert [c["name"] for c in context.cookies()] == [SESSION_COOKIE]

    # SSE_CHAT_UPDATE_SCREENSHOT=1 refreshes docs/chat-page-session.png
    target = ROOT / "docs" if os.environ.get("SSE_CHAT_UPDATE_SCREENSHOT") == "1" else tmp_path
    page.screenshot(path=str(target / "chat-page-session.png"), full_page=True)

    context.clear_cookies()  # the session ended (expired, key removed)
    _ask(page, "Once more?")
    _wait_until_idle(page)
    assert len(dialogs.messages) == 3, "a 401 after the session ended asks for the key again"
    assert page.locator(ANSWER).count() == 3 and page.locator("#conversation li.error").count() == 0
    context.close()


def test_the_page_resumes_through_cuts_with_the_session_cookie(gunicorn, browser):
    # Chromium may drop the bytes that come in with a cut, so a response whose
    # first write (head and start, or a resume's backlog) is longer than its cut
    # gives the page nothing. Cuts of at least 1,000 bytes always let the head and
    # the start event through, and 50 tokens/s keep a resume's backlog within the
    # cuts even when the machine is busy and the page reconnects late.
    server = gunicorn(SSE_CHAT_API_KEYS=KEY, SSE_CHAT_FAKE_DELAY_MS="20", SSE_CHAT_RETRY_MS="20")
    host, port = server.url.removeprefix("http://").split(":")
    context = browser.new_context()
    page = context.new_page()
    page.on("dialog", Dialogs(KEY))
    resumes = []
    page.on("request", lambda r: resumes.append(r) if "/v1/streams/" in r.url else None)
    with CuttingProxy((host, int(port)), 1000, 4000, seed=5, only_event_streams=True) as proxy:
        page.goto(proxy.url + "/?max_tokens=200")
        _ask(page, "Tell me a long story")
        _wait_until_idle(page)
    expected = _expected(server, [{"role": "user", "content": "Tell me a long story"}], 200)
    assert _normal(page.locator(ANSWER).first.text_content()) == _normal(expected)
    assert page.locator("#conversation li.error").count() == 0
    assert len(resumes) > 2, "the proxy should have cut the answer several times"
    assert all(r.all_headers().get("authorization") is None and "last-event-id" in r.all_headers()
               for r in resumes), "resumed with Last-Event-ID and the cookie, no key"
    context.close()

"""The chat page's Idempotency-Key, in headless Chromium: a fresh key per question,
the same on the retry of a POST whose event stream was cut before ``start``, so
that the service generates the answer once."""

import re

import pytest
import requests

from .event_reading import answer_text, events_of
from .test_chat_page import _answers, _ask, _normal, _wait_until_idle
from .test_idempotency import FirstStreamCut, _address, _metric

pytestmark = pytest.mark.browser

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_a_post_cut_before_start_is_retried_with_its_key_and_generated_once(gunicorn, page):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="2", SSE_CHAT_RETRY_MS="20")
    messages = [{"role": "user", "content": "cut the page early"}]
    expected = answer_text(events_of([requests.post(server.url + "/v1/chat", timeout=60,
                                                    json={"messages": messages, "max_tokens": 40}).content]))
    started = _metric(server, "sse_chat_streams_started_total")
    posts = []
    page.on("request", lambda r: posts.append(r) if r.method == "POST" and r.url.endswith("/v1/chat") else None)
    with FirstStreamCut(_address(server.url), 55) as proxy:
        page.goto(proxy.url + "/?max_tokens=40")
        _ask(page, "cut the page early")
        _wait_until_idle(page)
        assert proxy.streams == 2  # the cut POST and its retry
        assert page.locator("#conversation li.error").count() == 0
        assert _normal(_answers(page).first.text_content()) == _normal(expected)
        assert _metric(server, "sse_chat_streams_started_total") == started + 1
        _ask(page, "a second question")
        _wait_until_idle(page)
    keys = [r.headers.get("idempotency-key") for r in posts]
    assert len(keys) == 3 and keys[0] == keys[1] != keys[2]
    assert all(UUID4.fullmatch(key or "") for key in keys)
    assert _metric(server, "sse_chat_streams_started_total") == started + 2

"""The browser example of docs/testing-clients.md, run as written in headless
Chromium: EventSource reconnects by itself through responses dropped by
``GET /v1/chat?…&drop_every=5`` and collects the exact answer."""

import pytest
import requests

from .event_reading import answer_text, events_of
from .test_pytest_plugin import DOC, fenced_block

pytestmark = pytest.mark.browser

#: Bounds the wait for the page's promises (milliseconds).
WAIT_MS = 30_000


def _example() -> str:
    return fenced_block(DOC.read_text(encoding="utf-8"), "js", "// collect-answer.js")


def _run(page, script: str):
    """Evaluate ``script`` (statements that may ``await``, the last one a
    ``return``) on the page, failing after :data:`WAIT_MS`."""
    return page.evaluate(f"""async () => await Promise.race([
        (async () => {{ {script} }})(),
        new Promise((_, reject) => setTimeout(() => reject(new Error("timed out")), {WAIT_MS})),
    ])""")


def test_the_docs_eventsource_example_collects_the_undropped_answer(sse_chat_server, browser):
    whole = requests.get(sse_chat_server.url + "/v1/chat?prompt=Hello&model=fake&max_tokens=40", timeout=10)
    page = browser.new_page()
    try:
        page.goto(sse_chat_server.url + "/healthz")
        result = _run(page, _example() + "\nreturn {dropped, whole};")
    finally:
        page.close()
    assert result["dropped"]["text"] == answer_text(events_of([whole.content]))
    assert result["dropped"]["text"] == result["whole"]["text"]
    assert result["dropped"]["connections"] == 9  # 42 events, 5 per response
    assert result["whole"]["connections"] == 1


def test_the_docs_eventsource_example_rejects_with_the_error_type(sse_chat_server, browser):
    function = _example().split("\n// 40 tokens")[0]
    page = browser.new_page()
    try:
        page.goto(sse_chat_server.url + "/healthz")
        outcome = _run(page, function + """
            return await collectAnswer("/v1/chat?prompt=Hello&model=fake&max_tokens=40&drop_every=5"
                                       + "&error_after=12&error_type=quota_exceeded")
                .then((answer) => "resolved: " + answer.text, (error) => error.message);""")
    finally:
        page.close()
    assert outcome == "quota_exceeded"

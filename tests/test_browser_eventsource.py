"""A real browser's EventSource reconnects by itself through cut connections, and
the server resumes it from Last-Event-ID (headless Debian Chromium via Playwright)."""

import pytest
import requests

from .event_reading import answer_text, events_of, seq_of
from .proxy import CuttingProxy

pytestmark = pytest.mark.browser

COLLECT = """async (url) => await new Promise((resolve, reject) => {
    const source = new EventSource(url);
    const texts = [], ids = [];
    let opens = 0;
    source.onopen = () => { opens += 1; };
    source.addEventListener("token", (e) => { texts.push(JSON.parse(e.data).content); ids.push(e.lastEventId); });
    source.addEventListener("done", (e) => { source.close(); resolve({text: texts.join(""), ids, opens}); });
    source.addEventListener("error", (e) => { if (e.data) { source.close(); reject(new Error(e.data)); } });
    setTimeout(() => { source.close(); reject(new Error("timed out; opens=" + opens)); }, 60000);
})"""



def _open_origin(page, url):
    """Load a page of the proxy's origin; the proxy may cut this load too, so retry."""
    for _ in range(10):
        try:
            page.goto(url)
            return
        except Exception:
            continue
    raise AssertionError(f"could not load {url}")


def test_eventsource_reconnects_through_cuts_and_collects_the_uncut_answer(gunicorn, browser):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="2", SSE_CHAT_RETRY_MS="20")
    query = "/v1/chat?prompt=browser%20resume&max_tokens=300"
    uncut = answer_text(events_of([requests.get(server.url + query, timeout=60).content]))
    host, port = server.url.removeprefix("http://").split(":")
    with CuttingProxy((host, int(port)), 200, 3000, seed=7) as proxy:
        page = browser.new_page()
        _open_origin(page, proxy.url + "/healthz")
        result = page.evaluate(COLLECT, query)
        page.close()
    assert result["opens"] > 3, "the proxy should have cut the stream several times"
    assert result["text"] == uncut
    seqs = [seq_of(i) for i in result["ids"]]
    assert seqs == list(range(1, 301))

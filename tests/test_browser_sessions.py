"""A browser's EventSource on a keyed service, through a session cookie (headless
Debian Chromium via Playwright): refused without one; after POST /v1/session it
streams the exact answer through a proxy that cuts its connections, resuming by
itself with Last-Event-ID; the cookie is out of the page's reach, held to the
Origin rule, the key's alone, and gone after DELETE /v1/session."""

import pytest
import requests

from sse_chat.access.sessions import SESSION_COOKIE

from .event_reading import answer_text, events_of, seq_of, stream_of
from .proxy import CuttingProxy
from .test_browser_eventsource import COLLECT

pytestmark = pytest.mark.browser

ALICE, BOB = "es-alice", "es-bob"
QUERY = "/v1/chat?prompt=session%20resume&max_tokens=300"

#: Opens an EventSource and reports its first outcome: opened, or failed with the
#: readyState it was left in (2, CLOSED: "fail the connection", no reconnecting).
OPEN_ONCE = """async (url) => await new Promise((resolve) => {
    const source = new EventSource(url);
    source.onopen = () => { source.close(); resolve({opened: true, state: 1}); };
    source.onerror = () => { const state = source.readyState; source.close(); resolve({opened: false, state}); };
})"""

SESSION = """async ([method, key]) => (await fetch("/v1/session",
    {method, headers: key ? {Authorization: "Bearer " + key} : {}})).status"""


def _bearer(key):
    return {"Authorization": f"Bearer {key}"}


def _session_cookie(context):
    found = [c for c in context.cookies() if c["name"] == SESSION_COOKIE]
    return found[0] if found else None


def test_eventsource_streams_through_cuts_with_a_session_cookie_only(gunicorn, browser):
    server = gunicorn(SSE_CHAT_API_KEYS=f"{ALICE},{BOB}", SSE_CHAT_FAKE_DELAY_MS="2", SSE_CHAT_RETRY_MS="20")
    uncut = answer_text(events_of([requests.get(server.url + QUERY, headers=_bearer(ALICE), timeout=60).content]))
    host, port = server.url.removeprefix("http://").split(":")
    context = browser.new_context()
    # Two pages share the context's cookies (cookies do not tell ports apart, RFC
    # 6265bis 8.5): one on the server's origin for the session calls, one on the
    # cutting proxy's for the stream, so that a cut never lands in a Set-Cookie.
    page = context.new_page()
    page.goto(server.url + "/healthz")
    assert page.evaluate(OPEN_ONCE, QUERY) == {"opened": False, "state": 2}, "no session: refused, not retried"

    assert page.evaluate(SESSION, ["POST", ALICE]) == 204
    assert page.evaluate("document.cookie") == "", "HttpOnly: no script sees the session"
    cookie = _session_cookie(context)
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]

    with CuttingProxy((host, int(port)), 200, 3000, seed=11, only_event_streams=True) as proxy:
        cut = context.new_page()
        cut.goto(proxy.url + "/healthz")
        result = cut.evaluate(COLLECT, QUERY)
    assert result["opens"] > 3, "the proxy should have cut the stream several times"
    assert result["text"] == uncut
    assert [seq_of(i) for i in result["ids"]] == list(range(1, 301))

    assert page.evaluate(SESSION, ["DELETE", None]) == 204
    assert _session_cookie(context) is None
    assert page.evaluate(OPEN_ONCE, QUERY) == {"opened": False, "state": 2}, "ended session: refused again"
    context.close()

    stream = f"{server.url}/v1/streams/{stream_of(result['ids'][0])}"
    middle = {"Last-Event-ID": result["ids"][149]}
    other = requests.get(stream, headers={**_bearer(BOB), **middle}, timeout=30)
    assert other.status_code == 404 and other.json()["error"]["type"] == "stream_not_found"
    resumed = requests.get(stream, headers={**_bearer(ALICE), **middle}, timeout=30)
    assert resumed.status_code == 200, "the same key, presented as a bearer header, resumes it"
    resumed_ids = [e.last_event_id for e in events_of([resumed.content])]
    assert [seq_of(i) for i in resumed_ids] == list(range(151, 302)) and resumed_ids[:150] == result["ids"][150:]

def test_the_browsers_cookie_is_forbidden_from_a_foreign_origin(gunicorn, browser):
    """A page cannot forge Origin, so the cookie the browser got is replayed from Python."""
    server = gunicorn(SSE_CHAT_API_KEYS=ALICE, SSE_CHAT_FAKE_DELAY_MS="0")
    context = browser.new_context()
    page = context.new_page()
    page.goto(server.url + "/healthz")
    assert page.evaluate(SESSION, ["POST", ALICE]) == 204
    cookies = {SESSION_COOKIE: _session_cookie(context)["value"]}
    context.close()
    url = server.url + "/v1/chat?prompt=hi&max_tokens=3"
    foreign = requests.get(url, cookies=cookies, headers={"Origin": "https://evil.example"}, timeout=30)
    assert foreign.status_code == 403 and foreign.json()["error"]["type"] == "forbidden_origin"
    assert requests.get(url, cookies=cookies, headers={"Origin": server.url}, timeout=30).status_code == 200
    assert requests.get(url, cookies=cookies, timeout=30).status_code == 200


#: From a page of another origin, requests to the service (``arg``) that carry the
#: cookie without a way to read the answer: an ``<img>``, a no-cors GET and POST.
SAME_SITE_REQUESTS = """async (service) => {
    await new Promise((done) => { const img = new Image(); img.onload = img.onerror = done;
                                  img.src = service + "/v1/models?via=img"; });
    await fetch(service + "/v1/models?via=get", {mode: "no-cors", credentials: "include"});
    await fetch(service + "/v1/chat?via=post", {method: "POST", mode: "no-cors", credentials: "include", body: "{}"});
}"""


def test_samesite_is_not_enough_another_origin_of_the_same_site_is_refused(gunicorn, browser):
    """Another port of the same host is another origin but the same site, so the
    SameSite=Strict cookie goes along; the Origin and Sec-Fetch-Site rule refuses it."""
    server = gunicorn(SSE_CHAT_API_KEYS=ALICE, SSE_CHAT_FAKE_DELAY_MS="0")
    host, port = server.url.removeprefix("http://").split(":")
    context = browser.new_context()
    page = context.new_page()
    page.goto(server.url + "/healthz")
    assert page.evaluate(SESSION, ["POST", ALICE]) == 204
    page.evaluate(SAME_SITE_REQUESTS, "")  # from the service's own origin: past the check (415: not JSON)
    with CuttingProxy((host, int(port)), 10**9, 10**9) as other_origin:  # forwards, never cuts
        sibling = context.new_page()
        sibling.goto(other_origin.url + "/healthz")
        sibling.evaluate(SAME_SITE_REQUESTS, server.url)
    context.close()
    statuses = {}
    for line in server.log().splitlines():
        for via in ("img", "get", "post"):
            if f"via={via} HTTP" in line:
                statuses.setdefault(via, []).append(line.split('" ')[1].split()[0])
    assert statuses == {"img": ["200", "403"], "get": ["200", "403"], "post": ["415", "403"]}, statuses

"""Browser sessions (docs/auth.md, "Browser sessions"): POST /v1/session trades a
bearer key for a signed cookie; the cookie alone then authenticates, from this
service's origin or a listed CORS origin only; it ends with its TTL, with
DELETE /v1/session, or when its key is removed; streams stay the key's."""

from __future__ import annotations

import time
from http.cookies import SimpleCookie

import pytest
import requests

from sse_chat.access.auth import owner_of
from sse_chat.access.sessions import MAX_CLOCK_SKEW_S, SESSION_COOKIE, SessionKeys
from sse_chat.config import ConfigError, Settings
from sse_chat.testing.servers import start_gunicorn

from .event_reading import answer_text, events_of, stream_of

KEYS = frozenset({"key-alice", "key-bob"})
TTL_S = 3600
APP_ORIGIN = "https://app.example"
ALICE = {"Authorization": "Bearer key-alice"}
BOB = {"Authorization": "Bearer key-bob"}
CHAT = "/v1/chat?prompt=session%20test&max_tokens=5"


def _server_env(keys: frozenset[str] = KEYS) -> dict[str, str]:
    return {"SSE_CHAT_API_KEYS": ",".join(sorted(keys)), "SSE_CHAT_SESSION_TTL_S": str(TTL_S),
            "SSE_CHAT_CORS_ORIGINS": APP_ORIGIN, "SSE_CHAT_FAKE_DELAY_MS": "0"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One gunicorn (gevent worker) with KEYS, a one-hour TTL and one CORS origin."""
    started = start_gunicorn(tmp_path_factory.mktemp("sessions"), **_server_env())
    yield started
    started.stop()


def _set_cookie(response: requests.Response):
    """The response's session cookie as a ``Morsel`` (its attributes by lower-case name)."""
    assert response.headers.get("Set-Cookie"), response.headers
    return SimpleCookie(response.headers["Set-Cookie"])[SESSION_COOKIE]


def _session(server, headers=ALICE) -> str:
    response = requests.post(f"{server.url}/v1/session", headers=headers, timeout=10)
    assert response.status_code == 204, response.text
    return _set_cookie(response).value


def _chat(server, cookie: str | None = None, **headers: str) -> requests.Response:
    cookies = {SESSION_COOKIE: cookie} if cookie is not None else None
    return requests.get(server.url + CHAT, cookies=cookies, headers=headers, timeout=30)


def _flip(text: str) -> str:
    """``text`` with its first character changed (the first base64 character
    always carries bits, unlike the last)."""
    return ("A" if text[0] != "A" else "B") + text[1:]


def _error_type(response: requests.Response) -> str:
    return response.json()["error"]["type"]


# -- the cookie, signed and checked without shared state ------------------------

class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_cookie_stands_for_its_key_until_its_ttl_and_never_holds_the_key():
    clock = _Clock(1_800_000_000)
    sessions = SessionKeys(KEYS, ttl_s=60, clock=clock)
    value = sessions.issue("key-alice")
    assert "key-alice" not in value and value.startswith(owner_of("key-alice") + ".")
    clock.now += 60
    assert sessions.verify(value) == owner_of("key-alice")
    clock.now += 1
    assert sessions.verify(value) is None, "61 s after it was issued, a 60 s session is over"
    clock.now -= 61 + MAX_CLOCK_SKEW_S + 1
    assert sessions.verify(value) is None, "a cookie issued further in the future than clocks differ is refused"


def test_a_cookie_from_a_host_whose_clock_is_ahead_verifies_within_the_skew():
    issuer_clock, checker_clock = _Clock(1_800_000_000.9), _Clock(1_800_000_000.9 - MAX_CLOCK_SKEW_S)
    value = SessionKeys(KEYS, ttl_s=60, clock=issuer_clock).issue("key-alice")
    assert SessionKeys(KEYS, ttl_s=60, clock=checker_clock).verify(value) == owner_of("key-alice")


def test_only_an_untouched_cookie_of_a_configured_key_verifies():
    sessions = SessionKeys(KEYS, ttl_s=60)
    alice, bob = sessions.issue("key-alice"), sessions.issue("key-bob")
    owner, stamp, signature = alice.split(".")
    assert sessions.verify(alice) == owner_of("key-alice") and sessions.verify(bob) == owner_of("key-bob")
    for forged in (f"{owner}.{stamp}.{_flip(signature)}",                 # signature changed
                   f"{owner}.{_flip(stamp)}.{signature}",                 # time changed
                   f"{owner_of('key-bob')}.{stamp}.{signature}",          # alice's signature as bob's
                   f"{owner}.{stamp}", "", "junk", "...", alice + "x"):
        assert sessions.verify(forged) is None, forged
    assert SessionKeys(frozenset({"key-bob"}), ttl_s=60).verify(alice) is None, "a removed key's cookie"
    assert SessionKeys(KEYS, ttl_s=60).verify(alice) == owner_of("key-alice"), "another instance, same keys"


@pytest.mark.parametrize("value", ["0", "-5", "1.5", "a day", "34560001", "400000000000"])
def test_a_bad_ttl_names_the_variable(value):
    with pytest.raises(ConfigError, match="SSE_CHAT_SESSION_TTL_S") as caught:
        Settings.from_env({"SSE_CHAT_SESSION_TTL_S": value})
    assert "whole number of seconds" in str(caught.value)


def test_the_ttl_defaults_to_a_day_and_is_read():
    assert Settings.from_env({}).session_ttl_s == 86400
    assert Settings.from_env({"SSE_CHAT_SESSION_TTL_S": "90"}).session_ttl_s == 90


# -- POST /v1/session -------------------------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "key-alice"}])
def test_post_session_needs_a_valid_bearer_key(server, headers):
    response = requests.post(f"{server.url}/v1/session", headers=headers, timeout=10)
    assert response.status_code == 401 and _error_type(response) == "unauthorized"
    assert "Set-Cookie" not in response.headers


def test_a_cookie_cannot_start_another_session(server):
    cookie = _session(server)
    response = requests.post(f"{server.url}/v1/session", cookies={SESSION_COOKIE: cookie}, timeout=10)
    assert response.status_code == 401 and "Set-Cookie" not in response.headers


def test_post_session_sets_an_http_only_strict_cookie_for_the_ttl(server):
    response = requests.post(f"{server.url}/v1/session", headers=ALICE, timeout=10)
    assert response.status_code == 204 and response.content == b""
    assert response.headers["Cache-Control"] == "no-store"
    cookie = _set_cookie(response)
    assert cookie["httponly"] is True and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    assert cookie["max-age"] == str(TTL_S)
    expires = time.mktime(time.strptime(cookie["expires"], "%a, %d %b %Y %H:%M:%S GMT")) - time.timezone
    assert abs(expires - (time.time() + TTL_S)) < 60
    assert not cookie["secure"], "over plain http the cookie must not be Secure (the browser would drop it)"
    assert cookie["domain"] == "", "no Domain: the cookie goes back to this host only"
    assert "key-alice" not in cookie.value


def test_the_cookie_is_secure_when_the_request_came_over_https(server, make_app):
    # gunicorn trusts X-Forwarded-Proto from loopback (forwarded_allow_ips), as from nginx on the host
    behind_tls = requests.post(f"{server.url}/v1/session", headers={**ALICE, "X-Forwarded-Proto": "https"},
                               timeout=10)
    assert _set_cookie(behind_tls)["secure"] is True
    client = make_app(api_keys=KEYS).test_client()
    direct = client.post("/v1/session", headers=ALICE, base_url="https://chat.example")
    assert direct.status_code == 204 and "; Secure" in direct.headers["Set-Cookie"]
    plain = client.post("/v1/session", headers=ALICE, base_url="http://chat.example")
    assert "Secure" not in plain.headers["Set-Cookie"]
    ended = client.delete("/v1/session", headers=ALICE, base_url="https://chat.example")
    assert "; Secure" in ended.headers["Set-Cookie"], "the clearing cookie must match the one it replaces"


def test_an_open_service_answers_204_without_a_cookie(make_app):
    response = make_app().test_client().post("/v1/session")
    assert response.status_code == 204 and "Set-Cookie" not in response.headers


# -- the cookie alone --------------------------------------------------------------

def test_the_cookie_alone_streams_the_same_answer_as_the_key(server):
    by_cookie = _chat(server, _session(server))
    assert by_cookie.status_code == 200, by_cookie.text
    by_key = requests.get(server.url + CHAT, headers=ALICE, timeout=30)
    assert answer_text(events_of([by_cookie.content])) == answer_text(events_of([by_key.content])) != ""
    assert _chat(server).status_code == 401, "and without it the same request is refused"


def test_a_tampered_cookie_is_refused_and_cleared(server):
    owner, stamp, signature = _session(server).split(".")
    for forged in (f"{owner}.{stamp}.{_flip(signature)}", f"{owner_of('key-bob')}.{stamp}.{signature}"):
        response = _chat(server, forged)
        assert response.status_code == 401 and _error_type(response) == "unauthorized"
        assert _set_cookie(response).value == "" and _set_cookie(response)["max-age"] == "0"


def test_an_expired_cookie_is_refused_by_the_configured_ttl(server):
    now = time.time()
    within = SessionKeys(KEYS, ttl_s=TTL_S, clock=lambda: now - TTL_S + 120).issue("key-alice")
    expired = SessionKeys(KEYS, ttl_s=TTL_S, clock=lambda: now - TTL_S - 120).issue("key-alice")
    assert _chat(server, within).status_code == 200
    response = _chat(server, expired)
    assert response.status_code == 401 and _error_type(response) == "unauthorized"
    assert "expired" in response.json()["error"]["message"]


def test_hosts_with_the_same_keys_accept_each_others_cookies_and_a_removed_key_ends_its_sessions(server, tmp_path):
    alice, bob = _session(server, ALICE), _session(server, BOB)
    same_keys = start_gunicorn(tmp_path, **_server_env())
    without_alice = start_gunicorn(tmp_path, **_server_env(frozenset({"key-bob", "key-carol"})))
    try:
        assert _chat(same_keys, alice).status_code == 200, "no shared state: another host checks the cookie"
        assert _chat(without_alice, bob).status_code == 200
        refused = _chat(without_alice, alice)
        assert refused.status_code == 401 and _error_type(refused) == "unauthorized"
    finally:
        same_keys.stop()
        without_alice.stop()


# -- the Origin rule -----------------------------------------------------------------

@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1:1"])
def test_the_cookie_from_a_foreign_origin_is_forbidden(server, origin):
    response = _chat(server, _session(server), Origin=origin)
    assert response.status_code == 403 and _error_type(response) == "forbidden_origin"
    assert origin in response.json()["error"]["message"]


def test_the_cookie_from_its_own_origin_or_a_listed_one_is_accepted(server):
    cookie = _session(server)
    assert _chat(server, cookie, Origin=server.url).status_code == 200
    listed = _chat(server, cookie, Origin=APP_ORIGIN)
    assert listed.status_code == 200
    assert listed.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert listed.headers["Access-Control-Allow-Credentials"] == "true"
    behind_tls = _chat(server, cookie, Origin=server.url.replace("http://", "https://"),
                       **{"X-Forwarded-Proto": "https"})
    assert behind_tls.status_code == 200, "behind a TLS proxy the own origin is https"


@pytest.mark.parametrize("fetch_site,status", [("same-site", 403), ("cross-site", 403), ("same-origin", 200),
                                               ("none", 200)])
def test_without_origin_a_browsers_sec_fetch_site_decides(server, fetch_site, status):
    """An ``<img>`` or link on a sibling subdomain or another port (same site, so a
    SameSite=Strict cookie goes along) sends no Origin, only Sec-Fetch-Site."""
    response = _chat(server, _session(server), **{"Sec-Fetch-Site": fetch_site})
    assert response.status_code == status
    if status == 403:
        assert _error_type(response) == "forbidden_origin" and fetch_site in response.json()["error"]["message"]


def test_a_listed_origin_passes_whatever_sec_fetch_site_says(server):
    assert _chat(server, _session(server), Origin=APP_ORIGIN, **{"Sec-Fetch-Site": "cross-site"}).status_code == 200


def test_a_bearer_key_is_not_held_to_the_origin_rule(server):
    response = requests.get(server.url + CHAT, timeout=30,
                            headers={**ALICE, "Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 200


# -- streams belong to keys ------------------------------------------------------------

def test_a_stream_started_with_the_cookie_belongs_to_its_key(server):
    cookie = _session(server)
    events = events_of([_chat(server, cookie).content])
    stream_id, middle = stream_of(events[0].last_event_id), events[2].last_event_id
    path = f"{server.url}/v1/streams/{stream_id}"
    resumed = requests.get(path, headers={**ALICE, "Last-Event-ID": middle}, timeout=30)
    assert resumed.status_code == 200
    assert [e.last_event_id for e in events_of([resumed.content])] == [e.last_event_id for e in events[3:]]
    for other in ({"headers": BOB}, {"cookies": {SESSION_COOKIE: _session(server, BOB)}}):
        refused = requests.get(path, **other, timeout=30)
        assert refused.status_code == 404 and _error_type(refused) == "stream_not_found"


# -- DELETE /v1/session ----------------------------------------------------------------

def test_delete_session_clears_the_cookie_and_then_the_browser_is_refused(server):
    browser = requests.Session()
    assert browser.post(f"{server.url}/v1/session", headers=ALICE, timeout=10).status_code == 204
    assert browser.get(server.url + CHAT, timeout=30).status_code == 200
    ended = browser.delete(f"{server.url}/v1/session", timeout=10)
    assert ended.status_code == 204
    cleared = _set_cookie(ended)
    assert cleared.value == "" and cleared["max-age"] == "0" and cleared["httponly"] and cleared["path"] == "/"
    assert SESSION_COOKIE not in browser.cookies
    refused = browser.get(server.url + CHAT, timeout=30)
    assert refused.status_code == 401 and _error_type(refused) == "unauthorized"

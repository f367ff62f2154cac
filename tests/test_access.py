"""Keys, stream ownership, CORS and limits."""

import logging
import socket

import pytest
import requests

from sse_chat.app import create_app
from sse_chat.config import Settings
from sse_chat.testing.servers import wait_until

from .event_reading import events_of, stream_of

KEYS = frozenset({"key-alice", "key-bob"})
ALICE = {"Authorization": "Bearer key-alice"}
BOB = {"Authorization": "Bearer key-bob"}


@pytest.fixture
def client(make_app):
    return make_app(api_keys=KEYS).test_client()


def _stream_of(client, headers, **body):
    events = events_of([client.post("/v1/chat", json={"prompt": "hi", **body}, headers=headers).get_data()])
    return events, stream_of(events[0].last_event_id)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "key-alice"},
                                     {"Authorization": "Basic key-alice"}])
def test_v1_endpoints_need_a_known_bearer_key(client, headers):
    for response in (client.post("/v1/chat", json={"prompt": "x"}, headers=headers),
                     client.get("/v1/chat?prompt=x", headers=headers),
                     client.get("/v1/models", headers=headers),
                     client.post("/v1/chat/completions", json={"messages": []}, headers=headers),
                     client.delete("/v1/streams/x", headers=headers)):
        assert response.status_code == 401
        assert response.json["error"]["type"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_health_and_the_page_stay_open(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/").status_code == 200


def test_another_key_cannot_resume_or_delete_a_stream_but_the_owner_can(client):
    events, stream_id = _stream_of(client, ALICE, max_tokens=5)
    middle = events[2].last_event_id
    assert client.get(f"/v1/streams/{stream_id}", headers={**BOB, "Last-Event-ID": middle}).status_code == 404
    assert client.post("/v1/chat", json={"prompt": "x"}, headers={**BOB, "Last-Event-ID": middle}).status_code == 404
    assert client.delete(f"/v1/streams/{stream_id}", headers=BOB).status_code == 404
    resumed = events_of([client.get(f"/v1/streams/{stream_id}", headers={**ALICE, "Last-Event-ID": middle}).get_data()])
    assert [e.last_event_id for e in resumed] == [e.last_event_id for e in events[3:]]
    assert client.delete(f"/v1/streams/{stream_id}", headers=ALICE).status_code == 202


def test_the_key_is_never_stored_as_the_owner(make_app):
    app = make_app(api_keys=KEYS)
    _, stream_id = _stream_of(app.test_client(), ALICE, max_tokens=1)
    owner = app.extensions["sse_chat"].event_log.info(stream_id).owner
    assert owner and "key-alice" not in owner


def test_cors_allows_listed_origins_with_last_event_id_and_authorization(make_app):
    client = make_app(cors_origins=("https://app.example",)).test_client()
    preflight = client.options("/v1/chat", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, last-event-id, content-type"})
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    allowed = preflight.headers["Access-Control-Allow-Headers"].lower()
    assert "last-event-id" in allowed and "authorization" in allowed
    other = client.options("/v1/chat",
                           headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_streams_per_key_are_limited_with_429_and_retry_after(make_app):
    app = make_app(api_keys=KEYS, max_streams_per_key=1, fake_delay_ms=20)
    client = app.test_client()
    first = client.post("/v1/chat", json={"prompt": "long", "max_tokens": 100_000}, headers=ALICE)
    chunks = first.iter_encoded()
    stream_id = stream_of(events_of([next(chunks)])[0].last_event_id)
    refused = client.post("/v1/chat", json={"prompt": "again"}, headers=ALICE)
    assert refused.status_code == 429 and refused.json["error"]["type"] == "too_many_streams"
    assert int(refused.headers["Retry-After"]) > 0
    assert client.post("/v1/chat", json={"prompt": "bob", "max_tokens": 1}, headers=BOB).status_code == 200
    client.delete(f"/v1/streams/{stream_id}", headers=ALICE)
    list(chunks)
    limiter = app.extensions["sse_chat"].limiter
    wait_until(lambda: limiter.running == 0, 10, "the cancelled producer to end")
    assert client.post("/v1/chat", json={"prompt": "again", "max_tokens": 1}, headers=ALICE).status_code == 200


def test_total_streams_are_limited(make_app):
    client = make_app(max_streams=1, fake_delay_ms=20).test_client()
    first = client.post("/v1/chat", json={"prompt": "long", "max_tokens": 100_000})
    next(first.iter_encoded())
    assert client.post("/v1/chat", json={"prompt": "x"}).status_code == 429


def test_open_service_bound_beyond_loopback_warns_at_start(caplog):
    with caplog.at_level(logging.WARNING, logger="sse_chat.app"):
        create_app(Settings(bind="0.0.0.0:8000"))
    assert "SSE_CHAT_API_KEYS" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sse_chat.app"):
        create_app(Settings(bind="127.0.0.1:8000"))
        create_app(Settings(bind="0.0.0.0:8000", api_keys=KEYS))
    assert caplog.text == ""


def test_a_client_that_stops_reading_is_dropped_and_its_stream_stays_resumable(gunicorn):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="0", SSE_CHAT_SEND_TIMEOUT_S="1", SSE_CHAT_ABANDON_S="60")
    host, port = server.url.removeprefix("http://").split(":")
    body = b'{"prompt": "flood", "max_tokens": 200000}'
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect, so the window stays small
        sock.connect((host, int(port)))
        sock.sendall(b"POST /v1/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        head = b""
        while b'"model"' not in head:  # read up to the start event's data, then stop reading
            head += sock.recv(1024)
        stream_id = head.split(b'"stream_id":"')[1].split(b'"')[0].decode()
        wait_until(lambda: f"stream {stream_id}: reader left" in server.log(), 30,
                   "the server to drop the stalled client")
        sock.settimeout(30)
        while sock.recv(1 << 20):  # the server closed its side: the buffered rest, then EOF
            pass
    resumed = requests.get(f"{server.url}/v1/streams/{stream_id}", headers={"Last-Event-ID": f"{stream_id}:0"},
                           stream=True, timeout=30)
    assert resumed.status_code == 200
    resumed.close()


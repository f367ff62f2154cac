"""An unreachable event log through Flask's test client: 503 ``event_log_unavailable``
with ``Retry-After`` before a stream starts, never a 500; ``/readyz``."""

from __future__ import annotations

import dataclasses

import pytest

from sse_chat.errors import EVENT_LOG_RETRY_AFTER_S
from sse_chat.eventlog import EventLogUnavailable, MemoryEventLog

from .event_reading import answer_text, events_of, stream_of

#: The calls a request makes before its stream starts (``open`` attaches a reader).
REQUEST_CALLS = frozenset({"create", "info", "open", "request_cancel"})
#: What a redis-py connection error says; it must not reach the client.
CAUSE = "Error 111 connecting to 127.0.0.1:6379. Connection refused."
PLAIN_SHAPE = ("type", "message")
OPENAI_SHAPE = ("type", "message", "param", "code")
COMPLETION = {"model": "fake", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


class OutageLog:
    """The in-memory log, except that while ``down`` the calls named in ``failing``
    raise :class:`EventLogUnavailable` and :meth:`ready` is False."""

    def __init__(self, failing: frozenset[str] = REQUEST_CALLS) -> None:
        self._log = MemoryEventLog(ttl_s=60, max_events=100_000)
        self.failing = failing
        self.down = False

    def __getattr__(self, name: str):
        if self.down and name in self.failing:
            def unavailable(*args, **kwargs):
                raise EventLogUnavailable(CAUSE)
            return unavailable
        return getattr(self._log, name)

    def ready(self) -> bool:
        return not self.down


def _with_log(app, event_log):
    services = app.extensions["sse_chat"]
    app.extensions["sse_chat"] = dataclasses.replace(services, event_log=event_log)
    return app


@pytest.fixture
def outage(make_app):
    """``(client, log)``: an app on an :class:`OutageLog`."""
    event_log = OutageLog()
    return _with_log(make_app(), event_log).test_client(), event_log


def _finished_stream(client) -> tuple[str, list]:
    events = events_of([client.post("/v1/chat", json={"prompt": "hi", "max_tokens": 5}).get_data()])
    return stream_of(events[0].last_event_id), events


def _assert_unavailable(response, error_shape=PLAIN_SHAPE):
    assert response.status_code == 503, response.get_data()
    assert response.headers["Retry-After"] == str(EVENT_LOG_RETRY_AFTER_S)
    assert response.mimetype == "application/json"
    error = response.json["error"]
    assert error["type"] == "event_log_unavailable"
    assert set(error) == set(error_shape)
    assert error["message"] and "6379" not in error["message"]


@pytest.mark.parametrize("method,path,headers,body", [
    ("POST", "/v1/chat", {}, {"prompt": "hi"}),
    ("GET", "/v1/chat?prompt=hi", {}, None),
    ("GET", "/v1/streams/{id}", {}, None),
    ("GET", "/v1/streams/{id}", {"Last-Event-ID": "{id}:2"}, None),
    ("POST", "/v1/chat", {"Last-Event-ID": "{id}:2"}, {"prompt": "hi"}),
    ("GET", "/v1/chat?prompt=hi&last_event_id={id}:2", {}, None),
    ("DELETE", "/v1/streams/{id}", {}, None),
])
def test_requests_before_the_stream_get_503_with_retry_after(outage, method, path, headers, body):
    client, event_log = outage
    stream_id, _ = _finished_stream(client)
    event_log.down = True
    response = client.open(path.format(id=stream_id), method=method, json=body,
                            headers={k: v.format(id=stream_id) for k, v in headers.items()})
    _assert_unavailable(response)


@pytest.mark.parametrize("stream", [True, False])
def test_openai_surface_gets_503_in_openais_shape(outage, stream):
    client, event_log = outage
    event_log.down = True
    response = client.post("/v1/chat/completions", json={**COMPLETION, "stream": stream})
    _assert_unavailable(response, OPENAI_SHAPE)


@pytest.mark.parametrize("path,body,shape", [("/v1/chat", {"prompt": "hi"}, PLAIN_SHAPE),
                                             ("/v1/chat/completions", COMPLETION, OPENAI_SHAPE)])
def test_a_reader_that_cannot_attach_gets_503_not_a_cut_200(make_app, path, body, shape):
    event_log = OutageLog(failing=frozenset({"open"}))
    client = _with_log(make_app(fake_delay_ms=5), event_log).test_client()
    event_log.down = True
    _assert_unavailable(client.post(path, json=body), shape)


def test_a_failed_create_releases_its_admission(make_app):
    event_log = OutageLog()
    app = _with_log(make_app(max_streams=1), event_log)
    client = app.test_client()
    event_log.down = True
    for _ in range(3):
        _assert_unavailable(client.post("/v1/chat", json={"prompt": "hi"}))
    assert app.extensions["sse_chat"].limiter.running == 0
    event_log.down = False
    assert client.post("/v1/chat", json={"prompt": "hi", "max_tokens": 2}).status_code == 200


def test_requests_work_again_once_the_log_is_back(outage):
    client, event_log = outage
    stream_id, events = _finished_stream(client)
    event_log.down = True
    _assert_unavailable(client.get(f"/v1/streams/{stream_id}", headers={"Last-Event-ID": f"{stream_id}:1"}))
    event_log.down = False
    resumed = events_of([
        client.get(f"/v1/streams/{stream_id}", headers={"Last-Event-ID": f"{stream_id}:1"}).get_data()])
    assert [e.last_event_id for e in resumed] == [e.last_event_id for e in events[2:]]
    assert answer_text(resumed) == answer_text(events[2:])


def test_readyz_follows_the_event_log_and_healthz_stays_ok(outage):
    client, event_log = outage
    ready = client.get("/readyz")
    assert (ready.status_code, ready.json) == (200, {"status": "ready"})
    event_log.down = True
    _assert_unavailable(client.get("/readyz"))
    assert (client.get("/healthz").status_code, client.get("/healthz").json) == (200, {"status": "ok"})
    event_log.down = False
    assert client.get("/readyz").status_code == 200


def test_readyz_needs_no_api_key(make_app):
    client = make_app(api_keys=frozenset({"k"})).test_client()
    assert client.get("/v1/models").status_code == 401
    assert client.get("/readyz").status_code == 200



@pytest.mark.parametrize("method,path,body", [
    ("POST", "/v1/responses", {"model": "fake", "input": "hi"}),
    ("POST", "/v1/responses", {"model": "fake", "input": "hi", "stream": True}),
    ("POST", "/v1/responses", {"model": "fake", "input": "hi", "background": True}),
    ("POST", "/v1/responses", {"model": "fake", "input": "hi", "previous_response_id": "{id}"}),
    ("GET", "/v1/responses/{id}", None),
    ("GET", "/v1/responses/{id}?stream=true&starting_after=3", None),
    ("POST", "/v1/responses/{id}/cancel", None),
    ("DELETE", "/v1/responses/{id}", None),
])
def test_the_responses_surface_gets_503_in_openais_shape(outage, method, path, body):
    client, event_log = outage
    response_id = client.post("/v1/responses", json={"model": "fake", "input": "hi", "max_output_tokens": 5}).json["id"]
    event_log.down = True
    body = {key: value.format(id=response_id) if isinstance(value, str) else value
            for key, value in (body or {}).items()}
    _assert_unavailable(client.open(path.format(id=response_id), method=method, json=body or None), OPENAI_SHAPE)
    event_log.down = False
    assert client.get(f"/v1/responses/{response_id}").json["status"] == "incomplete"

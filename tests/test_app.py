"""The HTTP API through Flask's test client: stream format, errors, resume."""

import json

import pytest

from .event_reading import answer_text, assert_well_formed, events_of, seqs, stream_of


def _chat(client, **body):
    return client.post("/v1/chat", json=body)


def test_stream_headers_and_first_frame(make_app):
    response = _chat(make_app().test_client(), prompt="Hello", max_tokens=3)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    for absent in ("Content-Length", "Content-Encoding", "Connection"):
        assert absent not in response.headers
    body = response.get_data()
    assert body.startswith(b"retry: 1000\nid: ")
    first_frame = body.split(b"\n\n")[0].decode()
    lines = first_frame.split("\n")
    stream_id = lines[1].removeprefix("id: ").removesuffix(":0")
    assert lines[2:] == ["event: start",
                         f'data: {{"stream_id":"{stream_id}","model":"fake",'
                         f'"created":{json.loads(lines[3][6:])["created"]}}}']
    assert len(stream_id) >= 22 and ":" not in stream_id


def test_events_ids_without_gaps_and_one_terminal_done(make_app):
    events = events_of([_chat(make_app().test_client(), prompt="Hello", max_tokens=40).get_data()])
    assert_well_formed(events)
    assert [e.type for e in events] == ["start"] + ["token"] * 40 + ["done"]
    done = json.loads(events[-1].data)
    assert done == {"finish_reason": "length",
                    "usage": {"prompt_tokens": 2, "completion_tokens": 40, "total_tokens": 42}}


def test_every_data_field_is_one_line_of_compact_json(make_app):
    body = _chat(make_app().test_client(), prompt="Hi", max_tokens=300).get_data().decode()
    data_lines = [line for line in body.split("\n") if line.startswith("data:")]
    assert len(data_lines) == 302
    for line in data_lines:
        value = line.removeprefix("data: ")
        assert json.dumps(json.loads(value), ensure_ascii=False, separators=(",", ":")) == value


def test_get_chat_for_eventsource_gives_the_same_answer_as_post(make_app):
    client = make_app().test_client()
    got = events_of([client.get("/v1/chat?prompt=Hello&max_tokens=20&system=s").get_data()])
    posted = events_of([_chat(client, prompt="Hello", max_tokens=20, system="s").get_data()])
    assert answer_text(got) == answer_text(posted) and len(answer_text(got)) > 0


def test_retry_comes_from_settings(make_app):
    assert _chat(make_app(retry_ms=2500).test_client(), prompt="x").get_data().startswith(b"retry: 2500\n")


@pytest.mark.parametrize("data,content_type,status,error_type", [
    (b"{", "application/json", 400, "invalid_request"),
    (b"[" * 200_000, "application/json", 400, "invalid_request"),  # nested too deeply for the parser
    (b"\xff\xfe", "application/json", 400, "invalid_request"),
    (b'{"prompt": 1}', "application/json", 400, "invalid_request"),
    (b"{}", "application/json", 400, "invalid_request"),
    (b'{"prompt": "a", "messages": []}', "application/json", 400, "invalid_request"),
    (b'{"prompt": "a"}', "text/plain", 415, "unsupported_media_type"),
    (b'{"prompt": "a"}', None, 415, "unsupported_media_type"),
    (b'{"prompt": "a", "model": "gpt-4o"}', "application/json", 503, "backend_unavailable"),
])
def test_bad_requests_get_json_errors(make_app, data, content_type, status, error_type):
    response = make_app().test_client().post("/v1/chat", data=data, content_type=content_type)
    assert response.status_code == status
    assert response.is_json and response.json["error"]["type"] == error_type
    assert response.json["error"]["message"]


def test_body_over_the_limit_is_413(make_app):
    response = make_app(max_body_bytes=100).test_client().post("/v1/chat", json={"prompt": "x" * 200})
    assert response.status_code == 413 and response.json["error"]["type"] == "payload_too_large"


def test_no_upstream_message_says_what_to_set(make_app):
    message = _chat(make_app().test_client(), prompt="a", model="gpt").json["error"]["message"]
    assert "OPENAI_BASE_URL" in message


def test_unknown_path_and_method_are_json(make_app):
    client = make_app().test_client()
    assert client.get("/nope").json["error"]["type"] == "not_found"
    assert client.put("/v1/chat").status_code == 405
    assert client.get("/healthz").json == {"status": "ok"}


def _finished_stream(client, max_tokens=10):
    return events_of([_chat(client, prompt="Hi", max_tokens=max_tokens).get_data()])


@pytest.mark.parametrize("how", ["header", "query"])
@pytest.mark.parametrize("endpoint", ["streams", "post_chat", "get_chat"])
def test_last_event_id_resumes_with_exactly_the_later_events(make_app, how, endpoint):
    client = make_app().test_client()
    events = _finished_stream(client)
    stream_id, last_id = stream_of(events[0].last_event_id), events[4].last_event_id
    headers = {"Last-Event-ID": last_id} if how == "header" else {}
    query = f"last_event_id={last_id}" if how == "query" else ""
    if endpoint == "streams":
        response = client.get(f"/v1/streams/{stream_id}?{query}", headers=headers)
    elif endpoint == "post_chat":
        response = client.post(f"/v1/chat?{query}", json={"prompt": "ignored"}, headers=headers)
    else:
        response = client.get(f"/v1/chat?prompt=ignored&{query}", headers=headers)
    resumed = events_of([response.get_data()])
    assert ([(e.type, e.data, e.last_event_id) for e in resumed]
            == [(e.type, e.data, e.last_event_id) for e in events[5:]])
    assert response.get_data().startswith(b"retry: 1000\n")


def test_resume_after_the_terminal_event_is_204(make_app):
    client = make_app().test_client()
    events = _finished_stream(client)
    response = client.get("/v1/chat?prompt=x", headers={"Last-Event-ID": events[-1].last_event_id})
    assert response.status_code == 204 and response.get_data() == b""
    assert "Content-Type" not in response.headers  # no content, no type


@pytest.mark.parametrize("last_event_id", ["nope", "abc:1", "abc:", ":1", "a:b:c", "x:-1"])
def test_unknown_or_malformed_ids_are_404(make_app, last_event_id):
    response = make_app().test_client().post("/v1/chat", json={"prompt": "x"}, headers={"Last-Event-ID": last_event_id})
    assert response.status_code == 404 and response.json["error"]["type"] == "stream_not_found"


def test_future_seq_and_foreign_id_on_streams_endpoint_are_404(make_app):
    client = make_app().test_client()
    events = _finished_stream(client, max_tokens=2)
    stream_id = stream_of(events[0].last_event_id)
    assert client.get(f"/v1/streams/{stream_id}", headers={"Last-Event-ID": f"{stream_id}:99"}).status_code == 404
    assert client.get(f"/v1/streams/{stream_id}", headers={"Last-Event-ID": "other:1"}).status_code == 404
    assert seqs(events_of([client.get(f"/v1/streams/{stream_id}").get_data()])) == [0, 1, 2, 3]


def test_expired_streams_are_404(make_app):
    client = make_app(stream_ttl_s=0.000001).test_client()
    events = _finished_stream(client, max_tokens=1)
    stream_id = stream_of(events[0].last_event_id)
    assert client.get(f"/v1/streams/{stream_id}").status_code == 404


def test_delete_ends_the_stream_with_cancelled(make_app):
    client = make_app(fake_delay_ms=20).test_client()
    response = _chat(client, prompt="Hi", max_tokens=10_000)
    chunks = response.iter_encoded()
    first = next(chunks)
    stream_id = stream_of(events_of([first])[0].last_event_id)
    assert client.delete(f"/v1/streams/{stream_id}").status_code == 202
    events = events_of([first, *chunks])
    assert_well_formed(events)
    assert json.loads(events[-1].data) == {"finish_reason": "cancelled", "usage": None}
    assert len(events) < 200
    assert client.delete("/v1/streams/unknown").status_code == 404


def test_heartbeat_comment_while_no_event_comes(make_app):
    response = _chat(make_app(fake_delay_ms=400, heartbeat_s=0.05).test_client(), prompt="Hi", max_tokens=1)
    body = response.get_data()
    assert b"\n: ping\n\n" in body
    assert body.index(b": ping") < body.index(b"event: token")


def test_api_errors_are_ordinary_exceptions():
    import copy
    import pickle

    from sse_chat.errors import ApiError

    error = ApiError(429, "too_many_streams", "slow down", (("Retry-After", "5"),))
    error.add_note("seen in a test")
    assert pickle.loads(pickle.dumps(error)) == error
    assert copy.copy(error).headers == (("Retry-After", "5"),)
    assert str(error) == "429 too_many_streams: slow down"


def test_the_helpers_read_the_request_and_the_app_themselves_not_through_flasks_proxies(make_app):
    from flask import Request, request
    from werkzeug.local import LocalProxy

    from sse_chat.streaming.services import Services
    from sse_chat.surfaces.web import current_request, services

    app = make_app()
    with app.test_request_context("/v1/chat", method="POST"):
        assert isinstance(request, LocalProxy)  # (what the helpers must look behind)
        assert type(current_request()) is Request and current_request() is request._get_current_object()
        assert type(services()) is Services

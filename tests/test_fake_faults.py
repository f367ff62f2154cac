"""Faults on request (``"fake": {…}``, docs/testing-clients.md): validation, the
fake model's errors and stalls, and dropped responses through Flask's test client
(the reader's side, a neutral ``events_per_response``, is in test_reader.py)."""

import json

import pytest

from sse_chat.bodies.chat import parse_chat_body, parse_chat_query
from sse_chat.errors import ApiError
from sse_chat.formats.chat_completions import parse_completion_body
from sse_chat.models import ChatRequest, Message
from sse_chat.models.fake import FakeFaults, FakeModel, InjectedFault, fake_tokens

from .event_reading import answer_text, assert_well_formed, events_of, seq_of, seqs

UNDROPPED_50 = "".join(fake_tokens(ChatRequest((Message("user", "Hello"),), "fake", 50)))


def _invalid(call) -> str:
    with pytest.raises(ApiError) as caught:
        call()
    assert (caught.value.status, caught.value.type) == (400, "invalid_request")
    return caught.value.message


# --- validation -----------------------------------------------------------------


def test_every_option_of_the_body_lands_on_the_request():
    chat = parse_chat_body({"prompt": "Hi", "model": "fake", "fake": {
        "delay_ms": 0, "drop_every": 1, "error_after": 0, "error_type": "quota_exceeded", "stall_after": 9}}, "fake")
    assert chat.backend_options == FakeFaults(delay_ms=0, drop_every=1, error_after=0, error_type="quota_exceeded",
                                   stall_after=9)
    assert chat.events_per_response == 1


def test_no_options_no_faults():
    assert parse_chat_body({"prompt": "Hi"}, "fake").backend_options is None
    assert parse_chat_body({"prompt": "Hi", "fake": {}}, "fake").backend_options is None
    assert parse_chat_body({"prompt": "Hi", "fake": None}, "fake").backend_options is None
    assert parse_chat_body({"prompt": "Hi", "fake": {"drop_every": None}}, "fake").backend_options is None
    assert parse_chat_query({"prompt": "Hi", "drop_every": ""}, "fake").backend_options is None


def test_error_type_defaults_to_upstream_error():
    chat = parse_chat_body({"prompt": "Hi", "fake": {"error_after": 2}}, "fake")
    assert chat.backend_options == FakeFaults(error_after=2, error_type="upstream_error")


@pytest.mark.parametrize(("fake", "named"), [
    ({"drop_every": 0}, '"fake.drop_every" must be a whole number from 1'),
    ({"delay_ms": -1}, '"fake.delay_ms" must be a whole number from 0'),
    ({"delay_ms": 60_001}, '"fake.delay_ms"'),
    ({"error_after": 1.5}, '"fake.error_after"'),
    ({"stall_after": "3"}, '"fake.stall_after"'),
    ({"stall_after": True}, '"fake.stall_after"'),
    ({"error_after": 1, "error_type": "Bad-Type"}, '"fake.error_type" must be a snake_case name'),
    ({"error_after": 1, "error_type": "x" * 65}, '"fake.error_type"'),
    ({"error_after": 1, "error_type": 7}, '"fake.error_type"'),
    ({"error_type": "quota"}, '"fake.error_type" needs "fake.error_after"'),
    ({"drop_evry": 5, "oops": 1}, 'unknown key(s) in "fake": "drop_evry", "oops"'),
])
def test_bad_options_are_400_naming_them(fake, named):
    assert named in _invalid(lambda: parse_chat_body({"prompt": "Hi", "fake": fake}, "fake"))


def test_fake_must_be_an_object():
    assert '"fake" must be an object' in _invalid(lambda: parse_chat_body({"prompt": "Hi", "fake": [5]}, "fake"))


def test_query_options_of_get_chat():
    chat = parse_chat_query({"prompt": "Hi", "drop_every": "5", "error_after": "3", "error_type": "boom"}, "fake")
    assert chat.backend_options == FakeFaults(drop_every=5, error_after=3, error_type="boom")
    assert "?drop_every= must be a whole number" in _invalid(
        lambda: parse_chat_query({"prompt": "Hi", "drop_every": "five"}, "fake"))
    assert "?drop_every= must be a whole number from 1" in _invalid(
        lambda: parse_chat_query({"prompt": "Hi", "drop_every": "0"}, "fake"))


@pytest.mark.parametrize("option", ["delay_ms", "drop_every", "error_after", "stall_after"])
def test_options_for_another_model_are_400_naming_them(option):
    message = _invalid(lambda: parse_chat_body({"prompt": "Hi", "model": "gpt-4o", "fake": {option: 1}}, "fake"))
    assert f'"fake.{option}"' in message and "gpt-4o" in message
    message = _invalid(lambda: parse_chat_query({"prompt": "Hi", "model": "gpt-4o", option: "1"}, "fake"))
    assert f"?{option}=" in message
    message = _invalid(lambda: parse_completion_body(
        {"messages": [{"role": "user", "content": "Hi"}], "model": "gpt-4o", "stream": True,
         "fake": {option: 1}}, "fake"))
    assert f'"fake.{option}"' in message
    # the server's default model counts too
    assert f'"fake.{option}"' in _invalid(lambda: parse_chat_body({"prompt": "Hi", "fake": {option: 1}}, "gemma"))


def test_drop_every_needs_a_streamed_completion():
    body = {"messages": [{"role": "user", "content": "Hi"}], "model": "fake", "fake": {"drop_every": 3}}
    assert '"stream": true' in _invalid(lambda: parse_completion_body(body, "fake"))
    assert parse_completion_body({**body, "stream": True}, "fake").chat.events_per_response == 3


@pytest.mark.parametrize(("path", "kwargs"), [
    ("/v1/chat", {"json": {"prompt": "Hi", "model": "other", "fake": {"drop_every": 5}}}),
    ("/v1/chat?prompt=Hi&model=other&drop_every=5", {}),
    ("/v1/chat/completions", {"json": {"messages": [{"role": "user", "content": "Hi"}], "model": "other",
                                       "stream": True, "fake": {"drop_every": 5}}}),
])
def test_each_surface_answers_400_for_another_model(make_app, path, kwargs):
    client = make_app().test_client()
    response = client.post(path, **kwargs) if "json" in kwargs else client.get(path)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["type"] == "invalid_request" and "drop_every" in error["message"]


# --- the fake model ------------------------------------------------------------------


def _stream(faults, max_tokens=10, timeout_s=2.0):
    slept = []
    model = FakeModel(delay_s=0.02, sleep=slept.append, upstream_timeout_s=timeout_s)
    request = ChatRequest((Message("user", "q"),), "fake", max_tokens, backend_options=faults)
    deltas = []
    try:
        for delta in model.stream(request):
            deltas.append(delta)
    except InjectedFault as fault:
        return deltas, slept, fault
    return deltas, slept, None


def test_error_after_fails_after_that_many_tokens_with_its_type():
    deltas, _, fault = _stream(FakeFaults(error_after=5, error_type="quota_exceeded"))
    assert len(deltas) == 5 and all(d.content for d in deltas)
    assert fault.type == "quota_exceeded" and "error_after" in fault.message
    assert _stream(FakeFaults(error_after=0))[0] == []


def test_a_count_beyond_the_answer_fails_in_place_of_the_end():
    deltas, _, fault = _stream(FakeFaults(error_after=99), max_tokens=4)
    assert len(deltas) == 4 and fault.type == "upstream_error"


def test_stall_after_sleeps_the_upstream_timeout_then_times_out():
    deltas, slept, fault = _stream(FakeFaults(stall_after=3), timeout_s=2.5)
    assert len(deltas) == 3
    assert slept == [0.02, 0.02, 0.02, 2.5]
    assert fault.type == "upstream_timeout" and "SSE_CHAT_UPSTREAM_TIMEOUT_S" in fault.message


def test_when_error_and_stall_are_due_together_the_error_wins():
    _, slept, fault = _stream(FakeFaults(error_after=2, stall_after=2))
    assert fault.type == "upstream_error" and 2.0 not in slept


def test_delay_ms_replaces_the_servers_delay_and_the_tokens_stay_the_same():
    plain, _, _ = _stream(None)
    delayed, slept, _ = _stream(FakeFaults(delay_ms=7))
    assert slept == [0.007] * 10
    assert delayed == plain


# --- end to end through the test client -------------------------------------------------------


def _follow_all(client, first):
    """Every response of one stream: the first, then resumes with Last-Event-ID
    until the terminal event. Returns the events of each response."""
    responses = [events_of([first.get_data()])]
    while responses[-1][-1].type not in ("done", "error"):
        last = responses[-1][-1].last_event_id
        stream_id = last.split(":")[0]
        response = client.get(f"/v1/streams/{stream_id}", headers={"Last-Event-ID": last})
        assert response.status_code == 200
        responses.append(events_of([response.get_data()]))
        assert len(responses) < 100
    return responses


def test_post_chat_drops_every_7_events_and_resumes_collect_the_answer_once(make_app):
    client = make_app().test_client()
    first = client.post("/v1/chat", json={"prompt": "Hello", "max_tokens": 50, "fake": {"drop_every": 7}})
    responses = _follow_all(client, first)
    assert [len(r) for r in responses] == [7] * 7 + [3]
    assert all(e.type not in ("done", "error") for r in responses[:-1] for e in r)
    events = [e for r in responses for e in r]
    assert_well_formed(events)
    assert answer_text(events) == UNDROPPED_50


def test_get_stream_from_the_start_is_dropped_too(make_app):
    client = make_app().test_client()
    first = events_of([client.post("/v1/chat", json={"prompt": "Hello", "max_tokens": 50,
                                                     "fake": {"drop_every": 4}}).get_data()])
    stream_id = first[0].last_event_id.split(":")[0]
    again = events_of([client.get(f"/v1/streams/{stream_id}").get_data()])
    assert seqs(again) == [0, 1, 2, 3]


def test_error_after_ends_with_one_error_event_of_the_named_type(make_app):
    client = make_app().test_client()
    events = events_of([client.post("/v1/chat", json={
        "prompt": "Hello", "max_tokens": 50, "fake": {"error_after": 5, "error_type": "quota_exceeded"}}).get_data()])
    assert [e.type for e in events] == ["start"] + ["token"] * 5 + ["error"]
    assert json.loads(events[-1].data)["error"]["type"] == "quota_exceeded"
    assert_well_formed(events)


def test_the_same_request_gives_the_same_events(make_app):
    client = make_app().test_client()
    body = {"prompt": "Hello", "max_tokens": 20, "fake": {"error_after": 9, "drop_every": 4}}
    runs = [[(e.type, e.data, seq_of(e.last_event_id)) for r in _follow_all(client, client.post("/v1/chat", json=body))
             for e in r if e.type != "start"] for _ in range(2)]
    assert runs[0] == runs[1]


def test_openai_chunks_are_dropped_and_resumed(make_app):
    client = make_app().test_client()
    body = {"messages": [{"role": "user", "content": "Hello"}], "model": "fake", "max_tokens": 50, "stream": True,
            "fake": {"drop_every": 7}}
    chunks = [events_of([client.post("/v1/chat/completions", json=body).get_data()])]
    while chunks[-1][-1].data != "[DONE]":
        last = chunks[-1][-1].last_event_id
        response = client.post("/v1/chat/completions", json=body, headers={"Last-Event-ID": last})
        chunks.append(events_of([response.get_data()]))
        assert len(chunks) < 20
    assert [len(c) for c in chunks[:-1]] == [7] * 7
    text = "".join(json.loads(c.data)["choices"][0]["delta"].get("content", "")
                   for r in chunks for c in r if c.data != "[DONE]" and json.loads(c.data)["choices"])
    assert text == UNDROPPED_50


# --- sse-chat ask --fake-option --------------------------------------------------------------


def test_fake_option_pairs_become_the_fake_object():
    from sse_chat.cli.fake_options import fake_options

    assert fake_options(["drop_every=7", "error_type=quota_exceeded", "error_after=5", "drop_every=3"]) == \
        {"drop_every": 3, "error_type": "quota_exceeded", "error_after": 5}
    assert fake_options([]) == {}
    for bad in ("drop_every", "=5", " =5"):
        with pytest.raises(ValueError, match="NAME=VALUE"):
            fake_options([bad])


def test_ask_puts_fake_options_in_the_body():
    from sse_chat.cli.main import _fields

    common = {"system": None, "temperature": None, "option_pairs": ()}
    assert _fields(model=None, max_tokens=5, fake=True, fake_pairs=("drop_every=2",), **common) == \
        {"model": "fake", "max_tokens": 5, "fake": {"drop_every": 2}}
    assert "fake" not in _fields(model=None, max_tokens=None, fake=False, fake_pairs=(), **common)

"""The Responses API against the real server (gunicorn + gevent, fake model): the Open
Responses compliance cases, every object and event checked against the
specification's JSON Schemas, and the official ``openai`` SDK's background, resume,
retrieve, cancel, delete and previous_response_id."""

from __future__ import annotations

import json

import openai
import pytest
import requests

from sse_chat.protocol import EventStreamDecoder
from sse_chat.testing.servers import start_gunicorn, wait_until

from .responses_schema import assert_valid_event, assert_valid_response

WEATHER_TOOL = {
    "type": "function", "name": "get_weather", "description": "Get the current weather for a location",
    "parameters": {"type": "object", "properties": {"location": {
        "type": "string", "description": "The city and state, e.g. San Francisco, CA"}}, "required": ["location"]},
}
#: A red heart icon, as the compliance suite's image case sends it.
IMAGE = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAACAAAAAgCAIAAAD8GO2jAAABmklEQVR42tyWAaTyUBzFew/eG4AHz+"
         "MBSAHKBiJRGFKwIgQQJKLUIioBIhCAiCAAEizAQIAECaASqFFJq84nudjnaqvuPnxzgP9xfrq5938csPn7PwHTKSoViCIEAYEAMh"
         "moKsU2mUCWEQqB5xEMIp/HaGQG2G6RSuH9HQ7H34rFrtPbdz4jl6PbwmEsl3QA1mt4vcRKk8dz9eg6IpF7tt9fzGY0gCgafFRFo5"
         "Blc5vLhf3eCOj1yNhM5GRMVK0aATxPZoz09YXjkQDmczJgquGQAPp9WwCNBgG027YACgUC6HRsAZRKBDAY2AJoNv/ZnwzA6WSczn"
         "G3p4UAymXGAEkyXrTFAh8fLAGqagQAyGaZpYsi7bHTNPz8MEj//LxuFPo+UBS8vb0KaLXubrRa7aX0RMLCykwmn0z3+XA4WACcTp"
         "Ckh9MFAZpmuVXo+mO/w+/HZvNgbblcUCxaSo/Hyck80Yu6XXDcvfVZr79cvMZjuN2U9O9vKAqjZrfbIZ0mV4TUi9Xqz6jddNy//7"
         "+e3n8Fhf/Llo2kxi8AQyGRoDkmAhAAAAAASUVORK5CYII=")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One gunicorn for the module: the fake model at 2 ms a token, and readers
    abandoned after 1 s, which background responses must outlive."""
    started = start_gunicorn(tmp_path_factory.mktemp("responses"), SSE_CHAT_FAKE_DELAY_MS="2",
                             SSE_CHAT_ABANDON_S="1")
    yield started
    started.stop()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def create(server, body: dict) -> dict:
    """``POST /v1/responses`` without streaming: the response object, schema-checked."""
    answer = requests.post(server.url + "/v1/responses", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    assert_valid_response(answer.json())
    return answer.json()


def read_events(answer: requests.Response) -> list[dict]:
    """Every event of a Responses event stream, each checked: the SSE ``event:``
    field is its ``type``, and it is valid against the specification's schema."""
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/event-stream")
    events = []
    for dispatched in EventStreamDecoder().iter_events(answer.iter_content(None)):
        event = json.loads(dispatched.data)
        assert dispatched.type == event["type"]
        assert_valid_event(event)
        events.append(event)
    return events


def stream(server, body: dict) -> list[dict]:
    """``POST /v1/responses`` with ``"stream": true``: its checked events, numbered 0, 1, … without gaps."""
    with requests.post(server.url + "/v1/responses", json={**body, "stream": True}, stream=True,
                       timeout=30) as answer:
        events = read_events(answer)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def output_text(response: dict) -> str:
    return "".join(part["text"] for item in response["output"] if item["type"] == "message"
                   for part in item["content"] if part["type"] == "output_text")


# --- the Open Responses compliance cases ---------------------------------------------


def test_basic_response(server):
    response = create(server, {"model": "fake", "input": [
        {"type": "message", "role": "user", "content": "Say hello in exactly 3 words."}]})
    assert response["status"] == "completed"
    assert response["output"] and "Say hello in exactly 3 words." in output_text(response)
    assert response["id"].startswith("resp_") and response["object"] == "response"
    assert response["usage"]["total_tokens"] == response["usage"]["input_tokens"] + response["usage"]["output_tokens"]


def test_streaming_response(server):
    events = stream(server, {"model": "fake", "input": [
        {"type": "message", "role": "user", "content": "Count from 1 to 5."}]})
    types = [e["type"] for e in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    final = events[-1]["response"]
    assert_valid_response(final)
    assert final["status"] == "completed"
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == output_text(final) == next(e["text"] for e in events if e["type"] == "response.output_text.done")
    assert "Count from 1 to 5." in deltas


def test_system_prompt(server):
    response = create(server, {"model": "fake", "input": [
        {"type": "message", "role": "system", "content": "You are a pirate. Always respond in pirate speak."},
        {"type": "message", "role": "user", "content": "Say hello."}]})
    assert response["status"] == "completed" and response["output"]
    without = create(server, {"model": "fake", "input": "Say hello."})
    assert output_text(response) != output_text(without)  # the fake model's answer depends on every message


def test_tool_calling(server):
    response = create(server, {"model": "fake", "tools": [WEATHER_TOOL], "input": [
        {"type": "message", "role": "user", "content": "What's the weather like in San Francisco?"}]})
    calls = [item for item in response["output"] if item["type"] == "function_call"]
    assert len(calls) == 1 and calls[0]["name"] == "get_weather" and calls[0]["status"] == "completed"
    assert "San Francisco" in json.loads(calls[0]["arguments"])["location"]
    assert response["status"] == "completed"
    assert response["tools"] == [{**WEATHER_TOOL, "strict": None}]


def test_tool_calling_streamed(server):
    events = stream(server, {"model": "fake", "tools": [WEATHER_TOOL], "input": [
        {"type": "message", "role": "user", "content": "What's the weather like in San Francisco?"}]})
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [e["item"]["type"] for e in added] == ["function_call"]
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert len(deltas) > 1 and [e["arguments"] for e in done] == ["".join(deltas)]
    item_done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert item_done == [{**added[0]["item"], "arguments": "".join(deltas), "status": "completed"}]
    assert events[-1]["type"] == "response.completed" and events[-1]["response"]["output"] == item_done


def test_image_input(server):
    response = create(server, {"model": "fake", "input": [{"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "What do you see in this image? Answer in one sentence."},
        {"type": "input_image", "image_url": IMAGE}]}]})
    assert response["status"] == "completed" and response["output"]
    assert "What do you see in this image?" in output_text(response)


def test_multi_turn(server):
    response = create(server, {"model": "fake", "input": [
        {"type": "message", "role": "user", "content": "My name is Alice."},
        {"type": "message", "role": "assistant", "content": "Hello Alice! Nice to meet you. How can I help you today?"},
        {"type": "message", "role": "user", "content": "What is my name?"}]})
    assert response["status"] == "completed" and "What is my name?" in output_text(response)


def test_max_output_tokens_ends_incomplete(server):
    events = stream(server, {"model": "fake", "input": "Tell me a story.", "max_output_tokens": 7})
    assert len([e for e in events if e["type"] == "response.output_text.delta"]) == 7
    final = events[-1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["status"] == "incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["response"]["output"][0]["status"] == "incomplete"


def test_a_failing_model_ends_with_response_failed(server):
    events = stream(server, {"model": "fake", "input": "Hi", "fake": {"error_after": 2}})
    assert events[-1]["type"] == "response.failed"
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "upstream_error"
    assert failed["output"][0]["status"] == "incomplete"


# --- errors in OpenAI's shape ----------------------------------------------------------


@pytest.mark.parametrize(("body", "status", "names"), [
    ({"model": "fake", "input": 5}, 400, "input"),
    ({"model": "fake"}, 400, "input"),
    ({"model": "fake", "input": [{"type": "message", "role": "robot", "content": "x"}]}, 400, "role"),
    ({"model": "fake", "input": "x", "tools": [{"type": "web_search"}]}, 400, "tools"),
    ({"model": "fake", "input": "x", "max_output_tokens": 0}, 400, "max_output_tokens"),
    ({"model": "fake", "input": "x", "background": True, "store": False}, 400, "store"),
    ({"model": "fake", "input": "x", "previous_response_id": "resp_nothing"}, 404, "resp_nothing"),
])
def test_errors_have_openai_shape(server, body, status, names):
    answer = requests.post(server.url + "/v1/responses", json=body, timeout=10)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert names in error["message"]


def test_unknown_responses_are_404(client, server):
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_unknown")
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("not-a-response-id")
    chat = requests.post(server.url + "/v1/chat", json={"prompt": "hi"}, timeout=10)
    stream_id = json.loads(next(e for e in EventStreamDecoder().iter_events([chat.content])).data)["stream_id"]
    with pytest.raises(openai.NotFoundError):  # a /v1/chat stream is no response
        client.responses.retrieve("resp_" + stream_id)


# --- resume, background, retrieve, cancel, delete with the openai SDK --------------------


def _dump(event) -> dict:
    return event.to_dict()


def _same_but_ids(a: list[dict], b: list[dict], id_a: str, id_b: str) -> bool:
    """Equal once ``b``'s stream id is written as ``a``'s (ids name the stream) and
    creation times are set aside."""
    def normal(events: list[dict], rid: str) -> str:
        text = json.dumps(events, sort_keys=True).replace(rid.removeprefix("resp_"), "STREAM")
        return text
    strip = [{**e, "response": {**e["response"], "created_at": 0}} if "response" in e else e for e in a]
    strip_b = [{**e, "response": {**e["response"], "created_at": 0}} if "response" in e else e for e in b]
    return normal(strip, id_a) == normal(strip_b, id_b)


def test_sdk_stream_cut_at_10_and_resumed_is_the_uncut_background_stream(client):
    request = {"model": "fake", "input": "Tell me about the sky.", "max_output_tokens": 60, "background": True,
               "extra_body": {"fake": {"delay_ms": 10}}}
    first = client.responses.create(**request, stream=True)
    read = []
    for event in first:
        read.append(_dump(event))
        if event.sequence_number == 10:
            break
    first.close()
    rid = read[0]["response"]["id"]
    resumed = [_dump(e) for e in client.responses.retrieve(rid, stream=True, starting_after=10)]
    events = read + resumed
    for event in events:
        assert_valid_event(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == "response.incomplete" and events[-1]["response"]["status"] == "incomplete"

    uncut = [_dump(e) for e in client.responses.create(**request, stream=True)]
    assert _same_but_ids(events, uncut, rid, uncut[0]["response"]["id"])
    again = [_dump(e) for e in client.responses.retrieve(rid, stream=True)]
    assert again == events  # the whole stream, read again from the log
    assert client.responses.retrieve(rid).to_dict() == events[-1]["response"]


@pytest.mark.parametrize("body", [{"input": "Weather?", "tools": [WEATHER_TOOL]},
                                  {"input": "Hello", "max_output_tokens": 12}], ids=["tool-call", "text"])
def test_every_starting_after_resumes_exactly(server, body):
    events = stream(server, {"model": "fake", **body})
    url = f"{server.url}/v1/responses/{events[0]['response']['id']}"
    with requests.get(url, params={"stream": "true"}, stream=True, timeout=10) as answer:
        assert read_events(answer) == events
    for after in range(len(events)):
        with requests.get(url, params={"stream": "true", "starting_after": after}, stream=True, timeout=10) as answer:
            assert read_events(answer) == events[after + 1:], after
    answer = requests.get(url, params={"stream": "true", "starting_after": "-1"}, timeout=10)
    assert answer.status_code == 400 and "starting_after" in answer.json()["error"]["message"]


def test_background_response_outlives_the_abandonment_rule(client, server):
    """No reader for longer than SSE_CHAT_ABANDON_S (1 s here): a streamed response
    that its reader left stops, a background one goes on to its end. Nothing reads
    either meanwhile (a read attaches a reader): the server's log tells their ends."""
    request = {"model": "fake", "input": "A long story", "max_output_tokens": 40,
               "extra_body": {"fake": {"delay_ms": 60}}}
    created = client.responses.create(**request, background=True)
    assert created.status == "in_progress" and created.background
    assert_valid_response(created.to_dict())
    abandoned = client.responses.create(**{**request, "max_output_tokens": 400}, stream=True)  # 24 s
    left = next(iter(abandoned)).response.id
    abandoned.close()

    def ended(rid: str, how: str) -> bool:
        return f"stream {rid.removeprefix('resp_')} ended: {how}" in server.log()

    wait_until(lambda: ended(left, "error stream_abandoned"), 30, "the left response's abandonment")
    wait_until(lambda: ended(created.id, "done length"), 30, "the background response's end")
    finished = client.responses.retrieve(created.id)
    assert finished.status == "incomplete" and finished.usage.output_tokens == 40
    assert client.responses.retrieve(left).error.code == "stream_abandoned"


def test_cancel_and_delete(client):
    created = client.responses.create(model="fake", input="A long story", max_output_tokens=500, background=True,
                                      extra_body={"fake": {"delay_ms": 50}})
    cancelled = client.responses.cancel(created.id)
    assert cancelled.status == "cancelled" and cancelled.incomplete_details.reason == "cancelled"
    assert_valid_response(cancelled.to_dict())
    assert client.responses.retrieve(created.id).status == "cancelled"
    assert client.responses.cancel(created.id).to_dict() == cancelled.to_dict()  # cancelling again changes nothing

    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id, stream=True)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(created.id)


def test_delete_stops_a_running_response(client, server):
    created = client.responses.create(model="fake", input="A long story", max_output_tokens=500, background=True,
                                      extra_body={"fake": {"delay_ms": 50}})
    answer = requests.delete(f"{server.url}/v1/responses/{created.id}", timeout=10)
    assert answer.json() == {"id": created.id, "object": "response.deleted", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_store_false_is_not_kept(client):
    response = client.responses.create(model="fake", input="Hi", store=False)
    assert response.status == "completed" and response.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="fake", input="Again", previous_response_id=response.id)


def test_previous_response_id_continues_the_conversation(client):
    first = client.responses.create(model="fake", input="My name is Alice.", instructions="Be brief.")
    second = client.responses.create(model="fake", input="What is my name?", previous_response_id=first.id)
    assert second.previous_response_id == first.id and second.instructions is None
    spelled_out = client.responses.create(model="fake", input=[
        {"role": "user", "content": "My name is Alice."},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "What is my name?"}])
    assert second.output_text == spelled_out.output_text  # the same conversation, so the same fake answer
    alone = client.responses.create(model="fake", input="What is my name?")
    assert second.output_text != alone.output_text

    third = client.responses.create(model="fake", input="And mine?", previous_response_id=second.id)
    three_turns = client.responses.create(model="fake", input=[
        {"role": "user", "content": "My name is Alice."}, {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "What is my name?"}, {"role": "assistant", "content": second.output_text},
        {"role": "user", "content": "And mine?"}])
    assert third.output_text == three_turns.output_text

    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="fake", input="x", previous_response_id="resp_gone")


def test_function_call_output_answers_a_call_through_previous_response_id(client):
    called = client.responses.create(model="fake", input="Weather in Paris?", tools=[WEATHER_TOOL])
    call = next(item for item in called.output if item.type == "function_call")
    answered = client.responses.create(model="fake", previous_response_id=called.id, tools=[WEATHER_TOOL], input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 °C"}])
    assert answered.status == "completed" and "sunny, 21 °C" in answered.output_text
    assert "get_weather" in answered.output_text


def test_an_idempotency_key_gives_the_first_response_again(server):
    body, headers = {"model": "fake", "input": "Once only", "max_output_tokens": 5}, {"Idempotency-Key": "k-once-1"}
    first = requests.post(server.url + "/v1/responses", json=body, headers=headers, timeout=10)
    again = requests.post(server.url + "/v1/responses", json=body, headers=headers, timeout=10)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    with requests.post(server.url + "/v1/responses", json={**body, "stream": True}, headers={"Idempotency-Key": "k-s"},
                       stream=True, timeout=10) as answer:
        streamed = read_events(answer)
    with requests.post(server.url + "/v1/responses", json={**body, "stream": True}, headers={"Idempotency-Key": "k-s"},
                       stream=True, timeout=10) as answer:
        assert read_events(answer) == streamed  # the same response, from its first event
    other = requests.post(server.url + "/v1/responses", json={**body, "input": "Else"}, headers=headers, timeout=10)
    assert other.status_code == 422 and set(other.json()["error"]) == {"message", "type", "param", "code"}


def test_dropped_responses_resume_with_starting_after(server):
    """The fake model's drop_every ends every response after that many of the
    stream's events; resuming after the last sequence number read gets the rest."""
    body = {"model": "fake", "input": "drop me", "max_output_tokens": 20, "stream": True, "fake": {"drop_every": 4}}
    with requests.post(server.url + "/v1/responses", json=body, stream=True, timeout=10) as answer:
        events = read_events(answer)
    connections = 1
    while events[-1]["type"] != "response.incomplete":
        assert connections < 50
        with requests.get(f"{server.url}/v1/responses/{events[0]['response']['id']}", timeout=10, stream=True,
                          params={"stream": "true", "starting_after": events[-1]["sequence_number"]}) as answer:
            events += read_events(answer)
        connections += 1
    assert connections >= 5
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert len([e for e in events if e["type"] == "response.output_text.delta"]) == 20
    assert requests.post(server.url + "/v1/responses", json={**body, "stream": False}, timeout=10).status_code == 400


def test_a_response_belongs_to_the_key_that_created_it(gunicorn):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="1", SSE_CHAT_API_KEYS="alice-key,bob-key")
    alice = openai.OpenAI(base_url=server.url + "/v1", api_key="alice-key", max_retries=0, timeout=30)
    bob = openai.OpenAI(base_url=server.url + "/v1", api_key="bob-key", max_retries=0, timeout=30)
    nobody = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0, timeout=30)
    response = alice.responses.create(model="fake", input="Mine", max_output_tokens=5)
    assert alice.responses.retrieve(response.id).status == "incomplete"
    for attempt in (lambda: bob.responses.retrieve(response.id),
                    lambda: list(bob.responses.retrieve(response.id, stream=True, starting_after=2)),
                    lambda: bob.responses.cancel(response.id), lambda: bob.responses.delete(response.id),
                    lambda: bob.responses.create(model="fake", input="x", previous_response_id=response.id)):
        with pytest.raises(openai.NotFoundError):
            attempt()
    with pytest.raises(openai.AuthenticationError):
        nobody.responses.create(model="fake", input="x")
    assert alice.responses.retrieve(response.id).status == "incomplete"  # bob's delete did nothing


def test_a_conversation_continues_only_from_an_ended_response(client):
    running = client.responses.create(model="fake", input="A long story", max_output_tokens=500, background=True,
                                      extra_body={"fake": {"delay_ms": 50}})
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="fake", input="And then?", previous_response_id=running.id)
    assert "still in_progress" in raised.value.message
    client.responses.cancel(running.id)
    continued = client.responses.create(model="fake", input="And then?", previous_response_id=running.id)
    assert continued.status == "completed" and continued.previous_response_id == running.id


def test_cancel_and_delete_of_a_silent_model_answer_within_a_bound(gunicorn):
    """The producer learns of a cancel at its model's next token: while the model is
    silent, cancel answers the response as it stands after STOP_WAIT_S, and delete
    forgets it all the same (the producer stops quietly when the model speaks)."""
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="1", SSE_CHAT_UPSTREAM_TIMEOUT_S="120")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)
    created = client.responses.create(model="fake", input="x", background=True,
                                      extra_body={"fake": {"stall_after": 2}})
    wait_until(lambda: len(client.responses.retrieve(created.id).output_text.split()) >= 2, 10, "two tokens")
    cancelled = client.responses.cancel(created.id)
    assert cancelled.status == "in_progress" and len(cancelled.output_text.split()) == 2
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_output_items_sent_back_as_input_continue_the_conversation(client):
    """The stateless way (no previous_response_id): the client keeps the history,
    sending a response's output items back with the function's result."""
    question = {"role": "user", "content": "Weather in Paris?"}
    called = client.responses.create(model="fake", input=[question], tools=[WEATHER_TOOL], store=False)
    [call] = called.output
    history = [question, *(item.to_dict() for item in called.output),
               {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]
    answered = client.responses.create(model="fake", input=history, tools=[WEATHER_TOOL], store=False)
    assert answered.status == "completed" and "sunny" in answered.output_text
    again = client.responses.create(model="fake", input=[*history, *(item.to_dict() for item in answered.output),
                                                         {"role": "user", "content": "Thanks!"}])
    assert again.status == "completed" and "Thanks!" in again.output_text

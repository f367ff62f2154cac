"""The pure parts of the Responses API: input items as messages, and the state
machine that derives numbered events and response objects from a stream's events."""

from __future__ import annotations

import pytest

from sse_chat.bodies.responses import chat_request, items_to_messages, parse_responses_body
from sse_chat.errors import ApiError
from sse_chat.formats.responses import ResponseEvents, response_id, stream_id_of
from sse_chat.models import Message, ToolCall
from sse_chat.protocol import Event, EventId

from .responses_schema import assert_valid_event, assert_valid_response


def _events(*typed: tuple[str, dict]) -> list[Event]:
    start = ("start", {"stream_id": "S", "model": "m", "created": 7, "responses": {"store": True}})
    return [Event(EventId("S", seq), kind, data) for seq, (kind, data) in enumerate((start, *typed))]


def _translate(events: list[Event]) -> tuple[ResponseEvents, list[dict]]:
    state, out = ResponseEvents("S"), []
    for event in events:
        out += state.take(event)
    return state, out


def test_response_ids_name_their_stream():
    assert response_id("abc") == "resp_abc" and stream_id_of("resp_abc") == "abc"
    assert stream_id_of("resp_") is None and stream_id_of("abc") is None


def test_interleaved_parallel_tool_calls_become_two_function_call_items():
    state, out = _translate(_events(
        ("token", {"content": "Let me look."}),
        ("tool_call", {"index": 0, "id": "call_a", "name": "f", "arguments": "{\"x\""}),
        ("tool_call", {"index": 1, "id": "call_b", "name": "g", "arguments": ""}),
        ("tool_call", {"index": 0, "id": None, "name": None, "arguments": ": 1}"}),
        ("tool_call", {"index": 1, "id": None, "name": None, "arguments": "{}"}),
        ("done", {"finish_reason": "tool_calls", "usage": None,
                  "tool_calls": [{"id": "call_a", "name": "f", "arguments": "{\"x\": 1}"},
                                 {"id": "call_b", "name": "g", "arguments": "{}"}]}),
    ))
    for event in out:
        assert_valid_event(event)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    response = state.snapshot()
    assert_valid_response(response)
    assert response["status"] == "completed"
    message, first, second = response["output"]
    assert message["content"][0]["text"] == "Let me look." and message["status"] == "completed"
    assert (first["call_id"], first["name"], first["arguments"]) == ("call_a", "f", "{\"x\": 1}")
    assert (second["call_id"], second["name"], second["arguments"]) == ("call_b", "g", "{}")
    done = [e["arguments"] for e in out if e["type"] == "response.function_call_arguments.done"]
    assert done == ["{\"x\": 1}", "{}"]
    # The message closed when the first call began, before any function call event.
    types = [e["type"] for e in out]
    assert types.index("response.output_item.done") < types.index("response.function_call_arguments.delta")


def test_server_tool_results_are_function_call_output_items():
    state, out = _translate(_events(
        ("tool_call", {"index": 0, "id": "call_a", "name": "shout", "arguments": "{\"text\": \"hi\"}"}),
        ("tool_result", {"tool_call_id": "call_a", "name": "shout", "content": "HI"}),
        ("tool_call", {"index": 0, "id": "call_b", "name": "shout", "arguments": "{}"}),
        ("tool_result", {"tool_call_id": "call_b", "name": "shout",
                         "error": {"type": "tool_failed", "message": "no text"}}),
        ("token", {"content": "It said HI."}),
        ("done", {"finish_reason": "stop", "usage": None}),
    ))
    for event in out:
        assert_valid_event(event)
    response = state.snapshot()
    assert_valid_response(response)
    assert [item["type"] for item in response["output"]] == [
        "function_call", "function_call_output", "function_call", "function_call_output", "message"]
    call, result, _, failed, answer = response["output"]
    assert call["status"] == "completed" and call["arguments"] == "{\"text\": \"hi\"}"
    assert (result["call_id"], result["output"], result["status"]) == ("call_a", "HI", "completed")
    assert failed["output"] == '{"error":{"type":"tool_failed","message":"no text"}}'
    assert answer["content"][0]["text"] == "It said HI."
    # Each call is done before its result is added.
    added = [(e["type"], e.get("item", {}).get("type")) for e in out if e["type"].startswith("response.output_item")]
    assert added[:4] == [("response.output_item.added", "function_call"),
                         ("response.output_item.done", "function_call"),
                         ("response.output_item.added", "function_call_output"),
                         ("response.output_item.done", "function_call_output")]


@pytest.mark.parametrize(("finish_reason", "status", "event_type"), [
    ("stop", "completed", "response.completed"),
    ("length", "incomplete", "response.incomplete"),
    ("cancelled", "cancelled", "response.incomplete"),
])
def test_how_a_response_ends(finish_reason, status, event_type):
    state, out = _translate(_events(("token", {"content": "a"}),
                                    ("done", {"finish_reason": finish_reason, "usage": None})))
    assert out[-1]["type"] == event_type and out[-1]["response"]["status"] == state.status == status
    assert state.finished
    assert_valid_event(out[-1])


def test_an_error_fails_the_response_and_closes_its_items():
    state, out = _translate(_events(("token", {"content": "a"}),
                                    ("error", {"error": {"type": "upstream_timeout", "message": "silent"}})))
    assert out[-1]["type"] == "response.failed"
    assert state.snapshot()["error"] == {"code": "upstream_timeout", "message": "silent"}
    assert state.snapshot()["output"][0]["status"] == "incomplete"


def test_the_same_stream_events_always_give_the_same_numbered_events():
    events = _events(*[("token", {"content": str(n)}) for n in range(5)], ("done", {"finish_reason": "stop",
                                                                                      "usage": None}))
    assert _translate(events)[1] == _translate(events)[1]
    assert _translate(events[:3])[1] == _translate(events)[1][:len(_translate(events[:3])[1])]


def test_function_calls_join_the_assistant_message_before_them():
    messages = items_to_messages([
        {"type": "message", "role": "developer", "content": "be brief"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "look "},
                                                         {"type": "input_image", "image_url": "data:x"},
                                                         {"type": "input_text", "text": "here"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Calling."}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"type": "reasoning", "summary": []},
    ])
    assert messages == [
        Message("system", "be brief"),
        Message("user", "look here", images=("data:x",)),
        Message("assistant", "Calling.", (ToolCall("c1", "f", "{}"), ToolCall("c2", "g", "{}"))),
        Message("tool", "one", tool_call_id="c1"),
    ]
    assert messages[1].as_openai()["content"] == [{"type": "text", "text": "look here"},
                                                   {"type": "image_url", "image_url": {"url": "data:x"}}]


def test_the_chat_has_instructions_first_and_tools_in_chat_completions_shape():
    parsed = parse_responses_body({"model": "fake", "input": "hi", "instructions": "be brief", "max_output_tokens": 5,
                                   "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
                                   "tool_choice": {"type": "function", "name": "f"}})
    chat = chat_request(parsed, parsed.record([]), "fake")
    assert chat.messages == (Message("system", "be brief"), Message("user", "hi"))
    assert chat.max_tokens == 5
    assert chat.tools == ({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}},)
    assert chat.tool_choice == {"type": "function", "function": {"name": "f"}}


@pytest.mark.parametrize("body", [
    [], {"input": "x", "stream": "yes"}, {"input": [{"type": "message", "role": "user", "content": 3}]},
    {"input": [{"type": "message", "role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
    {"input": [{"type": "function_call", "call_id": "c", "name": "f"}]},
    {"input": [{"type": "item_reference", "id": "x"}]}, {"input": "x", "metadata": {"k": 1}},
    {"input": "x", "top_p": 2}, {"input": "x", "instructions": 5}, {"input": "x", "tool_choice": "sometimes"},
])
def test_malformed_bodies_are_400(body):
    with pytest.raises(ApiError) as raised:
        parse_responses_body(body)
    assert raised.value.status == 400

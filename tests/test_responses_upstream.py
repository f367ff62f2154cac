"""The Responses API over the ``openai`` backend: an OpenAI-compatible upstream
(tests/upstream.py) behind gunicorn, read with the official SDK; every event and
object checked against the Open Responses schemas."""

from __future__ import annotations

import json

import openai

from .responses_schema import assert_valid_event, assert_valid_response
from .upstream import TOOL_CALLS

WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
TIME = {"type": "function", "name": "get_time", "parameters": {"type": "object"}}


def _streamed(client: openai.OpenAI, **request) -> list[dict]:
    events = [event.to_dict() for event in client.responses.create(**request, stream=True)]
    for event in events:
        assert_valid_event(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def test_an_upstream_answer_with_image_input(openai_sdk, upstream):
    response = openai_sdk.responses.create(model="ok", instructions="Be brief.", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": "https://example.com/cat.png"}]}])
    assert_valid_response(response.to_dict())
    assert response.status == "completed" and response.output_text == "Paris is the capital.\n 你好"
    assert response.usage.input_tokens == 7 and response.usage.output_tokens == 6
    messages = upstream.requests[-1][1]["messages"]
    assert messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]


def test_a_reasoning_models_thinking_is_a_reasoning_item(openai_sdk):
    events = _streamed(openai_sdk, model="reasoning", input="Why?")
    reasoning = [e["delta"] for e in events if e["type"] == "response.reasoning.delta"]
    assert reasoning == ["Think", "ing."]
    done = [e["type"] for e in events if e["type"].endswith(".done")]
    assert done == ["response.reasoning.done", "response.content_part.done", "response.output_item.done",
                    "response.output_text.done", "response.content_part.done", "response.output_item.done"]
    final = events[-1]["response"]
    assert_valid_response(final)
    assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
    assert final["output"][0]["content"] == [{"type": "reasoning_text", "text": "Thinking."}]


def test_parallel_upstream_tool_calls_and_their_outputs(openai_sdk, upstream):
    events = _streamed(openai_sdk, model="tools", input="Weather and time in Paris?", tools=[WEATHER, TIME])
    final = events[-1]["response"]
    calls = [item for item in final["output"] if item["type"] == "function_call"]
    assert [(c["call_id"], c["name"], c["arguments"]) for c in calls] == [
        (call_id, name, "".join(pieces)) for call_id, name, pieces in TOOL_CALLS]
    assert upstream.requests[-1][1]["tools"] == [{"type": "function", "function": {"name": "get_weather",
                                                                                   "parameters": {"type": "object"}}},
                                                 {"type": "function", "function": {"name": "get_time",
                                                                                   "parameters": {"type": "object"}}}]

    answered = openai_sdk.responses.create(model="tools", previous_response_id=final["id"], tools=[WEATHER, TIME],
                                           input=[{"type": "function_call_output", "call_id": c["call_id"],
                                                   "output": json.dumps({"n": n})} for n, c in enumerate(calls)])
    assert answered.output_text == 'Results: {"n": 0}; {"n": 1};'
    sent = upstream.requests[-1][1]["messages"]
    assert sent[0] == {"role": "user", "content": "Weather and time in Paris?"}
    assert sent[1]["role"] == "assistant" and [c["id"] for c in sent[1]["tool_calls"]] == [
        call_id for call_id, _, _ in TOOL_CALLS]
    assert [(m["role"], m["tool_call_id"]) for m in sent[2:]] == [("tool", call_id) for call_id, _, _ in TOOL_CALLS]


def test_an_upstream_failure_fails_the_response(openai_sdk):
    events = _streamed(openai_sdk, model="http500", input="Hi")
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "response.failed"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"].startswith("upstream_")
    assert "500" in failed["error"]["message"] and "sk-up" not in json.dumps(events)
    whole = openai_sdk.responses.create(model="http500", input="Hi")
    assert whole.status == "failed" and whole.error.code == failed["error"]["code"]

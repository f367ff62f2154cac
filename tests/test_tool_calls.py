"""Tool calls end to end: requests that carry ``tools`` and tool turns, ``tool_call``
events and ``done.tool_calls`` on ``/v1/chat``, ``delta.tool_calls`` and
``message.tool_calls`` on the OpenAI surface (driven by the official SDK), the fake
model's offline loop, ``sse-chat ask --tools`` and the page."""

from __future__ import annotations

import json

import pytest
import requests

from sse_chat.bodies.chat import parse_chat_body
from sse_chat.client import ChatClient
from sse_chat.errors import ApiError
from sse_chat.models import ChatRequest, Message, ToolCall, ToolCallDelta
from sse_chat.models.fake import FakeModel, fake_tool_call
from sse_chat.protocol import ToolCalls
from sse_chat.testing.servers import base_env, run_cli

from .event_reading import assert_well_formed, events_of
from .upstream import TOOL_CALLS

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"unit": {"type": "string"}, "city": {"type": "string"}},
                   "required": ["city"]}}}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
UPSTREAM_CALLS = [{"id": call_id, "name": name, "arguments": "".join(pieces)} for call_id, name, pieces in TOOL_CALLS]
QUESTION = [{"role": "user", "content": "Weather and time in Paris?"}]


def _second_turn(calls: list[dict]) -> list[dict]:
    """The conversation after running ``calls``: the assistant's calls, then one
    ``tool`` result per call."""
    assistant = {"role": "assistant", "content": None, "tool_calls": [
        {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
        for c in calls]}
    results = [{"role": "tool", "tool_call_id": c["id"], "content": f"result of {c['name']}"} for c in calls]
    return [*QUESTION, assistant, *results]


def _data(events, event_type):
    return [json.loads(e.data) for e in events if e.type == event_type]


# -- the protocol's assembler ----------------------------------------------------------------


def test_fragments_of_parallel_calls_join_per_index_in_index_order():
    calls = ToolCalls()
    calls.add({"index": 1, "id": "b", "name": "g", "arguments": '{"y"'})
    calls.add({"index": 0, "id": "a", "name": "f", "arguments": "{"})
    calls.add({"index": 1, "id": None, "name": None, "arguments": ": 2}"})
    calls.add({"index": 0, "id": None, "name": None, "arguments": "}"})
    assert calls.finished() == [{"id": "a", "name": "f", "arguments": "{}"},
                                {"id": "b", "name": "g", "arguments": '{"y": 2}'}]


def test_an_id_and_name_repeated_in_every_fragment_are_streamed_once_and_never_replaced():
    calls = ToolCalls()
    first = calls.add({"index": 0, "id": "call_1", "name": "f", "arguments": "{"})
    again = calls.add({"index": 0, "id": "call_1", "name": "f", "arguments": "}"})
    assert (first["id"], first["name"]) == ("call_1", "f")
    assert (again["id"], again["name"], again["arguments"]) == (None, None, "}")
    assert calls.finished() == [{"id": "call_1", "name": "f", "arguments": "{}"}]


def test_a_new_id_at_an_index_already_taken_begins_another_call():
    # Ollama streams parallel calls all at index 0, each whole in one fragment.
    calls = ToolCalls()
    first = calls.add({"index": 0, "id": "a", "name": "f", "arguments": '{"x": 1}'})
    second = calls.add({"index": 0, "id": "b", "name": "g", "arguments": '{"y": 2}'})
    assert (first["index"], second["index"]) == (0, 1)
    assert calls.finished() == [{"id": "a", "name": "f", "arguments": '{"x": 1}'},
                                {"id": "b", "name": "g", "arguments": '{"y": 2}'}]


def test_a_fragment_without_an_index_continues_the_last_call_begun():
    calls = ToolCalls()
    assert not calls
    assert calls.add({"index": None, "id": "a", "name": "f", "arguments": "{"})["index"] == 0
    assert calls
    calls.add({"index": None, "id": None, "name": None, "arguments": "}"})
    calls.add({"index": 3, "id": "b", "name": "g", "arguments": "{}"})
    assert calls.add({"id": None, "arguments": ""})["index"] == 3  # the last call begun
    assert calls.finished() == [{"id": "a", "name": "f", "arguments": "{}"},
                                {"id": "b", "name": "g", "arguments": "{}"}]


@pytest.mark.parametrize("fragment", [{"index": -1, "arguments": ""}, {"index": True, "arguments": ""},
                                      {"index": "0", "arguments": ""}, {"index": 0, "arguments": 5}])
def test_a_fragment_without_a_whole_index_or_string_arguments_is_refused(fragment):
    with pytest.raises(ValueError, match=r"index must be a whole number|arguments must be a string"):
        ToolCalls().add(fragment)


def test_a_call_whose_fragments_brought_no_id_or_name_has_empty_ones():
    calls = ToolCalls()
    calls.add({"index": 0, "id": None, "name": None, "arguments": "{}"})
    assert calls.finished() == [{"id": "", "name": "", "arguments": "{}"}]


# -- requests ----------------------------------------------------------------------------------


def test_tool_turns_and_tools_are_read_as_given():
    chat = parse_chat_body({"messages": _second_turn(UPSTREAM_CALLS), "tools": [WEATHER_TOOL, TIME_TOOL],
                            "tool_choice": "required"}, "fake")
    assistant, *results = chat.messages[1:]
    assert assistant == Message("assistant", None, tuple(ToolCall(**c) for c in UPSTREAM_CALLS))
    assert [(m.role, m.tool_call_id, m.content) for m in results] == [
        ("tool", "call_weather_1", "result of get_weather"), ("tool", "call_time_2", "result of get_time")]
    assert chat.tools == (WEATHER_TOOL, TIME_TOOL) and chat.tool_choice == "required"
    assert [m.as_openai() for m in chat.messages] == _second_turn(UPSTREAM_CALLS)


@pytest.mark.parametrize(("body", "says"), [
    ({"messages": [{"role": "assistant", "content": None}]}, "messages[0].content must be a string"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "a", "type": "function",
                                                                          "function": {"name": "f"}}]}]},
     "\"arguments\" must be a string"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": {"id": "a"}}]}, "tool_calls must be a list"),
    ({"prompt": "x", "tools": {"type": "function"}}, "\"tools\" must be a list"),
    ({"prompt": "x", "tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
    ({"prompt": "x", "tool_choice": "sometimes"}, "\"tool_choice\" must be one of"),
])
def test_malformed_tool_turns_and_tools_are_400_naming_the_field(body, says):
    with pytest.raises(ApiError) as caught:
        parse_chat_body(body, "fake")
    assert caught.value.status == 400 and says in caught.value.message


def test_no_tools_and_a_tool_choice_without_tools():
    assert parse_chat_body({"prompt": "x", "tools": []}, "fake").tools is None  # OpenAI refuses []
    with pytest.raises(ApiError) as caught:
        parse_chat_body({"prompt": "x", "tool_choice": "auto"}, "fake")
    assert caught.value.status == 400 and "\"tool_choice\"" in caught.value.message


# -- the fake model --------------------------------------------------------------------------


def test_the_fake_model_honours_tool_choice_none_and_a_named_function():
    question = (Message("user", "Lyon"),)
    none = ChatRequest(question, "fake", tools=(WEATHER_TOOL, TIME_TOOL), tool_choice="none")
    assert fake_tool_call(none) is None
    named = ChatRequest(question, "fake", tools=(WEATHER_TOOL, TIME_TOOL),
                        tool_choice={"type": "function", "function": {"name": "get_time"}})
    call = fake_tool_call(named)
    assert call is not None and call[0].name == "get_time"


def test_the_fake_model_calls_the_first_tool_in_fragments_with_arguments_from_the_prompt():
    request = ChatRequest((Message("user", "Weather in Paris?"),), "fake", tools=(TIME_TOOL, WEATHER_TOOL))
    deltas = list(FakeModel(0).stream(request))
    fragments = [f for d in deltas for f in d.tool_calls]
    assert len(fragments) >= 3 and {f.index for f in fragments} == {0}
    assert fragments[0].name == "get_time" and fragments[0].id and all(f.id is None for f in fragments[1:])
    assert json.loads("".join(f.arguments for f in fragments)) == {"input": "Weather in Paris?"}
    assert deltas[-1].finish_reason == "tool_calls"
    assert list(FakeModel(0).stream(request)) == deltas  # deterministic


def test_the_fake_model_names_the_first_required_parameter():
    request = ChatRequest((Message("user", "Lyon"),), "fake", tools=(WEATHER_TOOL,))
    call = fake_tool_call(request)
    assert call is not None and json.loads("".join(f.arguments for f in call)) == {"city": "Lyon"}


def test_after_tool_results_the_fake_model_answers_quoting_each_result():
    messages = tuple(parse_chat_body({"messages": _second_turn(UPSTREAM_CALLS)}, "fake").messages)
    deltas = list(FakeModel(0).stream(ChatRequest(messages, "fake", tools=(WEATHER_TOOL,))))
    text = "".join(d.content for d in deltas)
    assert "get_weather answered: «result of get_weather»" in text
    assert "get_time answered: «result of get_time»" in text
    assert deltas[-1].finish_reason == "stop" and not any(d.tool_calls for d in deltas)


# -- over gunicorn, against an upstream that calls two tools in parallel -----------------------


def test_the_sdk_streams_both_calls_exactly_and_the_tools_reach_the_upstream_as_given(openai_sdk, upstream):
    chunks = list(openai_sdk.chat.completions.create(model="tools", messages=QUESTION,
                                                     tools=[WEATHER_TOOL, TIME_TOOL], tool_choice="auto", stream=True))
    calls = ToolCalls()
    for chunk in chunks:
        for fragment in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            calls.add({"index": fragment.index, "id": fragment.id,
                       "name": fragment.function.name if fragment.function else None,
                       "arguments": (fragment.function.arguments or "") if fragment.function else ""})
    assert calls.finished() == UPSTREAM_CALLS
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    sent = upstream.requests[-1][1]
    assert sent["tools"] == [WEATHER_TOOL, TIME_TOOL] and sent["tool_choice"] == "auto"


def test_the_sdk_gets_both_calls_in_message_tool_calls_when_not_streaming(openai_sdk):
    completion = openai_sdk.chat.completions.create(model="tools", messages=QUESTION, tools=[WEATHER_TOOL, TIME_TOOL])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
            for c in choice.message.tool_calls] == UPSTREAM_CALLS
    assert {c.type for c in choice.message.tool_calls} == {"function"}


def test_the_second_turn_reaches_the_upstream_intact_and_its_answer_uses_the_results(openai_sdk, upstream):
    completion = openai_sdk.chat.completions.create(model="tools", messages=_second_turn(UPSTREAM_CALLS),
                                                    tools=[WEATHER_TOOL, TIME_TOOL])
    assert completion.choices[0].message.content == "Results: result of get_weather; result of get_time;"
    assert upstream.requests[-1][1]["messages"] == _second_turn(UPSTREAM_CALLS)


def test_native_tool_call_fragments_rebuild_the_same_calls_and_done_carries_them(upstream_server):
    body = {"model": "tools", "messages": QUESTION, "tools": [WEATHER_TOOL, TIME_TOOL]}
    events = events_of([requests.post(upstream_server.url + "/v1/chat", json=body, timeout=30).content])
    assert_well_formed(events)
    fragments = _data(events, "tool_call")
    calls = ToolCalls()
    for fragment in fragments:
        calls.add(fragment)
    assert calls.finished() == UPSTREAM_CALLS
    assert [f["index"] for f in fragments] == sorted(f["index"] for f in fragments)  # parallel calls keep order
    assert [(f["id"], f["name"]) for f in fragments if f["id"]] == [(c["id"], c["name"]) for c in UPSTREAM_CALLS]
    [done] = _data(events, "done")
    assert done["finish_reason"] == "tool_calls" and done["tool_calls"] == UPSTREAM_CALLS
    assert not _data(events, "token")


def test_parallel_calls_all_at_index_0_with_stop_become_two_calls_and_tool_calls(upstream_server):
    body = {"model": "ollama_tools", "messages": QUESTION, "tools": [WEATHER_TOOL, TIME_TOOL]}
    events = events_of([requests.post(upstream_server.url + "/v1/chat", json=body, timeout=30).content])
    assert [f["index"] for f in _data(events, "tool_call")] == [0, 1]
    [done] = _data(events, "done")
    assert done["finish_reason"] == "tool_calls" and done["tool_calls"] == UPSTREAM_CALLS


def test_a_malformed_tool_call_fragment_is_an_upstream_error_in_the_stream(upstream_server):
    body = {"model": "bad_tool_index", "messages": QUESTION, "tools": [WEATHER_TOOL]}
    events = events_of([requests.post(upstream_server.url + "/v1/chat", json=body, timeout=30).content])
    assert events[-1].type == "error"
    assert json.loads(events[-1].data)["error"]["type"] == "upstream_malformed_chunk"


# -- the fake model's whole loop, offline ------------------------------------------------------


def test_the_whole_loop_runs_offline_and_resumes_across_tool_call_events(gunicorn):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="0")
    client = ChatClient(server.url, retries=20, sleep=lambda s: None)
    answer = client.ask("Weather in Paris?", model="fake", tools=[WEATHER_TOOL], fake={"drop_every": 2})
    assert answer == "" and answer.finish_reason == "tool_calls"
    [call] = answer.tool_calls
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Weather in Paris?"}
    uncut = events_of([requests.post(server.url + "/v1/chat", timeout=30, json={
        "prompt": "Weather in Paris?", "tools": [WEATHER_TOOL]}).content])
    assert _data(uncut, "done")[0]["tool_calls"] == [call]
    turn = [{"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call["id"], "type": "function", "function": {"name": call["name"],
                                                                    "arguments": call["arguments"]}}]},
            {"role": "tool", "tool_call_id": call["id"], "content": "18 °C, sunny"}]
    reply = client.ask(messages=turn, model="fake", tools=[WEATHER_TOOL], fake={"drop_every": 3})
    assert reply == "The tool get_weather answered: «18 °C, sunny»." and reply.finish_reason == "stop"


# -- the command line --------------------------------------------------------------------------


def test_ask_tools_writes_each_call_to_stderr_and_no_text_to_stdout(tmp_path):
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([WEATHER_TOOL]))
    result = run_cli("ask", "--fake", "--no-log", "--tools", str(tools), "Weather in Paris?",
                     env=base_env(SSE_CHAT_FAKE_DELAY_MS="0"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == b""
    assert result.stderr.decode().splitlines()[-1] == 'tool call get_weather {"city": "Weather in Paris?"}'


def test_a_tool_call_line_keeps_the_json_and_stays_on_one_line():
    from sse_chat.cli.tools_file import tool_call_line

    arguments = json.dumps({"text": "line1\nline2", "q": 'say "hi"', "path": "C:\\tmp"})
    line = tool_call_line({"id": "c", "name": "note", "arguments": arguments + "\n"})
    assert line.count("\n") == 1 and line.startswith("tool call note ")
    assert json.loads(line.removeprefix("tool call note ")) == json.loads(arguments)


@pytest.mark.parametrize(("content", "says"), [
    (None, "cannot read"), ("{not json", "is not UTF-8 JSON"), ('{"type": "function"}', "must hold a JSON list"),
])
def test_ask_tools_with_a_bad_file_is_a_usage_error_without_a_traceback(tmp_path, content, says):
    path = tmp_path / "tools.json"
    if content is not None:
        path.write_text(content)
    result = run_cli("ask", "--fake", "--no-log", "--tools", str(path), "x")
    assert result.returncode == 2
    assert says in result.stderr.decode() and "Traceback" not in result.stderr.decode()


# -- the page -----------------------------------------------------------------------------------


@pytest.mark.browser
def test_the_page_shows_a_tool_call_as_a_call_not_as_text(gunicorn, browser, tmp_path):
    from urllib.parse import quote

    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="20")
    page = browser.new_page(viewport={"width": 900, "height": 500})
    try:
        page.goto(server.url + "/?tools=" + quote(json.dumps([WEATHER_TOOL])))
        page.fill("#prompt", "Weather in Paris?")
        page.press("#prompt", "Enter")
        page.wait_for_function("() => document.querySelector('#conversation li.assistant')?.dataset.finishReason")
        page.screenshot(path=str(tmp_path / "tool-call.png"))
        shown = page.evaluate("""() => {
            const li = document.querySelector('#conversation li.assistant');
            return {calls: [...li.querySelectorAll('.tool-call')].map(c => [
                        c.querySelector('.tool-name').textContent, c.querySelector('.tool-arguments').textContent]),
                    answer: li.querySelector('.answer').textContent, finish: li.dataset.finishReason,
                    note: li.querySelector('.note')?.textContent};
        }""")
    finally:
        page.close()
    assert shown["calls"] == [["get_weather", '{"city": "Weather in Paris?"}']]
    assert shown["answer"] == "" and shown["finish"] == "tool_calls"
    assert "tool" in shown["note"]


def test_tool_call_fragment_shapes_match_the_model_interface():
    fragment = ToolCallDelta(0, "call_1", "f", "{}")
    assert ToolCalls().add(fragment.as_event_data()) == {"index": 0, "id": "call_1", "name": "f", "arguments": "{}"}

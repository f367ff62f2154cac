"""The server-tool registry (``sse_chat.tools``): definitions from functions, calls
and their failures, settings, and the producer's loop over tool steps."""

from __future__ import annotations

import json
import threading
from enum import Enum
from typing import Annotated

import pytest
from pydantic import Field

from sse_chat.config import ConfigError, Settings
from sse_chat.eventlog import MemoryEventLog
from sse_chat.models import ChatRequest, Delta, Message, ToolCallDelta, Usage
from sse_chat.protocol import read_frame
from sse_chat.streaming.producer import Producer, ProducerLimits
from sse_chat.tools.registry import ServerTool, ToolRegistry, import_function


class Unit(str, Enum):
    C = "celsius"
    F = "fahrenheit"


def forecast(city: Annotated[str, Field(description="a city name")], days: int = 1, unit: Unit = Unit.C) -> dict:
    """The weather to come.

    Longer text stays in the description."""
    return {"city": city, "days": days, "unit": unit.value}


def test_a_definition_comes_from_the_name_docstring_and_annotations():
    tool = ServerTool.from_function(forecast, "tests:forecast")
    function = tool.definition["function"]
    assert tool.definition["type"] == "function" and function["name"] == "forecast"
    assert function["description"] == "The weather to come.\n\nLonger text stays in the description."
    parameters = function["parameters"]
    assert parameters["type"] == "object" and parameters["required"] == ["city"]
    assert parameters["properties"]["city"]["description"] == "a city name"
    assert parameters["properties"]["days"]["type"] == "integer" and parameters["properties"]["days"]["default"] == 1
    assert "title" not in parameters
    json.dumps(tool.definition)  # JSON-serialisable, as it is sent upstream


def test_a_call_validates_its_arguments_and_returns_text_or_json():
    tool = ServerTool.from_function(forecast, "tests:forecast")
    outcome = tool.call('{"city": "Lyon", "days": "3", "unit": "fahrenheit"}', timeout_s=5)
    assert json.loads(outcome.content or "") == {"city": "Lyon", "days": 3, "unit": "fahrenheit"}
    bad = tool.call('{"days": "many"}', timeout_s=5)
    assert bad.error_type == "invalid_arguments" and "city" in (bad.error_message or "")
    assert "days" in (bad.error_message or "")
    assert tool.call("not json", timeout_s=5).error_type == "invalid_arguments"


def test_a_raising_tool_and_a_slow_tool_become_error_outcomes():
    def fails(x: str) -> str:
        raise KeyError(x)

    released = threading.Event()

    def waits(x: str) -> str:
        released.wait(10)
        return x

    outcome = ServerTool.from_function(fails, "t:fails").call('{"x": "k"}', timeout_s=5)
    assert (outcome.error_type, outcome.error_message) == ("tool_error", "KeyError: 'k'")
    assert outcome.as_event_data("c1", "fails") == {"tool_call_id": "c1", "name": "fails",
                                                    "error": {"type": "tool_error", "message": "KeyError: 'k'"}}
    slow = ServerTool.from_function(waits, "t:waits").call('{"x": "k"}', timeout_s=0.05)
    released.set()
    assert slow.error_type == "tool_timeout" and "0.05 s" in (slow.error_message or "")


def test_an_async_tool_is_awaited():
    async def later(x: str) -> str:
        return x * 2

    assert ServerTool.from_function(later, "t:later").call('{"x": "ab"}', timeout_s=5).content == "abab"


def test_functions_whose_arguments_cannot_come_from_json_are_refused():
    def star(*args: str) -> str:
        return ""

    with pytest.raises(ConfigError, match="t:star"):
        ServerTool.from_function(star, "t:star")
    with pytest.raises(ConfigError, match="not a function"):
        ServerTool.from_function(42, "t:number")  # type: ignore[arg-type]


@pytest.mark.parametrize(("path", "says"), [
    ("no_such_module_20:f", "whose module does not import: ModuleNotFoundError"),
    ("json:no_such_function", "json has no 'no_such_function'"),
    ("json", "not of the form module:function"),
])
def test_import_paths_that_do_not_import_are_refused_by_name(path, says):
    with pytest.raises(ConfigError, match=says) as raised:
        import_function(path)
    assert repr(path) in str(raised.value)


def test_two_tools_of_one_name_are_refused():
    with pytest.raises(ConfigError, match="two server tools are named 'forecast'"):
        ToolRegistry([ServerTool.from_function(forecast, "a"), ServerTool.from_function(forecast, "b")])


def test_the_example_tool_loads_and_answers():
    registry = ToolRegistry.load(["sse_chat.tools.example:current_time"], use_entry_points=False)
    tool = registry.get("current_time")
    assert tool is not None and registry.names == ("current_time",)
    assert tool.call('{"timezone": "UTC"}', timeout_s=5).content.endswith("+00:00")  # type: ignore[union-attr]
    assert tool.call('{"timezone": "Mars/Olympus"}', timeout_s=5).error_type == "tool_error"


def test_settings_read_and_validate_the_tool_variables():
    settings = Settings.from_env({"SSE_CHAT_TOOLS": " a.b:f , c:g ", "SSE_CHAT_TOOL_TIMEOUT_S": "2.5",
                                  "SSE_CHAT_MAX_TOOL_STEPS": "3"})
    assert (settings.tools, settings.tool_timeout_s, settings.max_tool_steps) == (("a.b:f", "c:g"), 2.5, 3)
    defaults = Settings.from_env({})
    assert (defaults.tools, defaults.tool_timeout_s, defaults.max_tool_steps) == ((), 30.0, 8)
    for name, value in (("SSE_CHAT_TOOLS", "a.b"), ("SSE_CHAT_TOOL_TIMEOUT_S", "0"), ("SSE_CHAT_MAX_TOOL_STEPS", "0")):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: value})


# -- the producer's loop ---------------------------------------------------------------------------


class CallsForever:
    """A model that calls ``forecast`` whenever it is offered, else answers "ok";
    it keeps every request it was given."""

    def __init__(self) -> None:
        self.requests: list[ChatRequest] = []

    def stream(self, request: ChatRequest):
        self.requests.append(request)
        names = [tool["function"]["name"] for tool in request.tools or ()]
        if "forecast" in names:
            yield Delta(tool_calls=(ToolCallDelta(0, f"call_{len(self.requests)}", "forecast", '{"city": "Nice"}'),))
            yield Delta(finish_reason="tool_calls", usage=Usage(3, 1))
        else:
            yield Delta(content="ok")
            yield Delta(finish_reason="stop", usage=Usage(3, 1))


def _run(model, steps: int, request: ChatRequest | None = None):
    log = MemoryEventLog(ttl_s=60, max_events=1000)
    registry = ToolRegistry([ServerTool.from_function(forecast, "t:forecast")])
    request = request or ChatRequest((Message("user", "weather?"),), "scripted")
    producer = Producer(log, "s", model, request, ProducerLimits(abandon_s=60, max_tool_steps=steps), tools=registry)
    producer.create_stream(None)
    producer.run()
    return [read_frame(frame) for frame in log.open("s", -1).take().frames]


def test_the_model_is_called_again_at_most_max_tool_steps_times_and_last_without_server_tools():
    model = CallsForever()
    events = _run(model, steps=3)
    assert len(model.requests) == 4
    assert [len(r.tools or ()) for r in model.requests] == [1, 1, 1, 0]
    assert [e.type for e in events].count("tool_result") == 3
    last = model.requests[-1].messages
    assert [m.role for m in last] == ["user", "assistant", "tool", "assistant", "tool", "assistant", "tool"]
    assert last[1].tool_calls[0].id == last[2].tool_call_id == "call_1"
    done = events[-1].data
    assert done["finish_reason"] == "stop" and done["usage"] == {"prompt_tokens": 12, "completion_tokens": 4,
                                                                   "total_tokens": 16}
    assert "tool_calls" not in done


def test_a_client_tool_of_the_same_name_is_the_clients():
    model = CallsForever()
    client_tool = {"type": "function", "function": {"name": "forecast", "parameters": {"type": "object"}}}
    request = ChatRequest((Message("user", "weather?"),), "scripted", tools=(client_tool,))
    events = _run(model, steps=3, request=request)
    assert len(model.requests) == 1 and model.requests[0].tools == (client_tool,)
    assert "tool_result" not in [e.type for e in events]
    assert events[-1].data["finish_reason"] == "tool_calls"
    assert [c["name"] for c in events[-1].data["tool_calls"]] == ["forecast"]


def _installed(tmp_path, monkeypatch, entry_points: str) -> None:
    """A distribution "demo-tools" with ``entry_points`` (entry_points.txt text),
    installed on ``sys.path`` for this test."""
    info = tmp_path / "demo_tools-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-tools\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    monkeypatch.syspath_prepend(str(tmp_path))


def test_an_installed_package_adds_tools_through_the_entry_point_group(tmp_path, monkeypatch):
    _installed(tmp_path, monkeypatch, "[sse_chat.tools]\nweather = tests.test_tool_registry:forecast\n")
    registry = ToolRegistry.load(["sse_chat.tools.example:current_time"])
    assert registry.names == ("current_time", "forecast")  # SSE_CHAT_TOOLS first, then entry points
    assert ToolRegistry.load([], use_entry_points=False).names == ()


def test_an_entry_point_that_does_not_import_is_refused_by_name(tmp_path, monkeypatch):
    _installed(tmp_path, monkeypatch, "[sse_chat.tools]\nbroken = no_such_module_20:f\n")
    with pytest.raises(ConfigError, match=r"the entry point broken = 'no_such_module_20:f' \(group sse_chat.tools\) "
                                          r"does not import: ModuleNotFoundError"):
        ToolRegistry.load([])


def test_a_cancel_while_a_tool_runs_ends_the_stream_after_its_result():
    log = MemoryEventLog(ttl_s=60, max_events=1000)

    def forecast(city: str) -> str:
        log.request_cancel("s")  # a DELETE that arrives while the tool runs
        return "sunny"

    model = CallsForever()
    registry = ToolRegistry([ServerTool.from_function(forecast, "t:forecast")])
    producer = Producer(log, "s", model, ChatRequest((Message("user", "weather?"),), "scripted"),
                        ProducerLimits(abandon_s=60), tools=registry)
    producer.create_stream(None)
    producer.run()
    events = [read_frame(frame) for frame in log.open("s", -1).take().frames]
    assert [e.type for e in events][-2:] == ["tool_result", "done"]
    assert events[-2].data["content"] == "sunny" and events[-1].data["finish_reason"] == "cancelled"
    assert len(model.requests) == 1  # the model was not called again

"""Tools the service runs itself (``SSE_CHAT_TOOLS``): ``tool_result`` events, the
model called again with the results, every call run exactly once, on every
surface. The tools are ``tests/server_tools.py``'s, which record each call in a
file, so that calls on any worker or host are counted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import openai
import pytest
import requests

from sse_chat.testing.servers import BIN, base_env, free_port, run_cli, wait_until

from . import ROOT, server_tools
from .event_reading import answer_text, assert_well_formed, events_of, stream_of
from .proxy import CuttingProxy

SHOUT = "tests.server_tools:shout"


def _quoted(*results: str) -> str:
    """The fake model's answer after tool results: one sentence quoting each."""
    return "\n".join(f"The tool {name} answered: «{content}»." for name, content in results)


@pytest.fixture
def calls_file(tmp_path) -> Path:
    return tmp_path / "tool-calls.txt"


@pytest.fixture
def tool_server(gunicorn, calls_file):
    """``tool_server(SSE_CHAT_TOOLS=…, **env)``: gunicorn that imports ``tests``
    and records tool calls in ``calls_file``."""

    def start(tools: str = SHOUT, **env: str):
        return gunicorn(SSE_CHAT_TOOLS=tools, PYTHONPATH=str(ROOT), SSE_CHAT_TEST_TOOL_CALLS=str(calls_file),
                        **{"SSE_CHAT_FAKE_DELAY_MS": "5", **env})

    return start


def _post(server, body: dict, **headers: str):
    response = requests.post(server.url + "/v1/chat", json=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return events_of([response.content])


def test_a_server_tool_runs_once_and_the_model_answers_from_its_result(tool_server, calls_file):
    server = tool_server()
    events = _post(server, {"prompt": "make some noise"})
    assert_well_formed(events)
    types = [e.type for e in events]
    first_token = types.index("token")
    assert types[0] == "start" and types[-1] == "done"
    assert set(types[1:first_token - 1]) == {"tool_call"} and first_token > 2
    assert types[first_token - 1] == "tool_result" and set(types[first_token:-1]) == {"token"}
    calls = [json.loads(e.data) for e in events if e.type == "tool_call"]
    result = json.loads(events[first_token - 1].data)
    assert result == {"tool_call_id": calls[0]["id"], "name": "shout", "content": "MAKE SOME NOISE"}
    assert "".join(c["arguments"] for c in calls) == json.dumps({"text": "make some noise"})
    assert answer_text(events) == _quoted(("shout", "MAKE SOME NOISE"))
    done = json.loads(events[-1].data)
    assert done["finish_reason"] == "stop" and "tool_calls" not in done
    assert done["usage"]["completion_tokens"] > 0
    assert server_tools.calls(str(calls_file)) == ["shout make some noise"]
    metrics = requests.get(server.url + "/metrics", timeout=10).text
    assert 'sse_chat_tool_calls_total{outcome="ok",tool="shout"} 1.0' in metrics


def test_cut_at_random_five_cli_runs_print_the_uncut_answer_and_run_the_tool_once_each(tool_server, calls_file):
    server = tool_server(SSE_CHAT_FAKE_DELAY_MS="20")
    host, port = server.url.removeprefix("http://").split(":")
    with CuttingProxy((host, int(port)), 350, 900, seed=20) as proxy:
        for run in range(5):
            prompt = f"cut run {run} ünïcode"
            result = run_cli("ask", "--url", proxy.url, "--retries", "10", prompt, env=base_env())
            assert result.returncode == 0, result.stderr.decode()
            assert result.stdout.decode() == _quoted(("shout", prompt.upper()))
            assert f"tool result shout {prompt.upper()}\n" in result.stderr.decode()
            assert server_tools.calls(str(calls_file)).count(f"shout {prompt}") == 1
    assert proxy.connections >= 10  # the streams were cut, and resumed
    assert len(server_tools.calls(str(calls_file))) == 5


def test_a_repeat_with_the_same_idempotency_key_runs_the_tool_no_more(tool_server, calls_file):
    server = tool_server()
    first = _post(server, {"prompt": "once only"}, **{"Idempotency-Key": "k-20"})
    again = _post(server, {"prompt": "once only"}, **{"Idempotency-Key": "k-20"})
    assert [(e.last_event_id, e.data) for e in again] == [(e.last_event_id, e.data) for e in first]
    assert server_tools.calls(str(calls_file)) == ["shout once only"]


def test_a_tool_that_raises_gives_an_error_result_and_the_stream_ends_done(tool_server, calls_file):
    server = tool_server("tests.server_tools:explode")
    workers = server.worker_pids()
    events = _post(server, {"prompt": "boom"})
    assert_well_formed(events)
    [result] = [json.loads(e.data) for e in events if e.type == "tool_result"]
    assert result["name"] == "explode" and "content" not in result
    assert result["error"] == {"type": "tool_error", "message": "ValueError: cannot explode 'boom'"}
    assert "Traceback" not in b"".join(e.data.encode() for e in events).decode()
    assert events[-1].type == "done" and json.loads(events[-1].data)["finish_reason"] == "stop"
    assert answer_text(events) == _quoted(("explode", "error tool_error: ValueError: cannot explode 'boom'"))
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
    assert server.worker_pids() == workers  # the worker lives
    assert server_tools.calls(str(calls_file)) == ["explode boom"]
    metrics = requests.get(server.url + "/metrics", timeout=10).text
    assert 'sse_chat_tool_calls_total{outcome="tool_error",tool="explode"} 1.0' in metrics


def test_a_tool_past_the_timeout_gives_tool_timeout_while_other_streams_go_on(tool_server):
    server = tool_server("tests.server_tools:dawdle", SSE_CHAT_TOOL_TIMEOUT_S="0.5")
    events = _post(server, {"prompt": "slowly"})
    [result] = [json.loads(e.data) for e in events if e.type == "tool_result"]
    assert result["error"]["type"] == "tool_timeout" and "0.5 s" in result["error"]["message"]
    assert events[-1].type == "done"


def test_the_cli_writes_the_tool_result_to_stderr_and_only_the_answer_to_stdout(tool_server):
    server = tool_server()
    result = run_cli("ask", "--url", server.url, "--no-log", "quiet please", env=base_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == _quoted(("shout", "QUIET PLEASE"))
    assert result.stderr.decode() == "tool result shout QUIET PLEASE\n"


def test_a_client_tool_is_still_the_clients_to_run(tool_server, calls_file):
    server = tool_server()
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    events = _post(server, {"prompt": "Paris", "tools": [weather]})
    done = json.loads(events[-1].data)
    assert done["finish_reason"] == "tool_calls" and [c["name"] for c in done["tool_calls"]] == ["get_weather"]
    assert "tool_result" not in [e.type for e in events]
    assert server_tools.calls(str(calls_file)) == []


@pytest.mark.parametrize("stream", [False, True])
def test_the_openai_surface_answers_only_the_final_text(tool_server, calls_file, stream):
    server = tool_server()
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)
    messages = [{"role": "user", "content": "louder"}]
    if stream:
        chunks = list(client.chat.completions.create(model="fake", messages=messages, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        completion = client.chat.completions.create(model="fake", messages=messages)
        text = completion.choices[0].message.content
        assert completion.choices[0].message.tool_calls is None
        finish = [completion.choices[0].finish_reason]
    assert text == _quoted(("shout", "LOUDER")) and finish == ["stop"]
    assert server_tools.calls(str(calls_file)) == ["shout louder"]


@pytest.mark.redis
def test_readers_on_another_host_never_run_the_tool_again(gunicorn, redis_server, calls_file):
    env = {"SSE_CHAT_TOOLS": SHOUT, "PYTHONPATH": str(ROOT), "SSE_CHAT_TEST_TOOL_CALLS": str(calls_file),
           "SSE_CHAT_REDIS_URL": redis_server.url, "SSE_CHAT_FAKE_DELAY_MS": "5"}
    first, second = gunicorn(**env), gunicorn(**env)
    events = _post(first, {"prompt": "shared"})
    stream_id = stream_of(events[0].last_event_id)
    for position in range(len(events) - 1):
        resumed = events_of([requests.get(f"{second.url}/v1/streams/{stream_id}", timeout=30,
                                          headers={"Last-Event-ID": events[position].last_event_id}).content])
        assert [e.data for e in resumed] == [e.data for e in events[position + 1:]]
    assert server_tools.calls(str(calls_file)) == ["shout shared"]


@pytest.mark.parametrize(("tools", "says"), [
    ("no_such_module_20:shout", "no_such_module_20:shout"),
    ("tests.server_tools:no_such_function", "tests.server_tools:no_such_function"),
    ("not-a-path", "module:function"),
])
def test_start_up_refuses_a_tool_that_does_not_import_and_names_it(tmp_path, tools, says):
    process = subprocess.run(
        [str(BIN / "gunicorn"), "-c", "python:sse_chat.gunicorn_config"], cwd=tmp_path, capture_output=True,
        env=base_env(SSE_CHAT_TOOLS=tools, PYTHONPATH=str(ROOT), SSE_CHAT_BIND=f"127.0.0.1:{free_port()}"),
        timeout=60)
    assert process.returncode != 0
    assert says in process.stderr.decode()


def test_the_example_tool_answers_through_the_cli_in_process():
    result = run_cli("ask", "--fake", "--no-log", "Europe/Paris",
                     env=base_env(SSE_CHAT_TOOLS="sse_chat.tools.example:current_time"))
    assert result.returncode == 0, result.stderr
    line = result.stderr.decode()
    assert line.startswith("tool result current_time ") and ("+01:00" in line or "+02:00" in line)
    assert line.removeprefix("tool result current_time ").strip() in result.stdout.decode()


@pytest.mark.browser
def test_the_page_shows_the_call_and_its_result_as_a_collapsed_block(tool_server, browser, calls_file, tmp_path):
    server = tool_server(SSE_CHAT_FAKE_DELAY_MS="20")
    page = browser.new_page(viewport={"width": 900, "height": 500})
    try:
        page.goto(server.url + "/")
        page.fill("#prompt", "make it loud")
        page.press("#prompt", "Enter")
        page.wait_for_function("() => document.querySelector('#conversation li.assistant')?.dataset.finishReason")
        page.screenshot(path=str(tmp_path / "server-tool-collapsed.png"))
        shown = page.evaluate("""() => {
            const li = document.querySelector('#conversation li.assistant');
            const call = li.querySelector('.tool-call');
            return {name: call.querySelector('.tool-name').textContent, open: call.open,
                    visible: call.querySelector('.tool-result').checkVisibility(),
                    answer: li.querySelector('.answer').textContent.trim(), finish: li.dataset.finishReason};
        }""")
        page.click(".tool-call summary")
        page.screenshot(path=str(tmp_path / "server-tool-open.png"))
        opened = page.evaluate("""() => {
            const result = document.querySelector('.tool-call .tool-result');
            return {text: result.textContent, visible: result.checkVisibility()};
        }""")
    finally:
        page.close()
    assert shown == {"name": "shout", "open": False, "visible": False, "answer": _quoted(("shout", "MAKE IT LOUD")),
                     "finish": "stop"}
    assert opened == {"text": "MAKE IT LOUD", "visible": True}
    assert server_tools.calls(str(calls_file)) == ["shout make it loud"]


def test_the_python_client_yields_the_tool_result(tool_server):
    from sse_chat.client import ChatClient

    server = tool_server()
    events = list(ChatClient(server.url).stream(prompt="client side"))
    [result] = [e.data for e in events if e.event == "tool_result"]
    assert result["name"] == "shout" and result["content"] == "CLIENT SIDE"
    assert "".join(e.content for e in events) == _quoted(("shout", "CLIENT SIDE"))


@pytest.mark.redis
def test_a_producer_killed_while_its_tool_runs_ends_the_stream_with_stream_lost(gunicorn, redis_server, calls_file):
    # docs/tools.md: the tool may then have run; the stream ends as any other
    # whose producer died, and no reader runs the tool again.
    env = {"SSE_CHAT_TOOLS": "tests.server_tools:dawdle", "PYTHONPATH": str(ROOT),
           "SSE_CHAT_TEST_TOOL_CALLS": str(calls_file), "SSE_CHAT_REDIS_URL": redis_server.url,
           "SSE_CHAT_FAKE_DELAY_MS": "0"}
    producing, reading = gunicorn(**env), gunicorn(**env)
    with requests.post(producing.url + "/v1/chat", json={"prompt": "never answered"}, stream=True,
                       timeout=30) as response:
        start = events_of([next(response.iter_content(chunk_size=None))])[0]
        wait_until(lambda: server_tools.calls(str(calls_file)) == ["dawdle never answered"], 10, "the tool's call")
        [worker] = producing.worker_pids()
        os.kill(worker, signal.SIGKILL)
    stream_id = stream_of(start.last_event_id)
    events = events_of([requests.get(f"{reading.url}/v1/streams/{stream_id}", timeout=60).content])
    assert_well_formed(events)
    assert "tool_result" not in [e.type for e in events]
    assert events[-1].type == "error" and json.loads(events[-1].data)["error"]["type"] == "stream_lost"
    assert server_tools.calls(str(calls_file)) == ["dawdle never answered"]

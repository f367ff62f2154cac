"""One table of event types (``sse_chat.protocol.EVENT_TYPES``), and every type run
through every consumer: the encoder, the OpenAI surface, the Python client, the CLI
and the chat page. Each consumer is fed a stream that holds every declared type
(the table's own examples) and one type the table does not declare, which each
must pass over without taking it for the end."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server

from sse_chat.app import create_app
from sse_chat.client import ChatClient, ChatError
from sse_chat.config import Settings
from sse_chat.formats.chat_completions import DONE_FRAME, CompletionChunks, completion
from sse_chat.protocol import (
    EVENT_TYPES,
    TERMINAL_TYPES,
    Event,
    EventId,
    EventStreamDecoder,
    EventType,
    event_types_module,
    read_frame,
)
from sse_chat.testing.servers import base_env, free_port, run_cli

STREAM_ID = EVENT_TYPES["start"].example["stream_id"]
#: A type no table declares, as a newer service might send.
UNDECLARED = "from_the_future"


def _stream(terminal: str) -> list[Event]:
    """``start``, an undeclared type, every other non-terminal type, then ``terminal``."""
    names = [name for name, kind in EVENT_TYPES.items() if not kind.terminal and name != "start"]
    data = [("start", EVENT_TYPES["start"].example), (UNDECLARED, {"anything": 1}),
            *((name, EVENT_TYPES[name].example) for name in names), (terminal, EVENT_TYPES[terminal].example)]
    return [Event(EventId(STREAM_ID, seq), name, dict(value)) for seq, (name, value) in enumerate(data)]


def test_the_table_declares_every_event_type_once_with_an_example_holding_its_fields():
    assert list(EVENT_TYPES) == [t.value for t in EventType]
    assert set(TERMINAL_TYPES) == {"done", "error"}
    for name, kind in EVENT_TYPES.items():
        assert kind.type.value == name
        assert set(kind.fields) <= set(kind.example), name
        assert set(kind.example) <= set(kind.fields) | set(kind.optional), name
    assert [n for n, k in EVENT_TYPES.items() if k.answer_text] == ["token"]


@pytest.mark.parametrize("name", list(EVENT_TYPES))
def test_the_encoder_writes_each_type_as_a_frame_that_reads_back(name):
    event = Event(EventId(STREAM_ID, 3), name, dict(EVENT_TYPES[name].example))
    frame = event.encode()
    assert read_frame(frame) == event
    [dispatched] = EventStreamDecoder().iter_events([frame])
    assert (dispatched.type, json.loads(dispatched.data), dispatched.last_event_id) == (
        name, EVENT_TYPES[name].example, f"{STREAM_ID}:3")
    assert event.terminal == EVENT_TYPES[name].terminal


def test_the_page_module_is_the_table():
    module = event_types_module()
    assert module.startswith("// ") and "export const EVENT_TYPES = Object.freeze(" in module
    table = json.loads(module.split("Object.freeze(", 1)[1].rsplit(");", 1)[0])
    assert table == {name: kind.as_json() for name, kind in EVENT_TYPES.items()}


@pytest.mark.parametrize("terminal", sorted(TERMINAL_TYPES))
def test_the_openai_chunks_end_only_at_a_terminal_type(terminal):
    chunks = CompletionChunks(STREAM_ID, "fake", 0, include_usage=False)
    frames_per_event = []
    for event in _stream(terminal):
        assert not chunks.ended, event.type
        frames_per_event.append((event.type, chunks.frames(event)))
    assert chunks.ended
    by_type = dict(frames_per_event)
    assert by_type[UNDECLARED] == [] and by_type["tool_result"] == []  # no place in OpenAI's chunks
    for name in ("start", "token", "reasoning", "tool_call"):
        assert len(by_type[name]) == 1 and DONE_FRAME not in by_type[name]
    assert (DONE_FRAME in by_type[terminal]) == (terminal == "done")


@pytest.mark.parametrize("terminal", sorted(TERMINAL_TYPES))
def test_an_openai_completion_collects_every_type_up_to_the_terminal_one(terminal):
    body, error = completion(STREAM_ID, "fake", 0, _stream(terminal))
    if terminal == "error":
        assert body is None and error == EVENT_TYPES["error"].example["error"]
        return
    assert error is None and body is not None
    message = body["choices"][0]["message"]
    assert message["content"] == EVENT_TYPES["token"].example["content"]
    assert message["reasoning_content"] == EVENT_TYPES["reasoning"].example["content"]
    assert body["choices"][0]["finish_reason"] == "stop"


# -- the Python client, the CLI and the page, over HTTP ---------------------------------------


class _CannedChat:
    """The real app, except that ``POST /v1/chat`` answers :func:`_stream`: ending
    with ``error`` when the prompt is ``"fail"``, else with ``done``."""

    def __init__(self) -> None:
        self.app = create_app(Settings().with_overrides(fake_delay_ms=0))

    def __call__(self, environ, start_response) -> Iterator[bytes]:
        if environ["PATH_INFO"] != "/v1/chat" or environ["REQUEST_METHOD"] != "POST":
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length) or b"{}")
        asked = body.get("prompt") or (body.get("messages") or [{}])[-1].get("content")
        frames = [event.encode() for event in _stream("error" if asked == "fail" else "done")]
        start_response("200 OK", [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache")])
        return iter([b"retry: 1000\n", *frames])


@pytest.fixture(scope="module")
def canned_server():
    port = free_port()
    server = make_server("127.0.0.1", port, _CannedChat(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    thread.join(10)


def test_the_client_yields_every_type_and_ends_at_done(canned_server):
    client = ChatClient(canned_server, retries=0)
    events = [(e.event, e.data) for e in client.stream(prompt="x")]
    assert events == [(e.type, e.data) for e in _stream("done")]


def test_the_client_yields_every_type_and_raises_at_error(canned_server):
    seen = []
    client = ChatClient(canned_server, retries=0)
    with pytest.raises(ChatError) as raised:
        for event in client.stream(prompt="fail"):
            seen.append(event.event)
    assert seen == [e.type for e in _stream("error")]
    assert raised.value.type == EVENT_TYPES["error"].example["error"]["type"]


def test_the_cli_writes_answer_text_to_stdout_and_tool_results_to_stderr(canned_server):
    result = run_cli("ask", "--url", canned_server, "--no-log", "x", env=base_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == EVENT_TYPES["token"].example["content"]
    example = EVENT_TYPES["tool_result"].example
    assert f"tool result {example['name']} {example['content']}\n" in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()


def test_the_cli_json_lines_hold_every_type_and_an_error_exits_1(canned_server):
    result = run_cli("ask", "--url", canned_server, "--no-log", "--json", "fail", env=base_env())
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [line["event"] for line in lines] == [e.type for e in _stream("error")]


@pytest.mark.browser
@pytest.mark.parametrize("terminal", sorted(TERMINAL_TYPES))
def test_the_page_handles_every_type_and_ends_at_the_terminal_one(canned_server, browser, terminal, tmp_path):
    page = browser.new_page(viewport={"width": 900, "height": 500})
    try:
        page.goto(canned_server + "/")
        page.fill("#prompt", "fail" if terminal == "error" else "x")
        page.press("#prompt", "Enter")
        page.wait_for_function("() => !document.querySelector('#conversation li.streaming')"
                               " && document.querySelector('#conversation li.assistant')")
        page.screenshot(path=str(tmp_path / f"every-type-{terminal}.png"))
        shown = page.evaluate("""() => {
            const li = document.querySelector('#conversation li.assistant');
            return {answer: li.querySelector('.answer').textContent,
                    calls: [...li.querySelectorAll('.tool-call')].map(c => [
                        c.querySelector('.tool-name').textContent, c.querySelector('.tool-arguments').textContent,
                        c.querySelector('.tool-result')?.textContent, c.open]),
                    finish: li.dataset.finishReason || null, error: li.classList.contains('error'),
                    note: li.querySelector('.note')?.textContent || ''};
        }""")
    finally:
        page.close()
    call, result = EVENT_TYPES["tool_call"].example, EVENT_TYPES["tool_result"].example
    assert shown["answer"].strip() == EVENT_TYPES["token"].example["content"].strip()
    assert shown["calls"] == [[call["name"], call["arguments"], result["content"], False]]  # collapsed
    if terminal == "done":
        assert shown["finish"] == "stop" and not shown["error"]
    else:
        assert shown["error"] and EVENT_TYPES["error"].example["error"]["message"] in shown["note"]

"""``sse_chat.client.ChatClient`` against real servers (the pytest plugin's), a
scripted gateway and nothing at all."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from sse_chat.client import ChatClient, ChatError, check_base_url
from sse_chat.testing.servers import base_env, free_port

from .event_reading import events_of, seq_of
from .gateway import Answer, Forward, ScriptedGateway, unavailable
from .proxy import CuttingProxy

ROOT = Path(__file__).resolve().parent.parent
SERVER_MODULES = ("flask", "gevent", "openai", "werkzeug", "redis", "sse_chat.app", "sse_chat.surfaces.routes")


def _no_sleep(client_kwargs=None):
    waits: list[float] = []
    return waits, {"sleep": waits.append, "jitter": lambda: 0.0, **(client_kwargs or {})}


def _address(url):
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _recording_session():
    """A session that keeps every request it sent: (method, path, headers)."""
    session = requests.Session()
    sent: list[tuple[str, str, dict]] = []
    session.hooks["response"].append(
        lambda response, *args, **kwargs: sent.append((response.request.method, response.request.path_url,
                                                       dict(response.request.headers))))
    return session, sent


def test_ask_returns_the_answer_text_and_the_done_data(sse_chat_server):
    answer = ChatClient(sse_chat_server.url).ask("hello", max_tokens=20)
    events = events_of([requests.post(sse_chat_server.url + "/v1/chat",
                                      json={"prompt": "hello", "max_tokens": 20}).content])
    assert answer == "".join(json.loads(e.data)["content"] for e in events if e.type == "token")
    assert isinstance(answer, str) and answer.finish_reason == "length"
    assert answer.usage["completion_tokens"] == 20 and answer.done == json.loads(events[-1].data)
    assert answer.last_event_id == f"{answer.stream_id}:21"


def test_stream_yields_parsed_events_with_ids(sse_chat_server):
    stream = ChatClient(sse_chat_server.url).stream("hi", max_tokens=3)
    events = list(stream)
    assert [e.event for e in events] == ["start", "token", "token", "token", "done"]
    assert [e.id for e in events] == [f"{stream.stream_id}:{i}" for i in range(5)]
    assert events[0].data["stream_id"] == stream.stream_id and events[0].content == ""
    assert all(isinstance(e.data["content"], str) and e.content == e.data["content"] for e in events[1:4])
    assert json.loads(events[-1].raw_data) == events[-1].data == stream.done


def test_dropped_responses_are_followed_with_last_event_id_nothing_lost_or_repeated(sse_chat_server):
    waits, kwargs = _no_sleep()
    retries: list[tuple] = []
    session, sent = _recording_session()
    client = ChatClient(sse_chat_server.url, retries=1, session=session, on_retry=lambda *a: retries.append(a),
                        **kwargs)
    uncut = client.ask("cut me", max_tokens=30)
    stream = client.stream("cut me", max_tokens=30, fake={"drop_every": 4})
    events = list(stream)
    assert [seq_of(e.id) for e in events] == list(range(32))
    assert "".join(e.content for e in events) == uncut
    gets = [headers for method, _, headers in sent if method == "GET"]
    assert len(gets) == len(retries) == len(waits) == 7  # 32 events, 4 per response
    assert [h["Last-Event-ID"] for h in gets] == [f"{stream.stream_id}:{4 * i - 1}" for i in range(1, 8)]
    assert retries[0][0] == "the stream ended before its last event" and retries[0][2:] == (1, 1)


def test_resume_continues_after_an_event_and_is_empty_when_over(sse_chat_server):
    client = ChatClient(sse_chat_server.url)
    whole = list(client.stream("again", max_tokens=6))
    rest = list(client.resume(whole[3].id))
    assert [e.id for e in rest] == [e.id for e in whole[4:]]
    assert list(client.resume(whole[-1].id)) == []
    with pytest.raises(ValueError):
        client.resume("not-an-id")


def test_an_error_event_is_yielded_then_raised_with_its_type_and_message(sse_chat_server):
    stream = ChatClient(sse_chat_server.url).stream("x", max_tokens=10, fake={"error_after": 2,
                                                                            "error_type": "quota_exceeded"})
    seen = []
    with pytest.raises(ChatError) as caught:
        for event in stream:
            seen.append(event.event)
    assert seen == ["start", "token", "token", "error"]
    assert caught.value.type == "quota_exceeded" and caught.value.message and caught.value.status is None
    assert caught.value.stream_id == stream.stream_id and caught.value.last_event_id == f"{stream.stream_id}:3"


def test_an_http_error_raises_with_its_status_type_and_message(sse_chat_server):
    with pytest.raises(ChatError) as caught:
        ChatClient(sse_chat_server.url).ask("x", fake={"no_such_fault": 1})
    assert caught.value.status == 400 and caught.value.type == "invalid_request"
    assert "no_such_fault" in caught.value.message


def test_a_refused_first_connection_fails_at_once():
    waits, kwargs = _no_sleep()
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ChatError) as caught:
        ChatClient(url, **kwargs).ask("hi")
    assert caught.value.type == "connection_refused" and url in caught.value.message and waits == []


def test_idempotency_key_is_fresh_per_question_and_kept_on_retries(sse_chat_server):
    waits, kwargs = _no_sleep()
    session, sent = _recording_session()
    with ScriptedGateway(_address(sse_chat_server.url), [unavailable(retry_after_s=0), Forward()]) as gateway:
        client = ChatClient(gateway.url, session=session, **kwargs)
        client.ask("one", max_tokens=2)
        client.ask("two", max_tokens=2)
    keys = [headers["Idempotency-Key"] for method, _, headers in sent if method == "POST"]
    assert len(keys) == 3 and keys[0] == keys[1] != keys[2] and len(waits) == 1
    assert all(re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", k) for k in keys)


def test_a_409_idempotency_key_in_use_is_retried_with_the_same_key(sse_chat_server):
    waits, kwargs = _no_sleep()
    session, sent = _recording_session()
    in_use = Answer(409, (("Content-Type", "application/json"), ("Retry-After", "1")), json.dumps(
        {"error": {"type": "idempotency_key_in_use", "message": "still starting"}}).encode())
    with ScriptedGateway(_address(sse_chat_server.url), [in_use, Forward()]) as gateway:
        answer = ChatClient(gateway.url, session=session, **kwargs).ask("one", max_tokens=2)
    keys = [headers["Idempotency-Key"] for method, _, headers in sent if method == "POST"]
    assert len(keys) == 2 and keys[0] == keys[1] and waits == [1.0]
    assert answer.finish_reason == "length"


def test_gives_up_after_retries_in_a_row():
    waits, kwargs = _no_sleep()
    with (ScriptedGateway(("127.0.0.1", free_port()), [unavailable(retry_after_s=0)] * 3) as gateway,
          pytest.raises(ChatError) as caught):
        ChatClient(gateway.url, retries=2, **kwargs).ask("hi")
    assert caught.value.type == "gave_up" and "HTTP 503" in caught.value.message
    assert len(gateway.seen) == 3 and len(waits) == 2 and waits[1] == 2 * waits[0]


def test_cancel_stops_the_stream(sse_chat_server):
    client = ChatClient(sse_chat_server.url)
    stream = client.stream("long", max_tokens=2000, fake={"delay_ms": 20})
    for event in stream:
        if event.event == "token":
            assert client.cancel(stream.stream_id)
            break
    rest = list(client.resume(stream.last_event_id))
    assert rest[-1].event == "done" and rest[-1].data["finish_reason"] == "cancelled"
    assert not client.cancel("no-such-stream")


@pytest.mark.parametrize("url", ["notaurl", "ftp://x", "http://", "http://h:port"])
def test_a_malformed_base_url_is_a_value_error(url):
    with pytest.raises(ValueError):
        check_base_url(url)
    assert check_base_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"


def test_the_docs_example_runs(sse_chat_server):
    page = (ROOT / "docs" / "python-client.md").read_text()
    code = re.search(r"```python\n(.*?)```", page, re.S).group(1)
    result = subprocess.run([sys.executable, "-c", code], env=base_env(SSE_CHAT_URL=sse_chat_server.url),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1] == "length 5" and lines[3].startswith("stream ")
    assert lines[-1].startswith("failed: backend_unavailable 503 model 'no-such-model'")


def test_the_client_and_the_cli_import_no_server_code():
    code = ("import sys; import sse_chat.client, sse_chat.cli.main; "
            f"print([m for m in {SERVER_MODULES!r} if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout.strip() == "[]"


def test_sse_chat_ask_against_a_server_loads_no_server_code(sse_chat_server):
    code = ("import sys, atexit\n"
            f"atexit.register(lambda: print([m for m in {SERVER_MODULES!r} if m in sys.modules], file=sys.stderr))\n"
            "from sse_chat.cli.main import main\n"
            f"sys.argv = ['sse-chat', 'ask', '--url', {sse_chat_server.url!r}, '--max-tokens', '3', 'hi']\n"
            "main()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env=base_env(), stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout and result.stderr.strip() == "[]"


def test_through_a_proxy_that_cuts_every_connection_the_events_arrive_exactly_once(gunicorn):
    """The client behind a TCP proxy that cuts each connection after 200-3,000 bytes
    of the answer: the same events as uncut, gap-free, one terminal event."""
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="1", SSE_CHAT_RETRY_MS="10")
    uncut = list(ChatClient(server.url).stream("cut me", max_tokens=400))
    with CuttingProxy(_address(server.url), 200, 3000, seed=2) as proxy:
        cut = list(ChatClient(proxy.url, retries=50).stream("cut me", max_tokens=400))
    assert proxy.connections > 3
    assert [seq_of(e.id) for e in cut] == list(range(len(cut)))
    assert [e.event for e in cut].count("done") == 1 and cut[-1].event == "done"
    assert [e.content for e in cut] == [e.content for e in uncut]


@pytest.mark.parametrize("client_class", ["ChatClient", "AsyncChatClient"])
def test_mistakes_in_the_arguments_fail_before_any_round_trip(client_class):
    """Against an address where nothing listens: a round trip would raise ChatError."""
    import asyncio

    import sse_chat.client

    client = getattr(sse_chat.client, client_class)(f"http://127.0.0.1:{free_port()}")

    def call(method, *args, **kwargs):
        result = getattr(client, method)(*args, **kwargs)
        if asyncio.iscoroutine(result):
            asyncio.run(result)

    with pytest.raises(TypeError, match="temprature"):
        call("ask", "hi", temprature=0.5)
    with pytest.raises(TypeError, match="temprature"):
        call("stream", "hi", temprature=0.5)
    for kwargs in ({}, {"messages": []}, {"max_tokens": 0}, {"temperature": 3}):
        with pytest.raises(ValueError):
            call("ask", None if not kwargs or "messages" in kwargs else "hi", **kwargs)
    with pytest.raises(TypeError):
        call("ask", 42)
    with pytest.raises(ValueError, match="timeout"):
        getattr(sse_chat.client, client_class)("http://127.0.0.1:9", timeout=0)
    with pytest.raises(TypeError):
        getattr(sse_chat.client, client_class)("http://127.0.0.1:9", retry=3)


def test_client_and_stream_are_context_managers_that_close(sse_chat_server):
    with ChatClient(sse_chat_server.url) as client:
        with client.stream("long", max_tokens=2000, fake={"delay_ms": 20}) as stream:
            first = next(stream)
        assert first.event == "start" and list(stream) == []  # closed: nothing more
        assert client.ask("hi", max_tokens=2).finish_reason == "length"
    assert all(not adapter.poolmanager.pools for adapter in client.session.adapters.values())
    given = requests.Session()
    with ChatClient(sse_chat_server.url, session=given) as other:
        other.ask("hi", max_tokens=2)
    assert given.adapters["http://"].poolmanager.pools  # a session given is left open


def test_the_read_timeout_is_the_longest_silence_then_it_resumes(sse_chat_server):
    """``timeout=(connect, read)``: a stall longer than ``read`` is a dropped
    connection, resumed with Last-Event-ID."""
    _waits, kwargs = _no_sleep()
    reasons: list[str] = []
    client = ChatClient(sse_chat_server.url, retries=2, timeout=(5, 0.5), on_retry=lambda r, *a: reasons.append(r),
                        **kwargs)
    with pytest.raises(ChatError) as caught:
        client.ask("stall", max_tokens=10, fake={"stall_after": 3})
    assert reasons == ["the server sent nothing for too long"] * 2
    assert caught.value.type == "gave_up" and caught.value.last_event_id.endswith(":3")

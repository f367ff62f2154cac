"""``AsyncChatClient`` (asyncio, httpx) against real servers: the pytest plugin's fake
server, gunicorn behind a proxy that cuts every connection, a scripted gateway, and
nothing at all. The same behaviour as ``ChatClient`` (tests/test_client.py)."""

import asyncio
import json
import subprocess
import sys

import httpx
import pytest
import requests

from sse_chat.client import AsyncChatClient, ChatClient, ChatError
from sse_chat.testing.servers import base_env, free_port

from .event_reading import events_of, seq_of
from .gateway import ScriptedGateway, unavailable
from .proxy import CuttingProxy


def _address(url):
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _recording_http():
    """An ``httpx.AsyncClient`` that keeps every request it sent: (method, path, headers)."""
    sent: list[tuple[str, str, dict]] = []

    async def record(request: httpx.Request) -> None:
        sent.append((request.method, request.url.path, dict(request.headers)))

    return httpx.AsyncClient(event_hooks={"request": [record]}), sent


def _no_sleep():
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    return waits, {"sleep": sleep, "jitter": lambda: 0.0}


async def _events(stream):
    return [event async for event in stream]


def test_ask_returns_the_same_answer_as_the_blocking_client(sse_chat_server):
    async def main():
        async with AsyncChatClient(sse_chat_server.url) as client:
            return await client.ask("hello", max_tokens=20)

    answer = asyncio.run(main())
    blocking = ChatClient(sse_chat_server.url).ask("hello", max_tokens=20)
    assert answer == blocking and answer.finish_reason == "length" and answer.usage == blocking.usage
    assert answer.last_event_id == f"{answer.stream_id}:21"


def test_stream_yields_parsed_events_with_ids(sse_chat_server):
    async def main():
        async with AsyncChatClient(sse_chat_server.url) as client, client.stream("hi", max_tokens=3) as stream:
            return await _events(stream), stream

    events, stream = asyncio.run(main())
    assert [e.event for e in events] == ["start", "token", "token", "token", "done"]
    assert [e.id for e in events] == [f"{stream.stream_id}:{i}" for i in range(5)]
    assert json.loads(events[-1].raw_data) == events[-1].data == stream.done


def test_dropped_responses_are_followed_with_last_event_id_nothing_lost_or_repeated(sse_chat_server):
    waits, kwargs = _no_sleep()
    retries: list[tuple] = []

    async def main():
        http, sent = _recording_http()
        async with AsyncChatClient(sse_chat_server.url, retries=1, http=http, on_retry=lambda *a: retries.append(a),
                                   **kwargs) as client:
            uncut = await client.ask("cut me", max_tokens=30)
            stream = client.stream("cut me", max_tokens=30, fake={"drop_every": 4})
            events = await _events(stream)
        await http.aclose()
        return uncut, stream, events, sent

    uncut, stream, events, sent = asyncio.run(main())
    assert [seq_of(e.id) for e in events] == list(range(32))
    assert "".join(e.content for e in events) == uncut
    gets = [headers for method, _, headers in sent if method == "GET"]
    assert len(gets) == len(retries) == len(waits) == 7  # 32 events, 4 per response
    assert [h["last-event-id"] for h in gets] == [f"{stream.stream_id}:{4 * i - 1}" for i in range(1, 8)]


def test_through_a_proxy_that_cuts_every_connection_the_events_arrive_exactly_once(gunicorn):
    """Behind a TCP proxy that cuts each connection after 200-3,000 bytes of the
    answer: the same events as uncut, gap-free, one terminal event."""
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="1", SSE_CHAT_RETRY_MS="10")
    uncut = events_of([requests.post(server.url + "/v1/chat", json={"prompt": "cut me", "max_tokens": 400}).content])

    async def main(url):
        async with AsyncChatClient(url, retries=50) as client:
            return await _events(client.stream("cut me", max_tokens=400))

    with CuttingProxy(_address(server.url), 200, 3000, seed=2) as proxy:
        cut = asyncio.run(main(proxy.url))
    assert proxy.connections > 3
    assert [seq_of(e.id) for e in cut] == list(range(len(cut)))
    assert [e.event for e in cut].count("done") == 1 and cut[-1].event == "done"
    assert [e.raw_data for e in cut][1:] == [e.data for e in uncut][1:]  # the start events differ by stream id


def test_resume_continues_after_an_event_and_is_empty_when_over(sse_chat_server):
    async def main():
        async with AsyncChatClient(sse_chat_server.url) as client:
            whole = await _events(client.stream("again", max_tokens=6))
            return whole, await _events(client.resume(whole[3].id)), await _events(client.resume(whole[-1].id))

    whole, rest, over = asyncio.run(main())
    assert [e.id for e in rest] == [e.id for e in whole[4:]] and over == []


def test_an_error_event_is_yielded_then_raised_and_http_errors_raise(sse_chat_server):
    seen = []

    async def main():
        async with AsyncChatClient(sse_chat_server.url) as client:
            with pytest.raises(ChatError) as event_error:
                async for event in client.stream("x", max_tokens=10, fake={"error_after": 2,
                                                                           "error_type": "quota_exceeded"}):
                    seen.append(event.event)
            with pytest.raises(ChatError) as http_error:
                await client.ask("x", fake={"no_such_fault": 1})
            return event_error.value, http_error.value

    event_error, http_error = asyncio.run(main())
    assert seen == ["start", "token", "token", "error"]
    assert event_error.type == "quota_exceeded" and event_error.status is None
    assert http_error.status == 400 and http_error.type == "invalid_request"


def test_a_refused_first_connection_and_an_unknown_host_fail_at_once():
    waits, kwargs = _no_sleep()
    url = f"http://127.0.0.1:{free_port()}"

    async def fails(base_url):
        async with AsyncChatClient(base_url, **kwargs) as client:
            with pytest.raises(ChatError) as caught:
                await client.ask("hi")
        return caught.value

    assert asyncio.run(fails(url)).type == "connection_refused"
    assert asyncio.run(fails("http://no-such-host.invalid:8000")).type == "unknown_host"
    assert waits == []


def test_503_is_retried_with_the_same_idempotency_key_then_given_up(sse_chat_server):
    waits, kwargs = _no_sleep()

    async def main(url, retries):
        http, sent = _recording_http()
        async with AsyncChatClient(url, retries=retries, http=http, **kwargs) as client:
            try:
                return await client.ask("one", max_tokens=2), sent
            except ChatError as exc:
                return exc, sent
            finally:
                await http.aclose()

    with ScriptedGateway(_address(sse_chat_server.url), [unavailable(retry_after_s=0)]) as gateway:
        answer, sent = asyncio.run(main(gateway.url, 5))
    keys = [headers["idempotency-key"] for method, _, headers in sent if method == "POST"]
    assert answer.finish_reason == "length" and len(keys) == 2 and keys[0] == keys[1] and len(waits) == 1
    with ScriptedGateway(("127.0.0.1", free_port()), [unavailable(retry_after_s=0)] * 3) as gateway:
        gave_up, _ = asyncio.run(main(gateway.url, 2))
    assert isinstance(gave_up, ChatError) and gave_up.type == "gave_up" and "HTTP 503" in gave_up.message


def test_cancel_stops_the_stream(sse_chat_server):
    async def main():
        async with AsyncChatClient(sse_chat_server.url) as client:
            async with client.stream("long", max_tokens=2000, fake={"delay_ms": 20}) as stream:
                async for event in stream:
                    if event.event == "token":
                        assert await client.cancel(stream.stream_id)
                        break
            rest = await _events(client.resume(stream.last_event_id))
            return rest, await client.cancel("no-such-stream")

    rest, cancelled_nothing = asyncio.run(main())
    assert rest[-1].event == "done" and rest[-1].data["finish_reason"] == "cancelled" and not cancelled_nothing


def test_many_streams_at_once_on_one_event_loop(sse_chat_server):
    async def main():
        async with AsyncChatClient(sse_chat_server.url) as client:
            return await asyncio.gather(*(client.ask(f"question {i}", max_tokens=15) for i in range(20)))

    answers = asyncio.run(main())
    blocking = ChatClient(sse_chat_server.url)
    assert answers == [blocking.ask(f"question {i}", max_tokens=15) for i in range(20)]


def test_closing_the_client_closes_its_own_http_client_only(sse_chat_server):
    async def main():
        own = AsyncChatClient(sse_chat_server.url)
        await own.close()
        given = httpx.AsyncClient()
        async with AsyncChatClient(sse_chat_server.url, http=given):
            pass
        return own.http.is_closed, given.is_closed

    assert asyncio.run(main()) == (True, False)


def test_the_async_client_is_not_imported_with_the_blocking_one():
    code = "import sys, sse_chat.client; print('httpx' in sys.modules, 'sse_chat.async_client' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True,
                            env=base_env())
    assert result.stdout.split() == ["False", "False"]


def test_the_docs_async_example_runs(sse_chat_server):
    from . import ROOT

    page = (ROOT / "docs" / "python-client.md").read_text()
    code = page.split("## AsyncChatClient", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    result = subprocess.run([sys.executable, "-c", code], env=base_env(SSE_CHAT_URL=sse_chat_server.url),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == ChatClient(sse_chat_server.url).ask("Tell me more", model="fake", max_tokens=3)
    assert lines[1] == "['length', 'length']"

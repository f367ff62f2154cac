"""Faults on request against real servers (gunicorn with gevent workers, through
the pytest plugin's ``sse_chat_server``): dropped responses followed with
Last-Event-ID by requests and by ``sse-chat ask``, injected errors and stalls,
and drops that hold on another server sharing the Redis event log."""

from __future__ import annotations

import json
import re
import time

import pytest
import redis
import requests

from sse_chat.eventlog import MemoryEventLog
from sse_chat.eventlog.redis_streams import RedisEventLog
from sse_chat.models import ChatRequest, Message
from sse_chat.models.fake import fake_tokens
from sse_chat.protocol import TERMINAL_TYPES, new_stream_id
from sse_chat.testing.servers import run_cli

from .event_reading import answer_text, assert_well_formed, events_of, stream_of

PROMPT = "Why is the sky blue?"
UNDROPPED_50 = "".join(fake_tokens(ChatRequest((Message("user", PROMPT),), "fake", 50)))
TIMEOUT = (5, 15)


def _responses(urls: list[str], body: dict) -> list[list]:
    """Start a stream at ``urls[0]`` and resume it with ``Last-Event-ID`` until its
    terminal event, the n-th response from ``urls[n % len(urls)]``. Returns the
    events of each response."""
    first = requests.post(urls[0] + "/v1/chat", json=body, timeout=TIMEOUT)
    assert first.status_code == 200, first.text
    responses = [events_of([first.content])]
    while responses[-1][-1].type not in TERMINAL_TYPES:
        last = responses[-1][-1].last_event_id
        url = urls[len(responses) % len(urls)]
        response = requests.get(f"{url}/v1/streams/{stream_of(last)}", headers={"Last-Event-ID": last},
                                timeout=TIMEOUT)
        assert response.status_code == 200, response.text
        responses.append(events_of([response.content]))
        assert len(responses) <= 20, "too many responses"
    return responses


def _assert_dropped_every_7(responses: list[list]) -> None:
    assert [len(r) for r in responses] == [7] * 7 + [3]  # 52 events: start, 50 tokens, done
    assert not [e.type for r in responses[:-1] for e in r if e.type in TERMINAL_TYPES]
    events = [e for r in responses for e in r]
    assert_well_formed(events)
    assert answer_text(events) == UNDROPPED_50


def test_drop_every_7_gives_7_events_per_response_and_resumes_collect_each_once(sse_chat_server):
    body = {"prompt": PROMPT, "max_tokens": 50, "fake": {"drop_every": 7, "delay_ms": 2}}
    _assert_dropped_every_7(_responses([sse_chat_server.url], body))


def test_get_chat_with_drop_every_resumes_on_the_same_url(sse_chat_server):
    """What EventSource does: the same GET URL again, with Last-Event-ID."""
    url = f"{sse_chat_server.url}/v1/chat?prompt=Hello&model=fake&max_tokens=10&drop_every=5"
    responses = [events_of([requests.get(url, timeout=TIMEOUT).content])]
    while responses[-1][-1].type != "done":
        headers = {"Last-Event-ID": responses[-1][-1].last_event_id}
        responses.append(events_of([requests.get(url, headers=headers, timeout=TIMEOUT).content]))
        assert len(responses) <= 5
    assert [len(r) for r in responses] == [5, 5, 2]
    assert_well_formed([e for r in responses for e in r])


def test_sse_chat_ask_prints_exactly_the_undropped_answer(sse_chat_server):
    result = run_cli("ask", "--url", sse_chat_server.url, "--fake", "--max-tokens", "50",
                     "--fake-option", "drop_every=7", PROMPT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == UNDROPPED_50
    assert result.stderr.decode().count("the stream ended before its last event; reconnecting") == 7


def test_error_after_5_ends_with_the_named_error_and_ask_exits_1(sse_chat_server):
    body = {"prompt": PROMPT, "max_tokens": 50, "fake": {"error_after": 5, "error_type": "quota_exceeded"}}
    events = events_of([requests.post(sse_chat_server.url + "/v1/chat", json=body, timeout=TIMEOUT).content])
    assert [e.type for e in events] == ["start"] + ["token"] * 5 + ["error"]
    assert json.loads(events[-1].data)["error"]["type"] == "quota_exceeded"
    result = run_cli("ask", "--url", sse_chat_server.url, "--fake", "--max-tokens", "50",
                     "--fake-option", "error_after=5", "--fake-option", "error_type=quota_exceeded", PROMPT)
    assert result.returncode == 1
    assert b"quota_exceeded" in result.stderr
    assert result.stdout.decode() == answer_text(events)


def test_stall_after_3_sends_heartbeats_then_upstream_timeout(sse_chat_server_pool, sse_chat_settings):
    server = sse_chat_server_pool.get({**sse_chat_settings, "SSE_CHAT_UPSTREAM_TIMEOUT_S": "2",
                                       "SSE_CHAT_HEARTBEAT_S": "0.5"})
    began = time.monotonic()
    with requests.post(server.url + "/v1/chat", json={"prompt": PROMPT, "fake": {"stall_after": 3}},
                       stream=True, timeout=TIMEOUT) as response:
        chunks = list(response.iter_content(chunk_size=None))
    took_s = time.monotonic() - began
    body = b"".join(chunks)
    events = events_of([body])
    assert [e.type for e in events] == ["start", "token", "token", "token", "error"]
    assert json.loads(events[-1].data)["error"]["type"] == "upstream_timeout"
    between = body[body.index(events[3].data.encode()):body.index(b"event: error")]
    assert between.count(b": ping") >= 2
    assert 2.0 <= took_s <= 5.0


def test_a_count_beyond_the_answer_still_fails(sse_chat_server):
    body = {"prompt": PROMPT, "max_tokens": 3, "fake": {"error_after": 10}}
    events = events_of([requests.post(sse_chat_server.url + "/v1/chat", json=body, timeout=TIMEOUT).content])
    assert [e.type for e in events] == ["start", "token", "token", "token", "error"]
    assert json.loads(events[-1].data)["error"]["type"] == "upstream_error"


@pytest.mark.redis
def test_resumes_on_another_server_sharing_redis_are_dropped_alike(redis_server, gunicorn):
    """Two gunicorns on one Redis: every other response is a resume on the server
    that did not start the stream, which learns events_per_response from the event log."""
    settings = {"SSE_CHAT_REDIS_URL": redis_server.url, "SSE_CHAT_FAKE_DELAY_MS": "0"}
    first, other = gunicorn(**settings), gunicorn(**settings, WEB_CONCURRENCY="2")
    body = {"prompt": PROMPT, "max_tokens": 50, "fake": {"drop_every": 7, "delay_ms": 5}}
    try:
        responses = _responses([first.url, other.url], body)
    except requests.RequestException as exc:
        raise AssertionError(f"{exc}\n--- first server:\n{first.log()[-4000:]}\n--- other server:\n"
                             f"{other.log()[-4000:]}") from exc
    _assert_dropped_every_7(responses)


@pytest.fixture(params=["memory", "redis"])
def event_log(request):
    if request.param == "memory":
        return MemoryEventLog(ttl_s=60, max_events=100)
    return RedisEventLog(redis.Redis.from_url(request.getfixturevalue("redis_server").url), ttl_s=60,
                         max_events=100)


def test_stream_info_carries_events_per_response(event_log):
    dropped, plain = new_stream_id(), new_stream_id()
    event_log.create(dropped, "alice", f"id: {dropped}:0\nevent: start\ndata: {{}}\n\n".encode(), events_per_response=7)
    event_log.create(plain, None, f"id: {plain}:0\nevent: start\ndata: {{}}\n\n".encode())
    assert event_log.info(dropped).events_per_response == 7
    assert event_log.info(dropped).owner == "alice"
    assert event_log.info(plain).events_per_response is None


def test_the_openai_sdk_sends_faults_through_extra_body(sse_chat_server):
    import openai

    client = openai.OpenAI(base_url=sse_chat_server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIError, match=re.escape("fake.error_after")):
        list(client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "Hi"}],
                                            max_tokens=10, stream=True, extra_body={"fake": {"error_after": 3}}))

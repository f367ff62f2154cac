"""The service as a hostile client meets it, against gunicorn on loopback (issue
"bounded under abuse and faults"): bad input is a 4xx, never a 500 or a traceback;
request bodies cannot hold a worker or a connection."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time

import pytest
import requests

from sse_chat.config import Settings
from sse_chat.testing.servers import PeakRss, base_env, rss_kib, run_cli, start_gunicorn, wait_until

from .event_reading import answer_text, assert_well_formed, events_of
from .hostile import HealthProbe, ReaderProcess, TimedStream, address, flood, open_raw, read_answer

KEY = "k-abuse"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    started = start_gunicorn(tmp_path_factory.mktemp("abuse"), SSE_CHAT_API_KEYS=KEY, SSE_CHAT_FAKE_DELAY_MS="0")
    yield started
    started.stop()


def _post(server, path: str, raw: bytes, **headers: str) -> requests.Response:
    return requests.post(server.url + path, data=raw, timeout=10,
                         headers={**AUTH, "Content-Type": "application/json", **headers})


def _assert_no_failure_logged(server) -> None:
    log = server.log()
    assert "Traceback" not in log and "internal_error" not in log and "[ERROR]" not in log, log[-3000:]


@pytest.mark.parametrize("path,body,field", [
    ("/v1/chat", {"prompt": "\ud800"}, '"prompt"'),
    ("/v1/chat", {"prompt": "hi", "system": "\udfff"}, '"system"'),
    ("/v1/chat", {"messages": [{"role": "user", "content": "a\udc80b"}]}, '"messages[0].content"'),
    ("/v1/chat/completions", {"model": "fake", "messages": [{"role": "user", "content": "\ud800"}]},
     '"messages[0].content"'),
    ("/v1/chat/completions", {"model": "fake", "stream": True, "messages": [{"role": "user", "content": "\ud800"}]},
     '"messages[0].content"'),
])
def test_a_lone_surrogate_is_400_naming_the_field(server, path, body, field):
    response = _post(server, path, json.dumps(body).encode(), **{"Idempotency-Key": "surrogate-" + field})
    assert response.status_code == 400, response.text
    assert field in response.json()["error"]["message"]
    _assert_no_failure_logged(server)


def test_deep_nesting_with_an_idempotency_key_is_400(server):
    for depth in (100, 967, 968, 5000):
        raw = b'{"prompt": "hi", "x": ' + b"[" * depth + b"]" * depth + b"}"
        response = _post(server, "/v1/chat", raw, **{"Idempotency-Key": f"deep-{depth}"})
        assert response.status_code == 400 and "deep" in response.json()["error"]["message"]
    _assert_no_failure_logged(server)


@pytest.mark.parametrize("digits", [20, 4200, 4400, 8000])  # gunicorn refuses headers over 8,190 bytes
def test_a_huge_last_event_id_is_404(server, digits):
    last_event_id = "abc:" + "9" * digits
    for method, path in (("GET", "/v1/streams/abc"), ("POST", "/v1/chat"), ("GET", "/v1/chat?prompt=x"),
                         ("POST", "/v1/chat/completions")):
        response = requests.request(method, server.url + path, json={"prompt": "x"}, timeout=10,
                                    headers={**AUTH, "Last-Event-ID": last_event_id})
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["type"] == "stream_not_found"
    _assert_no_failure_logged(server)


def test_cli_reads_non_utf8_input_with_replacement_characters(server):
    env = base_env(SSE_CHAT_URL=server.url, SSE_CHAT_API_KEY=KEY, SSE_CHAT_LOG="0")
    done = run_cli("ask", "-s", "sys\udcfe", "caf\udce9", "-", input=b"piped \xff bytes\n", env=env)
    # "-" alone reads stdin only; here it is a word, and stdin is piped too
    assert done.returncode == 0, done.stderr
    assert "\ufffd" in done.stdout.decode() and b"Traceback" not in done.stderr
    _assert_no_failure_logged(server)


# -- request bodies --------------------------------------------------------------

FLOOD_S = 5.0


def test_an_unauthenticated_huge_upload_stalls_no_stream_and_no_health_check(gunicorn):
    server = gunicorn(SSE_CHAT_API_KEYS=KEY, SSE_CHAT_FAKE_DELAY_MS="20")
    live = TimedStream("POST", server.url + "/v1/chat", json={"prompt": "live", "max_tokens": 300}, headers=AUTH)
    live.start()
    assert live.started_reading.wait(10)
    probe = HealthProbe(server.url)
    probe.start()
    head = (b"POST /v1/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000000\r\n\r\n")
    connections, sent = flood(server.url, head, FLOOD_S)
    live.join(30)
    probe.stop()
    print(f"{connections} connections, {sent / 2**20:.0f} MiB sent; longest silence of the live stream "
          f"{live.longest_silence_s:.3f} s; slowest /healthz {probe.slowest_s:.3f} s of {probe.answers}")
    assert events_of([live.body])[-1].type == "done" and probe.answers > 0
    # A worker that reads the upload is silent as long as the flood lasts (5.13 s
    # and 5.06 s before uploads were bounded; 3.7 s in 1 run of 3 while only the
    # reading side was shut, which Linux does not enforce); 0.02 s when the
    # worker closes such a connection.
    assert live.longest_silence_s < 1.0
    assert probe.slowest_s < 1.0


def test_a_refused_small_body_still_gets_its_answer_on_a_kept_connection(gunicorn):
    server = gunicorn(SSE_CHAT_API_KEYS=KEY, SSE_CHAT_FAKE_DELAY_MS="0")
    with requests.Session() as session:
        refused = session.post(server.url + "/v1/chat", data=b'{"prompt": "' + b"x" * 500_000 + b'"}',
                               headers={"Content-Type": "application/json"}, timeout=10)
        assert refused.status_code == 401
        answered = session.post(server.url + "/v1/chat", json={"prompt": "hi"}, headers=AUTH, timeout=10)
        assert answered.status_code == 200 and events_of([answered.content])[-1].type == "done"


def test_dripping_bodies_are_answered_408_within_the_body_timeout(gunicorn):
    server = gunicorn(SSE_CHAT_API_KEYS=KEY, SSE_CHAT_BODY_TIMEOUT_S="2")
    head = (f"POST /v1/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{").encode()
    started = time.monotonic()
    drippers = [open_raw(server.url, head) for _ in range(5)]
    answers = [read_answer(sock, 15) for sock in drippers]  # one byte sent, 99 never come
    took = time.monotonic() - started
    for sock in drippers:
        sock.close()
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["type"] == "request_timeout"
    assert took < 10
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200


def test_the_default_body_timeout_answers_a_dripping_body_within_a_minute():
    assert 0 < Settings().body_timeout_s <= 60


# -- connection headroom ---------------------------------------------------------

def _raise_open_files_limit(needed: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"this test opens {needed} sockets; the hard limit on open files is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def test_five_thousand_slow_request_heads_lock_out_neither_health_checks_nor_new_streams(gunicorn):
    slow_heads = 5000
    _raise_open_files_limit(slow_heads + 1000)
    server = gunicorn(SSE_CHAT_API_KEYS=KEY, SSE_CHAT_FAKE_DELAY_MS="0")
    rss_before = rss_kib(server.worker_pids())
    # each sends part of a head, and then nothing: the server waits for the rest
    hostile = [open_raw(server.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n") for _ in range(slow_heads)]
    try:
        started = time.monotonic()
        health = requests.get(server.url + "/healthz", timeout=30)
        health_s = time.monotonic() - started
        stream = requests.post(server.url + "/v1/chat", json={"prompt": "hi", "max_tokens": 5}, headers=AUTH,
                               timeout=30)
        both_s = time.monotonic() - started
        grown_mib = (rss_kib(server.worker_pids()) - rss_before) / 1024
    finally:
        for sock in hostile:
            sock.close()
    print(f"with {slow_heads} slow heads: /healthz in {health_s:.3f} s, /healthz and a stream in {both_s:.3f} s; "
          f"the worker grew {grown_mib:.0f} MiB")
    assert health.status_code == 200 and events_of([stream.content])[-1].type == "done"
    assert both_s < 5


# -- resuming long streams -------------------------------------------------------

LONG = 100_000  # events: the most a stream may have (start, 99,998 tokens, done)


@pytest.fixture(scope="module")
def long_stream(tmp_path_factory):
    """gunicorn as shipped, and a finished stream of :data:`LONG` events:
    ``(server, stream_id)``."""
    server = start_gunicorn(tmp_path_factory.mktemp("long"), SSE_CHAT_API_KEYS=KEY, SSE_CHAT_FAKE_DELAY_MS="0")
    try:
        response = requests.post(server.url + "/v1/chat", json={"prompt": "long", "max_tokens": LONG - 2},
                                 headers=AUTH, timeout=120)
        events = events_of([response.content])
        assert len(events) == LONG and events[-1].type == "done"
        yield server, events[0].last_event_id.rsplit(":", 1)[0]
    finally:
        server.stop()


def test_a_hundred_resumes_that_never_read_hold_little_of_the_worker(long_stream):
    server, stream_id = long_stream
    rss_before = rss_kib(server.worker_pids())
    head = (f"GET /v1/streams/{stream_id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Last-Event-ID: {stream_id}:0\r\n\r\n").encode()
    readers = []
    with PeakRss(server.worker_pids) as peak:
        for _ in range(100):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a reader that will not read
            sock.connect(address(server.url))
            sock.sendall(head)
            readers.append(sock)
        for sock in readers:  # each response has begun: its first write is under way
            sock.settimeout(60)
            assert sock.recv(12) == b"HTTP/1.1 200"
        time.sleep(3)
    try:
        grown_mib = (peak.peak_kib - rss_before) / 1024
        started = time.monotonic()
        health = requests.get(server.url + "/healthz", timeout=30)
        health_s = time.monotonic() - started
    finally:
        for sock in readers:
            sock.close()
    print(f"100 resumes of {LONG:,} events that never read: the worker grew {grown_mib:.0f} MiB; "
          f"/healthz in {health_s:.3f} s")
    assert health.status_code == 200 and health_s < 1
    assert grown_mib < 200


def test_five_openai_resumes_of_a_long_stream_leave_health_checks_answered(long_stream):
    server, stream_id = long_stream
    probe = HealthProbe(server.url, every_s=0.05)
    probe.start()
    body = b'{"model": "fake"}'
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
               f"Last-Event-ID: {stream_id}:0\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
               "Connection: close\r\n\r\n").encode() + body
    resumes = [ReaderProcess(server.url, request) for _ in range(5)]
    results = [resume.result() for resume in resumes]
    probe.stop()
    print(f"5 OpenAI-surface resumes of {LONG:,} events: slowest /healthz {probe.slowest_s:.3f} s "
          f"of {probe.answers}")
    for status, _, chunks, tail in results:
        assert status == 200 and tail.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")  # the last chunk
        assert chunks >= LONG - 2
    assert probe.slowest_s < 1


# -- memory per key --------------------------------------------------------------

def test_one_key_asking_for_a_million_tokens_again_and_again_holds_a_bounded_share(gunicorn):
    server = gunicorn(SSE_CHAT_API_KEYS=KEY, SSE_CHAT_FAKE_DELAY_MS="0")
    rss_before = rss_kib(server.worker_pids())
    statuses: dict[int, int] = {}
    refusal = None
    with PeakRss(server.worker_pids) as peak:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with requests.post(server.url + "/v1/chat", json={"prompt": "more", "max_tokens": 1_000_000},
                               headers=AUTH, stream=True, timeout=30) as response:
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code == 429:
                    refusal = response.json()["error"]
                    time.sleep(0.2)
        time.sleep(3)  # the last admitted streams run on without their clients
    grown_mib = (peak.peak_kib - rss_before) / 1024
    print(f"15 s of max_tokens 1,000,000 from one key: {statuses}; the worker grew {grown_mib:.0f} MiB at most")
    assert statuses.get(200) and refusal is not None and refusal["type"] == "too_many_events"
    assert "SSE_CHAT_MAX_EVENTS_PER_KEY" in refusal["message"]
    assert grown_mib < 300
    other = requests.post(server.url + "/v1/chat", json={"prompt": "hi"}, headers={"Authorization": "Bearer k2"},
                          timeout=30)
    assert other.status_code == 401  # (only KEY is configured; the bound is per key, as test_limits.py shows)


# -- Redis faults ----------------------------------------------------------------

@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test alone (it is stopped, filled or flushed)."""
    from sse_chat.testing.redis_server import RedisServer

    server = RedisServer(tmp_path)
    yield server
    if server.process is not None and server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)
    server.stop()


def _timed_get(url: str) -> tuple[int, float]:
    started = time.monotonic()
    status = requests.get(url, timeout=30).status_code
    return status, time.monotonic() - started


def test_redis_refusing_writes_is_503_for_new_streams_and_for_readyz(gunicorn, own_redis):
    server = gunicorn(SSE_CHAT_REDIS_URL=own_redis.url, SSE_CHAT_FAKE_DELAY_MS="0")
    assert _timed_get(server.url + "/readyz")[0] == 200
    own_redis.client.config_set("maxmemory-policy", "noeviction")
    own_redis.client.config_set("maxmemory", 1)  # every write is refused: OOM
    try:
        refused = requests.post(server.url + "/v1/chat", json={"prompt": "hi"}, timeout=30)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["type"] == "event_log_unavailable" and refused.headers["Retry-After"]
        status, took_s = _timed_get(server.url + "/readyz")
        assert status == 503 and took_s < 1
    finally:
        own_redis.client.config_set("maxmemory", 0)
    assert _timed_get(server.url + "/readyz")[0] == 200
    assert events_of([requests.post(server.url + "/v1/chat", json={"prompt": "hi"}, timeout=30).content])[-1].type \
        == "done"
    assert "Traceback" not in server.log()


def test_readyz_answers_within_a_second_while_redis_is_stalled_and_the_streams_finish_whole(gunicorn, own_redis):
    server = gunicorn(SSE_CHAT_REDIS_URL=own_redis.url, SSE_CHAT_FAKE_DELAY_MS="20")
    assert _timed_get(server.url + "/readyz")[0] == 200
    bodies = [{"prompt": f"stall {i}", "max_tokens": 150} for i in range(20)]
    streams = [TimedStream("POST", server.url + "/v1/chat", json=body) for body in bodies]
    for stream in streams:
        stream.start()
    for stream in streams:
        assert stream.started_reading.wait(30)
    os.kill(own_redis.process.pid, signal.SIGSTOP)  # the network to Redis stalls: nothing answers
    try:
        stalled_at = time.monotonic()
        answers = [_timed_get(server.url + "/readyz") for _ in range(3)]
        time.sleep(max(0.0, stalled_at + 5 - time.monotonic()))
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
    for stream in streams:
        stream.join(60)
    print(f"/readyz while Redis is stalled: {answers}")
    assert all(status == 503 and took_s < 1 for status, took_s in answers)
    wait_until(lambda: _timed_get(server.url + "/readyz")[0] == 200, 15, "ready again")
    again = [TimedStream("POST", server.url + "/v1/chat", json=body) for body in bodies]
    for stream in again:
        stream.start()
    for stream, repeat in zip(streams, again, strict=True):
        repeat.join(60)
        events = events_of([stream.body])
        assert_well_formed(events)
        assert events[-1].type == "done"
        assert answer_text(events) == answer_text(events_of([repeat.body]))  # the fake model answers alike


def _readers_of_running_streams(server, streams: int, readers_each: int) -> list[TimedStream]:
    """``streams`` long streams, each read by ``readers_each`` responses on
    connections of their own (with two workers, most streams have readers on both)."""
    readers = []
    for i in range(streams):
        first = TimedStream("POST", server.url + "/v1/chat", json={"prompt": f"fault {i}", "max_tokens": 3000})
        first.start()
        assert first.started_reading.wait(30)
        readers.append(first)
        stream_id = first.stream_id()
        for _ in range(readers_each - 1):
            more = TimedStream("GET", f"{server.url}/v1/streams/{stream_id}")
            more.start()
            readers.append(more)
    for reader in readers:
        assert reader.started_reading.wait(30)
    return readers


@pytest.mark.parametrize("fault", ["flushall", "refused writes"])
def test_a_redis_fault_mid_stream_ends_every_reader_on_every_worker(gunicorn, own_redis, fault):
    server = gunicorn(SSE_CHAT_REDIS_URL=own_redis.url, WEB_CONCURRENCY="2", SSE_CHAT_FAKE_DELAY_MS="20")
    readers = _readers_of_running_streams(server, streams=3, readers_each=4)
    completion: list[requests.Response] = []
    whole = threading.Thread(target=lambda: completion.append(requests.post(
        server.url + "/v1/chat/completions", timeout=60,
        json={"model": "fake", "max_tokens": 3000, "messages": [{"role": "user", "content": "whole"}]})))
    whole.start()
    time.sleep(1)
    started = time.monotonic()
    if fault == "flushall":
        own_redis.client.flushall()
    else:
        own_redis.client.config_set("maxmemory-policy", "noeviction")
        own_redis.client.config_set("maxmemory", 1)
    try:
        for reader in readers:
            reader.join(max(0.1, started + 15 - time.monotonic()))
        whole.join(max(0.1, started + 15 - time.monotonic()))
        assert all(reader.ended_at is None or reader.ended_at > started for reader in readers)
        took_s = max((reader.ended_at or time.monotonic()) for reader in readers) - started
        ended = [events_of([reader.body])[-1] for reader in readers if not reader.is_alive()]
        print(f"{fault}: {len(ended)} of {len(readers)} readers ended within {took_s:.1f} s: "
              f"{sorted({json.loads(event.data)['error']['type'] for event in ended if event.type == 'error'})}; "
              f"the non-streaming completion: {[r.status_code for r in completion]}")
        assert len(ended) == len(readers)
        assert all(event.type == "error" and json.loads(event.data)["error"]["type"] == "stream_lost"
                   for event in ended)
        assert completion and completion[0].status_code >= 500
        if fault == "refused writes":
            refused = requests.post(server.url + "/v1/chat", json={"prompt": "new"}, timeout=30)
            assert refused.status_code == 503 and refused.json()["error"]["type"] == "event_log_unavailable"
            assert requests.get(server.url + "/readyz", timeout=5).status_code == 503
    finally:
        own_redis.client.config_set("maxmemory", 0)
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("fault", ["flushall", "refused writes"])
def test_a_redis_fault_ends_a_reader_of_a_stream_produced_in_another_worker(own_redis, fault):
    import redis

    from sse_chat.eventlog import StreamNotFound
    from sse_chat.eventlog.redis_streams import RedisEventLog
    from sse_chat.protocol import new_stream_id

    producing, reading = (RedisEventLog(redis.Redis.from_url(own_redis.url), ttl_s=60, max_events=1000)
                          for _ in range(2))
    stream_id = new_stream_id()
    producing.create(stream_id, None, f"id: {stream_id}:0\nevent: start\ndata: {{}}\n\n".encode())
    producing.flush(stream_id)
    cursor = reading.open(stream_id, -1)  # followed through the reading worker's fan-in
    assert len(cursor.take().frames) == 1
    if fault == "flushall":
        own_redis.client.flushall()
    else:
        own_redis.client.config_set("maxmemory-policy", "noeviction")
        own_redis.client.config_set("maxmemory", 1)
    started, ended_after_s = time.monotonic(), None
    try:
        while time.monotonic() < started + 20:
            cursor.wait(time.monotonic() + 0.2)
            try:
                cursor.take()
            except StreamNotFound:  # the reader ends the response with stream_lost
                ended_after_s = time.monotonic() - started
                break
    finally:
        own_redis.client.config_set("maxmemory", 0)
        cursor.close()
    print(f"{fault}: the other worker's reader ended after {ended_after_s} s")
    assert ended_after_s is not None and ended_after_s < 15

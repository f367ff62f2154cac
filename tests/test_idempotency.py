"""Idempotent starts (``Idempotency-Key``, IETF httpapi draft "The Idempotency-Key
HTTP Header Field"): the key's parsing and the request fingerprint, the claim logic
of :mod:`sse_chat.streaming.idempotency` on a fake clock, then over real gunicorn (memory
log, and Redis with two workers), and the clients' retries through a proxy that
cuts the first event stream before its ``start`` event."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import uuid

import pytest
import requests

from sse_chat.client import ChatClient
from sse_chat.errors import ApiError
from sse_chat.eventlog import Claim, MemoryEventLog
from sse_chat.streaming.idempotency import (
    MAX_KEY_LENGTH,
    PENDING_S,
    RUNNING_S,
    KeyedStart,
    keep_after_end,
    keyed_start,
    parse_key,
    request_fingerprint,
    start_once,
)
from sse_chat.testing.servers import run_cli, wait_until

from .event_reading import answer_text, events_of, stream_of
from .proxy import LoopbackListener

# --- the header and the fingerprint ------------------------------------------------


@pytest.mark.parametrize(("header", "key"), [
    ("8e03978e-40d5-43e8-bc93-6894a57f9324", "8e03978e-40d5-43e8-bc93-6894a57f9324"),
    ('"8e03978e-40d5-43e8-bc93-6894a57f9324"', "8e03978e-40d5-43e8-bc93-6894a57f9324"),  # the draft's sf-string
    ('  "a \\"quoted\\" \\\\ key"  ', 'a "quoted" \\ key'),
    ("x" * MAX_KEY_LENGTH, "x" * MAX_KEY_LENGTH),
])
def test_a_key_is_a_bare_value_or_a_structured_field_string(header, key):
    assert parse_key(header) == key


@pytest.mark.parametrize("header", ["", "   ", '""', "x" * (MAX_KEY_LENGTH + 1), "clé", "a\x01b",
                                    '"a\\nb"', '"a"b"', '"ends\\"'])
def test_an_empty_long_or_malformed_key_is_a_400(header):
    with pytest.raises(ApiError) as caught:
        parse_key(header)
    assert (caught.value.status, caught.value.type) == (400, "invalid_request")


def test_the_fingerprint_is_the_surface_and_the_canonical_body():
    body = {"prompt": "hi", "max_tokens": 3, "fake": {"delay_ms": 1, "error_after": 2}}
    same = json.loads('{"fake": {"error_after": 2, "delay_ms": 1},   "max_tokens": 3, "prompt": "hi"}')
    assert request_fingerprint("/v1/chat", body) == request_fingerprint("/v1/chat", same)
    assert request_fingerprint("/v1/chat", body) != request_fingerprint("/v1/chat/completions", body)
    assert request_fingerprint("/v1/chat", body) != request_fingerprint("/v1/chat", {**body, "max_tokens": 4})
    assert request_fingerprint("/v1/chat", {"prompt": "\ud800"})  # a lone surrogate from JSON still hashes


def test_the_stored_key_is_a_digest_of_the_header():
    keyed = keyed_start('"k-1"', "/v1/chat", {"prompt": "hi"})
    assert keyed == keyed_start("k-1", "/v1/chat", {"prompt": "hi"})
    assert len(keyed.key) == 64 and "k-1" not in keyed.key and keyed.key != keyed_start("k-2", "/v1/chat", {}).key


# --- start_once on a fake clock ------------------------------------------------------------


class FakeTime:
    """``clock`` and ``sleep`` for :func:`start_once`; ``on_sleep(n)`` runs at the
    n-th sleep (from 1)."""

    def __init__(self, on_sleep=lambda n: None):
        self.now = 0.0
        self.sleeps: list[float] = []
        self._on_sleep = on_sleep

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds
        self._on_sleep(len(self.sleeps))


KEYED = KeyedStart("ab" * 32, "fp")


def _creator(log, owner="alice"):
    """A ``start`` that creates the stream (its producer is not needed here)."""
    started = []

    def start(stream_id):
        log.create(stream_id, owner, b"id: x\nevent: start\ndata: {}\n\n")
        started.append(stream_id)

    return start, started


def _start_once(log, stream_id, start, time=None, keyed=KEYED, owner="alice"):
    time = time or FakeTime()
    return start_once(log, owner, keyed, stream_id, start, stream_ttl_s=60, clock=time.clock, sleep=time.sleep)


def test_the_first_start_runs_and_a_repeat_gets_its_stream_without_starting():
    log = MemoryEventLog(ttl_s=60, max_events=100)
    start, started = _creator(log)
    first = _start_once(log, "s1", start)
    again = _start_once(log, "s2", start)
    assert (first.stream_id, first.repeated, again.stream_id, again.repeated) == ("s1", False, "s1", True)
    assert started == ["s1"]


def test_another_body_with_the_key_is_a_422_and_starts_nothing():
    log = MemoryEventLog(ttl_s=60, max_events=100)
    start, started = _creator(log)
    _start_once(log, "s1", start)
    with pytest.raises(ApiError) as caught:
        _start_once(log, "s2", start, keyed=KeyedStart(KEYED.key, "another"))
    assert (caught.value.status, caught.value.type) == (422, "idempotency_key_reused")
    assert started == ["s1"]


def test_a_repeat_waits_for_the_stream_its_first_request_is_still_creating():
    log = MemoryEventLog(ttl_s=60, max_events=100)
    assert log.claim("alice", KEYED.key, KEYED.fingerprint, "s1", 60) is None  # the first request, mid-start
    start, _ = _creator(log)
    time = FakeTime(on_sleep=lambda n: n == 3 and start("s1"))
    result = _start_once(log, "s2", lambda stream_id: pytest.fail("started twice"), time)
    assert (result.stream_id, result.repeated) == ("s1", True)
    assert time.sleeps == [0.01, 0.02, 0.04]


def test_a_start_that_fails_releases_the_key_so_that_a_retry_starts():
    log = MemoryEventLog(ttl_s=60, max_events=100)

    def refused(stream_id):
        raise ApiError(429, "too_many_streams", "full")

    with pytest.raises(ApiError):
        _start_once(log, "s1", refused)
    start, started = _creator(log)
    time = FakeTime()
    assert _start_once(log, "s2", start, time).stream_id == "s2"
    assert started == ["s2"] and time.sleeps == []


def test_a_claim_whose_stream_never_comes_is_taken_over_after_the_pending_bound():
    log = MemoryEventLog(ttl_s=60, max_events=100)
    assert log.claim("alice", KEYED.key, KEYED.fingerprint, "died-before-create", 60) is None
    start, started = _creator(log)
    time = FakeTime()
    result = _start_once(log, "s2", start, time)
    assert (result.stream_id, result.repeated, started) == ("s2", False, ["s2"])
    assert PENDING_S <= sum(time.sleeps) < PENDING_S + 1
    assert log.claim("alice", KEYED.key, KEYED.fingerprint, "s4", 60) == Claim("s2", "fp")


class _ClaimedForever:
    """A log on which the key always names a stream that never appears."""

    def claim(self, owner, key, fingerprint, stream_id, ttl_s):
        return Claim("ghost", fingerprint)

    def info(self, stream_id):
        return None

    def release(self, owner, key, stream_id):
        pass


def test_a_key_whose_stream_never_comes_even_after_a_takeover_is_a_409():
    time = FakeTime()
    with pytest.raises(ApiError) as caught:
        _start_once(_ClaimedForever(), "s1", lambda stream_id: pytest.fail("started"), time)
    assert (caught.value.status, caught.value.type) == (409, "idempotency_key_in_use")
    assert 2 * PENDING_S <= sum(time.sleeps) < 2 * PENDING_S + 1


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_key_is_kept_while_its_stream_runs_and_for_the_stream_ttl_after_its_end():
    clock = Clock()
    log = MemoryEventLog(ttl_s=60, max_events=100, clock=clock)
    start, _ = _creator(log)
    _start_once(log, "s1", start)
    clock.now += RUNNING_S  # a long run: still kept
    assert log.claim("alice", KEYED.key, KEYED.fingerprint, "s2", 60) == Claim("s1", "fp")
    keep_after_end(log, "alice", KEYED, "s1", 60)  # the stream ended now
    clock.now += 60
    assert log.claim("alice", KEYED.key, KEYED.fingerprint, "s2", 60) == Claim("s1", "fp")
    clock.now += 0.001
    assert log.claim("alice", KEYED.key, KEYED.fingerprint, "s2", 60) is None


# --- over gunicorn -------------------------------------------------------------------------


def _metric(server, name, headers=None):
    """The sum of metric ``name``'s samples on ``/metrics`` (all workers)."""
    text = requests.get(server.url + "/metrics", headers=headers, timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + "{", name + " ")))


def _post(server, path, body, key, api_key=None, stream=False):
    headers = {"Idempotency-Key": key}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return requests.post(server.url + path, json=body, headers=headers, stream=stream, timeout=60)


def _until_start(response):
    """The bytes of ``response`` up to its first event's end, read from the socket."""
    received = b""
    while b"\n\n" not in received.partition(b"event: start")[2]:
        chunk = response.raw.read1(65536)
        assert chunk, received
        received += chunk
    return received


def _rest(response):
    received = b""
    while chunk := response.raw.read1(65536):
        received += chunk
    response.close()
    return received


def test_a_repeated_post_gets_the_same_stream_while_generating_and_after_the_end(gunicorn):
    server = gunicorn(SSE_CHAT_HEARTBEAT_S="60")
    body = {"prompt": "say it once", "max_tokens": 8, "fake": {"delay_ms": 150}}
    key = str(uuid.uuid4())
    started = _metric(server, "sse_chat_streams_started_total")
    first = _post(server, "/v1/chat", body, key, stream=True)
    first_head = _until_start(first)
    second = _post(server, "/v1/chat", body, key, stream=True)
    second_head = _until_start(second)
    assert _metric(server, "sse_chat_active_streams") == 1  # the repeat came while generating
    whole = first_head + _rest(first)
    assert second_head + _rest(second) == whole
    after_end = _post(server, "/v1/chat", body, key)  # after the end
    assert (after_end.status_code, after_end.content) == (200, whole)
    events = events_of([whole])
    assert events[0].type == "start" and events[-1].type == "done" and len(events) == 10
    assert _metric(server, "sse_chat_streams_started_total") == started + 1
    assert _metric(server, "sse_chat_repeated_starts_total") == 2

    reused = _post(server, "/v1/chat", {**body, "prompt": "another question"}, key)
    assert reused.status_code == 422
    assert reused.json() == {"error": {"type": "idempotency_key_reused", "message": reused.json()["error"]["message"]}}
    bad = _post(server, "/v1/chat", body, "x" * (MAX_KEY_LENGTH + 1))
    assert (bad.status_code, bad.json()["error"]["type"]) == (400, "invalid_request")
    fresh = _post(server, "/v1/chat", body, str(uuid.uuid4()))
    assert stream_of(events_of([fresh.content])[0].last_event_id) != stream_of(events[0].last_event_id)
    assert _metric(server, "sse_chat_streams_started_total") == started + 2


def test_keys_are_per_caller(gunicorn):
    server = gunicorn(SSE_CHAT_API_KEYS="key-a,key-b", SSE_CHAT_FAKE_DELAY_MS="0")
    body, key = {"prompt": "whose?", "max_tokens": 3}, str(uuid.uuid4())
    metrics_auth = {"Authorization": "Bearer key-a"}
    started = _metric(server, "sse_chat_streams_started_total", metrics_auth)
    a, b, a_again = (_post(server, "/v1/chat", body, key, api_key) for api_key in ("key-a", "key-b", "key-a"))
    ids = [stream_of(events_of([r.content])[0].last_event_id) for r in (a, b, a_again)]
    assert ids[0] != ids[1] and ids[2] == ids[0] and a_again.content == a.content
    assert _metric(server, "sse_chat_streams_started_total", metrics_auth) == started + 2


def test_chat_completions_repeat_the_same_completion_and_chunks(gunicorn):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="5", SSE_CHAT_HEARTBEAT_S="60")
    messages = [{"role": "user", "content": "complete once"}]
    started = _metric(server, "sse_chat_streams_started_total")

    whole_key = str(uuid.uuid4())
    body = {"model": "fake", "messages": messages, "max_tokens": 6}
    first, second = (_post(server, "/v1/chat/completions", body, whole_key) for _ in range(2))
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json() and first.json()["choices"][0]["message"]["content"]

    chunks_key = str(uuid.uuid4())
    body = {"model": "fake", "messages": messages, "max_tokens": 6, "stream": True,
            "stream_options": {"include_usage": True}}
    first = _post(server, "/v1/chat/completions", body, chunks_key, stream=True)
    head = _until_chunk(first)
    second = _post(server, "/v1/chat/completions", body, chunks_key, stream=True)
    chunks = head + _rest(first)
    assert _until_chunk(second) + _rest(second) == chunks and chunks.endswith(b"data: [DONE]\n\n")
    assert _post(server, "/v1/chat/completions", body, chunks_key).content == chunks  # after the end

    reused = _post(server, "/v1/chat/completions", {**body, "max_tokens": 7}, chunks_key)
    assert reused.status_code == 422
    assert reused.json()["error"]["type"] == "idempotency_key_reused" and "param" in reused.json()["error"]
    on_the_other_surface = _post(server, "/v1/chat", {"messages": messages, "max_tokens": 6}, whole_key)
    assert on_the_other_surface.status_code == 422
    assert _metric(server, "sse_chat_streams_started_total") == started + 2


def _until_chunk(response):
    received = b""
    while b"\n\n" not in received:
        chunk = response.raw.read1(65536)
        assert chunk, received
        received += chunk
    return received


def test_concurrent_posts_with_one_key_on_two_workers_share_one_stream(gunicorn, redis_server):
    server = gunicorn(SSE_CHAT_REDIS_URL=redis_server.url, WEB_CONCURRENCY="2", SSE_CHAT_FAKE_DELAY_MS="20",
                      SSE_CHAT_HEARTBEAT_S="60")
    body, key = {"prompt": "many at once", "max_tokens": 10}, str(uuid.uuid4())
    started = _metric(server, "sse_chat_streams_started_total")
    barrier = threading.Barrier(10)
    bodies: list[bytes] = []

    def post():
        barrier.wait()
        bodies.append(_post(server, "/v1/chat", body, key).content)

    threads = [threading.Thread(target=post) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(bodies) == 10 and len(set(bodies)) == 1
    events = events_of([bodies[0]])
    assert events[0].type == "start" and events[-1].type == "done"
    counts = {}

    def counted():  # each worker writes its counts once a second: the other one's may come a second later
        counts.update(started=_metric(server, "sse_chat_streams_started_total") - started,
                      repeated=_metric(server, "sse_chat_repeated_starts_total"))
        return counts == {"started": 1, "repeated": 9}

    try:
        wait_until(counted, 10, "both workers' counts")
    except AssertionError:
        raise AssertionError(f"expected one start and nine repeats; counted {counts}") from None


# --- the clients, through a cut before `start` -----------------------------------------------


class FirstStreamCut(LoopbackListener):
    """A loopback proxy to ``target`` (host, port) that cuts the first response which
    is an event stream after ``cut_bytes`` bytes, counted from the start of the read
    that holds its ``Content-Type`` (its status line and headers come in one write,
    so 20 to 90 bytes end inside them, before the ``start`` event); every other
    response passes whole. ``streams`` counts the event-stream responses seen."""

    def __init__(self, target: tuple[str, int], cut_bytes: int) -> None:
        super().__init__()
        self._target = target
        self._cut_bytes = cut_bytes
        self._lock = threading.Lock()
        self.streams = 0

    def _handle(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self._target)
        threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
        threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, responses: bool) -> None:
        try:
            while data := source.recv(65536):
                if responses and b"content-type: text/event-stream" in data.lower() and self._cut_now():
                    sink.sendall(data[:self._cut_bytes])
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _cut_now(self) -> bool:
        with self._lock:
            self.streams += 1
            return self.streams == 1


def _address(url):
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


@pytest.mark.parametrize("cut_bytes", [20, 90])
def test_sse_chat_ask_cut_before_start_prints_the_uncut_answer_from_one_generation(gunicorn, cut_bytes):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="2")
    expected = answer_text(events_of([requests.post(server.url + "/v1/chat", timeout=60,
                                                    json={"prompt": "cut me early", "max_tokens": 40}).content]))
    started = _metric(server, "sse_chat_streams_started_total")
    with FirstStreamCut(_address(server.url), cut_bytes) as proxy:
        result = run_cli("ask", "--url", proxy.url, "--max-tokens", "40", "--no-log", "cut me early")
    assert result.returncode == 0, result.stderr
    assert proxy.streams == 2  # the cut first attempt, and its retry
    assert result.stdout.decode() == expected
    assert _metric(server, "sse_chat_streams_started_total") == started + 1


def test_the_python_client_cut_before_start_gets_the_answer_from_one_generation(gunicorn):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="2")
    expected = ChatClient(server.url).ask("cut me early too", max_tokens=40)
    started = _metric(server, "sse_chat_streams_started_total")
    retries = []
    with FirstStreamCut(_address(server.url), 55) as proxy:
        client = ChatClient(proxy.url, on_retry=lambda *args: retries.append(args), sleep=lambda s: None)
        answer = client.ask("cut me early too", max_tokens=40)
    assert answer == expected and answer.finish_reason == "length"
    assert proxy.streams == 2 and len(retries) == 1
    assert _metric(server, "sse_chat_streams_started_total") == started + 1

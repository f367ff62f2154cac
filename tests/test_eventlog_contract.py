"""One contract, two event logs: in-memory and Redis Streams (a real redis-server)."""

import json
import threading
import time
import uuid

import pytest
import redis

from sse_chat.eventlog import Claim, Control, MemoryEventLog, StreamFull, StreamInfo, StreamLost, StreamNotFound
from sse_chat.eventlog.redis_streams import LEASE_RENEWAL_S, RedisEventLog
from sse_chat.eventlog.wakeups import Wakeups
from sse_chat.protocol import new_stream_id
from sse_chat.testing.servers import wait_until

from .event_reading import events_of


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture(params=["memory", "redis"])
def make_log(request):
    def build(ttl_s=60.0, max_events=1000, clock=None, wakeups=None):
        clock = clock or Clock()
        if request.param == "memory":
            return MemoryEventLog(ttl_s=ttl_s, max_events=max_events, clock=clock, wakeups=wakeups)
        server = request.getfixturevalue("redis_server")
        return RedisEventLog(redis.Redis.from_url(server.url), ttl_s=ttl_s, max_events=max_events, clock=clock,
                             wakeups=wakeups)

    return build


def _frame(stream_id, seq, kind="token"):
    return f"id: {stream_id}:{seq}\nevent: {kind}\ndata: {{\"n\":{seq}}}\n\n".encode()


def _stream(log, count=1, finished=False):
    """A stream of ``count`` >= 1 events (event 0 is written by ``create``)."""
    stream_id = new_stream_id()
    log.create(stream_id, owner="alice", first_frame=_frame(stream_id, 0, "start"))
    for seq in range(1, count):
        log.append(stream_id, seq, _frame(stream_id, seq), terminal=finished and seq == count - 1)
    log.flush(stream_id)
    return stream_id


def _read(log, stream_id, after_seq):
    """Everything visible after ``after_seq`` now, through a cursor."""
    cursor = log.open(stream_id, after_seq)
    try:
        return cursor.take()
    finally:
        cursor.close()


def _frames(stream_id, count):
    return [_frame(stream_id, 0, "start")] + [_frame(stream_id, s) for s in range(1, count)]


def test_read_from_the_start_and_after_a_position(make_log):
    log = make_log()
    stream_id = _stream(log, 5)
    batch = _read(log, stream_id, -1)
    assert (batch.first_seq, batch.frames, batch.finished) == (0, _frames(stream_id, 5), False)
    later = _read(log, stream_id, 2)
    assert (later.first_seq, later.last_seq, later.frames) == (3, 4, [_frame(stream_id, 3), _frame(stream_id, 4)])


def test_a_cursor_takes_each_event_once(make_log):
    log = make_log()
    stream_id = _stream(log, 3)
    cursor = log.open(stream_id, -1)
    assert cursor.take().frames == _frames(stream_id, 3)
    assert (cursor.take().frames, cursor.position) == ([], 2)
    log.append(stream_id, 3, _frame(stream_id, 3))
    log.flush(stream_id)
    wait_until(lambda: _read(log, stream_id, 2).frames, 5, "event 3")
    assert cursor.take().frames == [_frame(stream_id, 3)]
    cursor.close()


def test_a_take_with_a_limit_gives_that_many_and_finishes_with_the_last(make_log):
    log = make_log()
    stream_id = _stream(log, 7, finished=True)
    cursor = log.open(stream_id, 0)
    pieces = [cursor.take(limit=4), cursor.take(limit=4), cursor.take(limit=4)]
    cursor.close()
    assert [(p.first_seq, p.frames, p.finished) for p in pieces] == [
        (1, _frames(stream_id, 5)[1:], False), (5, [_frame(stream_id, 5), _frame(stream_id, 6)], True), (7, [], True)]


def test_a_limited_take_crosses_from_a_replayed_backlog_into_the_live_events(redis_server):
    producing = RedisEventLog(redis.Redis.from_url(redis_server.url), ttl_s=60, max_events=1000, clock=Clock())
    reading = RedisEventLog(redis.Redis.from_url(redis_server.url), ttl_s=60, max_events=1000, clock=Clock())
    stream_id = _stream(producing, 8)
    later = reading.open(stream_id, 5)  # this worker now follows the stream from event 6
    early = reading.open(stream_id, -1)  # events 0 … 5 come from Redis, the rest from the mirror
    pieces = [early.take(limit=4) for _ in range(3)]
    assert [(p.first_seq, p.frames) for p in pieces] == [
        (0, _frames(stream_id, 4)), (4, _frames(stream_id, 8)[4:]), (8, [])]
    assert later.take(limit=1).frames == [_frame(stream_id, 6)]
    early.close()
    later.close()


def test_a_wait_at_the_end_returns_by_its_deadline(make_log):
    log = make_log()
    stream_id = _stream(log, 2)
    cursor = log.open(stream_id, 1)
    cursor.wait(time.monotonic() + 0.05)
    batch = cursor.take()
    assert (batch.first_seq, batch.frames, batch.finished) == (2, [], False)
    cursor.close()


def test_a_waiting_reader_wakes_for_the_next_append(make_log):
    log = make_log()
    stream_id = _stream(log, 1)
    cursor = log.open(stream_id, 0)
    got = []

    def read():
        cursor.wait(time.monotonic() + 60)  # woken by the append, long before this deadline
        got.append(cursor.take())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    log.append(stream_id, 1, _frame(stream_id, 1))
    log.flush(stream_id)
    reader.join(10)
    assert got, "the append did not wake the waiting reader"
    cursor.close()
    assert got[0].frames == [_frame(stream_id, 1)]


def test_terminal_event_finishes_the_stream(make_log):
    log = make_log()
    stream_id = _stream(log, 3, finished=True)
    assert _read(log, stream_id, -1).finished
    end = _read(log, stream_id, 2)
    assert (end.frames, end.finished) == ([], True)
    info = log.info(stream_id)
    assert (info.owner, info.last_seq, info.finished) == ("alice", 2, True)


def test_unknown_streams(make_log):
    log = make_log()
    assert log.info("nope") is None
    with pytest.raises(StreamNotFound):
        log.open("nope", -1)
    with pytest.raises(StreamNotFound):
        log.control("nope")
    with pytest.raises(StreamNotFound):
        log.append("nope", 1, b"id: nope:1\nevent: token\ndata: {}\n\n")


def test_a_deleted_stream_is_gone(make_log):
    log = make_log()
    stream_id, other = _stream(log, 3, finished=True), _stream(log, 2, finished=True)
    log.delete(stream_id)
    assert log.info(stream_id) is None
    with pytest.raises(StreamNotFound):
        log.open(stream_id, -1)
    with pytest.raises(StreamNotFound):
        log.request_cancel(stream_id)  # and it creates nothing again
    assert log.info(stream_id) is None
    assert log.info(other) is not None and _read(log, other, -1).frames == _frames(other, 2)
    log.delete(stream_id)  # deleting again does nothing


def test_events_per_response_is_kept_with_the_stream(make_log):
    log = make_log()
    stream_id = new_stream_id()
    log.create(stream_id, owner=None, first_frame=_frame(stream_id, 0, "start"), events_per_response=3)
    assert log.info(stream_id) == StreamInfo(None, 0, False, 3)
    assert log.info(_stream(log)).events_per_response is None


def test_out_of_order_append_is_refused(make_log):
    log = make_log()
    stream_id = _stream(log, 2)
    with pytest.raises(ValueError):
        log.append(stream_id, 5, _frame(stream_id, 5))
    log.flush(stream_id)
    assert log.info(stream_id).last_seq == 1


def test_events_are_bounded_but_the_terminal_event_still_fits(make_log):
    log = make_log(max_events=3)
    stream_id = _stream(log, 3)
    with pytest.raises(StreamFull):
        log.append(stream_id, 3, _frame(stream_id, 3))
    log.append(stream_id, 3, _frame(stream_id, 3, "error"), terminal=True)
    assert len(_read(log, stream_id, -1).frames) == 4


def test_many_quick_appends_all_arrive_in_order(make_log):
    log = make_log(max_events=5000)
    stream_id = _stream(log, 1)
    for seq in range(1, 3000):
        log.append(stream_id, seq, _frame(stream_id, seq), terminal=seq == 2999)
    cursor = log.open(stream_id, -1)
    frames = []
    while True:
        batch = cursor.take()
        frames += batch.frames
        if batch.finished:
            break
        cursor.wait(time.monotonic() + 5)
    cursor.close()
    assert frames == _frames(stream_id, 3000)


def test_finished_streams_expire_after_the_ttl(make_log):
    log = make_log(ttl_s=0.2, clock=None)
    if isinstance(log, MemoryEventLog):
        clock = Clock()
        log = MemoryEventLog(ttl_s=0.2, max_events=10, clock=clock)
        stream_id = _stream(log, 2, finished=True)
        clock.now += 0.3
    else:
        stream_id = _stream(log, 2, finished=True)
    wait_until(lambda: log.info(stream_id) is None, 10, "expiry")
    with pytest.raises(StreamNotFound):
        log.open(stream_id, -1)


def test_cancel_and_readers_are_seen_by_control(make_log):
    clock = Clock()
    log = make_log(clock=clock)
    stream_id = _stream(log, 1)
    clock.now += 0.5
    assert log.control(stream_id) == Control(cancelled=False, unattended_s=pytest.approx(0.5))
    clock.now += 2.5
    assert log.control(stream_id).unattended_s == pytest.approx(3)
    first, second = log.open(stream_id, 0), log.open(stream_id, 0)
    first.close()
    clock.now += 10
    assert log.control(stream_id).unattended_s == 0.0
    second.close()
    clock.now += 2
    assert log.control(stream_id).unattended_s == pytest.approx(2)
    assert not log.control(stream_id).cancelled
    log.request_cancel(stream_id)
    assert log.control(stream_id).cancelled


def test_a_cancel_right_after_a_write_is_seen_by_the_next_control(make_log):
    log = make_log()
    stream_id = _stream(log, 1)
    log.append(stream_id, 1, _frame(stream_id, 1))
    log.flush(stream_id)  # a Redis write brings the control fields back with it
    log.request_cancel(stream_id)
    assert log.control(stream_id).cancelled


def test_the_log_is_ready(make_log):
    assert make_log().ready() is True


def test_readers_follow_a_stream_through_the_wakeups_the_log_was_given(make_log):
    clock = Clock()
    wakeups = Wakeups(cooperative=False)  # one per process, shared by its logs
    log = make_log(wakeups=wakeups, clock=clock)
    stream_id = _stream(log, 1)
    cursor = log.open(stream_id, 0)
    assert wakeups.following(stream_id)
    woke = threading.Event()
    reader = threading.Thread(target=lambda: (cursor.wait(time.monotonic() + 60), woke.set()), daemon=True)
    reader.start()
    wakeups.ring_all()  # a graceful stop began
    assert woke.wait(10)
    cursor.close()
    cursor.close()  # closing twice detaches once
    assert not wakeups.following(stream_id)
    again = log.open(stream_id, 0)
    clock.now += 5
    assert log.control(stream_id).unattended_s == 0.0  # attached
    again.close()


# --- memory only ----------------------------------------------------------------

def test_a_finished_stream_is_kept_for_exactly_its_ttl():
    clock = Clock()
    log = MemoryEventLog(ttl_s=2.0, max_events=10, clock=clock)
    stream_id = _stream(log, 2, finished=True)
    clock.now += 2.0
    assert log.info(stream_id) is not None
    assert _read(log, stream_id, -1).finished
    clock.now += 0.001
    assert log.info(stream_id) is None


def test_expired_streams_are_dropped_from_memory_once_per_ttl():
    """Memory is the behaviour here, and nothing public shows it: the test looks at
    the log's dict of streams. (Times are sums of powers of two: exact in floats.)"""
    clock = Clock()
    start = clock.now
    log = MemoryEventLog(ttl_s=10.0, max_events=10, clock=clock)  # first sweep due at start + 10
    early = _stream(log, 2, finished=True)  # finished at start
    clock.now = start + 0.5
    later = _stream(log, 2, finished=True)  # finished at start + 0.5
    clock.now = start + 10.25  # early expired (10.25 > 10), later not (9.75)
    log.create("a", None, b"a")  # the sweep drops early; the next one is due at start + 20.25
    assert early not in log._streams and later in log._streams
    clock.now = start + 20.25  # the next sweep is due now, exactly
    log.create("b", None, b"b")
    assert later not in log._streams
    log.create("c", None, b"c")
    assert {"a", "b", "c"} <= set(log._streams)


# --- Redis only ---------------------------------------------------------------

def _redis_log(redis_server, **kwargs):
    return RedisEventLog(redis.Redis.from_url(redis_server.url), ttl_s=60, max_events=1000, **kwargs)


def test_two_workers_share_streams_through_redis(redis_server):
    producer_side, reader_side = _redis_log(redis_server), _redis_log(redis_server)
    stream_id = _stream(producer_side, 4, finished=True)
    assert _read(reader_side, stream_id, 1).frames == [_frame(stream_id, 2), _frame(stream_id, 3)]


def test_redis_entry_ids_stay_inside_the_log(redis_server):
    log = _redis_log(redis_server)
    stream_id = _stream(log, 3)
    frames = b"".join(_read(log, stream_id, -1).frames)
    assert b"0-1" not in frames and frames.count(b"id: ") == 3


def test_a_dead_producers_stream_ends_with_stream_lost_for_every_reader(redis_server):
    log = _redis_log(redis_server)
    stream_id = _stream(log, 3)
    redis_server.client.delete(f"sse-chat:{{{stream_id}}}:lease")  # the lease expired: its worker died
    reader = _redis_log(redis_server)  # another worker: the producer's own worker died
    cursor = reader.open(stream_id, 2)
    deadline = time.monotonic() + 10
    while not (batch := cursor.take()).finished and time.monotonic() < deadline:
        cursor.wait(deadline)
    cursor.close()
    assert batch.finished
    [event] = events_of(batch.frames)
    assert event.last_event_id == f"{stream_id}:3"
    assert json.loads(event.data)["error"]["type"] == "stream_lost"
    assert _read(_redis_log(redis_server), stream_id, 2).frames == batch.frames  # the same event for all
    with pytest.raises(StreamLost):  # the producer, were it alive, must stop at its next event
        log.append(stream_id, 3, _frame(stream_id, 3))
        log.flush(stream_id)


def test_a_renewed_lease_keeps_the_stream_alive(redis_server):
    clock = Clock()
    log = _redis_log(redis_server, monotonic=clock)
    stream_id = _stream(log, 1)
    lease = f"sse-chat:{{{stream_id}}}:lease"
    redis_server.client.pexpire(lease, 50)  # about to expire ...
    clock.now += LEASE_RENEWAL_S  # ... as no write renewed it for a while ...
    log.keep_alive(stream_id)  # ... but renewed
    assert redis_server.client.pttl(lease) > 1000
    batch = _read(_redis_log(redis_server), stream_id, 0)
    assert (batch.frames, batch.finished) == ([], False)


def test_cancel_and_attach_of_unknown_streams_create_nothing(make_log, redis_server):
    log = make_log()
    for call in (log.request_cancel, lambda stream_id: log.open(stream_id, -1)):
        with pytest.raises(StreamNotFound):
            call("never-created")
    assert log.info("never-created") is None
    assert redis_server.client.exists("sse-chat:{never-created}:meta") == 0


def test_a_reader_in_another_worker_follows_the_live_stream_through_the_fan_in(redis_server):
    producer_side, reader_side = _redis_log(redis_server), _redis_log(redis_server)
    streams = [_stream(producer_side, 1) for _ in range(2)]
    cursors = [reader_side.open(stream_id, 0) for stream_id in streams]  # the second joins a running XREAD
    for stream_id in streams:
        for seq in range(1, 4):
            producer_side.append(stream_id, seq, _frame(stream_id, seq), terminal=seq == 3)
    for stream_id, cursor in zip(streams, cursors, strict=True):
        frames, deadline = [], time.monotonic() + 10
        while time.monotonic() < deadline:
            batch = cursor.take()
            frames += batch.frames
            if batch.finished:
                break
            cursor.wait(deadline)
        cursor.close()
        assert (frames, batch.finished) == ([_frame(stream_id, s) for s in range(1, 4)], True)


# --- idempotency keys: claim and release ---------------------------------------------


def _key():
    """A fresh idempotency key digest (one Redis serves the whole session)."""
    return uuid.uuid4().hex


def test_the_first_claim_of_a_key_holds_it_and_later_ones_are_told_who_does(make_log):
    k1 = _key()
    log = make_log()
    assert log.claim("alice", k1, "fp-a", "stream-a", 60) is None
    assert log.claim("alice", k1, "fp-b", "stream-b", 60) == Claim("stream-a", "fp-a")
    assert log.claim("alice", k1, "fp-a", "stream-c", 60) == Claim("stream-a", "fp-a")


def test_keys_are_per_owner(make_log):
    k1, k2 = _key(), _key()
    log = make_log()
    assert log.claim("alice", k1, "fp", "stream-a", 60) is None
    assert log.claim("bob", k1, "fp", "stream-b", 60) is None
    assert log.claim(None, k1, "fp", "stream-c", 60) is None
    assert log.claim("alice", k2, "fp", "stream-d", 60) is None
    assert [log.claim(owner, k1, "fp", "late", 60) for owner in ("alice", "bob", None)] == [
        Claim("stream-a", "fp"), Claim("stream-b", "fp"), Claim("stream-c", "fp")]


def test_claiming_again_for_the_holding_stream_renews_it(make_log):
    k1 = _key()
    clock = Clock()
    log = make_log(clock=clock)
    assert log.claim("alice", k1, "fp", "stream-a", 0.5) is None
    assert log.claim("alice", k1, "fp", "stream-a", 60) is None
    clock.now += 1
    if not isinstance(log, MemoryEventLog):
        time.sleep(1)  # Redis expires on its own clock: the first expiry has passed
    assert log.claim("alice", k1, "fp", "stream-b", 60) == Claim("stream-a", "fp")


def test_release_frees_the_key_only_for_the_holding_stream(make_log):
    k1 = _key()
    log = make_log()
    assert log.claim("alice", k1, "fp", "stream-a", 60) is None
    log.release("alice", k1, "stream-b")  # not the holder: nothing changes
    log.release("bob", k1, "stream-a")  # another owner's key: nothing changes
    assert log.claim("alice", k1, "fp", "stream-b", 60) == Claim("stream-a", "fp")
    log.release("alice", k1, "stream-a")
    assert log.claim("alice", k1, "fp2", "stream-b", 60) is None
    assert log.claim("alice", k1, "fp", "stream-c", 60) == Claim("stream-b", "fp2")
    log.release("alice", "never-claimed", "stream-a")


def test_claims_expire_after_their_ttl_and_the_holder_can_claim_again(make_log):
    k1, k2 = _key(), _key()
    clock = Clock()
    log = make_log(clock=clock)
    assert log.claim("alice", k1, "fp", "stream-a", 0.2) is None
    assert log.claim("alice", k2, "fp", "stream-b", 60) is None
    if isinstance(log, MemoryEventLog):
        clock.now += 0.1
        assert log.claim("alice", k1, "fp", "stream-x", 0.2) == Claim("stream-a", "fp")
        clock.now += 0.2
    else:
        wait_until(lambda: log.claim("alice", k1, "fp", "stream-x", 60) is None, 10, "the claim's expiry")
        log.release("alice", k1, "stream-x")
    assert log.claim("alice", k1, "fp", "stream-a", 60) is None  # the holder's own, after expiry
    assert log.claim("alice", k2, "fp", "stream-y", 60) == Claim("stream-b", "fp")  # its own TTL


def test_of_concurrent_claims_exactly_one_holds_the_key(make_log):
    k1 = _key()
    logs = [make_log()]
    if not isinstance(logs[0], MemoryEventLog):  # two workers on one Redis
        logs.append(make_log())
    barrier = threading.Barrier(16)
    results: dict[str, Claim | None] = {}

    def claim(n):
        barrier.wait()
        results[f"stream-{n}"] = logs[n % len(logs)].claim("alice", k1, "fp", f"stream-{n}", 60)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [stream_id for stream_id, held in results.items() if held is None]
    assert len(winners) == 1 and len(results) == 16
    assert {held for held in results.values() if held is not None} == {Claim(winners[0], "fp")}


def test_a_redis_claim_is_one_key_in_one_slot_with_the_ttl(redis_server):
    key = _key()
    log = _redis_log(redis_server)
    assert log.claim("0123456789abcdef", key, "fp", "stream-a", 30) is None
    assert log.claim(None, key, "fp", "stream-b", 30) is None
    client = redis_server.client
    assert client.get(f"sse-chat:{{idem:0123456789abcdef:{key}}}") == b"stream-a fp"
    assert client.get(f"sse-chat:{{idem:-:{key}}}") == b"stream-b fp"
    assert 29_000 < client.pttl(f"sse-chat:{{idem:0123456789abcdef:{key}}}") <= 30_000
    log.claim("0123456789abcdef", key, "fp", "stream-a", 600)  # renewed by its holder
    assert 599_000 < client.pttl(f"sse-chat:{{idem:0123456789abcdef:{key}}}") <= 600_000

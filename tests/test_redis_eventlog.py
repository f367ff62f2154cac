"""The Redis Streams event log beyond the shared contract: what one worker keeps
(mirrors shared by its readers), its one fan-in reader (blocking XREAD, lease checks,
cut connections), control fields that ride on writes, and Redis going away.

Everything runs against a real redis-server. Round trips are counted on the client
side (a connection class that records the commands it sends), since the point of
several of these paths is to send fewer of them. The fan-in's connection is given a
name, so that CLIENT LIST tells when it is blocked in its XREAD.
"""

import itertools
import json
import threading
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import sse_chat.eventlog.redis_streams as redis_streams
from sse_chat.eventlog import Control, EventLogUnavailable, StreamFull, StreamInfo, StreamNotFound
from sse_chat.eventlog.redis_layout import entry_events
from sse_chat.eventlog.redis_streams import LEASE_RENEWAL_S, RedisEventLog
from sse_chat.eventlog.wakeups import Wakeups
from sse_chat.protocol import new_stream_id
from sse_chat.testing.redis_server import RedisServer
from sse_chat.testing.servers import free_port, wait_until

from .event_reading import events_of

pytestmark = pytest.mark.redis

#: Bound on every wait below: a test that hangs fails instead.
WAIT_S = 10.0
_names = itertools.count()


class Clock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def _frame(stream_id, seq, kind="token"):
    return f"id: {stream_id}:{seq}\nevent: {kind}\ndata: {{\"n\":{seq}}}\n\n".encode()


def _frames(stream_id, first, last):
    return [_frame(stream_id, seq, "start" if seq == 0 else "token") for seq in range(first, last + 1)]


def _stream(log, count=1):
    """A live stream of ``count`` >= 1 events, stored."""
    stream_id = new_stream_id()
    log.create(stream_id, owner="alice", first_frame=_frame(stream_id, 0, "start"))
    for seq in range(1, count):
        log.append(stream_id, seq, _frame(stream_id, seq))
    log.flush(stream_id)
    return stream_id


def _keys(stream_id):
    return [f"sse-chat:{{{stream_id}}}:{name}" for name in ("events", "meta", "lease")]


def _log(url, **kwargs):
    kwargs.setdefault("ttl_s", 60)
    kwargs.setdefault("max_events", 1000)
    return RedisEventLog(redis.Redis.from_url(url), **kwargs)


def _counting_client(url):
    """A client whose connections record the name of every command they send, and that list."""
    sent = []

    class CountingConnection(redis.Connection):
        def send_command(self, *args, **kwargs):  # one command
            sent.append(str(args[0]).upper())
            return super().send_command(*args, **kwargs)

        def pack_commands(self, commands):  # a pipeline (the writer packs its own)
            sent.extend(str(command[0]).upper() for command in commands)
            return super().pack_commands(commands)

    pool = redis.ConnectionPool.from_url(url, connection_class=CountingConnection)
    return redis.Redis(connection_pool=pool), sent


def _patch_round_trip(monkeypatch, log, replacement):
    """Have ``log``'s writer call ``replacement(writer, commands, keys)`` for each round
    trip (the writers of other logs, such as those of earlier tests still
    retrying, are left alone)."""
    writer = log._writer
    monkeypatch.setattr(writer, "_round_trip", lambda commands, keys: replacement(writer, commands, keys))


def _hold_first_round_trip(monkeypatch, log):
    """Make ``log``'s writer's next round trip wait until ``go_on`` is set (``out``
    is set once it waits); ``sizes`` gets the command count of each round trip from
    then on."""
    out, go_on, sizes = threading.Event(), threading.Event(), []
    round_trip = redis_streams._Writer._round_trip

    def held_first_time(writer, commands, keys):
        sizes.append(len(commands))
        if len(sizes) == 1:
            out.set()
            go_on.wait(WAIT_S)
        return round_trip(writer, commands, keys)

    _patch_round_trip(monkeypatch, log, held_first_time)
    return out, go_on, sizes


def _log_with_named_fanin(url):
    """A log (another worker's) whose fan-in has a single-connection client named so
    CLIENT LIST finds it, and that name. The client does not retry, so a cut
    connection reaches the fan-in, and its reads time out after 60 s only (a test
    may make the fan-in block for 30 s)."""
    name = f"fanin-{next(_names)}"
    fanin = redis.Redis.from_url(url, single_connection_client=True, client_name=name,
                                 retry=Retry(NoBackoff(), 0), socket_timeout=60)
    return _log(url, fanin_client=fanin), name


def _fanin_state(redis_server, name):
    """The fan-in connection's CLIENT LIST entry, or None."""
    return next((c for c in redis_server.client.client_list() if c.get("name") == name), None)


def _blocked(redis_server, name):
    state = _fanin_state(redis_server, name)
    return state is not None and "b" in state["flags"]


def _take_until_finished(cursor, timeout_s=WAIT_S):
    """Every frame the cursor gives until the terminal one; fails after ``timeout_s``."""
    frames, deadline = [], time.monotonic() + timeout_s
    while True:
        batch = cursor.take()
        frames += batch.frames
        if batch.finished:
            return frames
        assert time.monotonic() < deadline, f"not finished after {timeout_s} s; got {len(frames)} frames"
        cursor.wait(deadline)


def _take_until(cursor, count, timeout_s=WAIT_S):
    """The next ``count`` frames the cursor gives; fails after ``timeout_s``."""
    frames, deadline = [], time.monotonic() + timeout_s
    while len(frames) < count:
        frames += cursor.take().frames
        if len(frames) < count:
            assert time.monotonic() < deadline, f"got {len(frames)} of {count} frames in {timeout_s} s"
            cursor.wait(deadline)
    return frames


# --- control -------------------------------------------------------------------------

def _control_once_read(log, stream_id, expected):
    """``log.control(stream_id)`` once it equals ``expected``: a producer's worker
    learns what Redis holds at its writer's next round trip after a look."""
    wait_until(lambda: log.control(stream_id) == expected, WAIT_S, f"control to become {expected}")
    return log.control(stream_id)


def test_a_reader_in_another_worker_keeps_the_producer_attended(redis_server):
    clock = Clock()
    producer, readers, onlooker = (_log(redis_server.url, clock=clock) for _ in range(3))
    stream_id = _stream(producer)
    assert producer.control(stream_id) == Control(False, 0.0)  # as the creation wrote it
    cursor = readers.open(stream_id, 0)
    clock.now += 5
    assert _control_once_read(producer, stream_id, Control(False, 0.0)) == Control(False, 0.0)
    assert onlooker.control(stream_id) == Control(False, 0.0)  # a worker that holds nothing of the stream
    cursor.close()  # Redis records when the last reader left ...
    clock.now += 2
    # ... and the producer counts from then
    assert _control_once_read(producer, stream_id, Control(False, 2.0)).unattended_s == pytest.approx(2)
    assert onlooker.control(stream_id).unattended_s == pytest.approx(2)


def test_a_reader_in_another_worker_closes_quietly_while_redis_refuses_writes(redis_server):
    producer, readers = _log(redis_server.url), _log(redis_server.url)
    stream_id = _stream(producer)
    cursor = readers.open(stream_id, 0)
    redis_server.client.config_set("maxmemory-policy", "noeviction")
    redis_server.client.config_set("maxmemory", 1)
    try:
        cursor.close()  # the detach is refused (OOM): logged, not raised into the response
    finally:
        redis_server.client.config_set("maxmemory", 0)


def test_a_producer_learns_another_workers_cancel_without_a_read_of_its_own(redis_server):
    client, sent = _counting_client(redis_server.url)
    producer, other = RedisEventLog(client, ttl_s=60, max_events=1000), _log(redis_server.url)
    stream_id = _stream(producer, 2)
    before = len(sent)
    assert not producer.control(stream_id).cancelled
    other.request_cancel(stream_id)  # another worker
    wait_until(lambda: producer.control(stream_id).cancelled, WAIT_S, "the producer to see the cancel")
    assert sent[before:] == []  # the writer's round trips read it, beside the writes


def test_a_cancel_in_the_producers_worker_is_seen_at_once(redis_server, monkeypatch):
    log = _log(redis_server.url)
    stream_id = _stream(log, 2)
    out, go_on, _ = _hold_first_round_trip(monkeypatch, log)
    log.append(stream_id, 2, _frame(stream_id, 2))
    assert out.wait(WAIT_S)  # the writer is busy: no read can come back
    log.request_cancel(stream_id)
    assert log.control(stream_id).cancelled
    go_on.set()


def test_starting_a_stream_sends_no_control_read(redis_server):
    """The producer's first look at its control fields comes an interval after the
    start, like every later one, by when its writes have brought them back: a new
    stream costs the create and the writes, no HMGET."""
    from sse_chat.models import ChatRequest, Delta, Message
    from sse_chat.streaming.producer import CONTROL_INTERVAL_S, Producer, ProducerLimits

    client, sent = _counting_client(redis_server.url)
    log, clock, stream_id = RedisEventLog(client, ttl_s=60, max_events=1000), Clock(now=0.0), new_stream_id()

    class StoredTokens:
        def stream(self, request):
            for _ in range(10):
                clock.now += CONTROL_INTERVAL_S / 2
                yield Delta(content="x")
                log.flush(stream_id)  # the write of that token came back

    producer = Producer(log, stream_id, StoredTokens(), ChatRequest((Message("user", "q"),), "fake"),
                        ProducerLimits(abandon_s=60), clock=clock)
    producer.create_stream(owner=None)
    log.open(stream_id, 0)
    producer.run()
    assert "HMGET" not in sent
    info = log.info(stream_id)
    assert info.finished and info.last_seq == 11  # start, 10 tokens, done


def test_control_answers_at_once_and_the_next_round_trip_reads_the_fields(redis_server, monkeypatch):
    clock = Clock()
    log, other = _log(redis_server.url, clock=clock), _log(redis_server.url)
    stream_id = _stream(log, 2)  # no reader: unattended since its creation
    other.request_cancel(stream_id)
    clock.now += 5
    out, go_on, sizes = _hold_first_round_trip(monkeypatch, log)
    log.append(stream_id, 2, _frame(stream_id, 2))
    assert out.wait(WAIT_S)  # event 2's write is out, and held
    assert log.control(stream_id) == Control(False, 5.0)  # the last known fields: no wait for the writer
    log.append(stream_id, 3, _frame(stream_id, 3))
    go_on.set()
    log.flush(stream_id)
    assert sizes[1] == 2  # event 3's XADD and the HMGET, together
    assert log.control(stream_id).cancelled


def test_while_redis_is_unreachable_control_answers_what_was_last_known(tmp_path):
    server = RedisServer(tmp_path)

    def unretried_log():
        return RedisEventLog(redis.Redis.from_url(server.url, retry=Retry(NoBackoff(), 0)), ttl_s=60,
                             max_events=100)

    try:
        producer, elsewhere = unretried_log(), unretried_log()
        written = _stream(producer)
        elsewhere.request_cancel(written)
        wait_until(lambda: producer.control(written).cancelled, WAIT_S, "the producer to see the cancel")
    finally:
        server.stop()
    assert producer.control(written).cancelled  # the last fields it was given
    # Nothing held at all: not cancelled, and attended, so that no producer gives
    # up because Redis is away.
    assert elsewhere.control(written) == Control(False, 0.0)


def test_keep_alive_right_after_a_renewal_sends_nothing(redis_server):
    monotonic = Clock(now=50.0)
    client, sent = _counting_client(redis_server.url)
    producer = RedisEventLog(client, ttl_s=60, max_events=1000, monotonic=monotonic)
    stream_id = _stream(producer)  # creating it took the lease
    monotonic.now += LEASE_RENEWAL_S - 1
    before = len(sent)
    producer.keep_alive(stream_id)
    assert sent[before:] == []
    monotonic.now += 1
    producer.keep_alive(stream_id)
    assert "SET" in sent[before:]


# --- one worker's mirror, shared by its readers ------------------------------------------

def test_readers_in_one_worker_share_its_mirror_and_each_gets_what_it_lacks(redis_server, monkeypatch):
    monkeypatch.setattr(redis_streams, "READ_COUNT", 2)  # replays come in pages of 2
    producer = _log(redis_server.url)
    client, sent = _counting_client(redis_server.url)
    readers = RedisEventLog(client, ttl_s=60, max_events=1000)
    stream_id = _stream(producer)
    for seq in range(1, 12):  # events 0-11, live, one entry each
        producer.append(stream_id, seq, _frame(stream_id, seq))
        producer.flush(stream_id)

    first = readers.open(stream_id, 3)  # the worker's mirror holds events 4 on
    assert _take_until(first, 8) == _frames(stream_id, 4, 11)
    before = len(sent)
    second = readers.open(stream_id, 3)  # nothing it lacks: served from the mirror alone
    assert "XRANGE" not in sent[before:]
    assert second.take().frames == _frames(stream_id, 4, 11)

    before = len(sent)
    third = readers.open(stream_id, -1)  # events 0-3 from Redis, two pages; the rest from the mirror
    assert sent[before:].count("XRANGE") == 2
    assert third.take().frames == _frames(stream_id, 0, 11)
    fourth = readers.open(stream_id, 2)  # one event from Redis
    assert fourth.take().frames == _frames(stream_id, 3, 11)

    for cursor in (first, second, third):  # one reader left: it still follows the live stream
        cursor.close()
    for seq in (12, 13):  # one at a time: the fan-in goes round between them
        producer.append(stream_id, seq, _frame(stream_id, seq))
        assert _take_until(fourth, 1) == [_frame(stream_id, seq)]
    fourth.close()
    # Memory is the behaviour here, and nothing public shows it: once its last
    # reader left, the worker forgets the mirror (of a stream still live).
    assert stream_id not in readers._mirrors.by_id


def test_a_local_streams_mirror_is_forgotten_once_finished_and_unread(redis_server):
    log = _log(redis_server.url)
    stream_id = _stream(log)
    cursor = log.open(stream_id, 0)
    log.append(stream_id, 1, _frame(stream_id, 1, "done"), terminal=True)
    assert _take_until_finished(cursor) == [_frame(stream_id, 1, "done")]
    cursor.close()
    assert stream_id not in log._mirrors.by_id  # memory, as above


# --- the fan-in ------------------------------------------------------------------------------

def test_a_reader_in_another_worker_gets_events_appended_one_at_a_time(redis_server):
    producer, readers = _log(redis_server.url), _log(redis_server.url)
    stream_id = _stream(producer)
    cursor = readers.open(stream_id, 0)
    for seq in range(1, 4):
        producer.append(stream_id, seq, _frame(stream_id, seq))
        assert _take_until(cursor, 1) == [_frame(stream_id, seq)]
    cursor.close()


def test_a_stream_followed_while_the_fan_in_blocks_is_read_at_once(redis_server, monkeypatch):
    # Were the blocked XREAD not cut short, the new stream would wait 30 s for it.
    monkeypatch.setattr(redis_streams, "FANIN_BLOCK_MS", 30_000)
    readers, name = _log_with_named_fanin(redis_server.url)
    producer = _log(redis_server.url)
    first = readers.open(_stream(producer), 0)
    wait_until(lambda: _blocked(redis_server, name), WAIT_S, "the fan-in to block in its XREAD")
    stream_id = _stream(producer)
    second = readers.open(stream_id, 0)
    producer.append(stream_id, 1, _frame(stream_id, 1, "done"), terminal=True)
    assert _take_until_finished(second) == [_frame(stream_id, 1, "done")]
    first.close()
    second.close()


def test_the_fan_in_reconnects_after_its_connection_is_cut(redis_server, monkeypatch):
    monkeypatch.setattr(redis_streams, "FANIN_BLOCK_MS", 30_000)
    readers, name = _log_with_named_fanin(redis_server.url)
    producer = _log(redis_server.url)
    stream_id = _stream(producer)
    cursor = readers.open(stream_id, 0)
    for seq in (1, 2):  # twice: a second cut after a recovery
        wait_until(lambda: _blocked(redis_server, name), WAIT_S, "the fan-in to block in its XREAD")
        redis_server.client.client_kill_filter(_id=_fanin_state(redis_server, name)["id"])
        producer.append(stream_id, seq, _frame(stream_id, seq))
        assert _take_until(cursor, 1) == [_frame(stream_id, seq)]
    # Its new connection can still be woken for a stream followed while it blocks.
    wait_until(lambda: _blocked(redis_server, name), WAIT_S, "the fan-in to block in its XREAD")
    other = _stream(producer)
    second = readers.open(other, 0)
    producer.append(other, 1, _frame(other, 1, "done"), terminal=True)
    assert _take_until_finished(second) == [_frame(other, 1, "done")]
    cursor.close()
    second.close()


def test_the_fan_in_rests_with_nothing_to_follow_and_serves_the_next_stream(redis_server):
    readers, name = _log_with_named_fanin(redis_server.url)
    producer = _log(redis_server.url)
    stream_id = _stream(producer)
    cursor = readers.open(stream_id, 0)
    producer.append(stream_id, 1, _frame(stream_id, 1, "done"), terminal=True)
    _take_until_finished(cursor)
    cursor.close()

    def resting():  # no XREAD blocked, none sent for a second
        state = _fanin_state(redis_server, name)
        return state is not None and "b" not in state["flags"] and int(state["idle"]) >= 1

    wait_until(resting, WAIT_S, "the fan-in to rest")
    stream_id = _stream(producer)
    cursor = readers.open(stream_id, 0)
    producer.append(stream_id, 1, _frame(stream_id, 1, "done"), terminal=True)
    assert _take_until_finished(cursor) == [_frame(stream_id, 1, "done")]
    cursor.close()


def test_the_fan_in_goes_on_after_an_error_reply(redis_server, monkeypatch, caplog):
    monkeypatch.setattr(redis_streams, "FANIN_BLOCK_MS", 100)
    monkeypatch.setattr(redis_streams, "RETRY_MAX_S", 0.05)
    producer, readers = _log(redis_server.url), _log(redis_server.url)
    broken, healthy = _stream(producer), _stream(producer)
    readers.open(broken, 0)
    cursor = readers.open(healthy, 0)
    events_key = _keys(broken)[0]
    redis_server.client.delete(events_key)
    redis_server.client.set(events_key, "not a stream")  # every XREAD now answers WRONGTYPE
    wait_until(lambda: "the Redis fan-in failed" in caplog.text, WAIT_S, "the fan-in to fail")
    redis_server.client.delete(events_key)
    producer.append(healthy, 1, _frame(healthy, 1, "done"), terminal=True)
    assert _take_until_finished(cursor) == [_frame(healthy, 1, "done")]
    cursor.close()


# --- lease checks ------------------------------------------------------------------------

@pytest.fixture
def quick_lease_checks(monkeypatch):
    """Streams count as quiet after 50 ms, and the fan-in looks at leases every 100 ms or so."""
    monkeypatch.setattr(redis_streams, "LEASE_CHECK_S", 0.05)
    monkeypatch.setattr(redis_streams, "FANIN_BLOCK_MS", 50)


def test_only_the_quiet_stream_whose_lease_expired_is_declared_lost(redis_server, quick_lease_checks):
    producer = _log(redis_server.url, max_events=3)
    readers = _log(redis_server.url, max_events=3)
    alive, dead = _stream(producer, 1), _stream(producer, 2)
    alive_cursor = readers.open(alive, 0)  # followed first, then
    dead_cursor = readers.open(dead, 1)
    producer.append(dead, 2, _frame(dead, 2))  # read through the fan-in; dead is now full (events 0-2 of 3)
    assert _take_until(dead_cursor, 1) == [_frame(dead, 2)]
    redis_server.client.delete(_keys(dead)[2])  # its producer died
    [event] = events_of(_take_until_finished(dead_cursor))
    assert event.type == "error" and event.last_event_id == f"{dead}:3"
    error = json.loads(event.data)["error"]
    assert error["type"] == "stream_lost" and isinstance(error["message"], str) and error["message"]
    assert producer.info(alive) == StreamInfo("alice", 0, False)
    # The stream_lost event fits past the bound: the full stream is still whole.
    everything = _log(redis_server.url).open(dead, -1).take()
    assert everything.frames[:3] == _frames(dead, 0, 2) and len(everything.frames) == 4 and everything.finished
    alive_cursor.close()
    dead_cursor.close()


def test_a_stream_is_declared_lost_only_while_its_lease_is_gone(redis_server):
    producer, readers = _log(redis_server.url), _log(redis_server.url)
    stream_id = _stream(producer, 2)
    # A reader's worker saw the lease gone, but the producer renewed it meanwhile:
    # the script that appends stream_lost looks again, atomically.
    readers._declare_lost(stream_id, 1)
    assert producer.info(stream_id) == StreamInfo("alice", 1, False)


def test_readers_of_a_stream_that_vanished_wake_and_are_told(redis_server, quick_lease_checks):
    producer, readers = _log(redis_server.url), _log(redis_server.url)
    stream_id = _stream(producer)
    cursor = readers.open(stream_id, 0)
    told = threading.Event()

    def read():
        cursor.wait(time.monotonic() + 60)
        try:
            cursor.take()
        except StreamNotFound:
            told.set()

    threading.Thread(target=read, daemon=True).start()
    redis_server.client.delete(*_keys(stream_id))  # it expired
    assert told.wait(WAIT_S)
    cursor.close()


# --- the writer ---------------------------------------------------------------------------

def test_writes_renew_the_lease_every_renew_every_s(redis_server):
    monotonic, every = Clock(now=50.0), redis_streams.RENEW_EVERY_S
    producer = _log(redis_server.url, monotonic=monotonic)
    stream_id = _stream(producer)  # took the lease at 50.0
    lease = _keys(stream_id)[2]
    for seq, now, renewed in ((1, 50 + every / 2, False), (2, 50 + every, True), (3, 50 + every * 1.5, False),
                              (4, 50 + every * 2, True)):
        redis_server.client.pexpire(lease, 5000)
        monotonic.now = now
        producer.append(stream_id, seq, _frame(stream_id, seq))
        producer.flush(stream_id)
        assert (redis_server.client.pttl(lease) > 5000) == renewed, (seq, now)


def test_a_producer_whose_stream_vanished_is_told_it_is_not_found(redis_server):
    producer = _log(redis_server.url)
    stream_id = _stream(producer)
    redis_server.client.delete(*_keys(stream_id))  # it expired
    producer.append(stream_id, 1, _frame(stream_id, 1))
    with pytest.raises(StreamNotFound):
        producer.flush(stream_id)


def test_after_redis_forgets_its_scripts_they_are_loaded_again(redis_server):
    producer, readers = _log(redis_server.url), _log(redis_server.url)
    stream_id = _stream(producer)
    redis_server.client.script_flush()  # as a restart does
    producer.append(stream_id, 1, _frame(stream_id, 1))
    producer.flush(stream_id)  # the writer's pipelined calls
    redis_server.client.script_flush()
    assert readers.open(stream_id, -1).take().frames == _frames(stream_id, 0, 1)  # a single call (attach)


# --- connecting -----------------------------------------------------------------------------

def test_from_url_connects_with_the_given_settings(redis_server):
    wakeups = Wakeups(cooperative=False)
    log = RedisEventLog.from_url(redis_server.url, ttl_s=30, max_events=3, wakeups=wakeups)
    stream_id = _stream(log, 3)
    with pytest.raises(StreamFull):
        log.append(stream_id, 3, _frame(stream_id, 3))
    cursor = log.open(stream_id, -1)
    assert wakeups.following(stream_id)
    assert cursor.take().frames == _frames(stream_id, 0, 2)
    cursor.close()
    # Redis closes every connection (as in a restart): the pooled ones connect again.
    redis_server.client.client_kill_filter(_type="normal", skipme=True)
    assert log.info(stream_id) == StreamInfo("alice", 2, False)
    log.append(stream_id, 3, _frame(stream_id, 3, "done"), terminal=True)
    assert 25_000 < redis_server.client.pttl(_keys(stream_id)[1]) <= 30_000  # kept ttl_s after the end


def test_a_log_whose_redis_cannot_be_reached_is_not_ready():
    client = redis.Redis(host="127.0.0.1", port=free_port(), retry=Retry(NoBackoff(), 0))
    assert RedisEventLog(client, ttl_s=60, max_events=10).ready() is False


def test_waits_between_attempts_double_from_50_ms_up_to_1_s():
    assert [redis_streams._retry_wait(failures) for failures in range(1, 8)] == \
        pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


# --- the writer: one round trip for many streams, and Redis going away ---------------


def _stored(redis_server, stream_id):
    """The frames Redis holds for ``stream_id``, read by a log of another worker."""
    cursor = _log(redis_server.url).open(stream_id, -1)
    try:
        entries = redis_server.client.xrange(_keys(stream_id)[0])
        return _take_until(cursor, sum(len(entry_events(fields)[1]) for _, fields in entries))
    finally:
        cursor.close()


def test_writes_gathered_during_a_round_trip_go_together_in_the_next(redis_server, monkeypatch):
    log = _log(redis_server.url)
    first, second = _stream(log), _stream(log)
    out, go_on, sizes = _hold_first_round_trip(monkeypatch, log)
    log.append(first, 1, _frame(first, 1))
    assert out.wait(WAIT_S)  # the writer is out with that one write
    log.append(first, 2, _frame(first, 2))
    log.append(second, 1, _frame(second, 1))
    go_on.set()
    log.flush(first)
    log.flush(second)
    assert sizes == [1, 2]  # both streams' script calls, back to back in one round trip
    assert _stored(redis_server, first) == _frames(first, 0, 2)
    assert _stored(redis_server, second) == _frames(second, 0, 1)


def test_streams_created_during_a_round_trip_are_created_together_in_the_next(redis_server, monkeypatch):
    client, sent = _counting_client(redis_server.url)
    log = RedisEventLog(client, ttl_s=60, max_events=1000)
    first = _stream(log)
    out, go_on, sizes = _hold_first_round_trip(monkeypatch, log)
    log.append(first, 1, _frame(first, 1))
    assert out.wait(WAIT_S)  # the writer is out with that one write
    created = [new_stream_id() for _ in range(2)]
    requests = [threading.Thread(target=log.create, args=(stream_id, "alice", _frame(stream_id, 0, "start")))
                for stream_id in created]
    for request in requests:
        request.start()
    wait_until(lambda: len(log._writer._creations) == 2, WAIT_S, "both creations to wait for the writer")
    go_on.set()
    for request in requests:
        request.join(WAIT_S)
        assert not request.is_alive()
    assert sizes == [1, 2 * 7]  # both creations (MULTI, 5 commands, EXEC) in one round trip ...
    assert "MULTI" not in sent  # ... which stored them: no request created its stream alone
    for stream_id in created:
        assert _stored(redis_server, stream_id) == _frames(stream_id, 0, 0)
        assert log.info(stream_id) == StreamInfo("alice", 0, False, None)


def test_a_creation_whose_reply_was_lost_is_made_again_by_its_request_and_stored_once(redis_server, monkeypatch):
    log = _log(redis_server.url)
    _stream(log)  # the scripts are loaded
    round_trip = redis_streams._Writer._round_trip

    def reply_lost(writer, commands, keys):
        round_trip(writer, commands, keys)
        raise redis.ConnectionError("the connection closed before the reply")

    _patch_round_trip(monkeypatch, log, reply_lost)
    stream_id = new_stream_id()
    log.create(stream_id, "alice", _frame(stream_id, 0, "start"))
    assert redis_server.client.xlen(_keys(stream_id)[0]) == 1
    assert _stored(redis_server, stream_id) == _frames(stream_id, 0, 0)


def _create_in_thread(log, stream_id):
    """Create ``stream_id`` from another thread, as a request would; the list gets
    "created" or "unavailable" once ``create`` returns."""
    answers = []

    def create():
        try:
            log.create(stream_id, "alice", _frame(stream_id, 0, "start"))
            answers.append("created")
        except EventLogUnavailable:
            answers.append("unavailable")

    request = threading.Thread(target=create, daemon=True)  # a hung one must not hang the tests
    request.start()
    return request, answers


def test_a_creation_queued_while_a_round_trip_fails_is_answered_at_once(tmp_path, monkeypatch):
    """Redis goes away while the writer is out with a round trip and a new stream
    waits for the next: its request gets EventLogUnavailable (a 503) at once, not
    once Redis is back."""
    server = RedisServer(tmp_path, appendonly=True)
    try:
        log = RedisEventLog(redis.Redis.from_url(server.url, retry=Retry(NoBackoff(), 0)), ttl_s=60,
                            max_events=100)
        stream_id = _stream(log)
        out, go_on, _ = _hold_first_round_trip(monkeypatch, log)
        log.append(stream_id, 1, _frame(stream_id, 1))
        assert out.wait(WAIT_S)  # the writer is out with event 1
        request, answers = _create_in_thread(log, new_stream_id())
        wait_until(lambda: len(log._writer._creations) == 1, WAIT_S, "the creation to wait for the writer")
        server.stop()
        go_on.set()  # the round trip fails; the writer retries event 1 until Redis is back
        request.join(WAIT_S)
        assert not request.is_alive()
        assert answers == ["unavailable"]
        server.start()
        log.flush(stream_id)
        log.append(stream_id, 2, _frame(stream_id, 2))  # the writer goes on after the failed creation
        wait_until(lambda: _stored(server, stream_id) == _frames(stream_id, 0, 2), WAIT_S, "event 2 to be stored")
    finally:
        go_on.set()
        server.stop()


def test_while_redis_is_down_creating_fails_at_once_and_works_as_soon_as_it_is_back(tmp_path, monkeypatch):
    server = RedisServer(tmp_path, appendonly=True)
    waiting, go_on = threading.Event(), threading.Event()

    def held_retry_wait(failures):  # the writer waits to retry until told
        waiting.set()
        go_on.wait(WAIT_S)
        return 0.0

    monkeypatch.setattr(redis_streams, "_retry_wait", held_retry_wait)
    try:
        log = RedisEventLog(redis.Redis.from_url(server.url, retry=Retry(NoBackoff(), 1)), ttl_s=60,
                            max_events=100)
        stream_id = _stream(log)
        server.stop()
        log.append(stream_id, 1, _frame(stream_id, 1))
        assert waiting.wait(WAIT_S)  # the writer failed and waits to retry event 1
        created = new_stream_id()
        request, answers = _create_in_thread(log, created)
        request.join(WAIT_S)
        assert answers == ["unavailable"]  # without waiting for the writer's retry
        server.start()
        request, answers = _create_in_thread(log, created)  # the writer has not retried yet
        request.join(WAIT_S)
        assert answers == ["created"]
        assert _stored(server, created) == _frames(created, 0, 0)
        go_on.set()
        log.flush(stream_id)
        assert _stored(server, stream_id) == _frames(stream_id, 0, 1)
    finally:
        go_on.set()
        server.stop()


def test_a_writer_connection_cut_while_idle_is_replaced_at_once_without_an_outage(redis_server, monkeypatch):
    """Redis closes idle connections (its ``timeout``, a restart, a proxy): the
    writer's next round trip fails once and goes again at once on a new connection.
    The creation it carries is made by the writer, and no outage is said."""
    said = []  # the writer's warnings (not other tests' fan-ins')
    monkeypatch.setattr(redis_streams.log, "warning",
                        lambda message, *args: "followed streams" in message or said.append(message))
    client, sent = _counting_client(redis_server.url)
    log = RedisEventLog(client, ttl_s=60, max_events=1000)
    _stream(log)  # the writer holds a connection
    host, port = log._writer._round_trips.connections["single"]._sock.getsockname()[:2]
    assert redis_server.client.client_kill(f"{host}:{port}")
    stream_id = new_stream_id()
    before = len(sent)
    log.create(stream_id, "alice", _frame(stream_id, 0, "start"))
    assert "MULTI" not in sent[before:]  # no request created its stream alone
    assert said == []
    assert _stored(redis_server, stream_id) == _frames(stream_id, 0, 0)


def test_events_appended_while_redis_is_down_are_written_once_it_is_back(tmp_path, monkeypatch):
    """Two outages in a row: each is said once, when the writer's attempt at once on
    a new connection failed too, before it waits to retry; its end is said once;
    nothing appended meanwhile is lost."""
    server = RedisServer(tmp_path, appendonly=True)
    happened = []  # ("said", message) and ("wait", failures), in order
    retry_wait = redis_streams._retry_wait
    monkeypatch.setattr(redis_streams, "_retry_wait",
                        lambda failures: happened.append(("wait", failures)) or retry_wait(failures) / 10)
    monkeypatch.setattr(redis_streams.log, "warning", lambda message, *args: happened.append(("said", message)))
    try:
        log = RedisEventLog(redis.Redis.from_url(server.url, retry=Retry(NoBackoff(), 0)), ttl_s=60,
                            max_events=100)
        stream_id = _stream(log)
        for outage, seqs in enumerate((range(1, 4), range(4, 6))):
            server.stop()
            for seq in seqs:
                log.append(stream_id, seq, _frame(stream_id, seq))
            wait_until(lambda attempts=outage + 1: happened.count(("wait", 3)) == attempts, WAIT_S,
                       "three attempts in the outage")
            server.start()
            log.flush(stream_id)
        assert _stored(server, stream_id) == _frames(stream_id, 0, 5)
    finally:
        server.stop()
    writers = [(i, message) for i, (kind, message) in enumerate(happened)
               if kind == "said" and "followed streams" not in message]  # not the fan-in's
    assert [message.split(" ", 3)[:3] for _, message in writers] == [["Redis", "cannot", "be"],
                                                                     ["Redis", "is", "back;"]] * 2
    for i, message in writers:
        if "cannot" in message:
            assert happened[i + 1] == ("wait", 1)  # said at the first failure, before the first wait


def test_an_unexpected_failure_of_a_round_trip_fails_its_streams_and_the_writer_goes_on(redis_server, monkeypatch):
    log = _log(redis_server.url)
    broken, later = _stream(log), _stream(log)
    round_trip = redis_streams._Writer._round_trip
    calls = []

    def fails_once(writer, commands, keys):
        calls.append(len(commands))
        if len(calls) == 1:
            raise ValueError("an unexpected reply")
        return round_trip(writer, commands, keys)

    _patch_round_trip(monkeypatch, log, fails_once)
    log.append(broken, 1, _frame(broken, 1))
    wait_until(lambda: calls, WAIT_S, "the writer to take the first write")
    log.append(later, 1, _frame(later, 1))
    log.flush(later)  # the writer went on; it settled the failed round trip before this one
    assert calls == [1, 1]
    assert _stored(redis_server, later) == _frames(later, 0, 1)
    with pytest.raises((ValueError, StreamNotFound)):  # the broken stream's producer is told
        log.append(broken, 2, _frame(broken, 2))
    assert _stored(redis_server, broken) == _frames(broken, 0, 0)


def test_a_write_whose_reply_was_lost_is_sent_again_and_stored_once(redis_server, monkeypatch):
    log = _log(redis_server.url)
    stream_id = _stream(log)
    round_trip = redis_streams._Writer._round_trip
    lost = []

    def first_reply_lost(writer, commands, keys):
        replies = round_trip(writer, commands, keys)
        if not lost:
            lost.append(commands)
            raise redis.ConnectionError("the connection closed before the reply")
        return replies

    _patch_round_trip(monkeypatch, log, first_reply_lost)
    log.append(stream_id, 1, _frame(stream_id, 1))
    log.flush(stream_id)  # no error: Redis refused the second XADD, and it is the same entry
    assert lost and lost[0][0][0] == "XADD"
    log.append(stream_id, 2, _frame(stream_id, 2), terminal=True)
    assert redis_server.client.xlen(_keys(stream_id)[0]) == 3
    assert _stored(redis_server, stream_id) == _frames(stream_id, 0, 2)


def test_a_producer_whose_stream_was_declared_lost_is_told_at_its_next_write(redis_server):
    producer, readers = _log(redis_server.url), _log(redis_server.url)
    stream_id = _stream(producer, 2)
    readers._declare_lost(stream_id, 1)  # the lease is there: nothing is appended
    assert redis_server.client.xlen(_keys(stream_id)[0]) == 2
    redis_server.client.delete(_keys(stream_id)[2])
    readers._declare_lost(stream_id, 1)  # as a reader's worker does once the lease is gone
    assert json.loads(events_of(_stored(redis_server, stream_id))[-1].data)["error"]["type"] == "stream_lost"
    producer.append(stream_id, 2, _frame(stream_id, 2))  # a producer that was alive after all
    with pytest.raises(redis_streams.StreamLost):
        producer.flush(stream_id)
    assert len(_stored(redis_server, stream_id)) == 3  # its event was refused: events 0, 1 and stream_lost


def test_events_redis_acknowledged_but_lost_are_written_again_after_a_failure(redis_server, monkeypatch, caplog):
    """A failover promotes a replica that may lack the last writes its primary
    acknowledged (replication is asynchronous). The writer finds out at its first
    round trip after a failure, and writes them again before anything newer."""
    producer = _log(redis_server.url)
    stream_id = _stream(producer)
    for seq in (1, 2, 3):
        producer.append(stream_id, seq, _frame(stream_id, seq))
        producer.flush(stream_id)
    events = _keys(stream_id)[0]
    client = redis_server.client
    # The new primary's copy: entries of events 0 and 1 only (its last id is 0-2).
    kept = client.xrange(events, "-", "0-2")
    client.delete(events)
    for entry, fields in kept:
        client.xadd(events, fields, id=entry)
    client.pexpire(events, 60_000)
    host, port = producer._writer._round_trips.connections["single"]._sock.getsockname()[:2]
    assert client.client_kill(f"{host}:{port}")  # the old primary's connection is gone
    caplog.set_level("WARNING", logger="sse_chat.eventlog.redis_streams")
    producer.append(stream_id, 4, _frame(stream_id, 4), terminal=True)
    assert _stored(redis_server, stream_id) == [*_frames(stream_id, 0, 3), _frame(stream_id, 4)]
    assert "lost events 2-3" in caplog.text

"""The Redis Streams event log: streams shared by every worker and host.

Its keys and Lua scripts are in :mod:`.redis_layout`.

What one worker does, so that its cost grows with events, not with round trips:

* **One writer** (:class:`_Writer`) for all the worker's producers: the streams
  they start and what they appended while the previous round trip was in flight
  go in the next one, one ``XADD`` (one stream entry) per stream with events, all
  streams pipelined together; no script per write.
* **Mirrors**: the worker keeps the events of the streams its readers follow
  (:class:`_Mirror`). A stream produced here is fed by the writer once Redis has
  stored its events, and read from there: no read from Redis at all.
* **One fan-in reader** (:class:`_FanIn`) for the streams produced elsewhere: a
  single blocking ``XREAD`` over all of them feeds their mirrors.
* **Outages**: while Redis is unreachable the writer keeps its events and retries,
  the fan-in retries, readers wait; calls made before a response starts raise
  :class:`~.base.EventLogUnavailable` (HTTP 503).

https://redis.io/docs/latest/develop/data-types/streams/
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..background import spawn
from ..protocol import EventId, stream_lost_frame
from .base import Batch, Claim, Control, EventLogUnavailable, StreamFull, StreamInfo, StreamLost, StreamNotFound
from .redis_layout import TERMINAL_FIELD, Layout, Scripts, StreamKeys, claim_key, entry_events, entry_fields, entry_id
from .redis_nodes import UNREACHABLE, Nodes, RoundTrips, connect
from .wakeups import Bell, Wakeups

log = logging.getLogger(__name__)

#: A producer that has not renewed its lease for this long is taken for dead
#: (long enough that an overloaded but live worker keeps its streams).
LEASE_S = 12.0
#: The producer renews its lease this often (a third of the lease).
LEASE_RENEWAL_S = LEASE_S / 3
#: Writes renew the lease and the keys' expiry at most this often per stream
#: (seconds; well inside :data:`LEASE_S`, and each renewal is three commands).
RENEW_EVERY_S = 3.0
#: The fan-in looks at the leases of remote streams that were quiet this long (seconds).
LEASE_CHECK_S = 2.0
#: Longest wait of one blocking ``XREAD`` (milliseconds).
FANIN_BLOCK_MS = 1000
#: After an ``XREAD`` that returned events, the fan-in waits this long (seconds)
#: before the next, so that one read carries many events when many streams flow.
FANIN_PAUSE_S = 0.005
#: After a round trip the writer waits this long (seconds) before the next, so
#: that one round trip carries many streams' writes when many streams flow (fewer
#: round trips: less CPU in the worker and in Redis per event, at the cost of this
#: much latency per event).
WRITE_PAUSE_S = 0.005
#: Most events that wait for the writer, per stream, before ``append`` blocks.
OUTBOX_LIMIT = 1000
#: Most entries one read returns per stream.
READ_COUNT = 1000
#: Connections per worker for short commands (the fan-in has its own).
MAX_CONNECTIONS = 64
#: Seconds to wait for a pooled connection, and to connect.
POOL_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 2.0
#: Waits between attempts while Redis is unreachable (seconds, doubling).
RETRY_FIRST_S, RETRY_MAX_S = 0.05, 1.0

#: In a Redis Cluster, the streams' hash-tag groups (:class:`.redis_layout.Layout`).
CLUSTER_GROUPS = 64
#: While the fan-in of a Cluster finds nothing new, it polls this often (seconds).
FANIN_POLL_S = 0.02

_UNREACHABLE = UNREACHABLE
#: How error replies of a Redis that refuses writes begin: ``maxmemory`` reached
#: under the ``noeviction`` policy, a replica, a disk that failed to save.
_REFUSALS = ("OOM ", "READONLY ", "MISCONF ")
#: The key :meth:`RedisEventLog.ready` writes to see that Redis takes writes.
READY_PROBE_KEY = "sse-chat:ready-probe"


def refuses_writes(error: BaseException) -> bool:
    """True for the error reply of a Redis that refuses writes (:data:`_REFUSALS`),
    also when a script met it."""
    if isinstance(error, (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError)):
        return True  # redis-py took the reply's first word off
    return isinstance(error, redis.ResponseError) and any(refusal in str(error) for refusal in _REFUSALS)


@contextmanager
def _reachable(what: str) -> Iterator[None]:
    """Turn a connection failure, or a Redis that refuses writes, into
    :class:`EventLogUnavailable`."""
    try:
        yield
    except _UNREACHABLE as exc:
        raise EventLogUnavailable(f"Redis cannot be reached ({what}: {exc})") from exc
    except redis.ResponseError as exc:
        if refuses_writes(exc):
            raise EventLogUnavailable(f"Redis refuses writes ({what}: {exc})") from exc
        raise


class RedisEventLog:
    """Streams in Redis, shared by every gunicorn worker and host.

    Args:
        client: a ``redis.Redis`` client (bytes responses) for one Redis, or the
            :class:`.redis_nodes.Nodes` of one Redis or a Cluster.
        ttl_s: seconds a stream is kept after its terminal event (and after its
            producer's last lease renewal, should nobody ever declare it lost).
        max_events: bound on events per stream; also the streams' ``MAXLEN``.
        clock: Unix time in seconds (shared across hosts for ``unattended_since``).
        wakeups: how this process's readers are woken.
        fanin_client: a client whose single connection the fan-in ``XREAD`` blocks
            on (default: one built from ``client``'s connection settings).
        monotonic: the clock (seconds) that times lease renewals.
        groups: the hash-tag groups of a Cluster's streams (default
            :data:`CLUSTER_GROUPS`); ignored on one Redis.
    """

    lease_renewal_s = LEASE_RENEWAL_S

    def __init__(self, client: redis.Redis | Nodes, ttl_s: float, max_events: int,
                 clock: Callable[[], float] = time.time, wakeups: Wakeups | None = None,
                 fanin_client: redis.Redis | None = None,
                 monotonic: Callable[[], float] = time.monotonic, groups: int = CLUSTER_GROUPS) -> None:
        self._nodes = client if isinstance(client, Nodes) else Nodes(client)
        self._redis: Any = self._nodes.client
        self._layout = Layout(groups if self._nodes.cluster else None)
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._max_events = max_events
        self._clock = clock
        self._monotonic = monotonic
        self._wakeups = wakeups if wakeups is not None else Wakeups()
        self._scripts = Scripts()
        self._mirrors = _Mirrors()
        self._writer = _Writer(RoundTrips(self._nodes), self._scripts, self._mirrors, self._wakeups,
                               ttl_ms=self._ttl_ms, monotonic=monotonic)
        if self._nodes.cluster:
            fanin_reads: _Reads = _PolledReads(RoundTrips(self._nodes), self._layout)
        else:
            fanin_reads = _BlockingReads(fanin_client or _single_connection_client(self._redis), self._redis)
        self._fanin = _FanIn(fanin_reads, self._redis, self._mirrors, self._wakeups, self._declare_lost)

    @classmethod
    def from_url(cls, url: str, ttl_s: float, max_events: int, wakeups: Wakeups | None = None) -> RedisEventLog:
        """Connect lazily to ``url`` (``redis://host:port/db``), one Redis or a
        Cluster (:func:`.redis_nodes.connect` says how it tells): a blocking pool of
        :data:`MAX_CONNECTIONS` for short commands, the writer's and the fan-in's
        connections (one per primary).

        Raises:
            ValueError: a ``cluster=`` query value other than ``yes`` or ``no``.
        """
        return cls(connect(url, max_connections=MAX_CONNECTIONS, pool_timeout_s=POOL_TIMEOUT_S,
                           connect_timeout_s=CONNECT_TIMEOUT_S), ttl_s, max_events, wakeups=wakeups)

    # --- producers ---------------------------------------------------------------

    def create(self, stream_id: str, owner: str | None, first_frame: bytes, *,
               events_per_response: int | None = None) -> None:
        """Create the stream in the writer's next round trip, beside every other
        stream's creation and writes of that moment, and return once it is stored.
        When the writer cannot reach Redis, create it alone, once.

        Raises:
            EventLogUnavailable: Redis cannot be reached.
        """
        mirror = _Mirror(self._layout.keys(stream_id), 0, local=True)
        now = self._clock()
        mirror.control = (False, 0, now)  # what the creation writes
        args: list[Any] = [owner or "", first_frame, self._ttl_ms, int(LEASE_S * 1000), now, events_per_response or 0]
        if not self._writer.create(mirror, args):
            with _reachable("creating a stream"), self._redis.pipeline(transaction=True) as pipe:
                for command in _creation(mirror.keys, *args):
                    pipe.execute_command(*command)
                for result in pipe.execute(raise_on_error=False):
                    # XADD refuses entry 0 again when an attempt whose reply was lost stored it
                    if isinstance(result, Exception) and _NOT_PAST_LAST not in str(result):
                        raise result
        mirror.frames.append(first_frame)
        mirror.renewed_at = self._monotonic()
        mirror.next_seq = 1
        mirror.local_unattended_since = now
        self._mirrors.add(mirror)

    def append(self, stream_id: str, seq: int, frame: bytes, *, terminal: bool = False) -> None:
        """Queue the event for the worker's writer, which stores everything queued
        in its next round trip. Returns at once (blocking only while
        :data:`OUTBOX_LIMIT` events of this stream wait), except for the terminal
        event, which returns once stored, however long Redis is away. An error of
        an earlier write is raised by the next append; :meth:`flush` waits.

        Raises:
            StreamFull, StreamLost, StreamNotFound, ValueError: see
                :meth:`.base.EventLog.append`.
        """
        if seq >= self._max_events and not terminal:
            raise StreamFull(f"stream {stream_id} reached {self._max_events} events")
        mirror = self._mirrors.get(stream_id)
        if mirror is None or not mirror.local:
            raise StreamNotFound(stream_id)
        self._writer.put(mirror, seq, frame, terminal)
        if terminal:
            self._writer.wait_stored(mirror)

    def flush(self, stream_id: str) -> None:
        """Wait until every event appended to ``stream_id`` is stored.

        Raises:
            StreamNotFound, StreamLost, ValueError: when a queued write failed.
        """
        mirror = self._mirrors.get(stream_id)
        if mirror is not None and mirror.local:
            self._writer.wait_stored(mirror)

    def control(self, stream_id: str) -> Control:
        """For a stream produced here: what this worker knows now (its own readers and
        cancels, and the fields Redis gave at the last read), without a round trip of
        its own; the writer's next round trip reads the fields again (an ``HMGET``
        beside the writes), so that another worker's cancel or readers are seen by a
        later call. For other streams: read now, and while Redis is away: not
        cancelled, attended (no producer gives up for want of an answer).

        Raises:
            StreamNotFound: the stream is unknown (read now) or vanished.
        """
        mirror = self._mirrors.get(stream_id)
        if mirror is not None and mirror.local:
            self._writer.read_control(mirror)
            cancel, readers, since = mirror.control
            cancel = cancel or mirror.local_cancel
        else:
            try:
                meta = self._layout.keys(stream_id).meta
                reply: Any = self._redis.hmget(meta, "cancel", "readers", "unattended_since")
            except _UNREACHABLE:
                cancel, readers, since = _UNKNOWN_CONTROL
            else:
                if reply[1] is None:
                    raise StreamNotFound(stream_id)
                cancel, readers, since = _control_fields(*reply)
        if mirror is not None and mirror.local:  # readers in this worker are counted here, not in Redis
            readers += mirror.local_readers
            since = max(since, mirror.local_unattended_since)
        return Control(cancel, 0.0 if readers > 0 else max(0.0, self._clock() - since))

    def keep_alive(self, stream_id: str) -> None:
        """Renew the lease, unless a write did so recently. Never raises (a lease
        that cannot be renewed is renewed by the next write that gets through)."""
        mirror = self._mirrors.get(stream_id)
        if mirror is not None and self._monotonic() - mirror.renewed_at < LEASE_RENEWAL_S:
            return
        keys = self._layout.keys(stream_id)
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(keys.lease, 1, px=int(LEASE_S * 1000))
                pipe.pexpire(keys.meta, self._ttl_ms)
                pipe.pexpire(keys.events, self._ttl_ms)
                pipe.execute()
        except _UNREACHABLE as exc:
            log.warning("stream %s: could not renew the producer's lease: %s", stream_id, exc)

    # --- readers -------------------------------------------------------------------

    def open(self, stream_id: str, after_seq: int) -> _RedisCursor:
        with self._mirrors.lock:
            mirror = self._mirrors.get(stream_id)
            if mirror is not None and mirror.local:  # produced here: no round trip
                mirror.cursors += 1
                mirror.local_readers += 1
        if mirror is not None and mirror.local:
            return _RedisCursor(mirror, after_seq, [], self._wakeups.subscribe(stream_id), self._cursor_closed)
        keys = self._layout.keys(stream_id)
        with _reachable("attaching a reader"):
            if not self._scripts.call(self._redis, "attach", [keys.meta], []):
                raise StreamNotFound(stream_id)
        try:
            mirror, backlog = self._mirror_for(stream_id, after_seq)
        except BaseException:
            self._detach(stream_id)
            raise
        return _RedisCursor(mirror, after_seq, backlog, self._wakeups.subscribe(stream_id), self._cursor_closed)

    def info(self, stream_id: str) -> StreamInfo | None:
        keys = self._layout.keys(stream_id)
        with _reachable("reading a stream's state"), self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.meta, "owner", "events_per_response")
            pipe.xrevrange(keys.events, "+", "-", count=1)
            (owner, events_per_response), top = pipe.execute()
        if owner is None or not top:
            return None
        first_seq, frames, finished = entry_events(top[0][1])
        return StreamInfo(owner.decode() or None, first_seq + len(frames) - 1, finished,
                          int(events_per_response or 0) or None)

    def request_cancel(self, stream_id: str) -> None:
        mirror = self._mirrors.get(stream_id)
        if mirror is not None and mirror.local:
            mirror.local_cancel = True  # its producer is here: it needs no read to learn it
        with _reachable("cancelling a stream"):
            if not self._scripts.call(self._redis, "cancel", [self._layout.keys(stream_id).meta], []):
                raise StreamNotFound(stream_id)

    def delete(self, stream_id: str) -> None:
        """``DEL`` of the stream's keys (one slot: its hash tag); later writes find
        no stream (``XADD … NOMKSTREAM``) and the scripts no meta hash, and leave it so."""
        with _reachable("deleting a stream"):
            self._redis.delete(*self._layout.keys(stream_id).triple)

    # --- idempotency keys -------------------------------------------------------------

    def claim(self, owner: str | None, key: str, fingerprint: str, stream_id: str, ttl_s: float) -> Claim | None:
        """One script call on the key's own slot (:func:`.redis_layout.claim_key`)."""
        with _reachable("claiming an idempotency key"):
            held = self._scripts.call(self._redis, "claim", [claim_key(owner, key)],
                                      [stream_id, fingerprint, max(1, int(ttl_s * 1000))])
        if held is None:
            return None
        held_stream, _, held_fingerprint = held.decode().partition(" ")
        return Claim(held_stream, held_fingerprint)

    def release(self, owner: str | None, key: str, stream_id: str) -> None:
        with _reachable("releasing an idempotency key"):
            self._scripts.call(self._redis, "release", [claim_key(owner, key)], [stream_id])

    def ready(self) -> bool:
        """Every primary answers ``PING`` (one Redis, or each of a Cluster's), and
        Redis takes a write (a ``SET`` of :data:`READY_PROBE_KEY` that expires in a
        second): a Redis at ``maxmemory`` under ``noeviction`` answers ``PING`` but
        refuses new streams. Never raises."""
        if not self._nodes.ready():
            return False
        try:
            self._redis.set(READY_PROBE_KEY, b"1", px=1000)
        except (redis.RedisError, OSError) as exc:
            log.warning("Redis does not take writes: %s", exc)
            return False
        return True

    def wake_readers(self) -> None:
        self._wakeups.ring_all()

    # --- inside the worker -----------------------------------------------------------

    def _mirror_for(self, stream_id: str, after_seq: int) -> tuple[_Mirror, list[bytes]]:
        """This worker's mirror of the stream (made and followed through the fan-in
        if there is none yet), and the events after ``after_seq`` that the mirror
        does not hold (read from Redis).

        Raises:
            EventLogUnavailable: Redis cannot be reached.
        """
        with self._mirrors.lock:
            mirror = self._mirrors.get(stream_id)
            if mirror is not None:
                mirror.cursors += 1
        if mirror is not None:
            backlog = self._read(stream_id, after_seq + 1, mirror.base - 1)[0] if after_seq + 1 < mirror.base else []
            return mirror, backlog
        frames, finished = self._read(stream_id, after_seq + 1)
        with self._mirrors.lock:
            mirror = self._mirrors.get(stream_id)
            if mirror is None:  # still none: this one follows it from here on
                mirror = self._mirrors.by_id[stream_id] = _Mirror(self._layout.keys(stream_id), after_seq + 1,
                                                                  local=False)
                mirror.frames.extend(frames)
                mirror.finished = finished
                mirror.cursors += 1
                self._fanin.follow(mirror)
                return mirror, []
            mirror.cursors += 1
        # Another reader made it meanwhile: what it lacks comes from our read.
        return mirror, frames[:max(0, mirror.base - (after_seq + 1))]

    def _cursor_closed(self, mirror: _Mirror, bell: Bell) -> None:
        """A cursor of ``mirror`` closed: it no longer counts as a reader, and the
        worker forgets mirrors nobody needs any more."""
        self._wakeups.unsubscribe(mirror.stream_id, bell)
        self._mirrors.release(mirror)
        if mirror.local:
            mirror.local_readers -= 1
            if mirror.local_readers == 0:
                mirror.local_unattended_since = self._clock()
        else:
            self._detach(mirror.stream_id)

    def _detach(self, stream_id: str) -> None:
        """Record in Redis that a reader of a stream produced elsewhere left (its
        producer counts abandonment from then). Best effort: a Redis that cannot be
        reached or refuses writes (OOM, READONLY, MISCONF) is logged, never raised
        into the closing reader, whose response must still end whole."""
        try:
            self._scripts.call(self._redis, "detach", [self._layout.keys(stream_id).meta], [self._clock()])
        except _UNREACHABLE as exc:
            log.warning("stream %s: could not record that a reader left: %s", stream_id, exc)
        except redis.ResponseError as exc:
            if not refuses_writes(exc):
                raise
            log.warning("stream %s: could not record that a reader left: %s", stream_id, exc)

    def _read(self, stream_id: str, first_seq: int, last_seq: int | None = None) -> tuple[list[bytes], bool]:
        """Frames ``first_seq`` … ``last_seq`` (``None``: to the end) from Redis, in
        pages of :data:`READ_COUNT` entries, and whether the last one read is terminal.

        Raises:
            StreamNotFound: the stream expired or vanished.
            EventLogUnavailable: Redis cannot be reached.
        """
        keys = self._layout.keys(stream_id)
        frames: list[bytes] = []
        finished = False
        # From the entry holding ``first_seq - 1``, so that whether it was the last is
        # known when nothing follows; each later page after the previous one's last entry.
        start = entry_id(max(0, first_seq - 1))
        while True:
            with _reachable("replaying a stream"), self._redis.pipeline(transaction=False) as pipe:
                pipe.xrange(keys.events, start, "+", count=READ_COUNT)
                pipe.exists(keys.meta)
                entries, exists = pipe.execute()
            if not exists:
                raise StreamNotFound(stream_id)
            for _, fields in entries:
                entry_first, entry_frames, finished = entry_events(fields)
                frames.extend(entry_frames[max(0, first_seq + len(frames) - entry_first):])
            if len(entries) < READ_COUNT or finished or (last_seq is not None and first_seq + len(frames) > last_seq):
                break
            start = "(" + entries[-1][0].decode()
        if last_seq is not None:
            del frames[last_seq - first_seq + 1:]
        return frames, finished

    def _declare_lost(self, stream_id: str, last_seq: int) -> None:
        """Append the terminal ``stream_lost`` error after ``last_seq``, unless the
        producer renewed its lease or someone ended the stream first."""
        keys = self._layout.keys(stream_id)
        frame = stream_lost_frame(EventId(stream_id, last_seq + 1),
                                  "the server generating this stream stopped (its worker died); ask again")
        try:
            result = self._scripts.call(self._redis, "lost", keys.triple, [last_seq + 1, frame, self._ttl_ms])
        except redis.ResponseError as exc:
            if not refuses_writes(exc):
                raise
            log.warning("stream %s: Redis refuses writes (%s); its readers here end", stream_id, exc)
            result = -3
        if result == -3:  # gone from Redis (a flush, a restart without data), or unwritable: end it here
            self._end_here(stream_id)
        elif result not in (1, -1, -2, -4):
            log.warning("stream %s: could not declare it lost (status %s)", stream_id, result)

    def _end_here(self, stream_id: str) -> None:
        """The stream can be read no further: this worker's readers of it end with
        ``stream_lost`` (their cursors raise :class:`StreamNotFound`)."""
        mirror = self._mirrors.get(stream_id)
        if mirror is not None:
            mirror.gone = True
            self._wakeups.changed(stream_id)


def _single_connection_client(client: redis.Redis) -> redis.Redis:
    """A client on its own one-connection pool, with ``client``'s settings."""
    kwargs = dict(client.connection_pool.connection_kwargs)
    pool = redis.ConnectionPool(connection_class=client.connection_pool.connection_class, max_connections=1,
                                **kwargs)
    return redis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))


#: Control fields (cancel, readers, unattended since) when none are known yet: not
#: cancelled, and attended, so that no producer gives up for want of an answer.
_UNKNOWN_CONTROL = (False, 1, 0.0)


def _control_fields(cancel: bytes | None, readers: bytes | None, since: bytes | None) -> tuple[bool, int, float]:
    return cancel == b"1", int(readers or 0), float(since or 0)


class _Mirrors:
    """This worker's mirrors, by stream id; ``lock`` guards changes to the dict and
    to the mirrors' reader counts (lookups need no lock)."""

    def __init__(self) -> None:
        self.by_id: dict[str, _Mirror] = {}
        self.lock = threading.Lock()

    def get(self, stream_id: str) -> _Mirror | None:
        return self.by_id.get(stream_id)

    def add(self, mirror: _Mirror) -> None:
        with self.lock:
            self.by_id[mirror.stream_id] = mirror

    def held(self, mirror: _Mirror) -> bool:
        """Whether ``mirror`` is still the one this worker holds for its stream."""
        return self.by_id.get(mirror.stream_id) is mirror

    def local_with_events(self) -> list[_Mirror]:
        """The mirrors of streams produced here that hold events."""
        with self.lock:
            return [mirror for mirror in self.by_id.values() if mirror.local and mirror.frames]

    def release(self, mirror: _Mirror) -> None:
        """A cursor of ``mirror`` closed: forget it if nobody needs it any more."""
        with self.lock:
            mirror.cursors -= 1
            if mirror.cursors <= 0 and (not mirror.local or mirror.finished) and self.held(mirror):
                del self.by_id[mirror.stream_id]

    def producer_done(self, mirror: _Mirror) -> None:
        """``mirror``'s producer ended: forget it if no cursor reads it."""
        with self.lock:
            if mirror.cursors <= 0 and self.held(mirror):
                del self.by_id[mirror.stream_id]


class _Mirror:
    """What this worker holds of one stream: events ``base``, ``base + 1``, … in
    ``frames``; ``local`` when its producer runs here (the writer feeds it once
    Redis stored the events), else the fan-in feeds it."""

    __slots__ = ("stream_id", "base", "frames", "finished", "gone", "local", "cursors", "renewed_at",
                 "control", "local_cancel", "pending", "pending_first", "pending_terminal", "in_flight",
                 "stored", "room", "error", "changed_at", "next_seq", "local_readers", "local_unattended_since",
                 "keys", "create_failed", "want_control")

    def __init__(self, keys: StreamKeys, base: int, *, local: bool) -> None:
        self.stream_id = keys.stream_id
        self.keys = keys
        self.base = base
        self.frames: list[bytes] = []
        self.finished = False
        self.gone = False
        self.local = local
        self.cursors = 0
        self.renewed_at = 0.0
        # Control fields (cancel, readers elsewhere, unattended since) as Redis last
        # gave them, or as the creation wrote them; a cancel asked in this worker.
        self.control: tuple[bool, int, float] = _UNKNOWN_CONTROL
        self.local_cancel = False
        self.want_control = False  # the producer looked: the writer's next round trip reads them
        # The writer's side (local mirrors): events waiting, and the first one's seq.
        self.pending: list[bytes] = []
        self.pending_first = 0
        self.pending_terminal = False
        self.in_flight = 0
        self.stored = threading.Event()  # set while nothing is pending or in flight
        self.stored.set()
        self.room = threading.Event()  # set while the outbox has room
        self.room.set()
        self.error: Exception | None = None
        self.create_failed = False  # the writer's round trip with its creation failed
        self.changed_at = time.monotonic()
        self.next_seq = base
        # Readers of a local stream in this worker (Redis counts the others'), and
        # since when (Unix seconds) none has been attached.
        self.local_readers = 0
        self.local_unattended_since = 0.0

    @property
    def end(self) -> int:
        """The seq after the last one held."""
        return self.base + len(self.frames)

    def feed(self, first_seq: int, frames: list[bytes], finished: bool) -> bool:
        """Add events ``first_seq``, …; those already held are skipped. False when
        they do not follow on (a gap)."""
        if first_seq > self.end:
            return False
        self.frames.extend(frames[self.end - first_seq:])
        self.finished = self.finished or finished
        self.changed_at = time.monotonic()
        return True



class _RedisCursor:
    """A reader's position in a stream, served from its worker's mirror: the events
    of ``backlog`` (read from Redis: ones the mirror does not hold), then the
    mirror's. ``bell`` rings when the mirror may have changed; ``on_close(mirror,
    bell)`` is called once, at :meth:`close`."""

    __slots__ = ("_mirror", "_backlog", "_bell", "position", "_closed", "_on_close")

    def __init__(self, mirror: _Mirror, after_seq: int, backlog: list[bytes], bell: Bell,
                 on_close: Callable[[_Mirror, Bell], None]) -> None:
        self._on_close = on_close
        self._mirror = mirror
        self._backlog = backlog  # events after_seq + 1 … mirror.base - 1, from Redis
        self._bell = bell
        self.position = after_seq
        self._closed = False

    def take(self, limit: int | None = None) -> Batch:
        mirror = self._mirror
        if mirror.gone:
            raise StreamNotFound(mirror.stream_id)
        first = self.position + 1
        finished = mirror.finished  # read first: a finished mirror holds every frame
        frames = self._backlog
        if frames:
            if limit is not None and len(frames) > limit:
                frames, self._backlog = frames[:limit], frames[limit:]
            else:
                self._backlog = []
        if first + len(frames) >= mirror.base:
            start = first + len(frames) - mirror.base
            if limit is None:
                frames = frames + mirror.frames[start:]
            elif len(frames) < limit:
                frames = frames + mirror.frames[start:start + limit - len(frames)]
        self.position += len(frames)
        return Batch(first, frames, finished and self.position == mirror.end - 1)

    def wait(self, deadline: float, offer: Callable[[bytes, bool], bool] | None = None) -> None:
        self._bell.wait(deadline)  # events reach a Redis reader through Redis: no offer

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._on_close(self._mirror, self._bell)


def _retry_wait(failures: int) -> float:
    return min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** max(0, failures - 1))


#: One stream's events in a round trip: its mirror, the first event's seq, the
#: frames, whether the last is terminal, and whether to read the control fields.
_Write = tuple["_Mirror", int, list[bytes], bool, bool]
#: What Redis says to an ``XADD`` whose id is not past the stream's last entry.
_NOT_PAST_LAST = "equal or smaller"


class _Writer:
    """The worker's one writer: a thread (greenlet under gevent) that creates the
    streams this worker starts and stores what every local producer appended, one
    stream entry per stream, all pipelined in one round trip. While one round trip
    is in flight the next creations and events gather (a group commit). While
    Redis is unreachable it keeps the events and retries; creations it does not
    retry (their requests are waiting to be answered). After a failed round trip
    it compares what Redis holds of each local stream with what Redis had
    acknowledged, and writes again what is missing (:meth:`_restore`).

    One plain lock, held for a few lines and never across I/O, guards the queue
    and the mirrors' outbox fields; waits are on events (a ``Condition`` would
    take a pure-Python ``RLock`` on every append under gevent).
    """

    def __init__(self, round_trips: RoundTrips, scripts: Scripts, mirrors: _Mirrors, wakeups: Wakeups, *,
                 ttl_ms: int, monotonic: Callable[[], float]) -> None:
        self._round_trips = round_trips
        self._scripts = scripts
        self._mirrors = mirrors
        self._wakeups = wakeups
        self._ttl_ms = ttl_ms
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._work = threading.Event()  # set while the queue holds a stream or a creation
        self._queue: dict[str, _Mirror] = {}
        self._creations: list[tuple[_Mirror, list[Any]]] = []
        self._failures = 0  # round trips failed in a row
        self._started = False
        self._check_stored = False  # a round trip failed: compare Redis with the mirrors first

    def create(self, mirror: _Mirror, args: list[Any]) -> bool:
        """Create ``mirror``'s stream (the create script's ``args``) in the next round
        trip and wait until it is stored. False, at once, while the writer's last
        round trip failed (Redis may be away), and as soon as the round trip that
        would carry it fails: the caller then creates the stream itself (the script
        is idempotent), and so learns at once whether Redis is back."""
        with self._lock:
            if self._failures:
                return False
            mirror.stored.clear()
            self._creations.append((mirror, args))
            self._work.set()
        self._start()
        mirror.stored.wait()
        return not mirror.create_failed

    def put(self, mirror: _Mirror, seq: int, frame: bytes, terminal: bool) -> None:
        """Queue event ``seq`` of ``mirror``'s stream; waits only while its outbox
        holds :data:`OUTBOX_LIMIT` events.

        Raises:
            ValueError: ``seq`` is not the next one.
            StreamNotFound, StreamLost, Exception: an earlier write of this stream failed so.
        """
        while True:
            with self._lock:
                if mirror.error is not None:
                    raise mirror.error
                if seq != mirror.next_seq:
                    raise ValueError(f"event {seq} appended after {mirror.next_seq - 1}")
                if len(mirror.pending) < OUTBOX_LIMIT:
                    self._enqueue(mirror, seq, frame, terminal)
                    break
                mirror.room.clear()
            mirror.room.wait()
        self._start()

    def read_control(self, mirror: _Mirror) -> None:
        """Have the next round trip read ``mirror``'s control fields (an ``HMGET``
        beside the writes); it sets ``mirror.control``."""
        with self._lock:
            if mirror.want_control:
                return
            mirror.want_control = True
            if mirror.stream_id not in self._queue:
                if not mirror.pending:
                    mirror.pending_first = mirror.next_seq
                self._queue[mirror.stream_id] = mirror
                self._work.set()
        self._start()

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        spawn(self._run, "sse-chat-redis-writer")

    def _enqueue(self, mirror: _Mirror, seq: int, frame: bytes, terminal: bool) -> None:
        if not mirror.pending:
            mirror.pending_first = seq
        mirror.pending.append(frame)
        mirror.pending_terminal = terminal
        mirror.next_seq = seq + 1
        mirror.stored.clear()
        if mirror.stream_id not in self._queue:
            self._queue[mirror.stream_id] = mirror
            self._work.set()

    def wait_stored(self, mirror: _Mirror) -> None:
        """Wait until every event queued for ``mirror`` is stored.

        Raises:
            StreamNotFound, StreamLost, Exception: a write of this stream failed so.
        """
        mirror.stored.wait()
        if mirror.error is not None:
            raise mirror.error

    def _run(self) -> None:
        batch: list[_Write] = []
        creations: list[tuple[_Mirror, list[Any]]] = []
        reconnect = True
        while True:
            if not batch and not creations:
                batch, creations = self._take()
                if not batch and not creations:  # the creations were failed meanwhile
                    continue
            try:
                if self._check_stored:
                    self._restore()
                    self._check_stored = False
                created, outcomes = self._write(batch, creations)
            except _UNREACHABLE as exc:
                self._check_stored = True
                if reconnect:  # a connection Redis closed while idle fails at its first use: once more, at once
                    reconnect = False
                    continue
                self._unreachable(exc, creations, len(batch))
                creations = []
                if batch:
                    time.sleep(_retry_wait(self._failures))
                continue
            except Exception as exc:  # a bug or an unexpected reply: fail these streams, keep the writer
                if refuses_writes(exc):
                    log.warning("Redis refuses writes (%s): the %d streams written end", exc, len(batch))
                else:
                    log.exception("writing to Redis failed")
                created, outcomes = [exc] * len(creations), [(exc, None)] * len(batch)
            reconnect = True
            if self._failures:
                log.warning("Redis is back; the waiting events were written")
                self._failures = 0
            self._settle_creations(creations, created)
            self._settle(batch, outcomes)
            batch, creations = [], []
            time.sleep(WRITE_PAUSE_S)

    def _unreachable(self, exc: Exception, creations: list[tuple[_Mirror, list[Any]]], waiting: int) -> None:
        """Count a failed round trip, and answer every creation waiting for the
        writer, in it or queued since: its request creates the stream alone, for the
        retries may last the whole outage. Say the outage once, at its first failure."""
        with self._lock:
            self._failures += 1
            creations = creations + self._creations
            self._creations = []
        self._settle_creations(creations, [exc] * len(creations))
        if self._failures == 1:
            log.warning("Redis cannot be reached (%s); %d streams' events wait and are retried", exc, waiting)

    def _take(self) -> tuple[list[_Write], list[tuple[_Mirror, list[Any]]]]:
        self._work.wait()
        with self._lock:
            mirrors, self._queue = list(self._queue.values()), {}
            creations, self._creations = self._creations, []
            self._work.clear()
            batch: list[_Write] = []
            for mirror in mirrors:
                batch.append((mirror, mirror.pending_first, mirror.pending,
                              mirror.pending_terminal and bool(mirror.pending), mirror.want_control))
                mirror.want_control = False
                mirror.in_flight += len(mirror.pending)
                mirror.pending = []
                mirror.room.set()  # producers waiting on a full outbox go on
            return batch, creations

    def _write(self, batch: list[_Write], creations: list[tuple[_Mirror, list[Any]]]
               ) -> tuple[list[Any], list[tuple[Exception | None, Any]]]:
        """Send each new stream's creation (:func:`_creation` in ``MULTI``/``EXEC``)
        and each stream's write (:meth:`_commands`) in one round trip per primary,
        and return the replies of the creations (an error reply as its exception)
        and of each write: ``(error or None, control fields or None)``, in order.
        redis-py's ``Pipeline`` would cost more per command than the command itself
        here: a callback lookup, options and a stack per command; and a creation
        sent on its own costs about 135 µs of the worker's CPU, against 7 to 16 µs
        in a round trip with 10 to 50 others (measured).

        Raises:
            redis.ConnectionError, redis.TimeoutError: Redis cannot be reached.
        """
        now = self._monotonic()
        commands: list[tuple[Any, ...]] = []
        keys: list[str] = []
        for mirror, args in creations:
            commands += (("MULTI",), *_creation(mirror.keys, *args), ("EXEC",))
            keys += [mirror.keys.events] * (len(commands) - len(keys))
        created_at = len(commands)
        starts = []
        for write in batch:
            starts.append(len(commands))
            commands += self._commands(write, now)
            keys += [write[0].keys.events] * (len(commands) - len(keys))
        results = self._round_trip(commands, keys)
        # A creation's reply is its EXEC's: a list (its XADD may have refused entry 0,
        # already stored by an attempt whose reply was lost), else the error.
        created = [results[end - 1] for end in range(_CREATION_LENGTH, created_at + 1, _CREATION_LENGTH)]
        ends = [*starts[1:], len(commands)] if starts else []
        outcomes = [_outcome(write, results[start:end]) for write, start, end in zip(batch, starts, ends, strict=True)]
        refused = [i for i, (error, _) in enumerate(outcomes) if error is _REFUSED]
        if refused:
            self._explain_refused(batch, outcomes, refused)
        return created, outcomes

    def _commands(self, write: _Write, now: float) -> list[tuple[Any, ...]]:
        """One stream's commands in a round trip. With events: an ``XADD`` of one
        entry (``NOMKSTREAM``: nothing if the stream expired or vanished); at the
        terminal event the keys' expiry and the lease's end, else every
        :data:`RENEW_EVERY_S` the lease and expiry renewed. Then the control fields
        when the producer looked at them since the last read (``HMGET``, last)."""
        mirror, first_seq, frames, terminal, read_control = write
        keys, ttl_ms = mirror.keys, self._ttl_ms
        commands: list[tuple[Any, ...]] = []
        if frames:
            commands.append(("XADD", keys.events, "NOMKSTREAM", entry_id(first_seq + len(frames) - 1),
                             *entry_fields(first_seq, frames, terminal)))
        if frames and terminal:
            commands += (("PEXPIRE", keys.events, ttl_ms), ("PEXPIRE", keys.meta, ttl_ms), ("DEL", keys.lease))
        elif frames and now - mirror.renewed_at >= RENEW_EVERY_S:
            mirror.renewed_at = now
            commands += (("SET", keys.lease, 1, "PX", int(LEASE_S * 1000)), ("PEXPIRE", keys.events, ttl_ms),
                         ("PEXPIRE", keys.meta, ttl_ms))
        if read_control:
            commands.append(("HMGET", keys.meta, "cancel", "readers", "unattended_since"))
        return commands

    def _explain_refused(self, batch: list[_Write], outcomes: list[tuple[Exception | None, Any]],
                         refused: list[int]) -> None:
        """Redis refused the entries of writes ``refused`` (indexes in ``batch``): not
        past the stream's last entry. Set their outcomes: if that last entry is the
        write's own, an earlier attempt stored it (its reply was lost); if it is
        terminal, the stream ended without this producer.

        Raises:
            redis.ConnectionError, redis.TimeoutError: Redis cannot be reached.
        """
        tops = self._round_trip([("XREVRANGE", batch[i][0].keys.events, "+", "-", "COUNT", 1) for i in refused],
                                [batch[i][0].keys.events for i in refused])
        for index, top in zip(refused, tops, strict=True):
            mirror, first_seq, frames, _, _ = batch[index]
            if isinstance(top, Exception):
                outcomes[index] = (top, None)
            elif top and top[0][0] == entry_id(first_seq + len(frames) - 1).encode():
                outcomes[index] = (None, None)
            elif top and top[0][1][-2] == TERMINAL_FIELD:
                outcomes[index] = (StreamLost(f"stream {mirror.stream_id} has already ended"), None)
            else:
                outcomes[index] = (ValueError(f"event {first_seq} of stream {mirror.stream_id} is out of order"),
                                   None)

    def _restore(self) -> None:
        """Write again what Redis acknowledged but no longer holds, for every stream
        produced here: after a failover, the new primary may lack the last writes the
        old one acknowledged (replication is asynchronous), as may a Redis restarted
        from an older save. Streams Redis no longer has at all are left to the next
        write (which then fails with :class:`StreamNotFound`).

        Raises:
            redis.ConnectionError, redis.TimeoutError: Redis cannot be reached.
        """
        mirrors = self._mirrors.local_with_events()
        if not mirrors:
            return
        tops = self._round_trip([("XREVRANGE", m.keys.events, "+", "-", "COUNT", 1) for m in mirrors],
                                [m.keys.events for m in mirrors])
        commands, keys = [], []
        for mirror, top in zip(mirrors, tops, strict=True):
            if not isinstance(top, list) or not top or top[0][0].startswith(b"1-"):
                continue  # gone, or declared lost: the next write learns it
            stored = int(top[0][1][-2] if top[0][1][-2] != TERMINAL_FIELD else top[0][1][-4])
            if stored >= mirror.end - 1:
                continue
            log.warning("stream %s: Redis lost events %d-%d it had acknowledged (a failover or a restart); "
                        "written again", mirror.stream_id, stored + 1, mirror.end - 1)
            commands.append(("XADD", mirror.keys.events, "NOMKSTREAM", entry_id(mirror.end - 1),
                             *entry_fields(stored + 1, mirror.frames[stored + 1 - mirror.base:], mirror.finished)))
            keys.append(mirror.keys.events)
        if commands:
            self._round_trip(commands, keys)

    @staticmethod
    def _settle_creations(creations: list[tuple[_Mirror, list[Any]]], results: list[Any]) -> None:
        """Wake each creation's request; one whose reply is an error creates its
        stream itself (:meth:`create`)."""
        for (mirror, _), result in zip(creations, results, strict=True):
            mirror.create_failed = not isinstance(result, list)
            mirror.stored.set()

    def _round_trip(self, commands: list[tuple[Any, ...]], keys: list[str]) -> list[Any]:
        """:meth:`.redis_nodes.RoundTrips.send` (one round trip per primary, all at once)."""
        return self._round_trips.send(commands, keys)

    def _settle(self, batch: list[_Write], outcomes: list[tuple[Exception | None, Any]]) -> None:
        wakeups = self._wakeups
        for (mirror, first_seq, frames, terminal, _), (error, control) in zip(batch, outcomes, strict=True):
            with self._lock:
                mirror.in_flight -= len(frames)
                if error is not None:
                    if isinstance(error, StreamNotFound) or refuses_writes(error):
                        # gone from Redis (a flush, a restart without its data) or no longer
                        # writable: the producer stops, and this worker's readers end now
                        mirror.gone = True
                        if not isinstance(error, StreamNotFound):
                            error = StreamLost(f"stream {mirror.stream_id}: Redis refuses writes ({error})")
                    mirror.error = error
                    mirror.room.set()
                else:
                    if control is not None:
                        mirror.control = _control_fields(*control)
                    if frames:
                        mirror.feed(first_seq, frames, terminal)
                if error is not None or not (mirror.pending or mirror.in_flight):
                    mirror.stored.set()
            if frames or error is not None:
                wakeups.changed(mirror.stream_id)
            if terminal or error is not None:
                self._mirrors.producer_done(mirror)


def _creation(keys: StreamKeys, owner: str, first_frame: bytes, ttl_ms: int, lease_ms: int, now: float,
              events_per_response: int) -> list[tuple[Any, ...]]:
    """The commands that create a stream whose event 0 is ``first_frame`` (sent in
    ``MULTI``/``EXEC``, so that no key is left without its expiry). Sent again after
    a lost reply they change nothing that matters: nobody knows the stream yet, and
    ``XADD`` refuses entry 0 a second time."""
    return [("HSET", keys.meta, "owner", owner, "cancel", 0, "readers", 0, "unattended_since", now,
             "events_per_response", events_per_response),
            ("XADD", keys.events, entry_id(0), *entry_fields(0, [first_frame], False)),
            ("SET", keys.lease, 1, "PX", lease_ms),
            ("PEXPIRE", keys.events, ttl_ms),
            ("PEXPIRE", keys.meta, ttl_ms)]


#: Commands per creation in the writer's round trip: MULTI, :func:`_creation`'s, EXEC.
_CREATION_LENGTH = 7


def _outcome(write: _Write, replies: list[Any]) -> tuple[Exception | None, Any]:
    """A write's error (or ``None``) and control fields (or ``None``), from the
    replies to its commands (:meth:`_Writer._commands`: the ``XADD`` first, the
    ``HMGET`` last when asked for). The commands after the ``XADD`` are single-key
    commands on keys of the right types: only a bug could fail them."""
    mirror, _, frames, _, read_control = write
    if frames:
        added = replies[0]
        if added is None:
            return StreamNotFound(mirror.stream_id), None
        if isinstance(added, redis.ResponseError) and _NOT_PAST_LAST in str(added):
            return _REFUSED, None
        if isinstance(added, Exception):
            return added, None
    if not read_control:
        return None, None
    control = replies[-1]
    if isinstance(control, Exception):
        return control, None
    if control[1] is None:  # no meta hash: the stream expired or vanished
        return StreamNotFound(mirror.stream_id), None
    return None, control


#: Stands for a write Redis refused as not past the stream's last entry, until
#: :meth:`_Writer._explain_refused` finds out why.
_REFUSED = RuntimeError("refused: not past the stream's last entry")


class _FanIn:
    """The reads of every stream this worker's readers follow whose producer runs
    elsewhere (``reads``: one blocking ``XREAD`` on one Redis, polled ones per
    group in a Cluster); feeds their mirrors and rings their readers. Looks at the
    leases of quiet streams every :data:`LEASE_CHECK_S` seconds (``client``, for
    short commands) and has ``declare_lost(stream_id, last_seq)`` end those whose
    producer died."""

    def __init__(self, reads: _Reads, client: Any, mirrors: _Mirrors, wakeups: Wakeups,
                 declare_lost: Callable[[str, int], None]) -> None:
        self._reads = reads
        self._client = client
        self._mirrors = mirrors
        self._wakeups = wakeups
        self._declare_lost = declare_lost
        self._followed: dict[str, _Mirror] = {}
        self._more = threading.Event()
        self._started = False
        self._lease_check_at = 0.0

    def follow(self, mirror: _Mirror) -> None:
        """Start following ``mirror``'s stream (called with the mirrors lock held)."""
        if mirror.finished:
            return
        self._followed[mirror.stream_id] = mirror
        self._more.set()
        if not self._started:
            self._started = True
            spawn(self._run, "sse-chat-redis-fanin")
        else:
            self._reads.followed_more()

    def _run(self) -> None:
        failures = 0
        while True:
            self._forget_unfollowed()
            if not self._followed:
                self._more.clear()
                self._more.wait()
                continue
            try:
                got = self._read_once()
                if time.monotonic() >= self._lease_check_at:
                    self._check_leases()
            except _UNREACHABLE as exc:
                failures += 1
                self._reads.failed()
                if failures == 1:
                    log.warning("Redis cannot be reached (%s); %d followed streams wait", exc, len(self._followed))
                time.sleep(_retry_wait(failures))
                continue
            except Exception:
                log.exception("the Redis fan-in failed; retrying")
                self._reads.failed()
                time.sleep(RETRY_MAX_S)
                continue
            failures = 0
            if got:
                time.sleep(FANIN_PAUSE_S)
            elif self._reads.idle_wait_s:
                self._more.clear()
                self._more.wait(self._reads.idle_wait_s)

    def _forget_unfollowed(self) -> None:
        for stream_id, mirror in list(self._followed.items()):
            if mirror.finished or mirror.gone or not self._mirrors.held(mirror):
                del self._followed[stream_id]

    def _read_once(self) -> bool:
        got = self._reads.read(list(self._followed.values()))
        for key, entries in got:
            stream_id = StreamKeys.stream_of(key)
            mirror = self._followed.get(stream_id)
            if mirror is None or not entries:
                continue
            for _, fields in entries:
                mirror.feed(*entry_events(fields))
            self._wakeups.changed(stream_id)
        return bool(got)

    def _check_leases(self) -> None:
        """End the quiet streams whose producer's lease expired with ``stream_lost``;
        mark the ones that vanished (expired) as gone."""
        now = time.monotonic()
        self._lease_check_at = now + LEASE_CHECK_S
        quiet = [m for m in self._followed.values() if now - m.changed_at >= LEASE_CHECK_S]
        if not quiet:
            return
        with self._client.pipeline(transaction=False) as pipe:  # a Cluster's pipeline: one per primary
            for mirror in quiet:
                pipe.xrevrange(mirror.keys.events, "+", "-", count=1)
                pipe.exists(mirror.keys.lease)
            replies = pipe.execute()
        for i, mirror in enumerate(quiet):
            top, lease = replies[2 * i], replies[2 * i + 1]
            if not top:
                mirror.gone = True
                self._wakeups.changed(mirror.stream_id)
                continue
            first_seq, frames, finished = entry_events(top[0][1])
            if not finished and not lease:
                self._declare_lost(mirror.stream_id, first_seq + len(frames) - 1)


#: A read's reply: for each stream with new entries, its events key and the
#: entries, ``(entry id, {field: value})``.
_Got = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]


class _Reads(Protocol):
    """How the fan-in reads what follows in the streams it follows."""

    #: Seconds to wait after a read that found nothing (0: the read itself waits).
    idle_wait_s: float

    def read(self, followed: list[_Mirror]) -> _Got:
        """What follows each mirror's end, for the streams that have some.

        Raises:
            redis.RedisError: as the commands (:data:`_UNREACHABLE` when Redis is away).
        """

    def followed_more(self) -> None:
        """A stream joined: a read that waits should return now."""

    def failed(self) -> None:
        """A read failed: start afresh (new connections)."""


class _BlockingReads:
    """One Redis: one blocking ``XREAD`` over every followed stream (keys of any
    slots), on a connection of its own (``client``); a stream that joins while it
    blocks makes it return (``CLIENT UNBLOCK`` sent through ``control``)."""

    idle_wait_s = 0.0

    def __init__(self, client: redis.Redis, control: redis.Redis) -> None:
        self._client = client
        self._control = control
        self._client_id: int | None = None
        self._blocked = False

    def read(self, followed: list[_Mirror]) -> _Got:
        if self._client_id is None:
            self._client_id = self._client.client_id()
        streams: Any = {mirror.keys.events: f"0-{mirror.end}" for mirror in followed}
        self._blocked = True
        try:
            reply: Any = self._client.xread(streams, count=READ_COUNT, block=FANIN_BLOCK_MS)
        finally:
            self._blocked = False
        return reply or []

    def followed_more(self) -> None:
        if self._blocked and self._client_id is not None:
            spawn(self._unblock, "sse-chat-redis-unblock")

    def _unblock(self) -> None:
        """Have the blocked ``XREAD`` return now, so the next one includes the new stream."""
        if self._client_id is None:
            return
        with suppress(*_UNREACHABLE):
            self._control.client_unblock(self._client_id)

    def failed(self) -> None:
        self._client_id = None


class _PolledReads:
    """A Cluster: one non-blocking ``XREAD`` per hash-tag group with followed
    streams (Redis refuses a command across slots), all of a primary's in one
    pipeline, every primary's at once (:class:`.redis_nodes.RoundTrips`); while
    nothing new comes, again every :data:`FANIN_POLL_S`."""

    idle_wait_s = FANIN_POLL_S

    def __init__(self, round_trips: RoundTrips, layout: Layout) -> None:
        self._round_trips = round_trips
        self._layout = layout

    def read(self, followed: list[_Mirror]) -> _Got:
        groups: dict[str, list[_Mirror]] = {}
        for mirror in followed:
            groups.setdefault(mirror.keys.tag, []).append(mirror)
        commands = [("XREAD", "COUNT", READ_COUNT, "STREAMS", *(m.keys.events for m in mirrors),
                     *(f"0-{m.end}" for m in mirrors)) for mirrors in groups.values()]
        replies = self._round_trips.send(commands, [mirrors[0].keys.events for mirrors in groups.values()])
        got: _Got = []
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
            streams = reply.items() if isinstance(reply, dict) else reply or []  # RESP3: a map
            for key, entries in streams:
                got.append((key, [(entry, _pairs(fields)) for entry, fields in entries]))
        return got

    def followed_more(self) -> None:
        """Nothing to do: the next poll includes it."""

    def failed(self) -> None:
        self._round_trips.close()


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    """``[f1, v1, f2, v2, …]`` (a raw reply) as ``{f1: v1, f2: v2, …}``, in order."""
    values = iter(flat)
    return dict(zip(values, values, strict=False))

"""The Redis Streams event log: streams shared by every worker and host.

Keys of one stream (the ``{stream_id}`` hash tag keeps them in one cluster slot):

* ``sse-chat:{id}:events``: a Redis Stream; event ``seq`` is entry ``0-(seq+1)``
  with fields ``f`` (the encoded frame) and ``t`` (``1`` for the terminal event).
  Entry ids never leave this module; the public id stays ``{stream_id}:{seq}``.
* ``sse-chat:{id}:meta``: a hash: ``owner``, ``last_seq``, ``finished``, ``cancel``,
  ``readers``, ``unattended_since`` (Unix seconds).
* ``sse-chat:{id}:lease``: exists while the producer lives; it renews it every
  :attr:`RedisEventLog.lease_renewal_s`. A reader that finds it gone on an
  unfinished stream appends the terminal ``error`` event ``stream_lost``.

Appends run as one Lua script, so seq order, the terminal flag and expiry change
together. https://redis.io/docs/latest/develop/data-types/streams/
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import redis

from .base import Batch, Control, StreamFull, StreamInfo, StreamLost, StreamNotFound, lost_frame

#: A producer that has not renewed its lease for this long is taken for dead
#: (long enough that an overloaded but live worker keeps its streams).
LEASE_S = 12.0
#: The producer renews its lease this often (a third of the lease).
LEASE_RENEWAL_S = LEASE_S / 3
#: A blocked read wakes at least this often to look at the lease, so readers of a
#: dead producer learn it within about LEASE_S + LEASE_CHECK_S seconds.
LEASE_CHECK_S = 2.0
#: Most events that wait for the writer before ``append`` blocks.
OUTBOX_LIMIT = 1000
#: Most entries one read returns.
READ_COUNT = 1000
#: Redis connections per worker: one per following reader, plus producers' short
#: commands; above gunicorn's ``worker_connections`` (4000).
MAX_CONNECTIONS = 8000

# KEYS: events, meta, lease. ARGV: first seq, 1 if the last frame is terminal, TTL in
# ms, MAXLEN, 1 to append only when the lease is gone, lease in ms, then the frames
# in order. Every write renews the producer's lease and the keys' expiry.
# Returns a negative status, or the producer's control fields (cancel, readers,
# unattended_since), so that a busy producer learns them without asking.
_APPEND = """
local events, meta, lease = KEYS[1], KEYS[2], KEYS[3]
local first, terminal, ttl_ms, maxlen, only_if_lost, lease_ms = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if redis.call('EXISTS', meta) == 0 then return -3 end
if redis.call('HGET', meta, 'finished') == '1' then return -2 end
if only_if_lost == '1' and redis.call('EXISTS', lease) == 1 then return -4 end
if first ~= tonumber(redis.call('HGET', meta, 'last_seq')) + 1 then return -1 end
local count = #ARGV - 6
for i = 1, count do
  local seq = first + i - 1
  local flag = (i == count and terminal == '1') and '1' or '0'
  redis.call('XADD', events, 'MAXLEN', maxlen, '0-' .. (seq + 1), 'f', ARGV[6 + i], 't', flag)
end
redis.call('HSET', meta, 'last_seq', first + count - 1)
if terminal == '1' then
  redis.call('HSET', meta, 'finished', '1')
  redis.call('PEXPIRE', events, ttl_ms)
  redis.call('PEXPIRE', meta, ttl_ms)
  redis.call('DEL', lease)
else
  redis.call('SET', lease, 1, 'PX', lease_ms)  -- a producer that writes is alive
  redis.call('PEXPIRE', events, ttl_ms)
  redis.call('PEXPIRE', meta, ttl_ms)
end
return redis.call('HMGET', meta, 'cancel', 'readers', 'unattended_since')
"""

# Each of these changes a stream's meta hash only if it exists (HSET or HINCRBY on
# a missing key would create one that never expires); 0 means it does not.
_SET_CANCEL = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'cancel', 1)
return 1
"""

_ATTACH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'readers', 1)
return 1
"""

_DETACH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local readers = redis.call('HINCRBY', KEYS[1], 'readers', -1)
if readers <= 0 then
  redis.call('HSET', KEYS[1], 'readers', 0, 'unattended_since', ARGV[1])
end
return 1
"""


class RedisEventLog:
    """Streams in Redis, shared by every gunicorn worker and host.

    Args:
        client: a ``redis.Redis`` client (bytes responses).
        ttl_s: seconds a stream is kept after its terminal event (and after its
            producer's last lease renewal, should nobody ever declare it lost).
        max_events: bound on events per stream; also the streams' ``MAXLEN``.
        clock: Unix time in seconds (shared across hosts for ``unattended_since``).
    """

    lease_renewal_s = LEASE_RENEWAL_S

    def __init__(self, client: redis.Redis, ttl_s: float, max_events: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._redis = client
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._max_events = max_events
        self._clock = clock
        self._append_script = client.register_script(_APPEND)
        self._detach_script = client.register_script(_DETACH)
        self._attach_script = client.register_script(_ATTACH)
        self._cancel_script = client.register_script(_SET_CANCEL)
        self._outboxes: dict[str, _Outbox] = {}
        self._outboxes_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, ttl_s: float, max_events: int) -> "RedisEventLog":
        """Connect lazily to ``url`` (``redis://host:port/db``).

        Every following reader holds one connection in a blocking ``XREAD``, so the
        pool allows more connections than a worker serves.
        """
        pool = redis.ConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS, health_check_interval=30)
        return cls(redis.Redis(connection_pool=pool), ttl_s, max_events)

    def create(self, stream_id: str, owner: str | None) -> None:
        keys = _Keys(stream_id)
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.meta, mapping={"owner": owner or "", "last_seq": -1, "finished": 0, "cancel": 0,
                                          "readers": 0, "unattended_since": self._clock()})
            pipe.pexpire(keys.meta, self._ttl_ms)
            pipe.set(keys.lease, 1, px=int(LEASE_S * 1000))
            pipe.execute()

    def append(self, stream_id: str, seq: int, frame: bytes, *, terminal: bool = False) -> None:
        """Queue the event for the stream's writer, which sends everything queued in
        one script call (a group commit: while one call is in flight the next
        events gather, so a fast producer costs one round trip per batch, not per
        event). Returns at once, except for the first and the terminal event, which
        return once stored. An error of an earlier write is raised by the next
        append; :meth:`flush` waits for the queue.
        """
        if seq >= self._max_events and not terminal:
            raise StreamFull(f"stream {stream_id} reached {self._max_events} events")
        with self._outboxes_lock:
            outbox = self._outboxes.get(stream_id)
            if outbox is None:
                outbox = self._outboxes[stream_id] = _Outbox(self._write_batch, stream_id)
        try:
            outbox.put(seq, frame, terminal, wait=terminal or seq == 0)
        finally:
            if terminal or outbox.failed:
                with self._outboxes_lock:
                    self._outboxes.pop(stream_id, None)

    def flush(self, stream_id: str) -> None:
        """Wait until every event appended to ``stream_id`` is stored.

        Raises:
            StreamNotFound, StreamLost, ValueError: when a queued write failed.
        """
        with self._outboxes_lock:
            outbox = self._outboxes.get(stream_id)
        if outbox is not None:
            outbox.flush()

    def read(self, stream_id: str, after_seq: int, timeout_s: float) -> Batch:
        keys = _Keys(stream_id)
        deadline = time.monotonic() + timeout_s
        while True:
            wait_s = min(max(deadline - time.monotonic(), 0.0), LEASE_CHECK_S)
            batch = self._xread(keys, after_seq, wait_s)
            if batch is not None:
                return batch
            finished, lease_alive = self._liveness(keys)
            if finished:
                return self._xread(keys, after_seq, 0) or Batch(after_seq + 1, [], True)
            if not lease_alive:
                self._declare_lost(stream_id)
                continue
            if time.monotonic() >= deadline:
                return Batch(after_seq + 1, [], False)

    def info(self, stream_id: str) -> StreamInfo | None:
        owner, last_seq, finished = self._redis.hmget(_Keys(stream_id).meta, "owner", "last_seq", "finished")
        if last_seq is None:
            return None
        return StreamInfo(owner.decode() or None, int(last_seq), finished == b"1")

    def request_cancel(self, stream_id: str) -> None:
        self._forget_control(stream_id)
        if not self._cancel_script(keys=[_Keys(stream_id).meta]):
            raise StreamNotFound(stream_id)

    def control(self, stream_id: str) -> Control:
        """The fields that came back with a write stored since the last look (a busy
        producer asks Redis nothing more, however loaded the worker is), else read
        now."""
        with self._outboxes_lock:
            outbox = self._outboxes.get(stream_id)
        fields = outbox.new_control() if outbox is not None else None
        if fields is None:
            reply = self._redis.hmget(_Keys(stream_id).meta, "cancel", "readers", "unattended_since")
            if reply[1] is None:
                raise StreamNotFound(stream_id)
            fields = _control_fields(*reply)
        cancel, readers, since = fields
        return Control(cancel, 0.0 if readers > 0 else max(0.0, self._clock() - since))

    def attach(self, stream_id: str) -> None:
        self._forget_control(stream_id)
        if not self._attach_script(keys=[_Keys(stream_id).meta]):
            raise StreamNotFound(stream_id)

    def detach(self, stream_id: str) -> None:
        self._forget_control(stream_id)
        self._detach_script(keys=[_Keys(stream_id).meta], args=[self._clock()])

    def _forget_control(self, stream_id: str) -> None:
        """A change made here is seen at once here; other workers' changes with the
        producer's next write."""
        with self._outboxes_lock:
            outbox = self._outboxes.get(stream_id)
        if outbox is not None:
            outbox.forget_control()

    def keep_alive(self, stream_id: str) -> None:
        """Renew the lease, unless a write since the last call already did."""
        with self._outboxes_lock:
            outbox = self._outboxes.get(stream_id)
        if outbox is not None and outbox.wrote_since_keep_alive():
            return
        keys = _Keys(stream_id)
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.lease, 1, px=int(LEASE_S * 1000))
            pipe.pexpire(keys.meta, self._ttl_ms)
            pipe.pexpire(keys.events, self._ttl_ms)
            pipe.execute()

    def _xread(self, keys: "_Keys", after_seq: int, wait_s: float) -> Batch | None:
        block_ms = int(wait_s * 1000)
        reply = self._redis.xread({keys.events: f"0-{after_seq + 1}"}, count=READ_COUNT,
                                  block=block_ms if block_ms > 0 else None)
        if not reply:
            return None
        entries = reply[0][1]
        frames = [fields[b"f"] for _, fields in entries]
        return Batch(after_seq + 1, frames, entries[-1][1][b"t"] == b"1")

    def _liveness(self, keys: "_Keys") -> tuple[bool, bool]:
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.meta, "finished")
            pipe.exists(keys.lease)
            finished, lease = pipe.execute()
        if finished is None:
            raise StreamNotFound(keys.stream_id)
        return finished == b"1", bool(lease)

    def _declare_lost(self, stream_id: str) -> None:
        """Append the terminal ``stream_lost`` error, unless the producer renewed its
        lease or another reader or the producer ended the stream first."""
        info = self.info(stream_id)
        if info is None:
            raise StreamNotFound(stream_id)
        frame = lost_frame(stream_id, info.last_seq + 1,
                           "the server generating this stream stopped (its worker died); ask again")
        try:
            self._write_batch(stream_id, info.last_seq + 1, [frame], True, only_if_lost=True)
        except (StreamLost, ValueError):
            pass  # someone else ended it, or the producer moved on: read again

    def _write_batch(self, stream_id: str, first_seq: int, frames: list[bytes], terminal: bool, *,
                     only_if_lost: bool = False) -> tuple[bool, int, float]:
        """Append ``frames`` as events ``first_seq``, … in one script call; returns the
        stream's control fields ``(cancel, readers, unattended_since)``."""
        keys = _Keys(stream_id)
        result = self._append_script(
            keys=[keys.events, keys.meta, keys.lease],
            args=[first_seq, 1 if terminal else 0, self._ttl_ms, self._max_events + 1, 1 if only_if_lost else 0,
                  int(LEASE_S * 1000), *frames])
        if isinstance(result, list):
            return _control_fields(*result)
        if result == -3:
            raise StreamNotFound(stream_id)
        if result == -2:
            raise StreamLost(f"stream {stream_id} has already ended")
        if result == -1:
            raise ValueError(f"event {first_seq} of stream {stream_id} is out of order")
        if result == -4:
            raise ValueError(f"the producer of stream {stream_id} is alive")


def _control_fields(cancel: bytes | None, readers: bytes | None, since: bytes | None) -> tuple[bool, int, float]:
    return cancel == b"1", int(readers or 0), float(since or 0)


class _Outbox:
    """Events of one stream waiting for its writer thread (a greenlet under gevent).

    ``put`` blocks only when :data:`OUTBOX_LIMIT` events wait (backpressure), or
    until the event is stored when asked to ``wait``.
    """

    def __init__(self, write: Callable[..., None], stream_id: str) -> None:
        self._write = write
        self._stream_id = stream_id
        self._changed = threading.Condition()
        self._pending: list[tuple[int, bytes, bool]] = []
        self._in_flight = False
        self._next_seq: int | None = None
        self._error: Exception | None = None
        self._control: tuple[bool, int, float] | None = None
        self._control_generation = 0
        self._writes = 0
        self._writes_at_control = 0
        self._writes_at_keep_alive = 0
        self.failed = False
        threading.Thread(target=self._run, name=f"writer-{stream_id}", daemon=True).start()

    def put(self, seq: int, frame: bytes, terminal: bool, *, wait: bool) -> None:
        with self._changed:
            if self._next_seq is not None and seq != self._next_seq:
                raise ValueError(f"event {seq} appended after {self._next_seq - 1}")
            while len(self._pending) >= OUTBOX_LIMIT and self._error is None:
                self._changed.wait()
            self._raise_error()
            self._pending.append((seq, frame, terminal))
            self._next_seq = seq + 1
            self._changed.notify_all()
            if wait:
                self._wait_until_stored()

    def flush(self) -> None:
        with self._changed:
            self._wait_until_stored()

    def forget_control(self) -> None:
        """Drop the cached fields (a local change); a write in flight, which read
        them before the change, must not bring them back."""
        self._control = None
        self._control_generation += 1

    def new_control(self) -> tuple[bool, int, float] | None:
        """The control fields of the last write, if one was stored since the last
        call; else ``None``."""
        if self._control is None or self._writes == self._writes_at_control:
            return None
        self._writes_at_control = self._writes
        return self._control

    def wrote_since_keep_alive(self) -> bool:
        """True if a write (which renews the lease) was stored since the last call."""
        wrote = self._writes != self._writes_at_keep_alive
        self._writes_at_keep_alive = self._writes
        return wrote

    def _wait_until_stored(self) -> None:
        while (self._pending or self._in_flight) and self._error is None:
            self._changed.wait()
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            self.failed = True
            raise self._error

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._pending:
                    self._changed.wait()
                batch, self._pending = self._pending, []
                self._in_flight = True
                self._changed.notify_all()
            terminal = batch[-1][2]
            generation = self._control_generation
            try:
                control = self._write(self._stream_id, batch[0][0], [frame for _, frame, _ in batch], terminal)
                if generation == self._control_generation:
                    self._control = control
                self._writes += 1
            except Exception as exc:  # handed to the producer by its next put
                with self._changed:
                    self._error, self._in_flight = exc, False
                    self._changed.notify_all()
                return
            with self._changed:
                self._in_flight = False
                self._changed.notify_all()
            if terminal:
                return


class _Keys:
    __slots__ = ("stream_id", "events", "meta", "lease")

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        prefix = f"sse-chat:{{{stream_id}}}"
        self.events = f"{prefix}:events"
        self.meta = f"{prefix}:meta"
        self.lease = f"{prefix}:lease"

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

import time
from collections.abc import Callable

import redis

from ..errors import error_body
from ..sse import ServerSentEvent, compact_json
from .base import Batch, Control, StreamFull, StreamInfo, StreamLost, StreamNotFound, event_id

#: A producer that has not renewed its lease for this long is taken for dead.
LEASE_S = 5.0
#: The producer renews its lease this often (a third of the lease).
LEASE_RENEWAL_S = LEASE_S / 3
#: A blocked read wakes at least this often to look at the lease, so readers of a
#: dead producer learn it within about LEASE_S + LEASE_CHECK_S seconds.
LEASE_CHECK_S = 2.0
#: Most entries one read returns.
READ_COUNT = 1000

_APPEND = """
local events, meta, lease = KEYS[1], KEYS[2], KEYS[3]
local seq, frame, terminal, ttl_ms, maxlen, only_if_lost = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if redis.call('EXISTS', meta) == 0 then return -3 end
if redis.call('HGET', meta, 'finished') == '1' then return -2 end
if only_if_lost == '1' and redis.call('EXISTS', lease) == 1 then return -4 end
if seq ~= tonumber(redis.call('HGET', meta, 'last_seq')) + 1 then return -1 end
redis.call('XADD', events, 'MAXLEN', maxlen, '0-' .. (seq + 1), 'f', frame, 't', terminal)
redis.call('HSET', meta, 'last_seq', seq)
if terminal == '1' then
  redis.call('HSET', meta, 'finished', '1')
  redis.call('PEXPIRE', events, ttl_ms)
  redis.call('PEXPIRE', meta, ttl_ms)
  redis.call('DEL', lease)
end
return 0
"""

_DETACH = """
local readers = redis.call('HINCRBY', KEYS[1], 'readers', -1)
if readers <= 0 then
  redis.call('HSET', KEYS[1], 'readers', 0, 'unattended_since', ARGV[1])
end
return readers
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

    @classmethod
    def from_url(cls, url: str, ttl_s: float, max_events: int) -> "RedisEventLog":
        """Connect lazily to ``url`` (``redis://host:port/db``)."""
        return cls(redis.Redis.from_url(url, health_check_interval=30), ttl_s, max_events)

    def create(self, stream_id: str, owner: str | None) -> None:
        keys = _Keys(stream_id)
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.meta, mapping={"owner": owner or "", "last_seq": -1, "finished": 0, "cancel": 0,
                                          "readers": 0, "unattended_since": self._clock()})
            pipe.pexpire(keys.meta, self._ttl_ms)
            pipe.set(keys.lease, 1, px=int(LEASE_S * 1000))
            pipe.execute()

    def append(self, stream_id: str, seq: int, frame: bytes, *, terminal: bool = False) -> None:
        if seq >= self._max_events and not terminal:
            raise StreamFull(f"stream {stream_id} reached {self._max_events} events")
        self._run_append(stream_id, seq, frame, terminal, only_if_lost=False)

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
        keys = _Keys(stream_id)
        if not self._redis.hset(keys.meta, "cancel", 1) and not self._redis.exists(keys.meta):
            raise StreamNotFound(stream_id)

    def control(self, stream_id: str) -> Control:
        cancel, readers, since = self._redis.hmget(_Keys(stream_id).meta, "cancel", "readers", "unattended_since")
        if readers is None:
            raise StreamNotFound(stream_id)
        unattended_s = 0.0 if int(readers) > 0 else max(0.0, self._clock() - float(since))
        return Control(cancel == b"1", unattended_s)

    def attach(self, stream_id: str) -> None:
        self._redis.hincrby(_Keys(stream_id).meta, "readers", 1)

    def detach(self, stream_id: str) -> None:
        self._detach_script(keys=[_Keys(stream_id).meta], args=[self._clock()])

    def keep_alive(self, stream_id: str) -> None:
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
        body = error_body("stream_lost", "the server generating this stream stopped (its worker died); ask again")
        frame = ServerSentEvent(compact_json(body), event="error", id=event_id(stream_id, info.last_seq + 1)).encode()
        try:
            self._run_append(stream_id, info.last_seq + 1, frame, True, only_if_lost=True)
        except (StreamLost, ValueError):
            pass  # someone else ended it, or the producer moved on: read again

    def _run_append(self, stream_id: str, seq: int, frame: bytes, terminal: bool, *, only_if_lost: bool) -> None:
        keys = _Keys(stream_id)
        result = self._append_script(
            keys=[keys.events, keys.meta, keys.lease],
            args=[seq, frame, 1 if terminal else 0, self._ttl_ms, self._max_events + 1, 1 if only_if_lost else 0])
        if result == -3:
            raise StreamNotFound(stream_id)
        if result == -2:
            raise StreamLost(f"stream {stream_id} has already ended")
        if result == -1:
            raise ValueError(f"event {seq} of stream {stream_id} is out of order")
        if result == -4:
            raise ValueError(f"the producer of stream {stream_id} is alive")


class _Keys:
    __slots__ = ("stream_id", "events", "meta", "lease")

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        prefix = f"sse-chat:{{{stream_id}}}"
        self.events = f"{prefix}:events"
        self.meta = f"{prefix}:meta"
        self.lease = f"{prefix}:lease"

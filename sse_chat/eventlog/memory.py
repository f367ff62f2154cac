"""The in-memory event log: one process, safe under threads and gevent greenlets.

It uses :mod:`threading` primitives, which gevent's monkey patching turns into
cooperative ones under gunicorn's gevent worker, and which stay real locks in the
CLI's in-process server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .base import Batch, Control, StreamFull, StreamInfo, StreamNotFound


class _Stream:
    __slots__ = ("owner", "frames", "finished_at", "cancelled", "readers", "unattended_since", "changed")

    def __init__(self, owner: str | None, now: float, lock: threading.RLock) -> None:
        self.owner = owner
        self.frames: list[bytes] = []
        self.finished_at: float | None = None
        self.cancelled = False
        self.readers = 0
        self.unattended_since = now
        self.changed = threading.Condition(lock)


class MemoryEventLog:
    """Streams kept in a dict, each a list of frames.

    Args:
        ttl_s: seconds a stream is kept after its terminal event.
        max_events: bound on events per stream (:class:`StreamFull` past it).
        clock: monotonic clock in seconds (injectable for tests).
    """

    def __init__(self, ttl_s: float, max_events: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._max_events = max_events
        self._clock = clock
        self._streams: dict[str, _Stream] = {}
        # One lock for the dict and every stream's condition: appends and reads are
        # short, and one lock keeps expiry and reads from racing.
        self._lock = threading.RLock()  # RLock: Condition checks ownership cheaply (no trial acquire)
        self._next_sweep = clock() + ttl_s

    def create(self, stream_id: str, owner: str | None) -> None:
        with self._lock:
            self._sweep_expired()
            self._streams[stream_id] = _Stream(owner, self._clock(), self._lock)

    def append(self, stream_id: str, seq: int, frame: bytes, *, terminal: bool = False) -> None:
        with self._lock:
            stream = self._get(stream_id)
            if seq != len(stream.frames):
                raise ValueError(f"event {seq} appended after {len(stream.frames) - 1}")
            if seq >= self._max_events and not terminal:
                raise StreamFull(f"stream {stream_id} reached {self._max_events} events")
            stream.frames.append(frame)
            if terminal:
                stream.finished_at = self._clock()
            stream.changed.notify_all()

    def flush(self, stream_id: str) -> None:
        """Appends are stored at once: nothing to wait for."""

    def read(self, stream_id: str, after_seq: int, timeout_s: float) -> Batch:
        with self._lock:
            stream = self._get(stream_id)
            if len(stream.frames) <= after_seq + 1 and stream.finished_at is None and timeout_s > 0:
                stream.changed.wait(timeout_s)
            frames = stream.frames[after_seq + 1:]
            return Batch(after_seq + 1, frames, stream.finished_at is not None)

    def info(self, stream_id: str) -> StreamInfo | None:
        with self._lock:
            stream = self._streams.get(stream_id)
            if stream is None or self._expired(stream):
                return None
            return StreamInfo(stream.owner, len(stream.frames) - 1, stream.finished_at is not None)

    def request_cancel(self, stream_id: str) -> None:
        with self._lock:
            self._get(stream_id).cancelled = True

    def control(self, stream_id: str) -> Control:
        with self._lock:
            stream = self._get(stream_id)
            unattended_s = 0.0 if stream.readers else self._clock() - stream.unattended_since
            return Control(stream.cancelled, unattended_s)

    def attach(self, stream_id: str) -> None:
        with self._lock:
            self._get(stream_id).readers += 1

    def detach(self, stream_id: str) -> None:
        with self._lock:
            stream = self._streams.get(stream_id)
            if stream is not None:
                stream.readers -= 1
                if stream.readers == 0:
                    stream.unattended_since = self._clock()

    #: A producer in this process lives as long as the log: no lease.
    lease_renewal_s = None

    def keep_alive(self, stream_id: str) -> None:
        """Nothing to renew."""

    def _get(self, stream_id: str) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None or self._expired(stream):
            raise StreamNotFound(stream_id)
        return stream

    def _expired(self, stream: _Stream) -> bool:
        return stream.finished_at is not None and self._clock() - stream.finished_at > self._ttl_s

    def _sweep_expired(self) -> None:
        """Drop expired streams, at most once per TTL (called with the lock held)."""
        now = self._clock()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._ttl_s
        for stream_id in [sid for sid, s in self._streams.items() if self._expired(s)]:
            del self._streams[stream_id]

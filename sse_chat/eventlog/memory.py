"""The in-memory event log: one process, safe under threads and gevent greenlets.

Appends and takes are plain list operations (atomic under the GIL, never switching
greenlets); readers are woken through :class:`~.wakeups.Wakeups`, which coalesces
wake-ups per event-loop turn under gevent and rings at once with threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .base import Batch, Claim, Control, StreamFull, StreamInfo, StreamNotFound
from .wakeups import Bell, Wakeups


class _Stream:
    __slots__ = ("owner", "frames", "finished_at", "cancelled", "readers", "unattended_since", "events_per_response")

    def __init__(self, owner: str | None, now: float, events_per_response: int | None = None) -> None:
        self.owner = owner
        self.events_per_response = events_per_response
        self.frames: list[bytes] = []
        self.finished_at: float | None = None
        self.cancelled = False
        self.readers = 0
        self.unattended_since = now


class MemoryEventLog:
    """Streams kept in a dict, each a list of frames.

    Args:
        ttl_s: seconds a stream is kept after its terminal event.
        max_events: bound on events per stream (:class:`StreamFull` past it).
        clock: monotonic clock in seconds (injectable for tests).
        wakeups: how readers are woken (one per process; a new one by default).
    """

    def __init__(self, ttl_s: float, max_events: int, clock: Callable[[], float] = time.monotonic,
                 wakeups: Wakeups | None = None) -> None:
        self._ttl_s = ttl_s
        self._max_events = max_events
        self._clock = clock
        self._wakeups = wakeups if wakeups is not None else Wakeups()
        self._streams: dict[str, _Stream] = {}
        # Idempotency keys: (owner, key) -> (claim, expiry on the clock).
        self._claims: dict[tuple[str | None, str], tuple[Claim, float]] = {}
        # Guards the dict and the per-stream counters. Readers take frames without
        # it: a list slice is atomic, and a terminal frame is appended before the
        # stream is marked finished (see _MemoryCursor.take).
        self._lock = threading.Lock()
        self._next_sweep = clock() + ttl_s

    def create(self, stream_id: str, owner: str | None, first_frame: bytes, *,
               events_per_response: int | None = None) -> None:
        with self._lock:
            self._sweep_expired()
            stream = self._streams[stream_id] = _Stream(owner, self._clock(), events_per_response)
            stream.frames.append(first_frame)

    def append(self, stream_id: str, seq: int, frame: bytes, *, terminal: bool = False) -> None:
        stream = self._get(stream_id)
        frames = stream.frames
        if seq != len(frames):
            raise ValueError(f"event {seq} appended after {len(frames) - 1}")
        if seq >= self._max_events and not terminal:
            raise StreamFull(f"stream {stream_id} reached {self._max_events} events")
        frames.append(frame)
        if terminal:
            stream.finished_at = self._clock()
            self._wakeups.changed(stream_id, seq, frame, last=True)
        else:
            self._wakeups.changed(stream_id, seq, frame)

    def flush(self, stream_id: str) -> None:
        """Appends are stored at once: nothing to wait for."""

    def open(self, stream_id: str, after_seq: int) -> _MemoryCursor:
        with self._lock:
            stream = self._get(stream_id)
            stream.readers += 1
        return _MemoryCursor(self, stream_id, stream, after_seq, self._wakeups.subscribe(stream_id))

    def info(self, stream_id: str) -> StreamInfo | None:
        stream = self._streams.get(stream_id)
        if stream is None or self._expired(stream):
            return None
        return StreamInfo(stream.owner, len(stream.frames) - 1, stream.finished_at is not None,
                          stream.events_per_response)

    def request_cancel(self, stream_id: str) -> None:
        self._get(stream_id).cancelled = True

    def delete(self, stream_id: str) -> None:
        with self._lock:
            self._streams.pop(stream_id, None)

    def control(self, stream_id: str) -> Control:
        stream = self._get(stream_id)
        unattended_s = 0.0 if stream.readers else self._clock() - stream.unattended_since
        return Control(stream.cancelled, unattended_s)

    #: A producer in this process lives as long as the log: no lease.
    lease_renewal_s = None

    def keep_alive(self, stream_id: str) -> None:
        """Nothing to renew."""

    def claim(self, owner: str | None, key: str, fingerprint: str, stream_id: str, ttl_s: float) -> Claim | None:
        with self._lock:
            now = self._clock()
            held = self._claims.get((owner, key))
            if held is not None and now <= held[1] and held[0].stream_id != stream_id:
                return held[0]
            self._claims[(owner, key)] = (Claim(stream_id, fingerprint), now + ttl_s)
            return None

    def release(self, owner: str | None, key: str, stream_id: str) -> None:
        with self._lock:
            held = self._claims.get((owner, key))
            if held is not None and held[0].stream_id == stream_id:
                del self._claims[(owner, key)]

    def ready(self) -> bool:
        """Memory is always there."""
        return True

    def wake_readers(self) -> None:
        self._wakeups.ring_all()

    def _detach(self, stream_id: str, stream: _Stream) -> None:
        with self._lock:
            stream.readers -= 1
            if stream.readers == 0:
                stream.unattended_since = self._clock()

    def _get(self, stream_id: str) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None or (stream.finished_at is not None and self._expired(stream)):  # a running stream: no clock
            raise StreamNotFound(stream_id)
        return stream

    def _expired(self, stream: _Stream) -> bool:
        return stream.finished_at is not None and self._clock() - stream.finished_at > self._ttl_s

    def _sweep_expired(self) -> None:
        """Drop expired streams and claims, at most once per TTL (called with the
        lock held)."""
        now = self._clock()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._ttl_s
        for stream_id in [sid for sid, s in self._streams.items() if self._expired(s)]:
            del self._streams[stream_id]
        for claimed in [k for k, (_, expires_at) in self._claims.items() if now > expires_at]:
            del self._claims[claimed]


class _MemoryCursor:
    """A reader's position in one in-memory stream (:class:`~.base.Cursor`)."""

    __slots__ = ("_log", "_stream_id", "_stream", "_bell", "position", "_closed")

    def __init__(self, log: MemoryEventLog, stream_id: str, stream: _Stream, after_seq: int, bell: Bell) -> None:
        self._log = log
        self._stream_id = stream_id
        self._stream = stream
        self._bell = bell
        self.position = after_seq
        self._closed = False

    def take(self, limit: int | None = None) -> Batch:
        stream = self._stream
        if self._log._expired(stream):
            raise StreamNotFound(self._stream_id)
        # Read the flag first: a finished stream's frames are all there already.
        finished = stream.finished_at is not None
        first = self.position + 1
        frames = stream.frames[first:] if limit is None else stream.frames[first:first + limit]
        self.position += len(frames)
        return Batch(first, frames, finished and self.position == len(stream.frames) - 1)

    def wait(self, deadline: float, offer: Callable[[bytes, bool], bool] | None = None) -> None:
        bell = self._bell
        if offer is None or not bell.cooperative:
            bell.wait(deadline)
            return
        bell.expects = self.position + 1  # the bell hands ``offer`` that event, and each after it taken
        bell.deliver = offer
        try:
            bell.wait(deadline)
        finally:
            bell.deliver = None
            self.position = bell.expects - 1  # past the events ``offer`` took

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._log._wakeups.unsubscribe(self._stream_id, self._bell)
            self._log._detach(self._stream_id, self._stream)


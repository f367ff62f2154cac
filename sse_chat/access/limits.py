"""Admission: what one worker and one API key may hold at once. Running streams
(in total and per key), events kept for resume per key, open readers per key;
past a bound a 429 with ``Retry-After``."""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ApiError

#: Seconds a refused client is asked to wait (``Retry-After``), unless the limiter
#: knows when room will be made.
RETRY_AFTER_S = 5


@dataclass(frozen=True)
class KeyLimits:
    """What one API key may hold in one worker.

    Attributes:
        streams: running streams.
        events: events of its streams the worker keeps: those a running stream
            may still write (its ``max_tokens``, when it asked for one) and those
            of ended streams, until they expire ``keep_s`` seconds after their end.
        readers: open event-stream responses.
        keep_s: seconds an ended stream is kept (``SSE_CHAT_STREAM_TTL_S``).
    """

    streams: int
    events: int
    readers: int
    keep_s: float


class StreamLimiter:
    """Counts this process's running producers, the events kept per key and the
    readers per key.

    Under gunicorn each worker counts its own, so the service-wide bounds are the
    settings times ``WEB_CONCURRENCY``. An open service (``owner`` ``None``: its
    callers are not told apart) has only the bound on running streams in total.

    Args:
        max_total: most running streams.
        per_key: the bounds per API key (:class:`KeyLimits`); a bare ``int`` is
            the running streams per key, with no other bound.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, max_total: int, per_key: KeyLimits | int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(per_key, int):
            per_key = KeyLimits(streams=per_key, events=sys.maxsize, readers=sys.maxsize, keep_s=0.0)
        self._max_total = max_total
        self._per_key = per_key
        self._clock = clock
        self._running: dict[str, tuple[str | None, int]] = {}  # stream -> (owner, events reserved)
        self._counts: Counter[str | None] = Counter()
        self._reserved: Counter[str | None] = Counter()
        # Ended streams still kept, per owner: (expiry on the clock, events), oldest first.
        self._kept: dict[str | None, deque[tuple[float, int]]] = {}
        self._kept_events: Counter[str | None] = Counter()
        self._readers: Counter[str | None] = Counter()
        self._lock = threading.Lock()

    def admit(self, stream_id: str, owner: str | None, events: int = 0) -> None:
        """Count a new stream, which may write up to ``events`` events (0: not
        known; its events are counted when it ends).

        Raises:
            ApiError: 429 ``too_many_streams`` past the running streams' bounds,
                429 ``too_many_events`` past the key's events; with ``Retry-After``.
        """
        with self._lock:
            if len(self._running) >= self._max_total:
                raise too_many("too_many_streams",
                               f"the server runs its maximum of {self._max_total} streams (SSE_CHAT_MAX_STREAMS)")
            if owner is not None:
                if self._counts[owner] >= self._per_key.streams:
                    raise too_many("too_many_streams", f"this key already runs {self._per_key.streams} streams "
                                                       "(SSE_CHAT_MAX_STREAMS_PER_KEY)")
                self._check_events(owner, events)
            self._running[stream_id] = (owner, events)
            self._counts[owner] += 1
            self._reserved[owner] += events

    def release(self, stream_id: str, events: int = 0) -> None:
        """The stream's producer ended after writing ``events`` events, which are
        kept for ``keep_s`` seconds from now."""
        with self._lock:
            if stream_id not in self._running:
                return
            owner, reserved = self._running.pop(stream_id)
            self._counts[owner] -= 1
            self._reserved[owner] -= reserved
            if not self._counts[owner]:
                del self._counts[owner]
                del self._reserved[owner]
            if owner is not None and events and self._per_key.keep_s > 0:
                self._kept.setdefault(owner, deque()).append((self._clock() + self._per_key.keep_s, events))
                self._kept_events[owner] += events

    def admit_reader(self, owner: str | None) -> Callable[[], None]:
        """Count an open event-stream response of ``owner``; returns the call
        that counts it closed (call it once).

        Raises:
            ApiError: 429 ``too_many_readers`` past the key's bound.
        """
        if owner is None:
            return _nothing
        with self._lock:
            self.check_reader(owner)
            self._readers[owner] += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if not released:
                    released = True
                    self._readers[owner] -= 1
                    if not self._readers[owner]:
                        del self._readers[owner]

        return release

    def check_reader(self, owner: str | None) -> None:
        """Raise the 429 ``too_many_readers`` that :meth:`admit_reader` would."""
        if owner is not None and self._readers[owner] >= self._per_key.readers:
            raise too_many("too_many_readers", f"this key already has {self._per_key.readers} event streams open "
                                               "(SSE_CHAT_MAX_READERS_PER_KEY)")

    @property
    def running(self) -> int:
        """Streams counted now."""
        return len(self._running)

    def kept_events(self, owner: str | None) -> int:
        """Events counted for ``owner`` now: reserved by running streams, and of
        ended streams not yet expired."""
        with self._lock:
            self._forget_expired(owner)
            return self._reserved[owner] + self._kept_events[owner]

    def _check_events(self, owner: str, events: int) -> None:
        self._forget_expired(owner)
        bound = self._per_key.events
        held = self._reserved[owner] + self._kept_events[owner]
        if held + events <= bound:
            return
        kept = self._kept.get(owner)
        retry_after_s = RETRY_AFTER_S
        if kept:  # room comes as ended streams expire: from the oldest on
            needed, freed = held + events - bound, 0
            for expires_at, count in kept:
                freed += count
                if freed >= needed:
                    retry_after_s = max(1, math.ceil(expires_at - self._clock()))
                    break
        raise too_many("too_many_events",
                       f"this key's streams hold {held:,} events in this worker, and this one may add {events:,}; "
                       f"the most is {bound:,} (SSE_CHAT_MAX_EVENTS_PER_KEY), and ended streams are kept for "
                       f"{self._per_key.keep_s:g} s: ask for fewer max_tokens", retry_after_s)

    def _forget_expired(self, owner: str | None) -> None:
        kept = self._kept.get(owner)
        if not kept:
            return
        now = self._clock()
        while kept and kept[0][0] <= now:
            self._kept_events[owner] -= kept.popleft()[1]
        if not kept:
            del self._kept[owner]
            del self._kept_events[owner]


def _nothing() -> None:
    """Nothing to release."""


def too_many(error_type: str, reason: str, retry_after_s: int = RETRY_AFTER_S) -> ApiError:
    """429 ``error_type``: ``reason``, and when to try again (``Retry-After``, seconds)."""
    return ApiError(429, error_type, f"{reason}; try again in {retry_after_s} s",
                    headers=(("Retry-After", str(retry_after_s)),))

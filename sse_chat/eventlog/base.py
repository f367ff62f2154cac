"""The event log: what producers write and readers replay, whatever stores it.

One stream is an append-only list of encoded event frames, numbered ``seq`` = 0, 1,
2, … without gaps (:mod:`sse_chat.protocol` says what a frame holds). Exactly one
producer appends to a stream; any number of readers read it from a position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class StreamNotFound(KeyError):
    """The stream is unknown to the log, or has expired."""


class StreamFull(RuntimeError):
    """The stream reached the log's bound on events per stream."""


class EventLogUnavailable(ConnectionError):
    """The log's store cannot be reached right now (Redis down or failing over).

    Raised by the calls a request makes before its stream starts (``create``,
    ``info``, ``attach``, ``request_cancel``); the service answers 503
    ``event_log_unavailable`` with ``Retry-After``. Producers and readers that are
    already running do not see it: they wait for the store and go on.
    """


class StreamLost(RuntimeError):
    """The stream already ended without this producer: readers declared it lost
    after its lease expired. The producer must stop."""


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What a route needs to know about a stream: its ``owner`` (an API key's
    fingerprint, or ``None``), ``last_seq`` (-1 before the first event), whether its
    terminal event has been written (``finished``), and ``events_per_response``:
    the most events each response of the stream carries before it ends (kept with
    the stream, so that a resume on any worker ends alike), or ``None``."""

    owner: str | None
    last_seq: int
    finished: bool
    events_per_response: int | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """Who holds an idempotency key (:meth:`EventLog.claim`): the ``stream_id`` its
    first request started, and that request's ``fingerprint``."""

    stream_id: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Control:
    """``cancelled``: a ``DELETE`` asked to stop; ``unattended_s``: seconds since the
    last reader detached (0.0 while one is attached)."""

    cancelled: bool
    unattended_s: float


@dataclass(frozen=True, slots=True)
class Batch:
    """Frames read after a position: ``frames[i]`` is event ``first_seq + i``;
    ``finished`` is true when the last of them (or an earlier one) is terminal."""

    first_seq: int
    frames: list[bytes]
    finished: bool

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.frames) - 1


class Cursor(Protocol):
    """One reader's place in one stream, from :meth:`EventLog.open`. Not shared
    between readers; :meth:`close` it when done (it counts as an attached reader
    until then)."""

    #: The seq of the last event taken (-1 before the first).
    position: int

    def take(self, limit: int | None = None) -> Batch:
        """Return, without waiting, the events after :attr:`position` that are
        visible now, at most ``limit`` of them (all when ``None``), and move past
        them (an empty batch when none is).

        Raises:
            StreamNotFound: the stream expired or vanished.
        """

    def wait(self, deadline: float, offer: Callable[[bytes, bool], bool] | None = None) -> None:
        """Block until the stream may have changed, or the monotonic clock reaches
        ``deadline`` (seconds), whichever comes first. May return early; call
        :meth:`take` to see.

        ``offer(frame, last)``: where the log can, it hands an event appended
        during the wait, the one right after :attr:`position`, to ``offer`` in
        the appending greenlet instead of waking the reader; when ``offer``
        returns True the event counts as taken (the position moves past it) and
        the wait goes on, unless ``last`` is true: the stream's terminal event,
        after which the reader is woken anyway, to end its response. The
        in-memory log does so under gevent, for appends made in its process;
        others ignore ``offer``."""

    def close(self) -> None:
        """Stop following: the reader detaches."""


class EventLog(Protocol):
    """Storage of streams shared by producers and readers. Implementations: memory
    (:mod:`.memory`) and Redis Streams (:mod:`.redis_streams`)."""

    def create(self, stream_id: str, owner: str | None, first_frame: bytes, *,
               events_per_response: int | None = None) -> None:
        """Register a new stream whose event 0 is ``first_frame``, visible to
        readers when this returns; :meth:`info` gives ``events_per_response`` (>= 1,
        or ``None``) back.

        Raises:
            EventLogUnavailable: the store cannot be reached.
        """

    def append(self, stream_id: str, seq: int, frame: bytes, *, terminal: bool = False) -> None:
        """Store event ``seq`` (the next one, >= 1) as encoded bytes; wake its
        readers. The terminal event is visible to readers when this returns; a log
        may store the ones before it in the background (see :meth:`flush`).

        Raises:
            StreamFull: past the bound on events per stream.
            StreamLost: the stream was already ended (declared lost) without this producer.
        """

    def flush(self, stream_id: str) -> None:
        """Wait until every appended event is visible to readers."""

    def open(self, stream_id: str, after_seq: int) -> Cursor:
        """Attach a reader positioned after event ``after_seq`` (-1: from the start).

        A log whose producers can die elsewhere (Redis) ends a stream whose
        producer's lease expired with a terminal ``stream_lost`` event, which the
        cursor then takes like any other.

        Raises:
            StreamNotFound: unknown or expired stream.
            EventLogUnavailable: the store cannot be reached.
        """

    def info(self, stream_id: str) -> StreamInfo | None:
        """Return the stream's :class:`StreamInfo`, or ``None`` if unknown or expired.

        Raises:
            EventLogUnavailable: the store cannot be reached.
        """

    def request_cancel(self, stream_id: str) -> None:
        """Ask the producer to stop; it notices on its next :meth:`control` check.

        Raises:
            StreamNotFound: unknown or expired stream.
            EventLogUnavailable: the store cannot be reached.
        """

    def delete(self, stream_id: str) -> None:
        """Forget a stream before its time (the Responses API's ``DELETE``): from
        now on :meth:`info` answers ``None`` and :meth:`open` raises
        :class:`StreamNotFound`. Meant for a finished stream; readers already
        attached may still take what they hold. Deleting an unknown stream does
        nothing.

        Raises:
            EventLogUnavailable: the store cannot be reached.
        """

    def control(self, stream_id: str) -> Control:
        """What the producer must know, in one look: cancel requested, and seconds
        without a reader. While the store is unreachable, the last known answer.

        Raises:
            StreamNotFound: unknown or expired stream.
        """

    @property
    def lease_renewal_s(self) -> float | None:
        """Seconds between the producer's :meth:`keep_alive` calls, or ``None`` when
        the log needs none (a producer in the same process as its readers)."""

    def keep_alive(self, stream_id: str) -> None:
        """The producer is alive: renew its lease. Readers that find the lease
        expired end the stream with ``stream_lost``."""

    def claim(self, owner: str | None, key: str, fingerprint: str, stream_id: str, ttl_s: float) -> Claim | None:
        """Claim idempotency key ``key`` of caller ``owner`` for ``stream_id``, for
        ``ttl_s`` seconds; returns ``None`` when this call holds it, else the live
        :class:`Claim` of another stream (left as it is).

        Atomic across every worker sharing the log: of concurrent claims of a free
        key exactly one returns ``None``. Claiming again for the stream that holds
        the key renews it (``fingerprint`` and expiry are set anew), also after it
        expired. ``key`` is a digest (hex; :mod:`sse_chat.streaming.idempotency` makes it),
        never the client's raw header.

        Raises:
            EventLogUnavailable: the store cannot be reached.
        """

    def release(self, owner: str | None, key: str, stream_id: str) -> None:
        """Drop ``owner``'s claim of ``key`` if ``stream_id`` holds it (a start that
        failed, or a stale claim being taken over); any other claim stays.

        Raises:
            EventLogUnavailable: the store cannot be reached.
        """

    def ready(self) -> bool:
        """True when the log's store answers now (``GET /readyz``); never raises."""

    def wake_readers(self) -> None:
        """Wake every reader of this process now (a graceful stop began)."""

"""The event log: what producers write and readers replay, whatever stores it.

One stream is an append-only list of encoded event frames, numbered ``seq`` = 0, 1,
2, … without gaps; the public event id is ``{stream_id}:{seq}``. Exactly one
producer appends to a stream; any number of readers read it from a position.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Protocol

#: 16 random bytes = 128 bits, as DESIGN.md asks; ``token_urlsafe`` never yields ``:``.
STREAM_ID_BYTES = 16


def new_stream_id() -> str:
    """Return a fresh stream id: 22 URL-safe base64 characters (128 random bits)."""
    return secrets.token_urlsafe(STREAM_ID_BYTES)


def event_id(stream_id: str, seq: int) -> str:
    """The public id of event ``seq`` of ``stream_id``: ``"{stream_id}:{seq}"``."""
    return f"{stream_id}:{seq}"


def parse_event_id(value: str) -> tuple[str, int] | None:
    """Split ``"{stream_id}:{seq}"`` into ``(stream_id, seq)``; ``None`` if malformed
    (no colon, empty stream id, or a seq that is not ASCII digits)."""
    stream_id, colon, seq = value.rpartition(":")
    if not colon or not stream_id or ":" in stream_id or not (seq.isascii() and seq.isdigit()):
        return None
    return stream_id, int(seq)


def lost_frame(stream_id: str, seq: int, message: str) -> bytes:
    """The encoded terminal ``error`` event ``stream_lost`` with id ``{stream_id}:{seq}``."""
    from ..errors import error_body
    from ..sse import ServerSentEvent, compact_json

    body = error_body("stream_lost", message)
    return ServerSentEvent(compact_json(body), event="error", id=event_id(stream_id, seq)).encode()


class StreamNotFound(KeyError):
    """The stream is unknown to the log, or has expired."""


class StreamFull(RuntimeError):
    """The stream reached the log's bound on events per stream."""


class StreamLost(RuntimeError):
    """The stream already ended without this producer: readers declared it lost
    after its lease expired. The producer must stop."""


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What a route needs to know about a stream: its ``owner`` (an API key's
    fingerprint, or ``None``), ``last_seq`` (-1 before the first event) and whether its
    terminal event has been written (``finished``)."""

    owner: str | None
    last_seq: int
    finished: bool


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


class EventLog(Protocol):
    """Storage of streams shared by producers and readers. Implementations: memory
    (:mod:`.memory`) and Redis Streams (:mod:`.redis_streams`)."""

    def create(self, stream_id: str, owner: str | None) -> None:
        """Register a new, empty stream."""

    def append(self, stream_id: str, seq: int, frame: bytes, *, terminal: bool = False) -> None:
        """Store event ``seq`` (the next one) as encoded bytes; wake its readers.
        The first and the terminal event are visible to readers when this returns.

        Raises:
            StreamFull: past the bound on events per stream.
            StreamLost: the stream was already ended (declared lost) without this producer.
        """

    def flush(self, stream_id: str) -> None:
        """Wait until every appended event is visible to readers (a log may store
        events between the first and the terminal one in the background)."""

    def read(self, stream_id: str, after_seq: int, timeout_s: float) -> Batch:
        """Return the events after ``after_seq``, waiting up to ``timeout_s`` seconds
        for one to arrive (an empty batch on time-out; ``timeout_s`` 0 never waits).

        A log whose producers can die elsewhere (Redis) ends a stream whose
        producer's lease expired with a terminal ``stream_lost`` event, which the
        read then returns like any other.

        Raises:
            StreamNotFound: unknown or expired stream.
        """

    def info(self, stream_id: str) -> StreamInfo | None:
        """Return the stream's :class:`StreamInfo`, or ``None`` if unknown or expired."""

    def request_cancel(self, stream_id: str) -> None:
        """Ask the producer to stop; it notices on its next :meth:`control` check."""

    def control(self, stream_id: str) -> "Control":
        """What the producer must know, in one look: cancel requested, and seconds
        without a reader.

        Raises:
            StreamNotFound: unknown or expired stream.
        """

    def attach(self, stream_id: str) -> None:
        """A reader is now following the stream."""

    def detach(self, stream_id: str) -> None:
        """A reader stopped following the stream."""

    #: Seconds between the producer's :meth:`keep_alive` calls, or ``None`` when the
    #: log needs none (a producer in the same process as its readers).
    lease_renewal_s: float | None

    def keep_alive(self, stream_id: str) -> None:
        """The producer is alive: renew its lease. Readers that find the lease
        expired end the stream with ``stream_lost``."""

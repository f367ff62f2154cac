"""Readers: one HTTP response replays a stream from a position, then follows it
live, until its terminal event.

A reader attaches (opens a cursor) before its response begins, so that a stream
that cannot be read is answered with an HTTP error; its body is an iterator the
WSGI server writes item by item and closes when done or when a write fails
because the client went away, which detaches the reader. A reader sleeps until
its stream changes (see :mod:`.eventlog.wakeups`) and then writes everything that
gathered meanwhile at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..client_writer import ClientWriter
from ..eventlog import Cursor, EventLog, StreamNotFound
from ..metrics import Metrics
from ..protocol import EventId, encode_comment, encode_retry, stream_lost_frame

log = logging.getLogger(__name__)

HEARTBEAT = encode_comment("ping")
#: The first write when no event is there yet and ``retry:`` must wait for one.
OPENING_COMMENT = encode_comment()
T = TypeVar("T")
EXPIRED = "the stream expired while it was being read; ask again"
#: Seconds between a reader's updates of the events-sent metric.
METRICS_FLUSH_S = 1.0
#: Seconds since the last write to a client under which a new event is not
#: written at once by its producer (:class:`_DirectWrites`) but left for the
#: reader, which writes everything that gathered meanwhile in one write: events
#: that come this close together (a fast model, a burst of upstream chunks) are
#: cheaper coalesced than written one by one. Not for the terminal event, which
#: nothing follows to coalesce with.
DIRECT_MIN_GAP_S = 0.005
#: The most events one write carries. A resume of a long stream sends its backlog
#: in writes of this many, letting other greenlets run between two, so that it
#: neither holds the event loop (the OpenAI surface rewrites every event) nor,
#: for a client that does not read, holds more than one write's bytes.
WRITE_EVENTS = 128


@dataclass(frozen=True, slots=True)
class ReadFrom:
    """Where one response reads: the events of ``stream_id`` after event
    ``after_seq`` (-1: from the first), ending after ``events_per_response`` of them
    when the stream's request bounds each response (else ``None``). A route makes
    it (a new stream, or :func:`~.generation.resume_position` for a resume) and
    hands it to :func:`read_stream` whole."""

    stream_id: str
    after_seq: int
    events_per_response: int | None = None


@dataclass(frozen=True, slots=True)
class ReaderSettings:
    """What every reader of one app shares, built once by the app factory
    (:attr:`~.services.Services.readers`): the ``event_log``; ``retry_ms``, the
    reconnection time sent as ``retry:`` (milliseconds); ``heartbeat_s``, the
    seconds without an event after which a ``: ping`` comment goes out; the
    ``metrics``; and ``draining``, set when the process begins a graceful stop."""

    event_log: EventLog
    retry_ms: int
    heartbeat_s: float
    metrics: Metrics | None = None
    draining: threading.Event | None = None


def follow(event_log: EventLog, stream_id: str, after_seq: int, *, heartbeat_s: float,
           metrics: Metrics | None = None, draining: threading.Event | None = None,
           events_per_response: int | None = None,
           offer: Callable[[bytes], bool] | None = None,
           before_end: Callable[[], None] | None = None) -> Body[list[bytes]]:
    """Attach a reader now, and return an iterator over the frames of ``stream_id``
    after event ``after_seq``, as lists of the frames that gathered since the last
    look (one write each), at most :data:`WRITE_EVENTS` in one. The first list
    holds the events already logged (it may be empty; a longer backlog follows
    at once in more lists); later an empty list means ``heartbeat_s`` seconds
    passed without an event. Returns after the terminal
    event, or once ``draining`` is set and the log woke its readers (the client
    then reconnects elsewhere); a stream that vanishes (expired) ends with a
    ``stream_lost`` error frame.

    ``events_per_response`` (>= 1; a fault the fake model is asked for, docs/testing-clients.md)
    also returns once that many events were given, the terminal one only if it is
    among them: the response ends early, as a dropped connection would, and the
    client resumes.

    ``offer(frame)``: while the reader waits caught up, a new event may be handed
    to ``offer`` by the greenlet that appends it (:meth:`Cursor.wait`), when the
    client's last write is :data:`DIRECT_MIN_GAP_S` old or more, or when it is
    the terminal event; True means ``offer`` wrote it to the client, and the
    iterator skips it (after a terminal event so written, it ends without
    another list). Not with ``events_per_response``.

    ``before_end()`` runs right before the list that holds the terminal event is
    given: the response's last write of events is next (a draining process may
    add a ``retry:`` block).

    ``close()`` it (a WSGI server does) to detach, whether or not it was iterated.

    Raises:
        EventLogUnavailable: when the reader cannot attach (at once, not from the
            iterator).
    """
    try:
        cursor = event_log.open(stream_id, after_seq)
    except StreamNotFound:  # it expired since the caller looked
        return Body(_expired(stream_id, after_seq + 1), lambda: None)
    allowance = _Allowance(events_per_response)
    if events_per_response is not None:
        offer = None
    return Body(_follow(cursor, stream_id, heartbeat_s, metrics, draining, allowance, offer, before_end),
                cursor.close)


def _expired(stream_id: str, seq: int) -> Generator[list[bytes], None, None]:
    yield [stream_lost_frame(EventId(stream_id, seq), EXPIRED)]


def _follow(cursor: Cursor, stream_id: str, heartbeat_s: float, metrics: Metrics | None,
            draining: threading.Event | None, allowance: _Allowance, offer: Callable[[bytes], bool] | None,
            before_end: Callable[[], None] | None) -> Generator[list[bytes], None, None]:
    finished = drained = False
    sent = _SentCounter(metrics)
    offered = None if offer is None else sent.direct(offer)
    try:
        frames, finished, more = allowance.take(cursor)
        if finished and before_end is not None:
            before_end()
        yield frames
        sent.add(len(frames), time.monotonic())
        while not finished and not allowance.spent:
            drained = draining is not None and draining.is_set()
            if drained:
                return
            if more:
                time.sleep(0)  # more of a backlog: other greenlets first (gevent patches sleep)
            else:
                cursor.wait(sent.at + heartbeat_s, offered)
            frames, finished, more = allowance.take(cursor)
            now = time.monotonic()
            if frames or now - sent.at >= heartbeat_s:
                if finished and before_end is not None:
                    before_end()
                yield frames
                sent.add(len(frames), now)
    except StreamNotFound:
        finished = True
        yield [stream_lost_frame(EventId(stream_id, cursor.position + 1), EXPIRED)]
    finally:
        cursor.close()
        sent.flush()
        if allowance.spent and not finished:
            log.info("stream %s: response ended after its %d events per response; the client resumes",
                     stream_id, allowance.events_per_response)
        elif drained and not finished:
            log.info("stream %s: reader ended after event %d for a graceful stop; the client reconnects",
                     stream_id, cursor.position)
        elif not finished:
            if metrics is not None:
                metrics.count(metrics.client_disconnects)
            log.info("stream %s: reader left after event %d, before the end (client gone or stopped reading)",
                     stream_id, cursor.position)


class _Allowance:
    """The events one response may still carry: without bound, or
    ``events_per_response`` (>= 1) in all, after which the response ends."""

    __slots__ = ("events_per_response", "_left")

    def __init__(self, events_per_response: int | None) -> None:
        self.events_per_response = events_per_response
        self._left = events_per_response

    @property
    def spent(self) -> bool:
        """True once the response carried its ``events_per_response`` events."""
        return self._left == 0

    def take(self, cursor: Cursor) -> tuple[list[bytes], bool, bool]:
        """The cursor's next frames (at most :data:`WRITE_EVENTS`, and no more
        than is left of the allowance), whether the last of them ends the stream,
        and whether more may be there already (the write was full).

        Raises:
            StreamNotFound: as :meth:`Cursor.take`.
        """
        limit = WRITE_EVENTS if self._left is None else min(WRITE_EVENTS, self._left)
        batch = cursor.take(limit)
        if self._left is not None:
            self._left -= len(batch.frames)
        return batch.frames, batch.finished, len(batch.frames) == limit


class Body(Generic[T]):
    """An iterator that runs ``on_close`` when closed, even if it was never started
    (a generator's ``finally`` would not run then): a WSGI response body that
    holds a resource from before the response began."""

    __slots__ = ("_items", "_on_close", "_direct")

    def __init__(self, items: Generator[T, None, None], on_close: Callable[[], None],
                 direct: _DirectWrites | None = None) -> None:
        self._items = items
        self._on_close = on_close
        self._direct = direct

    def write_directly(self, writer: ClientWriter) -> None:
        """Let the producer write events to this response's client through
        ``writer`` while the reader waits caught up (a body of
        :func:`read_stream`; others ignore it)."""
        if self._direct is not None:
            self._direct.writer = writer

    def also_on_close(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` too when closed (after the earlier ``on_close``)."""
        first = self._on_close

        def both() -> None:
            try:
                first()
            finally:
                callback()

        self._on_close = both

    def __iter__(self) -> Generator[T, None, None]:
        return self._items  # iterating skips this wrapper; close() still comes here

    def __next__(self) -> T:
        return next(self._items)

    def close(self) -> None:
        try:
            self._items.close()
        finally:
            self._on_close()


class _SentCounter:
    """When one reader last wrote (:attr:`at`, monotonic seconds), and its events
    counted into ``sse_chat_events_sent`` at most once per :data:`METRICS_FLUSH_S`
    (a multiprocess counter costs a locked file write per increment, too much
    once per event)."""

    __slots__ = ("_metrics", "_pending", "_flushed_at", "at")

    def __init__(self, metrics: Metrics | None) -> None:
        self._metrics = metrics
        self._pending = 0
        self._flushed_at = self.at = time.monotonic()

    def add(self, count: int, now: float) -> None:
        """``count`` events (0: a heartbeat) were written at ``now``."""
        self.at = now
        self._pending += count
        if now - self._flushed_at >= METRICS_FLUSH_S:
            self.flush()
            self._flushed_at = now

    def direct(self, offer: Callable[[bytes], bool]) -> Callable[[bytes, bool], bool]:
        """``offer`` as a cursor's wait takes it (:meth:`~..eventlog.Cursor.wait`:
        ``offered(frame, last)``), refused while the last write is younger than
        :data:`DIRECT_MIN_GAP_S` unless ``last`` (the terminal event), and counted
        here when it wrote."""

        def offered(frame: bytes, last: bool) -> bool:
            now = time.monotonic()
            if (now - self.at < DIRECT_MIN_GAP_S and not last) or not offer(frame):
                return False
            self.add(1, now)
            return True

        return offered

    def flush(self) -> None:
        if self._metrics is not None and self._pending:
            self._metrics.count(self._metrics.events_sent, amount=self._pending)
        self._pending = 0


def read_stream(readers: ReaderSettings, position: ReadFrom, *,
                transform: Callable[[list[bytes]], bytes] = b"".join, retry_alone: bool = True) -> Body[bytes]:
    """Attach a reader now, and return the event stream read from ``position``
    (the events of its stream after ``position.after_seq``), as an iterator of
    bytes to write (one write each).

    The first item opens with ``retry: {readers.retry_ms}`` and holds every event
    already logged (or ends the retry-only block with a blank line when there is
    none); then each item holds the events that gathered since the last write, or
    a ``: ping`` comment after ``readers.heartbeat_s`` seconds without one. Ends
    after the terminal event, or, when the process drains, after a last
    ``retry:`` that has the client reconnect; with ``position.events_per_response``,
    after that many events, as :func:`follow`. ``transform`` turns the frames of
    one write into its bytes (the OpenAI surface rewrites them as
    ``chat.completion.chunk`` frames).

    ``retry_alone=False`` never sends ``retry:`` in a block without data: the
    first write is then a comment when no event is there yet, ``retry:`` opens the
    first event, and a draining process sends no last ``retry:``. The spec says
    such a block dispatches nothing, but the openai SDK's decoder yields it as an
    empty event and fails to parse it as JSON.

    Raises:
        EventLogUnavailable: as :func:`follow`, at once.
    """
    direct = _DirectWrites(transform)
    batches = follow(readers.event_log, position.stream_id, position.after_seq, heartbeat_s=readers.heartbeat_s,
                     metrics=readers.metrics, draining=readers.draining,
                     events_per_response=position.events_per_response, offer=direct.offer,
                     before_end=direct.hold_last_write)
    return Body(_event_stream(batches, readers.retry_ms, readers.draining, transform, retry_alone, direct),
                batches.close, direct)


class _DirectWrites:
    """The short path of an event to a caught-up client: the producer's greenlet,
    appending an event the reader waits for, writes it to the client itself
    through the response's :class:`~sse_chat.client_writer.ClientWriter` (set by
    :meth:`Body.write_directly`), instead of waking the reader's greenlet to
    write it: one greenlet switch, one wake-up and one pass through the WSGI
    server less per event. Opened once the response's first write (with
    ``retry:``) has gone out.

    The terminal event too goes out so, as soon as it is appended: the reader,
    woken, then only ends the response (the server's end of a chunked body, in
    a ``send`` of its own). Left to the reader, it went out with that end in one
    ``send``, but only once the reader's greenlet had its turn, a turn or two of
    the event loop later: on a busy core, 100 ms or more after the last token
    (bench/compare.py ``--scenario crowd``)."""

    __slots__ = ("writer", "open", "_transform")

    def __init__(self, transform: Callable[[list[bytes]], bytes]) -> None:
        self.writer: ClientWriter | None = None
        self.open = False
        self._transform = None if transform == b"".join else transform  # None: a frame is written as it is

    def offer(self, frame: bytes) -> bool:
        """Write ``frame`` (transformed as the reader would) now; False when it
        cannot be (not open, no writer, the writer not ready, or the connection
        failed). The transform runs only when the write follows (a surface's
        transform keeps state: the Responses API numbers its events), so every
        frame goes through it once."""
        writer = self.writer
        if not self.open or writer is None:
            return False
        if self._transform is None:
            return writer.write(frame)  # which checks that the writer is ready
        if not writer.ready():  # before the transform, which must see the frame only if it is written
            return False
        try:
            data = self._transform([frame])
        except Exception:  # a bug of the surface's: let it fail in the reader's greenlet, not the producer's
            # (where the transform meets the frame again, its state perhaps already moved: the response is lost anyway)
            log.exception("direct writes of a response stopped: its transform failed")
            self.open = False
            return False
        return writer.write(data)  # False: the client left; the reader, woken, meets the failure and detaches

    def hold_last_write(self) -> None:
        """The reader's next write is its last of events: have the writer hold it
        for what follows it (the server's end of the body; while draining, a
        ``retry:`` block first), to go out in one ``send``
        (:meth:`~sse_chat.client_writer.ClientWriter.hold_next_write`)."""
        if self.writer is not None:
            self.writer.hold_next_write()


def _event_stream(batches: Body[list[bytes]], retry_ms: int, draining: threading.Event | None,
                  transform: Callable[[list[bytes]], bytes], retry_alone: bool,
                  direct: _DirectWrites) -> Generator[bytes, None, None]:
    retry = encode_retry(retry_ms)
    first = next(batches)
    if first:
        yield retry + transform(first)
    elif retry_alone:
        yield retry + b"\n"  # a block with no data: sets the reconnection time, dispatches nothing (9.2.6)
    else:
        yield OPENING_COMMENT  # the headers go out now; retry: waits for the first event
    pending_retry = not first and not retry_alone
    direct.open = not pending_retry
    for frames in batches:
        if not frames:
            yield HEARTBEAT
        elif pending_retry:
            yield retry + transform(frames)
            pending_retry = False
            direct.open = True
        else:
            yield transform(frames)
    if retry_alone and draining is not None and draining.is_set():
        yield retry + b"\n"

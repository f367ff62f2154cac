"""Readers: one HTTP response replays a stream from a position, then follows it
live, until its terminal event.

A reader attaches (opens a cursor) before its response begins, so that a stream
that cannot be read is answered with an HTTP error; its body is an iterator the
WSGI server writes item by item and closes when done or when a write fails
because the client went away, which detaches the reader. A reader sleeps until
its stream changes (see :mod:`.eventlog.wakeups`) and then writes everything that
gathered meanwhile at once.

The usual case has a short path (:class:`DirectWrites`): a reader that is caught
up with a stream produced in its own process, under gevent, lets the producer
write each new event to the client itself through the WSGI ``write`` callable, as
long as the client's socket takes it at once. The reader's greenlet then sleeps
until the terminal event, a heartbeat, a graceful stop or a socket that is not
writable: per event one greenlet runs instead of two, and nothing is woken.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable, Generator
from typing import Any, Generic, TypeVar

from gevent.event import Event
from gevent.monkey import get_original

from .background import running_under_gevent
from .eventlog import Cursor, EventLog, StreamNotFound
from .metrics import Metrics
from .protocol import EventId, encode_comment, encode_retry, stream_lost_frame

log = logging.getLogger(__name__)

HEARTBEAT = encode_comment("ping")
#: The first write when no event is there yet and ``retry:`` must wait for one.
OPENING_COMMENT = encode_comment()
T = TypeVar("T")
EXPIRED = "the stream expired while it was being read; ask again"
#: Seconds between a reader's updates of the events-sent metric.
METRICS_FLUSH_S = 1.0
#: The most events one write carries. A resume of a long stream sends its backlog
#: in writes of this many, letting other greenlets run between two, so that it
#: neither holds the event loop (the OpenAI surface rewrites every event) nor,
#: for a client that does not read, holds more than one write's bytes.
WRITE_EVENTS = 128


#: Bytes a producer writes directly after one ``poll`` said the client's socket
#: was writable, before it asks again (Linux reports a TCP socket writable while
#: its free send buffer is at least half what is queued, and the smallest send
#: buffer is 4 KiB).
WRITABLE_BYTES = 2048


class DirectWrites:
    """The short path of one response: the producer writes each event to the
    client from its own greenlet while the reader's cursor is parked
    (:meth:`Cursor.park <sse_chat.eventlog.Cursor.park>`). ``transform`` turns
    the list of one frame into the bytes to write (``None``: the frame as it is).

    Usable once :meth:`attach` got the WSGI ``write`` callable (PEP 3333: what
    ``start_response`` returns) and the client's socket, under gevent only, and
    once :attr:`enabled` (the response's opening went out). Each call writes one
    frame, turned into bytes by ``transform``, only when the socket is writable
    (a ``poll`` with no wait, once per :data:`WRITABLE_BYTES` written: a writable
    TCP socket has at least that much room), so a client that is slow to read does
    not hold up a producer: its reader is woken and writes as before, what gathered
    in one write. A write that fails is kept in :attr:`error` for the reader to raise.
    """

    __slots__ = ("_transform", "_write", "_poll", "_budget", "_writing", "_written", "enabled", "sent", "sent_at",
                 "error")

    def __init__(self, transform: Callable[[list[bytes]], bytes] | None) -> None:
        self._transform = transform
        self._write: Callable[[bytes], Any] | None = None
        self._poll: Callable[[int], list] | None = None
        #: Bytes that may still be written without asking the socket again.
        self._budget = 0
        #: True while a write is in flight: the reader must not write meanwhile.
        self._writing = False
        #: Set when a write that a reader waits for (:meth:`settle`) has ended.
        self._written: Event | None = None
        #: True once the reader may be parked (the first write, with ``retry:``, went out).
        self.enabled = False
        #: Events written since the reader last looked, and the monotonic second of the last one.
        self.sent = 0
        self.sent_at = 0.0
        self.error: BaseException | None = None

    def attach(self, write: Callable[[bytes], Any], sock: Any) -> None:
        """Take the WSGI ``write`` callable and the client's socket (gunicorn's
        ``environ["gunicorn.socket"]``); without either, or without gevent, the
        short path stays off."""
        if sock is None or not running_under_gevent():
            return
        poller = get_original("select", "poll")()
        poller.register(sock.fileno(), select.POLLOUT)
        self._poll = poller.poll
        self._write = write

    @property
    def usable(self) -> bool:
        return self.enabled and self._write is not None and self.error is None

    def __call__(self, frame: bytes) -> bool:
        """Write ``frame`` now; False when the socket would make the producer wait
        (or a write is in flight, or one failed)."""
        write, size = self._write, len(frame)
        if write is None or self.error is not None or self._writing:
            return False
        if size > self._budget:
            if self._poll is None or not self._poll(0):
                return False
            self._budget = WRITABLE_BYTES
        self._writing = True
        try:
            write(frame if self._transform is None else self._transform([frame]))
        except Exception as exc:  # the client went away: its reader ends the response
            self.error = exc
            return False
        finally:
            self._writing = False
            if self._written is not None:
                self._written.set()
        self._budget -= size
        self.sent += 1
        self.sent_at = time.monotonic()
        return True

    def settle(self) -> None:
        """Wait until a write in flight has ended (the reader is about to write)."""
        if self._writing:  # it waits for the client's socket: rare
            self._written = Event()
            try:
                self._written.wait()
            finally:
                self._written = None


def follow(event_log: EventLog, stream_id: str, after_seq: int, *, heartbeat_s: float,
           metrics: Metrics | None = None, draining: threading.Event | None = None,
           drop_every: int | None = None, direct: DirectWrites | None = None) -> Body[list[bytes]]:
    """Attach a reader now, and return an iterator over the frames of ``stream_id``
    after event ``after_seq``, as lists of the frames that gathered since the last
    look (one write each), at most :data:`WRITE_EVENTS` in one. The first list
    holds the events already logged (it may be empty; a longer backlog follows
    at once in more lists); later an empty list means ``heartbeat_s`` seconds
    passed without an event. Returns after the terminal
    event, or once ``draining`` is set and the log woke its readers (the client
    then reconnects elsewhere); a stream that vanishes (expired) ends with a
    ``stream_lost`` error frame.

    ``drop_every`` (events, >= 1; the fake model's fault, docs/testing-clients.md)
    also returns once that many events were given, the terminal one only if it is
    among them: the response ends early, as a dropped connection would, and the
    client resumes.

    ``direct``: the response's :class:`DirectWrites`; while it is usable, the
    reader lets the producer write the events that come while it waits (their
    lists are then not returned).

    ``close()`` it (a WSGI server does) to detach, whether or not it was iterated.

    Raises:
        EventLogUnavailable: when the reader cannot attach (at once, not from the
            iterator).
    """
    try:
        cursor = event_log.open(stream_id, after_seq)
    except StreamNotFound:  # it expired since the caller looked
        return Body(_expired(stream_id, after_seq + 1), lambda: None)
    return Body(_follow(cursor, stream_id, heartbeat_s, metrics, draining, _Allowance(drop_every), direct),
                cursor.close)


def _expired(stream_id: str, seq: int) -> Generator[list[bytes], None, None]:
    yield [stream_lost_frame(EventId(stream_id, seq), EXPIRED)]


def _follow(cursor: Cursor, stream_id: str, heartbeat_s: float, metrics: Metrics | None,
            draining: threading.Event | None, allowance: _Allowance,
            direct: DirectWrites | None) -> Generator[list[bytes], None, None]:
    finished = drained = False
    sent = _SentCounter(metrics)
    try:
        frames, finished, more = allowance.take(cursor)
        yield frames
        sent_at = time.monotonic()
        sent.add(len(frames), sent_at)
        while not finished and not allowance.spent:
            drained = draining is not None and draining.is_set()
            if drained:
                return
            if more:
                time.sleep(0)  # more of a backlog: other greenlets first (gevent patches sleep)
            else:
                parked = direct is not None and allowance.unbounded and direct.usable and cursor.park(direct)
                cursor.wait(sent_at + heartbeat_s)
                if parked and direct is not None:
                    sent_at = _settle(direct, sent, sent_at)
            frames, finished, more = allowance.take(cursor)
            now = time.monotonic()
            if frames or now - sent_at >= heartbeat_s:
                yield frames
                sent_at = now
                sent.add(len(frames), now)
    except StreamNotFound:
        finished = True
        yield [stream_lost_frame(EventId(stream_id, cursor.position + 1), EXPIRED)]
    finally:
        cursor.close()
        sent.flush()
        if allowance.spent and not finished:
            log.info("stream %s: response dropped after %d events (fake.drop_every); the client resumes",
                     stream_id, allowance.drop_every)
        elif drained and not finished:
            log.info("stream %s: reader ended after event %d for a graceful stop; the client reconnects",
                     stream_id, cursor.position)
        elif not finished:
            if metrics is not None:
                metrics.client_disconnects.inc()
            log.info("stream %s: reader left after event %d, before the end (client gone or stopped reading)",
                     stream_id, cursor.position)


def _settle(direct: DirectWrites, sent: _SentCounter, sent_at: float) -> float:
    """After a parked wait: wait for a write in flight, raise the error of a failed
    one (the client went away: the response ends as if its own write had failed),
    count what the producer wrote; the monotonic second of the last write."""
    direct.settle()
    if direct.error is not None:
        raise direct.error
    if direct.sent:
        sent.add(direct.sent, direct.sent_at)
        direct.sent = 0
        return max(sent_at, direct.sent_at)
    return sent_at


class _Allowance:
    """The events one response may still carry: without bound, or ``drop_every``
    (>= 1) in all, after which the response is dropped (the fake model's fault)."""

    __slots__ = ("drop_every", "_left")

    def __init__(self, drop_every: int | None) -> None:
        self.drop_every = drop_every
        self._left = drop_every

    @property
    def unbounded(self) -> bool:
        """True when no ``drop_every`` applies."""
        return self.drop_every is None

    @property
    def spent(self) -> bool:
        """True once the response carried its ``drop_every`` events."""
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
                 direct: DirectWrites | None = None) -> None:
        self._items = items
        self._on_close = on_close
        self._direct = direct

    def attach_write(self, write: Callable[[bytes], Any], environ: dict[str, Any]) -> None:
        """Give the body the WSGI ``write`` callable that ``start_response``
        returned, for :class:`DirectWrites` (a response that sends it through
        :func:`sse_chat.web.event_stream_response` does)."""
        if self._direct is not None:
            self._direct.attach(write, environ.get("gunicorn.socket"))

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
    """Counts events sent by one reader into ``sse_chat_events_sent`` at most once
    per :data:`METRICS_FLUSH_S` (a multiprocess counter costs a locked file write
    per increment, too much once per event)."""

    def __init__(self, metrics: Metrics | None) -> None:
        self._metrics = metrics
        self._pending = 0
        self._flushed_at = time.monotonic()

    def add(self, count: int, now: float) -> None:
        self._pending += count
        if now - self._flushed_at >= METRICS_FLUSH_S:
            self.flush()
            self._flushed_at = now

    def flush(self) -> None:
        if self._metrics is not None and self._pending:
            self._metrics.events_sent.inc(self._pending)
        self._pending = 0


def read_stream(event_log: EventLog, stream_id: str, after_seq: int, *, retry_ms: int,
                heartbeat_s: float, metrics: Metrics | None = None,
                draining: threading.Event | None = None,
                transform: Callable[[list[bytes]], bytes] = b"".join, retry_alone: bool = True,
                drop_every: int | None = None) -> Body[bytes]:
    """Attach a reader now, and return the event stream of ``stream_id`` from event
    ``after_seq + 1`` on, as an iterator of bytes to write (one write each).

    The first item opens with ``retry: {retry_ms}`` and holds every event already
    logged (or ends the retry-only block with a blank line when there is none); then
    each item holds the events that gathered since the last write, or a ``: ping``
    comment after ``heartbeat_s`` seconds without one. Ends after the terminal
    event, or, when the process drains, after a last ``retry:`` that has the client
    reconnect. ``transform`` turns the frames of one write into its bytes (the
    OpenAI surface rewrites them as ``chat.completion.chunk`` frames).
    ``drop_every`` ends the response after that many events, as :func:`follow`.

    ``retry_alone=False`` never sends ``retry:`` in a block without data: the
    first write is then a comment when no event is there yet, ``retry:`` opens the
    first event, and a draining process sends no last ``retry:``. The spec says
    such a block dispatches nothing, but the openai SDK's decoder yields it as an
    empty event and fails to parse it as JSON.

    Raises:
        EventLogUnavailable: as :func:`follow`, at once.
    """
    direct = DirectWrites(None if transform == b"".join else transform)  # one frame joined is itself
    batches = follow(event_log, stream_id, after_seq, heartbeat_s=heartbeat_s, metrics=metrics, draining=draining,
                     drop_every=drop_every, direct=direct)
    return Body(_event_stream(batches, retry_ms, draining, transform, retry_alone, direct), batches.close, direct)


def _event_stream(batches: Body[list[bytes]], retry_ms: int, draining: threading.Event | None,
                  transform: Callable[[list[bytes]], bytes], retry_alone: bool,
                  direct: DirectWrites) -> Generator[bytes, None, None]:
    retry = encode_retry(retry_ms)
    first = next(batches)
    if first:
        yield retry + transform(first)
    elif retry_alone:
        yield retry + b"\n"  # a block with no data: sets the reconnection time, dispatches nothing (9.2.6)
    else:
        yield OPENING_COMMENT  # the headers go out now; retry: waits for the first event
    pending_retry = not first and not retry_alone
    direct.enabled = not pending_retry
    for frames in batches:
        if not frames:
            yield HEARTBEAT
        elif pending_retry:
            yield retry + transform(frames)
            pending_retry = False
            direct.enabled = True
        else:
            yield transform(frames)
    if retry_alone and draining is not None and draining.is_set():
        yield retry + b"\n"

"""Readers: one HTTP response replays a stream from a position, then follows it
live, until its terminal event.

Plain generators, handed plain values: the WSGI server writes each item as it
comes, and closes the generator (``GeneratorExit``) when a write fails because the
client went away, which detaches the reader.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from .metrics import Metrics
from .eventlog import EventLog, StreamNotFound, lost_frame
from .sse import encode_comment, encode_retry

log = logging.getLogger(__name__)

HEARTBEAT = encode_comment("ping")
#: Seconds a reader waits before it looks whether the process is draining.
DRAIN_CHECK_S = 1.0
#: Seconds between a reader's updates of the events-sent metric.
METRICS_FLUSH_S = 1.0


def follow(event_log: EventLog, stream_id: str, after_seq: int, *, heartbeat_s: float,
           metrics: Metrics | None = None, draining: threading.Event | None = None) -> Iterator[list[bytes]]:
    """Yield the frames of ``stream_id`` after event ``after_seq``, as lists of the
    frames that arrived together. The first list holds every event already logged
    (it may be empty); later an empty list means ``heartbeat_s`` seconds passed
    without an event. Returns after the terminal event, or within
    :data:`DRAIN_CHECK_S` seconds once ``draining`` is set (the client then
    reconnects elsewhere); a stream that vanishes (expired) ends with a
    ``stream_lost`` error frame.
    """
    event_log.attach(stream_id)
    position, finished, drained = after_seq, False, False
    sent = _SentCounter(metrics)
    try:
        batch = event_log.read(stream_id, position, timeout_s=0)
        sent_at = time.monotonic()
        first = True
        while True:
            finished = batch.finished
            heartbeat_due = time.monotonic() - sent_at >= heartbeat_s
            if batch.frames or (first and not finished) or (heartbeat_due and not finished):
                position = batch.last_seq if batch.frames else position
                yield batch.frames
                sent_at, first = time.monotonic(), False
                sent.add(len(batch.frames), sent_at)
            drained = draining is not None and draining.is_set()
            if finished or drained:
                return
            batch = event_log.read(stream_id, position, timeout_s=min(heartbeat_s, DRAIN_CHECK_S))
    except StreamNotFound:
        finished = True
        yield [lost_frame(stream_id, position + 1, "the stream expired while it was being read; ask again")]
    finally:
        event_log.detach(stream_id)
        sent.flush()
        if drained and not finished:
            log.info("stream %s: reader ended after event %d for a graceful stop; the client reconnects",
                     stream_id, position)
        elif not finished:
            if metrics is not None:
                metrics.client_disconnects.inc()
            log.info("stream %s: reader left after event %d, before the end (client gone or stopped reading)",
                     stream_id, position)


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
                transform: Callable[[list[bytes]], bytes] = b"".join) -> Iterator[bytes]:
    """Yield the event stream of ``stream_id`` from event ``after_seq + 1`` on.

    The first item opens with ``retry: {retry_ms}`` and holds every event already
    logged (or ends the retry-only block with a blank line when there is none); then
    each item holds the events that arrived together, or a ``: ping`` comment after
    ``heartbeat_s`` seconds without one. Returns after the terminal event, or,
    when the process drains, after a last ``retry:`` that has the client reconnect.
    ``transform`` turns the frames that arrived together into the bytes to send
    (the OpenAI surface rewrites them as ``chat.completion.chunk`` frames).
    """
    batches = follow(event_log, stream_id, after_seq, heartbeat_s=heartbeat_s, metrics=metrics, draining=draining)
    try:
        first = next(batches, [])
        yield encode_retry(retry_ms) + (transform(first) if first else b"\n")
        for frames in batches:
            yield transform(frames) if frames else HEARTBEAT
        if draining is not None and draining.is_set():
            yield encode_retry(retry_ms) + b"\n"
    finally:
        batches.close()

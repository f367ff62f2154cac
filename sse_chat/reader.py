"""Readers: one HTTP response replays a stream from a position, then follows it
live, until its terminal event.

Plain generators, handed plain values: the WSGI server writes each item as it
comes, and closes the generator (``GeneratorExit``) when a write fails because the
client went away, which detaches the reader.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from .errors import error_body
from .metrics import Metrics
from .eventlog import EventLog, StreamNotFound, event_id
from .sse import ServerSentEvent, compact_json, encode_comment, encode_retry

log = logging.getLogger(__name__)

HEARTBEAT = encode_comment("ping")


def follow(event_log: EventLog, stream_id: str, after_seq: int, *, heartbeat_s: float,
           metrics: Metrics | None = None) -> Iterator[list[bytes]]:
    """Yield the frames of ``stream_id`` after event ``after_seq``, as lists of the
    frames that arrived together. The first list holds every event already logged
    (it may be empty); later an empty list means ``heartbeat_s`` seconds passed
    without an event. Returns after the terminal event; a stream that vanishes
    (expired) ends with a ``stream_lost`` error frame.
    """
    event_log.attach(stream_id)
    position, finished = after_seq, False
    try:
        batch = event_log.read(stream_id, position, timeout_s=0)
        while True:
            position = batch.last_seq if batch.frames else position
            finished = batch.finished
            if batch.frames or not finished:
                yield batch.frames
                if metrics is not None:
                    metrics.events_sent.inc(len(batch.frames))
            if finished:
                return
            batch = event_log.read(stream_id, position, timeout_s=heartbeat_s)
    except StreamNotFound:
        finished = True
        yield [_lost_frame(stream_id, position)]
    finally:
        event_log.detach(stream_id)
        if not finished:
            if metrics is not None:
                metrics.client_disconnects.inc()
            log.info("stream %s: reader left after event %d, before the end (client gone or stopped reading)",
                     stream_id, position)


def read_stream(event_log: EventLog, stream_id: str, after_seq: int, *, retry_ms: int,
                heartbeat_s: float, metrics: Metrics | None = None) -> Iterator[bytes]:
    """Yield the event stream of ``stream_id`` from event ``after_seq + 1`` on.

    The first item opens with ``retry: {retry_ms}`` and holds every event already
    logged (or ends the retry-only block with a blank line when there is none); then
    each item holds the events that arrived together, or a ``: ping`` comment after
    ``heartbeat_s`` seconds without one. Returns after the terminal event.
    """
    batches = follow(event_log, stream_id, after_seq, heartbeat_s=heartbeat_s, metrics=metrics)
    try:
        first = next(batches, [])
        yield encode_retry(retry_ms) + (b"".join(first) if first else b"\n")
        for frames in batches:
            yield b"".join(frames) if frames else HEARTBEAT
    finally:
        batches.close()


def _lost_frame(stream_id: str, position: int) -> bytes:
    """The terminal event for a stream whose log vanished under a reader (expired,
    or Redis flushed): not in the log, so it goes to this reader only."""
    body = error_body("stream_lost", "the stream expired while it was being read; ask again")
    return ServerSentEvent(compact_json(body), event="error", id=event_id(stream_id, position + 1)).encode()

"""The reader: one HTTP response that replays a stream from a position, then
follows it live, until its terminal event.

A plain generator of bytes, handed plain values: the WSGI server writes each item
as it comes, and closes the generator (``GeneratorExit``) when a write fails because
the client went away.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from .errors import error_body
from .eventlog import EventLog, StreamNotFound, event_id
from .sse import ServerSentEvent, compact_json, encode_comment, encode_retry

log = logging.getLogger(__name__)

HEARTBEAT = encode_comment("ping")


def read_stream(event_log: EventLog, stream_id: str, after_seq: int, *, retry_ms: int,
                heartbeat_s: float) -> Iterator[bytes]:
    """Yield the event stream of ``stream_id`` from event ``after_seq + 1`` on.

    The first item opens with ``retry: {retry_ms}`` and holds every event already
    logged (or ends the retry-only block with a blank line when there is none); then
    each item holds the events that arrived together, or a ``: ping`` comment after
    ``heartbeat_s`` seconds without one. Returns after the terminal event.
    """
    event_log.attach(stream_id)
    try:
        position = after_seq
        batch = event_log.read(stream_id, position, timeout_s=0)
        yield encode_retry(retry_ms) + (b"".join(batch.frames) if batch.frames else b"\n")
        position = batch.last_seq if batch.frames else position
        finished = batch.finished
        while not finished:
            batch = event_log.read(stream_id, position, timeout_s=heartbeat_s)
            if batch.frames:
                position = batch.last_seq
                yield b"".join(batch.frames)
            elif not batch.finished:
                yield HEARTBEAT
            finished = batch.finished
    except StreamNotFound:
        yield _lost_event(stream_id, position)
    finally:
        event_log.detach(stream_id)


def _lost_event(stream_id: str, position: int) -> bytes:
    """The terminal event for a stream whose log vanished under a reader (expired,
    or Redis flushed): not in the log, so it goes to this reader only."""
    body = error_body("stream_lost", "the stream expired while it was being read; ask again")
    return ServerSentEvent(compact_json(body), event="error", id=event_id(stream_id, position + 1)).encode()

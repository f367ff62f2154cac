"""Starting and resuming streams: what every stream endpoint shares."""

from __future__ import annotations

from flask import Response, g, request

from .errors import stream_not_found
from .eventlog import StreamInfo
from .models import ChatRequest
from .producer import Producer, ProducerLimits
from .protocol import EventId, new_stream_id
from .services import Services


def start_generation(services: Services, chat: ChatRequest, owner: str | None) -> str:
    """Create a stream owned by ``owner``, write its ``start`` event and start its
    producer; returns the stream id.

    Raises:
        ApiError: 503 ``backend_unavailable`` when no backend serves ``chat.model``;
            429 ``too_many_streams`` past the limits on concurrent streams.
        EventLogUnavailable: the event log's store cannot be reached.
    """
    model = services.models.resolve(chat.model)
    stream_id = new_stream_id()
    services.limiter.admit(stream_id, owner)
    producer = Producer(services.event_log, stream_id, model, chat,
                        ProducerLimits(abandon_s=services.settings.abandon_s),
                        on_end=lambda: services.limiter.release(stream_id), metrics=services.metrics)
    try:
        producer.create_stream(owner)
    except BaseException:
        services.limiter.release(stream_id)
        raise
    producer.start()
    return stream_id


def caller() -> str | None:
    """The authenticated caller's owner fingerprint (``None`` on an open service)."""
    return g.get("owner")


def requested_last_event_id() -> str | None:
    """The request's last event id: the ``Last-Event-ID`` header, else the
    ``last_event_id`` query parameter (for clients that cannot set headers)."""
    value = request.headers.get("Last-Event-ID")
    if value is None:
        value = request.args.get("last_event_id")
    return value or None


def resume_position(services: Services, last_event_id: str, owner: str | None,
                    stream_id: str | None = None) -> tuple[str, int] | None:
    """Where a resume starts: ``(stream_id, seq)`` to replay the events after
    ``seq``, or ``None`` when ``last_event_id`` is the stream's terminal event
    (nothing follows: answer 204).

    Raises:
        ApiError: 404 ``stream_not_found`` for a malformed id, an id of another
            stream than ``stream_id``, an unknown, expired or foreign stream, or an
            event the stream does not have yet.
    """
    parsed = EventId.parse(last_event_id)
    if parsed is None:
        raise stream_not_found(f"Last-Event-ID {last_event_id!r} is not an event id of the form STREAM_ID:SEQ")
    if stream_id is not None and parsed.stream_id != stream_id:
        raise stream_not_found(f"Last-Event-ID {last_event_id!r} is not an event of stream {stream_id!r}")
    info = known_stream(services, parsed.stream_id, owner)
    if parsed.seq > info.last_seq:
        raise stream_not_found(f"stream {parsed.stream_id!r} has no event {parsed.seq} yet "
                               f"(its last is {info.last_seq})")
    if info.finished and parsed.seq == info.last_seq:
        return None
    services.metrics.resumes.inc()
    return parsed.stream_id, parsed.seq


def resume_response(services: Services, last_event_id: str, owner: str | None, respond,
                    stream_id: str | None = None):
    """``respond(stream_id, seq)`` for the events after ``last_event_id``, or an empty
    204 when it was the stream's terminal event.

    Raises:
        ApiError: as :func:`resume_position`.
    """
    position = resume_position(services, last_event_id, owner, stream_id)
    if position is None:
        response = Response(status=204)
        del response.headers["Content-Type"]  # no content, so no type (RFC 9110, 15.3.5)
        return response
    return respond(*position)


def known_stream(services: Services, stream_id: str, owner: str | None) -> StreamInfo:
    """The stream's info, if ``owner`` may see it.

    Raises:
        ApiError: 404 ``stream_not_found`` when it is unknown, expired, or owned by
            another key (the answer does not tell which).
    """
    info = services.event_log.info(stream_id)
    if info is None or info.owner != owner:
        raise stream_not_found(f"no stream {stream_id!r}: it never existed or it expired")
    return info

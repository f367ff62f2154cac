"""Starting and resuming streams, and who may see them: what both HTTP surfaces
share, in plain values (no request globals; see :mod:`.web` for those)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import invalid_request, stream_not_found
from ..eventlog import StreamInfo
from ..models import ChatModel, ChatRequest
from ..protocol import EventId, new_stream_id
from .idempotency import KeyedStart, keep_after_end, start_once
from .producer import Producer, ProducerLimits
from .reader import ReadFrom
from .services import Services


@dataclass(frozen=True, slots=True)
class StartOptions:
    """How a surface starts a stream beyond the chat itself: ``start_extra``, keys
    added to the ``start`` event's data (JSON values the surface reads back on any
    worker, such as the Responses API's request), and ``background``: generation
    goes on however long no reader is attached (no ``SSE_CHAT_ABANDON_S``)."""

    start_extra: dict[str, Any] | None = None
    background: bool = False


def start_generation(services: Services, chat: ChatRequest, owner: str | None,
                     keyed: KeyedStart | None = None, options: StartOptions = StartOptions()) -> str:
    """Create a stream owned by ``owner``, write its ``start`` event and start its
    producer (as ``options`` say); returns the stream id. With ``keyed`` (the request's
    ``Idempotency-Key``), the stream an earlier request of ``owner`` with that key
    started, if it is still kept (:func:`~sse_chat.streaming.idempotency.start_once`).

    Raises:
        ApiError: 503 ``backend_unavailable`` when no backend serves ``chat.model``;
            400 ``invalid_request`` for ``max_tokens`` above ``SSE_CHAT_MAX_TOKENS``;
            429 ``too_many_streams``, ``too_many_events`` or ``too_many_readers``
            past the limits (:class:`~sse_chat.access.limits.StreamLimiter`); 422
            ``idempotency_key_reused`` when ``keyed`` came with another request; 409
            ``idempotency_key_in_use`` (see :func:`~sse_chat.streaming.idempotency.start_once`).
        EventLogUnavailable: the event log's store cannot be reached.
    """
    _check_max_tokens(chat, services.settings.max_tokens)
    services.limiter.check_reader(owner)
    model = services.models.resolve(chat.model)
    if keyed is None:
        return _start(services, chat, model, owner, new_stream_id(), options)
    ttl_s = services.settings.stream_ttl_s

    def start(stream_id: str) -> None:
        _start(services, chat, model, owner, stream_id, options,
               on_end=lambda: keep_after_end(services.event_log, owner, keyed, stream_id, ttl_s))

    started = start_once(services.event_log, owner, keyed, new_stream_id(), start, stream_ttl_s=ttl_s)
    if started.repeated:
        services.metrics.count(services.metrics.repeated_starts)
    return started.stream_id


def _start(services: Services, chat: ChatRequest, model: ChatModel, owner: str | None, stream_id: str,
           options: StartOptions, on_end: Callable[[], None] | None = None) -> str:
    """Admit, create and start stream ``stream_id``; ``on_end`` runs when its
    producer ends (after the limiter is told)."""
    # a stream that asked for max_tokens holds room for them (and start and end),
    # as many as a stream may have
    reserved = 0 if chat.max_tokens is None else min(chat.max_tokens + 2, services.settings.max_events_per_stream)
    services.limiter.admit(stream_id, owner, reserved)

    def ended() -> None:
        services.limiter.release(stream_id, producer.events_written)
        if on_end is not None:
            on_end()

    settings = services.settings
    limits = ProducerLimits(abandon_s=math.inf if options.background else settings.abandon_s,
                            tool_timeout_s=settings.tool_timeout_s, max_tool_steps=settings.max_tool_steps)
    producer = Producer(services.event_log, stream_id, model, chat, limits, on_end=ended, metrics=services.metrics,
                        start_extra=options.start_extra, tools=services.tools, spawn=services.runners.spawn)
    try:
        producer.create_stream(owner)
    except BaseException:
        services.limiter.release(stream_id)
        raise
    producer.start()
    return stream_id


def _check_max_tokens(chat: ChatRequest, ceiling: int) -> None:
    """Raises: ApiError: 400 ``invalid_request`` when ``chat`` asks for more than
    ``ceiling`` tokens (``SSE_CHAT_MAX_TOKENS``)."""
    if chat.max_tokens is not None and chat.max_tokens > ceiling:
        raise invalid_request(f"the request asks for up to {chat.max_tokens:,} tokens (max_tokens, "
                              f"max_completion_tokens or max_output_tokens); this service answers at most {ceiling:,} "
                              "(SSE_CHAT_MAX_TOKENS): ask for fewer")


def resume_position(services: Services, last_event_id: str, owner: str | None,
                    stream_id: str | None = None) -> ReadFrom | None:
    """Where a resume starts: the events after ``last_event_id`` (with the stream's
    ``events_per_response``, from the event log, so that any worker drops alike), or
    ``None`` when ``last_event_id`` is the stream's terminal event (nothing
    follows: answer 204).

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
    services.metrics.count(services.metrics.resumes)
    return ReadFrom(parsed.stream_id, parsed.seq, info.events_per_response)


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

"""The OpenAI-compatible surface: ``POST /v1/chat/completions`` and ``GET /v1/models``,
over the same backends and event log as ``/v1/chat``."""

from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify

from ..config import Settings
from ..errors import ApiError
from ..eventlog import EventLog, EventLogUnavailable
from ..formats.chat_completions import (
    CompletionChunks,
    completion,
    logged_events,
    model_list,
    openai_error,
    parse_completion_body,
)
from ..models.registry import is_backend_error
from ..streaming.generation import start_generation
from ..streaming.reader import ReadFrom, follow, read_stream
from ..streaming.services import Services
from .web import (
    caller,
    event_stream_response,
    json_body,
    requested_idempotency,
    requested_last_event_id,
    resume_response,
    services,
    unavailable_error,
)

bp = Blueprint("openai", __name__)


@bp.errorhandler(ApiError)
def api_error(error: ApiError):
    """Errors before the stream, in OpenAI's shape (``param`` and ``code`` added)."""
    return jsonify(openai_error(error.type, error.message)), error.status, dict(error.headers)


@bp.errorhandler(EventLogUnavailable)
def event_log_down(error: EventLogUnavailable):
    """503 ``event_log_unavailable`` with ``Retry-After``, in OpenAI's shape (the
    SDK retries it)."""
    return api_error(unavailable_error(error))


@bp.get("/v1/models")
def models() -> Response:
    return jsonify(model_list(services().models.model_names()))


@bp.post("/v1/chat/completions")
def chat_completions():
    svc = services()
    last_event_id = requested_last_event_id()
    if last_event_id is not None:
        def resumed(position: ReadFrom) -> Response:
            chunks = CompletionChunks(position.stream_id, "", int(time.time()), include_usage=True,
                                      server_tools=frozenset(svc.tools.names))
            return _chunk_stream(svc, position, chunks)

        return resume_response(svc, last_event_id, caller(), resumed)
    body = json_body()
    request = parse_completion_body(body, svc.settings.model)
    stream_id = start_generation(svc, request.chat, caller(), requested_idempotency(body))
    if not request.stream:
        return _whole_completion(svc.event_log, svc.settings, stream_id, request.chat.model)
    client_tools = {(tool.get("function") or {}).get("name") for tool in request.chat.tools or ()}
    chunks = CompletionChunks(stream_id, request.chat.model, int(time.time()), request.include_usage,
                              server_tools=frozenset(svc.tools.names) - client_tools)
    return _chunk_stream(svc, ReadFrom(stream_id, -1, request.chat.events_per_response), chunks)


def _chunk_stream(svc: Services, position: ReadFrom, chunks: CompletionChunks) -> Response:
    """The stream read from ``position`` with each event turned into
    ``chat.completion.chunk`` frames (a resumed stream's chunks name no model)."""

    def to_chunks(frames: list[bytes]) -> bytes:
        return b"".join(frame for event in logged_events([frames]) for frame in chunks.frames(event))

    return event_stream_response(read_stream(svc.readers, position, transform=to_chunks, retry_alone=False))


def _whole_completion(event_log: EventLog, settings: Settings, stream_id: str, model: str):
    batches = follow(event_log, stream_id, -1, heartbeat_s=settings.heartbeat_s)
    try:
        body, error = completion(stream_id, model, int(time.time()), logged_events(batches))
    finally:
        batches.close()
    if error is not None:
        status = 502 if is_backend_error(error["type"]) else 500   # a backend's failure: a bad gateway
        return jsonify(openai_error(error["type"], error["message"])), status
    return jsonify(body)

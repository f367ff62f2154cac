"""The OpenAI-compatible surface: ``POST /v1/chat/completions`` and ``GET /v1/models``,
over the same backends and event log as ``/v1/chat``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from flask import Blueprint, Response, jsonify

from .config import Settings
from .errors import ApiError
from .eventlog import EventLog
from .metrics import Metrics
from .openai_format import (CompletionChunks, completion, logged_events, model_list, openai_error,
                            parse_completion_body)
from .reader import HEARTBEAT, follow
from .routes import event_stream_response, json_body, services
from .sse import encode_retry
from .streams import caller, requested_last_event_id, resume_position, start_generation

bp = Blueprint("openai", __name__)


@bp.errorhandler(ApiError)
def api_error(error: ApiError):
    """Errors before the stream, in OpenAI's shape (``param`` and ``code`` added)."""
    return jsonify(openai_error(error.type, error.message)), error.status, dict(error.headers)


@bp.get("/v1/models")
def models() -> Response:
    return jsonify(model_list(services().models.model_names()))


@bp.post("/v1/chat/completions")
def chat_completions():
    svc = services()
    last_event_id = requested_last_event_id()
    if last_event_id is not None:
        position = resume_position(svc, last_event_id, caller())
        if position is None:
            return Response(status=204)
        stream_id, after_seq = position
        chunks = CompletionChunks(stream_id, "", int(time.time()), include_usage=True)
        return event_stream_response(_chunk_stream(svc.event_log, svc.settings, stream_id, after_seq, chunks, svc.metrics, svc.draining))
    request = parse_completion_body(json_body(), svc.settings.model)
    stream_id = start_generation(svc, request.chat, caller())
    if not request.stream:
        return _whole_completion(svc.event_log, svc.settings, stream_id, request.chat.model)
    chunks = CompletionChunks(stream_id, request.chat.model, int(time.time()), request.include_usage)
    return event_stream_response(_chunk_stream(svc.event_log, svc.settings, stream_id, -1, chunks, svc.metrics, svc.draining))


def _chunk_stream(event_log: EventLog, settings: Settings, stream_id: str, after_seq: int,
                  chunks: CompletionChunks, metrics: Metrics, draining: threading.Event) -> Iterator[bytes]:
    """Like :func:`~sse_chat.reader.read_stream`, with each event turned into
    ``chat.completion.chunk`` frames."""
    batches = follow(event_log, stream_id, after_seq, heartbeat_s=settings.heartbeat_s, metrics=metrics,
                     draining=draining)
    try:
        for index, frames in enumerate(batches):
            out = b"".join(frame for event in logged_events([frames]) for frame in chunks.frames(event))
            if index == 0:
                yield encode_retry(settings.retry_ms) + (out or b"\n")
            else:
                yield out or HEARTBEAT
    finally:
        batches.close()


def _whole_completion(event_log: EventLog, settings: Settings, stream_id: str, model: str):
    batches = follow(event_log, stream_id, -1, heartbeat_s=settings.heartbeat_s)
    try:
        body, error = completion(stream_id, model, int(time.time()), logged_events(batches))
    finally:
        batches.close()
    if error is not None:
        status = 502 if error["type"].startswith("upstream_") else 500
        return jsonify(openai_error(error["type"], error["message"])), status
    return jsonify(body)

"""HTTP endpoints of the event-stream API (docs/http-api.md and docs/resume.md)."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify, request

from ..background import call_within
from ..bodies.chat import parse_chat_body, parse_chat_query
from ..errors import event_log_unavailable
from ..protocol import event_types_module
from ..streaming.generation import known_stream, start_generation
from ..streaming.reader import ReadFrom, read_stream
from .web import (
    caller,
    event_stream_response,
    json_body,
    requested_idempotency,
    requested_last_event_id,
    resume_response,
    services,
)

log = logging.getLogger(__name__)

bp = Blueprint("streams", __name__)

#: Seconds ``/readyz`` waits for the event log's answer: a load balancer's
#: readiness check must hear within a second, also while Redis is stalled.
READY_TIMEOUT_S = 0.8


@bp.get("/")
def chat_page() -> Response:
    """The chat page; its script and styles are served from ``/static/``. The app
    adds its Content-Security-Policy (:data:`sse_chat.app.PAGE_HEADERS`)."""
    return current_app.send_static_file("index.html")


@bp.get("/static/events.js")
def event_types_script() -> Response:
    """The event types (:data:`~sse_chat.protocol.EVENT_TYPES`) as an ES module
    for the chat page, so that the page follows the same declaration as the
    server, the CLI and the Python client."""
    response = Response(event_types_module(), content_type="text/javascript; charset=utf-8")
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics of every worker."""
    body, content_type = services().metrics.exposition()
    return Response(body, content_type=content_type)


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers. Says nothing about the event log."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    """Readiness: 200 ``{"status": "ready"}`` while the event log answers, else
    503 ``event_log_unavailable`` with ``Retry-After`` (seconds); within
    :data:`READY_TIMEOUT_S` whatever the log does (a log that takes longer is not
    ready)."""
    try:
        ready = call_within(services().event_log.ready, READY_TIMEOUT_S)
    except TimeoutError:
        log.warning("readiness: the event log did not answer within %g s", READY_TIMEOUT_S)
        ready = False
    if not ready:
        raise event_log_unavailable()
    return jsonify(status="ready")


@bp.post("/v1/chat")
def post_chat() -> Response:
    """Start a stream, or with an ``Idempotency-Key`` seen before from this caller,
    answer the stream it started from its first event."""
    resumed = _resume_if_asked()
    if resumed is not None:
        return resumed
    body = json_body()
    svc = services()
    chat = parse_chat_body(body, svc.settings.model)
    stream_id = start_generation(svc, chat, caller(), requested_idempotency(body))
    return _event_stream(ReadFrom(stream_id, -1, chat.events_per_response))


@bp.get("/v1/chat")
def get_chat() -> Response:
    resumed = _resume_if_asked()
    if resumed is not None:
        return resumed
    chat = parse_chat_query(request.args, services().settings.model)
    return _event_stream(ReadFrom(start_generation(services(), chat, caller()), -1, chat.events_per_response))


@bp.get("/v1/streams/<stream_id>")
def get_stream(stream_id: str) -> Response:
    last_event_id = requested_last_event_id()
    if last_event_id is None:
        info = known_stream(services(), stream_id, caller())
        return _event_stream(ReadFrom(stream_id, -1, info.events_per_response))
    return resume_response(services(), last_event_id, caller(), _event_stream, stream_id)


@bp.delete("/v1/streams/<stream_id>")
def delete_stream(stream_id: str) -> tuple[Response, int]:
    known_stream(services(), stream_id, caller())
    services().event_log.request_cancel(stream_id)
    return jsonify(stream_id=stream_id, status="cancelling"), 202


def _resume_if_asked() -> Response | None:
    """Resume instead of starting a generation when the request names a last event
    id (header, or ``?last_event_id=``), as an ``EventSource`` reconnect does."""
    last_event_id = requested_last_event_id()
    if last_event_id is None:
        return None
    return resume_response(services(), last_event_id, caller(), _event_stream)


def _event_stream(position: ReadFrom) -> Response:
    return event_stream_response(read_stream(services().readers, position))

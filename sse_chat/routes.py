"""HTTP endpoints of the event-stream API (docs/http-api.md and docs/resume.md)."""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from .chat_request import parse_chat_body, parse_chat_query
from .errors import ApiError, event_log_unavailable, invalid_request
from .eventlog import EventLogUnavailable
from .reader import read_stream
from .services import Services
from .protocol import EVENT_STREAM_CONTENT_TYPE
from .streams import (
    caller,
    known_stream,
    requested_last_event_id,
    resume_response,
    start_generation,
)

log = logging.getLogger(__name__)

bp = Blueprint("streams", __name__)

EVENT_STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    # nginx: do not buffer this response (https://nginx.org/r/proxy_buffering)
    "X-Accel-Buffering": "no",
}


def services() -> Services:
    """This application's :class:`Services`."""
    return current_app.extensions["sse_chat"]


#: The chat page's and its static files' headers. The Content-Security-Policy
#: (W3C CSP Level 3) allows scripts, styles and connections of this origin only:
#: the page has no inline script or style, and renders model text as DOM text
#: nodes; ``frame-ancestors 'none'`` stops framing (clickjacking). ``nosniff``
#: makes browsers hold scripts and styles to their declared types.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
}


@bp.get("/")
def chat_page() -> Response:
    """The chat page; its script and styles are served from ``/static/``."""
    response = current_app.send_static_file("index.html")
    response.headers.update(PAGE_HEADERS)
    return response


@bp.after_app_request
def static_file_headers(response: Response) -> Response:
    """:data:`PAGE_HEADERS` on ``/static/…`` answers (served by Flask's app-level view)."""
    if request.path.startswith(f"{current_app.static_url_path}/"):
        response.headers.update(PAGE_HEADERS)
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
    503 ``event_log_unavailable`` with ``Retry-After`` (seconds)."""
    if not services().event_log.ready():
        raise event_log_unavailable()
    return jsonify(status="ready")


@bp.post("/v1/chat")
def post_chat() -> Response:
    resumed = _resume_if_asked()
    if resumed is not None:
        return resumed
    chat = parse_chat_body(json_body(), services().settings.model)
    return _event_stream(start_generation(services(), chat, caller()), -1)


@bp.get("/v1/chat")
def get_chat() -> Response:
    resumed = _resume_if_asked()
    if resumed is not None:
        return resumed
    chat = parse_chat_query(request.args, services().settings.model)
    return _event_stream(start_generation(services(), chat, caller()), -1)


@bp.get("/v1/streams/<stream_id>")
def get_stream(stream_id: str) -> Response:
    last_event_id = requested_last_event_id()
    if last_event_id is None:
        known_stream(services(), stream_id, caller())
        return _event_stream(stream_id, -1)
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


def _event_stream(stream_id: str, after_seq: int) -> Response:
    settings = services().settings
    body = read_stream(services().event_log, stream_id, after_seq, retry_ms=settings.retry_ms,
                       heartbeat_s=settings.heartbeat_s, metrics=services().metrics,
                       draining=services().draining)
    return event_stream_response(body)


def event_stream_response(body: Any) -> Response:
    """A ``text/event-stream`` response over the byte iterator ``body``: no
    ``Content-Length`` (chunked), no compression, not cached or buffered.

    Under gunicorn, a send that waits longer than ``SSE_CHAT_SEND_TIMEOUT_S`` (a
    client that stopped reading) fails, which closes the response and detaches
    the reader; the stream stays resumable.
    """
    sock = request.environ.get("gunicorn.socket")
    if sock is not None:
        sock.settimeout(services().settings.send_timeout_s)
    return Response(body, status=200, content_type=EVENT_STREAM_CONTENT_TYPE,
                    headers=EVENT_STREAM_HEADERS, direct_passthrough=True)


def unavailable_error(error: EventLogUnavailable) -> ApiError:
    """The 503 ``event_log_unavailable`` (with ``Retry-After``) that answers a
    request which met ``error`` before its response started. The cause is logged
    only: it may name the store's address."""
    log.warning("%s %s: event log unavailable (%s); answered 503", request.method, request.path, error)
    return event_log_unavailable()


def json_body() -> Any:
    """The request's JSON body.

    Raises:
        ApiError: 415 when it is not ``application/json``; 400 when it is not
            UTF-8 JSON.
    """
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       f"send the body as JSON with Content-Type: application/json (got {request.mimetype or 'none'!r})")
    raw = request.get_data(cache=False)
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise invalid_request("the body is not UTF-8 encoded JSON") from None
    except ValueError as exc:
        raise invalid_request(f"the body is not valid JSON: {exc}") from None

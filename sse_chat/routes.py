"""HTTP endpoints of the event-stream API (DESIGN.md, "HTTP API" and "Resume")."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from .chat_request import ChatRequest, parse_chat_body, parse_chat_query
from .errors import ApiError, invalid_request, stream_not_found
from .eventlog import new_stream_id, parse_event_id
from .producer import Producer, ProducerLimits
from .reader import read_stream
from .services import Services
from .sse import EVENT_STREAM_CONTENT_TYPE

bp = Blueprint("streams", __name__)

EVENT_STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    # nginx: do not buffer this response (https://nginx.org/r/proxy_buffering)
    "X-Accel-Buffering": "no",
}


def _services() -> Services:
    return current_app.extensions["sse_chat"]


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.post("/v1/chat")
def post_chat() -> Response:
    services = _services()
    resumed = _resume_if_asked(services)
    if resumed is not None:
        return resumed
    chat = parse_chat_body(_json_body(), services.settings.model)
    return _start_stream(services, chat)


@bp.get("/v1/chat")
def get_chat() -> Response:
    services = _services()
    resumed = _resume_if_asked(services)
    if resumed is not None:
        return resumed
    chat = parse_chat_query(request.args, services.settings.model)
    return _start_stream(services, chat)


@bp.get("/v1/streams/<stream_id>")
def get_stream(stream_id: str) -> Response:
    services = _services()
    last_event_id = _last_event_id()
    if last_event_id is None:
        return _resume(services, stream_id, -1)
    parsed = parse_event_id(last_event_id)
    if parsed is None or parsed[0] != stream_id:
        raise stream_not_found(f"Last-Event-ID {last_event_id!r} is not an event of stream {stream_id!r}")
    return _resume(services, stream_id, parsed[1])


@bp.delete("/v1/streams/<stream_id>")
def delete_stream(stream_id: str) -> tuple[Response, int]:
    services = _services()
    _known_stream(services, stream_id)
    services.event_log.request_cancel(stream_id)
    return jsonify(stream_id=stream_id, status="cancelling"), 202


def _start_stream(services: Services, chat: ChatRequest) -> Response:
    model = services.models.resolve(chat.model)
    stream_id = new_stream_id()
    services.event_log.create(stream_id, owner=None)
    producer = Producer(services.event_log, stream_id, model, chat,
                        ProducerLimits(abandon_s=services.settings.abandon_s))
    producer.start_event()
    producer.start()
    return _event_stream_response(services, stream_id, -1)


def _resume_if_asked(services: Services) -> Response | None:
    """Resume instead of starting a generation when the request names a last event
    id (header, or ``?last_event_id=``), as an ``EventSource`` reconnect does."""
    last_event_id = _last_event_id()
    if last_event_id is None:
        return None
    parsed = parse_event_id(last_event_id)
    if parsed is None:
        raise stream_not_found(f"Last-Event-ID {last_event_id!r} is not an event id of the form STREAM_ID:SEQ")
    return _resume(services, *parsed)


def _resume(services: Services, stream_id: str, after_seq: int) -> Response:
    info = _known_stream(services, stream_id)
    if after_seq > info.last_seq:
        raise stream_not_found(f"stream {stream_id!r} has no event {after_seq} yet (its last is {info.last_seq})")
    if info.finished and after_seq == info.last_seq:
        return Response(status=204)
    return _event_stream_response(services, stream_id, after_seq)


def _known_stream(services: Services, stream_id: str):
    info = services.event_log.info(stream_id)
    if info is None:
        raise stream_not_found(f"no stream {stream_id!r}: it never existed or it expired")
    return info


def _event_stream_response(services: Services, stream_id: str, after_seq: int) -> Response:
    settings = services.settings
    body = read_stream(services.event_log, stream_id, after_seq,
                       retry_ms=settings.retry_ms, heartbeat_s=settings.heartbeat_s)
    return Response(body, status=200, content_type=EVENT_STREAM_CONTENT_TYPE,
                    headers=EVENT_STREAM_HEADERS, direct_passthrough=True)


def _last_event_id() -> str | None:
    value = request.headers.get("Last-Event-ID")
    if value is None:
        value = request.args.get("last_event_id")
    return value if value else None


def _json_body() -> Any:
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

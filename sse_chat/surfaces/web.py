"""HTTP helpers both surfaces share (``/v1/chat`` and ``/v1/chat/completions``):
this app's services, who is asking, the last event ID, the idempotency key, JSON
bodies, and event-stream responses. The only module besides the blueprints that reads
Flask's request globals."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

from flask import Request, Response, current_app, g, request

from ..bodies.json_body import parse_json_body
from ..client_writer import ENVIRON_KEY as CLIENT_WRITER_KEY
from ..errors import ApiError, event_log_unavailable
from ..eventlog import EventLogUnavailable
from ..protocol import EVENT_STREAM_CONTENT_TYPE
from ..streaming.generation import resume_position
from ..streaming.idempotency import KeyedStart, keyed_start
from ..streaming.reader import ReadFrom
from ..streaming.services import Services

log = logging.getLogger(__name__)

EVENT_STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    # nginx: do not buffer this response (https://nginx.org/r/proxy_buffering)
    "X-Accel-Buffering": "no",
}


def current_request() -> Request:
    """The request being served: the object behind Flask's ``request`` proxy
    (``_get_current_object()``, Flask's "Notes On Proxies"), for code that reads
    several of its attributes. Each attribute read through the proxy first fails
    on the proxy itself (an ``AttributeError`` raised, formatted and caught) and
    then looks the request up: about 6,000 instructions a read."""
    return cast(Any, request)._get_current_object()


def services() -> Services:
    """This application's :class:`Services`."""
    return cast(Any, current_app)._get_current_object().extensions["sse_chat"]


def caller() -> str | None:
    """The authenticated caller's owner fingerprint (``None`` on an open service)."""
    return cast(Any, g)._get_current_object().get("owner")


def requested_last_event_id() -> str | None:
    """The request's last event id: the ``Last-Event-ID`` header, else the
    ``last_event_id`` query parameter (for clients that cannot set headers)."""
    req = current_request()
    value = req.environ.get("HTTP_LAST_EVENT_ID")  # the header (PEP 3333); Headers.get raises and catches when absent
    if value is None and req.query_string:  # parsing an empty query costs a MultiDict
        value = req.args.get("last_event_id")
    return value or None


def requested_idempotency(body: Any) -> KeyedStart | None:
    """The request's ``Idempotency-Key`` header with the fingerprint of its path and
    parsed JSON ``body``, or ``None`` without the header (keys are kept per caller:
    see :func:`caller`).

    Raises:
        ApiError: 400 ``invalid_request`` for a malformed key.
    """
    req = current_request()
    header = req.environ.get("HTTP_IDEMPOTENCY_KEY")  # the header (PEP 3333), as in requested_last_event_id
    if header is None:
        return None
    return keyed_start(header, req.path, body)


def resume_response(svc: Services, last_event_id: str, owner: str | None,
                    respond: Callable[[ReadFrom], Response], stream_id: str | None = None) -> Response:
    """``respond(position)`` for the events after ``last_event_id``, or an empty
    204 when it was the stream's terminal event.

    Raises:
        ApiError: as :func:`resume_position`.
    """
    position = resume_position(svc, last_event_id, owner, stream_id)
    if position is None:
        return no_content()
    return respond(position)


def no_content() -> Response:
    """An empty 204 No Content, without ``Content-Type`` (no content, so no type:
    RFC 9110, 15.3.5)."""
    response = Response(status=204)
    del response.headers["Content-Type"]
    return response


def event_stream_response(body: Any) -> Response:
    """A ``text/event-stream`` response over the byte iterator ``body``: no
    ``Content-Length`` (chunked), no compression, not cached or buffered.

    Counts an open reader of the caller until the body is closed.

    Under gunicorn, a send that waits longer than ``SSE_CHAT_SEND_TIMEOUT_S`` (a
    client that stopped reading) fails, which closes the response and detaches
    the reader; the stream stays resumable.

    Raises:
        ApiError: 429 ``too_many_readers`` (``body`` is closed).
    """
    svc = services()
    try:
        release = svc.limiter.admit_reader(caller())
    except ApiError:
        body.close()  # it holds an attached reader
        raise
    on_close = getattr(body, "also_on_close", None)
    if on_close is not None:
        on_close(release)
    else:
        release()
    environ = current_request().environ
    sock = environ.get("gunicorn.socket")
    if sock is not None:
        sock.settimeout(svc.settings.send_timeout_s)
    writer = environ.get(CLIENT_WRITER_KEY)
    if writer is not None and hasattr(body, "write_directly"):
        body.write_directly(writer)
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
        ApiError: 415 when it is not ``application/json``; 400 as
            :func:`~sse_chat.bodies.json_body.parse_json_body` (not UTF-8 JSON, nested
            too deep, a lone surrogate in a string).
    """
    req = current_request()
    if req.mimetype != "application/json":
        got = req.mimetype or "none"
        raise ApiError(415, "unsupported_media_type",
                       f"send the body as JSON with Content-Type: application/json (got {got!r})")
    return parse_json_body(req.get_data(cache=False))

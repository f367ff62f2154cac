"""The application factory: the one place that wires settings, backends, event log
and routes. Nothing runs at import time."""

from __future__ import annotations

import logging
import os

from flask import Flask, Response, g, jsonify
from flask_cors import CORS
from werkzeug.exceptions import HTTPException

from .access.identity import identify
from .access.limits import KeyLimits, StreamLimiter
from .access.sessions import SessionKeys
from .background import running_under_gevent
from .bodies.bounded import BoundedBodies
from .config import Settings
from .errors import ApiError, error_body
from .eventlog import EventLog, EventLogUnavailable, MemoryEventLog
from .eventlog.wakeups import Wakeups
from .metrics import Metrics
from .models import ModelRegistry
from .streaming.services import Services
from .surfaces.openai_api import bp as openai_bp
from .surfaces.responses_api import bp as responses_bp
from .surfaces.routes import bp
from .surfaces.session_routes import bp as session_bp
from .surfaces.web import current_request, unavailable_error
from .tools.registry import ToolRegistry

log = logging.getLogger(__name__)

#: Werkzeug's HTTP errors, named as docs/http-api.md names them.
_HTTP_ERROR_TYPES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}

#: The chat page's and its files' headers. The Content-Security-Policy (W3C CSP
#: Level 3) allows scripts, styles and connections of this origin only: the page
#: has no inline script or style, and renders model text as DOM text nodes;
#: ``frame-ancestors 'none'`` stops framing (clickjacking). ``nosniff`` makes
#: browsers hold scripts and styles to their declared types.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
}
#: The endpoints of the chat page and its files: ``/``, ``/static/events.js``,
#: and Flask's own ``static`` view for the files in ``sse_chat/static/``.
PAGE_ENDPOINTS = frozenset({"streams.chat_page", "streams.event_types_script", "static"})


def create_app(config: Settings | None = None) -> Flask:
    """Build the WSGI application.

    Args:
        config: the settings; ``None`` reads them from the environment
            (:meth:`Settings.from_env`).

    Raises:
        ConfigError: when the environment holds an invalid setting, or a server
            tool (``SSE_CHAT_TOOLS``, the ``sse_chat.tools`` entry points) does
            not import.
    """
    settings = config if config is not None else Settings.from_env()
    tools = ToolRegistry.load(settings.tools)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # Bodies with a deadline, read yielding, and not drained when refused.
    app.wsgi_app = BoundedBodies(app.wsgi_app, settings.body_timeout_s)  # type: ignore[method-assign]
    app.extensions["sse_chat"] = Services(
        settings=settings,
        event_log=_make_event_log(settings),
        models=ModelRegistry(settings),
        limiter=StreamLimiter(settings.max_streams, KeyLimits(
            streams=settings.max_streams_per_key, events=settings.max_events_per_key,
            readers=settings.max_readers_per_key, keep_s=settings.stream_ttl_s)),
        metrics=_metrics(),
        sessions=SessionKeys(settings.api_keys, settings.session_ttl_s),
        tools=tools,
    )
    app.register_blueprint(bp)
    app.register_blueprint(session_bp)
    app.register_blueprint(openai_bp)
    app.register_blueprint(responses_bp)
    _register_access(app, settings)
    _register_error_handlers(app, settings)
    app.after_request(_page_headers)
    return app


#: Seconds between a gunicorn worker's writes of its metrics (:meth:`Metrics.defer_writes`).
METRICS_WRITE_S = 1.0


def _metrics() -> Metrics:
    """The app's metrics; in prometheus-client's multiprocess mode under gevent
    (a gunicorn worker), written once every :data:`METRICS_WRITE_S` seconds."""
    metrics = Metrics()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and running_under_gevent():
        metrics.defer_writes(METRICS_WRITE_S)
    return metrics


def _page_headers(response: Response) -> Response:
    """:data:`PAGE_HEADERS` on the answers of :data:`PAGE_ENDPOINTS`."""
    if current_request().endpoint in PAGE_ENDPOINTS:
        response.headers.update(PAGE_HEADERS)
    return response


def _register_access(app: Flask, settings: Settings) -> None:
    """Keys on ``/v1/…`` and ``/metrics``, as a bearer header or a session cookie
    (``/``, ``/static``, ``/healthz`` and ``/readyz`` stay open), and the CORS
    allow-list, through flask-cors: listed origins may send credentials (the
    cookie), which :func:`sse_chat.access.identity.identify` accepts from them."""
    if not settings.api_keys and settings.bound_beyond_loopback:
        log.warning("SSE_CHAT_API_KEYS is not set and the service binds %s: anyone who can reach it "
                    "can use the model and its upstream credit; set SSE_CHAT_API_KEYS=key1,key2", settings.bind)

    @app.before_request
    def require_key() -> None:
        req = current_request()
        if req.method != "OPTIONS" and (req.path.startswith("/v1/") or req.path == "/metrics"):
            g.owner = identify(req, settings.api_keys, app.extensions["sse_chat"].sessions,
                               settings.cors_origins)

    if settings.cors_origins:
        CORS(app, resources={r"/v1/*": {"origins": list(settings.cors_origins)}},
             allow_headers=["Content-Type", "Authorization", "Last-Event-ID", "Idempotency-Key"],
             methods=["GET", "POST", "DELETE", "OPTIONS"], max_age=600, supports_credentials=True)


def _make_event_log(settings: Settings) -> EventLog:
    # The ticker that wakes idle readers for their heartbeats runs at least as
    # often as the heartbeat, and once a second at most.
    wakeups = Wakeups(tick_s=min(1.0, settings.heartbeat_s))
    if settings.redis_url:
        from .eventlog.redis_streams import RedisEventLog

        return RedisEventLog.from_url(settings.redis_url, ttl_s=settings.stream_ttl_s,
                                      max_events=settings.max_events_per_stream, wakeups=wakeups)
    return MemoryEventLog(ttl_s=settings.stream_ttl_s, max_events=settings.max_events_per_stream, wakeups=wakeups)


def _register_error_handlers(app: Flask, settings: Settings) -> None:
    @app.errorhandler(ApiError)
    def api_error(error: ApiError):
        return jsonify(error.body()), error.status, dict(error.headers)

    @app.errorhandler(EventLogUnavailable)
    def event_log_down(error: EventLogUnavailable):
        return api_error(unavailable_error(error))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        status = error.code or 500
        message = error.description or error.name
        if status == 413:
            message = f"the request body is larger than {settings.max_body_bytes} bytes (SSE_CHAT_MAX_BODY_BYTES)"
        error_type = _HTTP_ERROR_TYPES.get(status, "http_error")
        response = jsonify(error_body(error_type, message))
        response.status_code = status
        if status == 405 and hasattr(error, "valid_methods") and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception):
        log.exception("unhandled error")
        return jsonify(error_body("internal_error", "the server failed; try again")), 500

"""The service's error values: one shape for HTTP bodies and for ``error`` events."""

from __future__ import annotations


class ApiError(Exception):
    """An error answered before a stream starts, as HTTP ``status`` with the JSON body
    ``{"error": {"type": type, "message": message}}`` (docs/http-api.md, "Errors").

    ``headers`` are extra response headers (e.g. ``Retry-After``). A plain
    exception (not a frozen dataclass), so that ``add_note()``, pickling and
    ``copy`` work as for any other.
    """

    def __init__(self, status: int, type: str, message: str,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(status, type, message, headers)
        self.status = status
        self.type = type
        self.message = message
        self.headers = headers

    def __str__(self) -> str:
        return f"{self.status} {self.type}: {self.message}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiError) and self.args == other.args

    def __hash__(self) -> int:
        return hash(self.args)

    def body(self) -> dict:
        """The JSON body: ``{"error": {"type": str, "message": str}}``."""
        return error_body(self.type, self.message)


def error_body(error_type: str, message: str) -> dict:
    """``{"error": {"type": error_type, "message": message}}``, the body of a JSON
    error and the data of an ``error`` event."""
    return {"error": {"type": error_type, "message": message}}


def invalid_request(message: str) -> ApiError:
    """400 ``invalid_request``: the request's JSON, fields or query are wrong."""
    return ApiError(400, "invalid_request", message)


def stream_not_found(message: str) -> ApiError:
    """404 ``stream_not_found``: unknown, malformed, expired or another caller's id."""
    return ApiError(404, "stream_not_found", message)


def backend_unavailable(message: str) -> ApiError:
    """503 ``backend_unavailable``: no backend can serve the requested model."""
    return ApiError(503, "backend_unavailable", message)


#: Seconds a client should wait before it retries a request that found the event
#: log unreachable (the ``Retry-After`` of 503 ``event_log_unavailable``).
EVENT_LOG_RETRY_AFTER_S = 1


def event_log_unavailable(message: str = "the event log (Redis) cannot be reached right now; "
                                         "retry after a moment") -> ApiError:
    """503 ``event_log_unavailable`` with ``Retry-After: EVENT_LOG_RETRY_AFTER_S``
    (seconds): the event log's store (Redis) cannot be reached."""
    return ApiError(503, "event_log_unavailable", message, (("Retry-After", str(EVENT_LOG_RETRY_AFTER_S)),))

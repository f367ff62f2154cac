"""Request bodies within bounds, as WSGI middleware (:class:`BoundedBodies`): a
deadline for the whole body, reads that let other greenlets run, and a body the
application did not read (a refused request: 401, 413, …) that is not read to its
end either: the connection closes instead.

Under gunicorn's gevent worker a read from a socket that already holds data does
not switch greenlets, so a client that uploads as fast as the network allows
would otherwise keep a worker's event loop to itself; and gunicorn discards an
unread body before it parses the next request on the connection, however large.
Without gunicorn (Flask's test client, the CLI's in-process server) bodies are
only counted.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..errors import ApiError

log = logging.getLogger(__name__)

#: Bytes read from the client at once; other greenlets run after every this many
#: bytes read (a small body, most requests', is read without waiting for a turn of
#: the event loop: under load a turn takes as long as every other greenlet's work).
READ_CHUNK_BYTES = 64 * 1024
#: An unread body is discarded after the answer only up to this size, and only
#: for :data:`LINGER_S` seconds, so that a client that sends its whole body before
#: it reads (as ``requests`` does) gets the answer rather than a reset connection.
#: Anything larger, longer or without a length closes the connection at once.
LINGER_MAX_BYTES = 64 * 1024 * 1024
LINGER_S = 5.0

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def request_timeout(timeout_s: float) -> ApiError:
    """408 ``request_timeout``: the body did not arrive within ``timeout_s`` seconds."""
    return ApiError(408, "request_timeout",
                    f"the request body did not arrive within {timeout_s:g} s (SSE_CHAT_BODY_TIMEOUT_S); "
                    "send it at once")


class BoundedBodies:
    """WSGI middleware: ``environ["wsgi.input"]`` becomes a :class:`_DeadlineInput`
    that must deliver the whole body within ``body_timeout_s`` seconds of the
    request's start (else the read raises :func:`request_timeout`, a 408) and
    yields to other greenlets after every :data:`READ_CHUNK_BYTES` bytes. Once the
    response is written, a body left unread is discarded when it is small
    (:data:`LINGER_MAX_BYTES`, :data:`LINGER_S`); otherwise, or after a 408, the
    connection is closed after the response instead of read on: sse-chat's
    gunicorn worker closes it (``close_after_response`` on its socket,
    :class:`sse_chat.gunicorn_worker.ClientSocket`), and the reading side is shut
    (``SHUT_RD``) for other workers and for TLS connections, which that worker
    leaves unwrapped. The shutdown alone is not enough: Linux still hands over
    data that a fast sender keeps sending after it, and gunicorn's keep-alive
    loop may then read that body to its end.

    Only HTTP/1.x requests under gunicorn (``environ["gunicorn.socket"]``) are
    cut; elsewhere the socket is not this request's alone (HTTP/2) or not there.
    """

    def __init__(self, app: WsgiApp, body_timeout_s: float) -> None:
        self._app = app
        self._body_timeout_s = body_timeout_s

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        length = _declared_length(environ)
        if length == 0:
            return self._app(environ, start_response)
        sock = environ.get("gunicorn.socket")
        if sock is not None and not str(environ.get("SERVER_PROTOCOL", "")).startswith("HTTP/1"):
            sock = None
        body = _DeadlineInput(environ["wsgi.input"], sock, length,
                              time.monotonic() + self._body_timeout_s, self._body_timeout_s)
        environ["wsgi.input"] = body
        return _Finishing(self._app(environ, start_response), body)


def _declared_length(environ: dict[str, Any]) -> int | None:
    """The body's length in bytes: ``CONTENT_LENGTH``, 0 for none, ``None`` when
    unknown (a chunked body)."""
    if "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower():
        return None
    try:
        return max(int(environ.get("CONTENT_LENGTH") or 0), 0)
    except ValueError:
        return None


class _DeadlineInput:
    """``wsgi.input`` with a deadline (monotonic seconds) and a yield to other
    greenlets after every :data:`READ_CHUNK_BYTES` bytes read."""

    def __init__(self, stream: Any, sock: socket.socket | None, length: int | None,
                 deadline: float, timeout_s: float) -> None:
        self._stream = stream
        self._sock = sock
        self._left = length  # bytes still to come; None: unknown until the end
        self._deadline = deadline
        self._timeout_s = timeout_s
        self._unyielded = 0  # bytes read since other greenlets last ran
        self.timed_out = False

    @property
    def finished(self) -> bool:
        """True once every byte of the body was read (or it had none)."""
        return self._left == 0

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all when negative, read in pieces)."""
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(READ_CHUNK_BYTES), b""))
        data = self._timed(lambda: self._stream.read(min(size, READ_CHUNK_BYTES)))
        self._count(data, size)
        return data

    def readline(self, size: int = -1) -> bytes:
        limit = READ_CHUNK_BYTES if size is None or size < 0 else min(size, READ_CHUNK_BYTES)
        data = self._timed(lambda: self._stream.readline(limit))
        self._count(data, limit)
        return data

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def _count(self, data: bytes, asked: int) -> None:
        if self._left is not None:
            self._left = max(self._left - len(data), 0)
        elif not data and asked:
            self._left = 0  # the end of a body of unknown length
        self._unyielded += len(data)
        if self._unyielded >= READ_CHUNK_BYTES:
            self._unyielded = 0
            time.sleep(0)  # let other greenlets run (gevent patches time.sleep)

    def _timed(self, read: Callable[[], bytes]) -> bytes:
        if self._sock is None:
            return read()
        left_s = self._deadline - time.monotonic()
        if left_s <= 0:
            self.timed_out = True
            raise request_timeout(self._timeout_s)
        previous = self._sock.gettimeout()
        self._sock.settimeout(left_s)
        try:
            return read()
        except TimeoutError:
            self.timed_out = True
            raise request_timeout(self._timeout_s) from None
        finally:
            self._sock.settimeout(previous)

    def finish(self) -> None:
        """After the response: discard a small unread body, or shut the reading
        side of the connection (gunicorn then sees its end and closes it)."""
        if self._sock is None or self.finished:
            return
        if not self.timed_out and self._left is not None and self._left <= LINGER_MAX_BYTES:
            self._deadline = min(self._deadline, time.monotonic() + LINGER_S)
            try:
                while self.read(READ_CHUNK_BYTES):
                    pass
                if self.finished:
                    return
            except (ApiError, OSError):
                pass
        log.info("closing the connection: %s of the request body were not read",
                 "some" if self._left is None else f"{self._left} bytes")
        close_after_response = getattr(self._sock, "close_after_response", None)
        if close_after_response is not None:  # sse-chat's gunicorn worker: it closes, reading nothing more
            close_after_response()
        with contextlib.suppress(OSError):  # the client may be gone already
            self._sock.shutdown(socket.SHUT_RD)


class _Finishing:
    """The application's response body; closing it finishes the request body."""

    def __init__(self, body: Iterable[bytes], request_body: _DeadlineInput) -> None:
        self._body = body
        self._request_body = request_body

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._request_body.finish()

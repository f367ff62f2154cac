"""Writing to a response's client from outside the WSGI iteration.

A WSGI server writes a response body item by item in the greenlet that serves
the request. sse-chat's gunicorn worker also offers, in each request's environ
under :data:`ENVIRON_KEY`, a :class:`ClientWriter` for the response: with it the
greenlet that produces a stream can write an event to a client that is caught up
and waiting, where it would otherwise wake that client's reader greenlet to
write it (one greenlet switch and a WSGI write less per event; see
:mod:`sse_chat.streaming.reader`). Other servers offer none, and every write goes
through the body.

This module is the interface between the two; the worker implements it
(:class:`sse_chat.gunicorn_worker.ResponseWriter`).
"""

from __future__ import annotations

from typing import Protocol

#: The WSGI environ key under which the server offers the response's
#: :class:`ClientWriter` (absent: no writer; write through the body).
ENVIRON_KEY = "sse_chat.client_writer"


class ClientWriter(Protocol):
    """Writes body bytes to one response's client, beside the body iterator.

    Only for a cooperative server (gevent): :meth:`write` must be called from
    a greenlet of the worker's event loop while the response's own greenlet is
    not writing (it waits for its stream), so that the two never interleave.
    """

    def ready(self) -> bool:
        """True when :meth:`write` may be called: the response headers are sent,
        the response has a body, and no earlier write is still going out (a
        client that reads slowly is written to by the response's own greenlet,
        which waits for it)."""

    def write(self, data: bytes) -> bool:
        """Write ``data`` (a whole number of events: the bytes of one body item),
        framed as the response frames its body (an HTTP/1.1 chunk), without
        waiting, when the response is :meth:`ready` for it: what the socket takes
        now, the rest as it drains, before any later write of the response.
        Returns False when ``data`` was not written: the response was not ready
        (the caller hands ``data`` to the body instead), or the connection failed
        (``data`` is dropped, and the body's next write meets the failure; the
        caller wakes the body's greenlet for it). Checking readiness here costs
        the once-per-event path no call of :meth:`ready` of its own."""

    def hold_next_write(self) -> None:
        """Keep the response's next write (through the body or :meth:`write`) back
        for the one after it, so that both go out in one ``send``, at most until
        the event loop's next turn: for a write another follows at once, such as
        the body's last before the server ends a chunked body."""

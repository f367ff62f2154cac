"""A scripted gateway in front of a real server: each new TCP connection follows
the next step of a script (answer with an error status, or forward, optionally
cutting the response), then every later one is forwarded whole. It stands in for
a proxy answering 502/504, or a service answering 503 while Redis is down."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass

from .proxy import LoopbackListener


@dataclass(frozen=True)
class Answer:
    """Answer the connection's first request with ``status``, ``headers`` and
    ``body`` (with ``Connection: close``), without forwarding it."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@dataclass(frozen=True)
class Forward:
    """Forward the connection; with ``cut_after``, close it after that many bytes
    of response."""

    cut_after: int | None = None


def unavailable(retry_after_s: int | None = None) -> Answer:
    """503 ``event_log_unavailable`` as the service answers it, with ``Retry-After``
    in seconds when given."""
    headers = (("Content-Type", "application/json"),)
    if retry_after_s is not None:
        headers += (("Retry-After", str(retry_after_s)),)
    body = {"error": {"type": "event_log_unavailable", "message": "the event log (Redis) cannot be reached"}}
    return Answer(503, headers, json.dumps(body).encode())


@dataclass(frozen=True)
class Seen:
    """A connection's first request: when it came (``time.monotonic()``, seconds),
    its method and path."""

    at: float
    method: str
    path: str


class ScriptedGateway(LoopbackListener):
    """Listens on a free loopback port and forwards to ``target`` (host, port);
    connection ``i`` follows ``script[i]``, later ones :class:`Forward`. ``seen``
    lists every connection's first request, in order."""

    def __init__(self, target: tuple[str, int], script: list[Answer | Forward]) -> None:
        super().__init__()
        self._target = target
        self._script = list(script)
        self.seen: list[Seen] = []

    def _handle(self, client: socket.socket) -> None:
        step = self._script.pop(0) if self._script else Forward()
        threading.Thread(target=self._serve, args=(client, step), daemon=True).start()

    def _serve(self, client: socket.socket, step: Answer | Forward) -> None:
        with client:
            head, rest = _read_head(client)
            method, path = head.split(b" ", 2)[:2]
            self.seen.append(Seen(time.monotonic(), method.decode(), path.decode()))
            if isinstance(step, Answer):
                _read_body(client, head, rest)
                client.sendall(_response(step))
            else:
                self._forward(client, head + rest, step.cut_after)

    def _forward(self, client: socket.socket, sent: bytes, cut_after: int | None) -> None:
        with socket.create_connection(self._target) as upstream:
            upstream.sendall(sent)
            threading.Thread(target=_pump, args=(client, upstream, None), daemon=True).start()
            _pump(upstream, client, cut_after)
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)  # a cut: the client sees the end now


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The request's head up to and including its blank line, and what followed it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


def _read_body(sock: socket.socket, head: bytes, received: bytes) -> None:
    """Read the rest of a ``Content-Length`` body, so that closing does not reset."""
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(received) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return
        received += chunk


def _response(answer: Answer) -> bytes:
    reason = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}.get(answer.status, "Error")
    lines = [f"HTTP/1.1 {answer.status} {reason}", f"Content-Length: {len(answer.body)}", "Connection: close",
             *(f"{name}: {value}" for name, value in answer.headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + answer.body


def _pump(source: socket.socket, sink: socket.socket, budget: int | None) -> None:
    """Copy ``source`` to ``sink`` until either closes, or ``budget`` bytes passed."""
    try:
        while budget is None or budget > 0:
            data = source.recv(65536 if budget is None else min(65536, budget))
            if not data:
                return
            sink.sendall(data)
            budget = None if budget is None else budget - len(data)
    except OSError:
        return

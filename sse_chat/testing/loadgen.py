"""A lean load generator: many concurrent event streams from one asyncio loop.

HTTP/1.1 is spoken by hand (request line, chunked body) on an
:class:`asyncio.Protocol`. Live, it decodes whatever each read brought
(:class:`ResponseDecoder`), for callers that act on events as they come;
recording (``record=True``), it only keeps each read with its time and decodes
them all once the load is over (:func:`decode_recording`), so that the client's
CPU goes to reading sockets: decoding as it reads cost it about as much CPU per
event as the server it measured (3,000 streams at 20 tokens/s kept its core 88%
busy). Only this project's own server format is parsed (bench/baseline_app.py
speaks it too): frames end with a blank line (LF LF) and ids are
``{stream_id}:{seq}`` (docs/event-stream.md). An event's arrival time is the
time of the read that completed it, either way.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sse_chat.protocol import TERMINAL_TYPES, EventId, EventType


@dataclass
class StreamResult:
    """What one stream did: ``seqs`` in arrival order, the ``terminal`` event type
    (and ``error_data``, the data of an ``error`` event), ``started``/``first_event``/
    ``event_times`` as ``time.perf_counter()`` seconds; ``error`` when the exchange
    failed (connection, HTTP status, malformed response); ``recording``, the reads
    of an exchange run with ``record=True`` until :func:`decode_recording` turns
    them into the other fields."""

    started: float = 0.0
    first_event: float | None = None
    event_times: list[float] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    stream_id: str | None = None
    terminal: str | None = None
    status: int | None = None
    error: str | None = None
    error_data: str | None = None
    #: The undecoded reads of an exchange run with ``record=True``, until
    #: :func:`decode_recording`.
    recording: Recording | None = field(default=None, repr=False)

    @property
    def gap_free(self) -> bool:
        return self.seqs == list(range(len(self.seqs))) and self.terminal == "done"


def _parse_frame(frame: bytes, result: StreamResult, now: float) -> None:
    event_type = None
    for line in frame.split(b"\n"):
        if line.startswith(b"id: "):
            event_id = EventId.parse(line[4:].decode())
            if event_id is None:
                raise ValueError(f"malformed event id line {line!r}")
            result.stream_id = event_id.stream_id
            result.seqs.append(event_id.seq)
            if result.first_event is None:
                result.first_event = now
            result.event_times.append(now)
        elif line.startswith(b"event: "):
            event_type = line[7:].decode()
    if event_type in TERMINAL_TYPES:
        result.terminal = event_type
    if event_type == EventType.ERROR:
        result.error_data = next((line[6:].decode() for line in frame.split(b"\n") if line.startswith(b"data: ")), "")


class ResponseDecoder:
    """Decodes one HTTP/1.1 response as its bytes arrive: the head (200 with a
    chunked body, else the exchange failed), the chunks (RFC 9112 section 7.1),
    the event-stream frames in them, each recorded into ``result`` at the time of
    the read that completed it. Pure: bytes and times in, ``result`` out.

    ``over`` is true once the last chunk came or the response failed (then
    ``result.error`` says why); later bytes are ignored.
    """

    def __init__(self, result: StreamResult) -> None:
        self.result = result
        self.over = False
        self._raw = bytearray()
        self._in_head = True
        self._chunk_left: int | None = None  # bytes of the current chunk and its CRLF; None: a size line is next
        self._partial = b""  # event-stream bytes after the last complete frame

    def feed(self, data: bytes, now: float) -> None:
        """Decode ``data``, read at ``now`` (``time.perf_counter()`` seconds)."""
        if self.over:
            return
        self._raw += data
        try:
            self._consume(now)
        except ValueError as exc:
            self.fail(f"ValueError: {exc}")

    def fail(self, error: str) -> None:
        """End the response as failed with ``error``, unless it is already over."""
        if not self.over:
            self.over = True
            self.result.error = error

    def _consume(self, now: float) -> None:
        raw, pos = self._raw, 0
        if self._in_head:
            end = raw.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self._accept_head(bytes(raw[:end])):
                return
            pos, self._in_head = end + 4, False
        body = []
        while not self.over:
            if self._chunk_left is None:
                eol = raw.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(bytes(raw[pos:eol]).split(b";")[0], 16)
                pos = eol + 2
                if size == 0:
                    self.over = True
                    break
                self._chunk_left = size + 2
            if len(raw) - pos < self._chunk_left:
                break
            body.append(raw[pos:pos + self._chunk_left - 2])
            pos, self._chunk_left = pos + self._chunk_left, None
        del raw[:pos]
        if body:
            *frames, self._partial = (self._partial + b"".join(body)).split(b"\n\n")
            for frame in frames:
                _parse_frame(frame, self.result, now)

    def _accept_head(self, head: bytes) -> bool:
        """Record the status; False (and fail) unless it is 200 with a chunked body."""
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.result.status = int(status_line.split()[1])
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if self.result.status != 200 or headers.get("transfer-encoding") != "chunked":
            self.fail(f"HTTP {self.result.status}")
            return False
        return True


@dataclass
class Recording:
    """The reads of an exchange run with ``record=True``, not yet decoded:
    ``(time.perf_counter() seconds, bytes)`` in order, and ``lost``, the error
    the connection ended with (None for the server's close)."""

    reads: list[tuple[float, bytes]] = field(default_factory=list)
    lost: str | None = None


def decode_recording(result: StreamResult) -> StreamResult:
    """Decode what a recording exchange read into ``result`` (its events, each at
    the time of the read that completed it, as a live exchange records them) and
    drop the recording; an error already set (a time limit) is kept. Returns
    ``result``; one without a recording is left as it is."""
    recording, result.recording = result.recording, None
    if recording is None:
        return result
    error, result.error = result.error, None
    decoder = ResponseDecoder(result)
    for now, data in recording.reads:
        decoder.feed(data, now)
    if not decoder.over:
        decoder.fail(_closed_early(recording.lost))
    if error is not None:
        result.error = error
    return result


def _closed_early(reason: str | None) -> str:
    """Why a response that stopped before its last chunk failed; ``reason``: the
    connection's error, None when the server closed it."""
    return f"connection closed before the end of the response{'' if reason is None else f': {reason}'}"


class _Exchange(asyncio.Protocol):
    """One HTTP/1.1 exchange. Live (the default), each read is decoded as it
    arrives (:class:`ResponseDecoder`) and ``done`` resolves when the last chunk
    came or the exchange failed. Recording, each read is only kept with its time
    in ``result.recording`` (a list append: the client's CPU goes to reading
    sockets, not parsing) and ``done`` resolves when the server closes the
    connection, as it does after the response the request asked to be the last
    (``Connection: close``): a server that keeps it open after the last chunk
    keeps a recording exchange waiting until the caller's time limit."""

    def __init__(self, result: StreamResult, done: asyncio.Future, record: bool = False) -> None:
        self.result = result
        self.done = done
        self._decoder = None if record else ResponseDecoder(result)
        self._reads: list[tuple[float, bytes]] | None = None
        if record:
            result.recording = Recording()
            self._reads = result.recording.reads

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self._reads is not None:
            self._reads.append((now, data))
            return
        assert self._decoder is not None
        self._decoder.feed(data, now)
        if self._decoder.over:
            self._resolve()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._decoder is None:
            if exc is not None and self.result.recording is not None:
                self.result.recording.lost = str(exc)
        elif not self.done.done():  # not after the response, nor after the caller cancelled the exchange
            self._decoder.fail(_closed_early(None if exc is None else str(exc)))
        self._resolve()

    def _resolve(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def run_stream(url: str, body: dict, result: StreamResult | None = None, *,
                     record: bool = False) -> StreamResult:
    """POST ``body`` to ``{url}/v1/chat`` and read the stream to its end; fills
    ``result`` when given (so that a caller who cancels keeps what arrived).
    With ``record``, the reads are only kept, for :func:`decode_recording` once
    the load is over: a load generator that decodes as it reads spends about as
    much CPU per event as the server it measures, and when its core is busy, its
    own queue adds to the latencies it records."""
    payload = json.dumps(body).encode()
    return await _exchange(url, "POST", "/v1/chat", {"Content-Type": "application/json"}, payload, result, record)


async def resume_stream(url: str, last_event_id: str) -> StreamResult:
    """``GET /v1/streams/{id}`` with ``Last-Event-ID`` and read to the end."""
    event_id = EventId.parse(last_event_id)
    if event_id is None:
        raise ValueError(f"not an event id: {last_event_id!r}")
    stream_id = event_id.stream_id
    return await _exchange(url, "GET", f"/v1/streams/{stream_id}", {"Last-Event-ID": last_event_id}, b"")


async def _exchange(url: str, method: str, path: str, headers: dict[str, str], payload: bytes,
                    result: StreamResult | None = None, record: bool = False) -> StreamResult:
    parts = urlsplit(url)
    result = result if result is not None else StreamResult()
    result.started = time.perf_counter()
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}", "Accept: text/event-stream",
             f"Content-Length: {len(payload)}", "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    try:
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        transport, _ = await loop.create_connection(lambda: _Exchange(result, done, record), host, port)
    except OSError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        return result
    try:
        transport.write(request)
        await done
    finally:
        transport.close()
    return result


async def run_many(url: str, bodies: list[dict], ramp_s: float = 0.0) -> list[StreamResult]:
    """Run one stream per body at once (start times spread over ``ramp_s`` seconds)."""

    async def delayed(index: int, body: dict) -> StreamResult:
        if ramp_s:
            await asyncio.sleep(ramp_s * index / len(bodies))
        return await run_stream(url, body)

    return await asyncio.gather(*(delayed(i, b) for i, b in enumerate(bodies)))


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (0–100) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]

"""A lean load generator: many concurrent event streams from one asyncio loop.

HTTP/1.1 is spoken by hand (request line, chunked body) so that the client costs
little CPU next to the server on the same cores. Only this project's own server
format is parsed: frames end with a blank line (LF LF) and ids are
``{stream_id}:{seq}`` (DESIGN.md).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class StreamResult:
    """What one stream did: ``seqs`` in arrival order, the ``terminal`` event type,
    ``started``/``first_event``/``event_times`` as ``time.perf_counter()`` seconds."""

    started: float = 0.0
    first_event: float | None = None
    event_times: list[float] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    stream_id: str | None = None
    terminal: str | None = None
    status: int | None = None
    error: str | None = None

    @property
    def gap_free(self) -> bool:
        return self.seqs == list(range(len(self.seqs))) and self.terminal == "done"


def _parse_frame(frame: bytes, result: StreamResult, now: float) -> None:
    event_type = None
    for line in frame.split(b"\n"):
        if line.startswith(b"id: "):
            stream_id, _, seq = line[4:].decode().rpartition(":")
            result.stream_id = stream_id
            result.seqs.append(int(seq))
            if result.first_event is None:
                result.first_event = now
            result.event_times.append(now)
        elif line.startswith(b"event: "):
            event_type = line[7:].decode()
    if event_type in ("done", "error"):
        result.terminal = event_type


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status = int((await reader.readline()).split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def _chunks(reader: asyncio.StreamReader):
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        if size == 0:
            return
        data = await reader.readexactly(size + 2)
        yield data[:-2]


async def run_stream(url: str, body: dict) -> StreamResult:
    """POST ``body`` to ``{url}/v1/chat`` and read the stream to its end."""
    payload = json.dumps(body).encode()
    return await _exchange(url, "POST", "/v1/chat", {"Content-Type": "application/json"}, payload)


async def resume_stream(url: str, last_event_id: str) -> StreamResult:
    """``GET /v1/streams/{id}`` with ``Last-Event-ID`` and read to the end."""
    stream_id = last_event_id.rpartition(":")[0]
    return await _exchange(url, "GET", f"/v1/streams/{stream_id}", {"Last-Event-ID": last_event_id}, b"")


async def _exchange(url: str, method: str, path: str, headers: dict[str, str], payload: bytes) -> StreamResult:
    parts = urlsplit(url)
    result = StreamResult(started=time.perf_counter())
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}", "Accept: text/event-stream",
             f"Content-Length: {len(payload)}", "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
    writer = None
    try:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port, limit=1 << 20)
        writer.write(request)
        result.status, headers = await _read_head(reader)
        if result.status != 200 or headers.get("transfer-encoding") != "chunked":
            result.error = f"HTTP {result.status}"
            return result
        buffer = b""
        async for data in _chunks(reader):
            now = time.perf_counter()
            buffer += data
            *frames, buffer = buffer.split(b"\n\n")
            for frame in frames:
                _parse_frame(frame, result, now)
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if writer is not None:
            writer.close()
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

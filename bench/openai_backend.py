"""Benchmark: the cost of the ``openai`` backend, against a local OpenAI-compatible
upstream that streams at a chat's pace.

The upstream (this script with ``--serve-upstream``, an asyncio server in its own
process) answers ``POST /v1/chat/completions`` with ``--tokens`` chunks of
``choices[0].delta.content``, ``--delay-ms`` apart (the first one after the same
delay), then ``finish_reason`` and ``data: [DONE]``. The content of each stream's
first chunk is the upstream's ``time.perf_counter()`` when it sent it (CLOCK_MONOTONIC,
the same clock in every process of the machine), so a client that reads the first
token knows how long it took to reach it.

For each server set-up it loads the service (``model`` other than ``fake``, so the
request goes through the SDK to the upstream) with ``--streams`` streams and reports:

* **server CPU per event** (microseconds): the gunicorn process group's CPU
  (``/proc``) divided by the events delivered;
* **first token, added latency** (milliseconds, p50 and p99): from the upstream
  sending the first chunk to the client reading the first ``token`` event, minus
  the same measured by reading the upstream directly (the median of a run of
  direct streams of the same load, taken right before): what the service adds;
* gap p99 and wall, as ``compare.py`` prints them.

``--before DIR`` also runs the project from another checkout, alternated with this
one (``--repeat``), and prints the ratios. Layout as compare.py's: gunicorn under
``taskset -c 0``, the upstream and the client under ``taskset -c 1``.

    python bench/openai_backend.py                        # 200 streams x 60 tokens at 20 tokens/s
    python bench/openai_backend.py --streams 20           # lightly loaded: the first token's added latency
    python bench/openai_backend.py --before /tmp/before --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.compare import (
    Load,
    Setup,
    base_env,
    free_port,
    pick_cpus,
    poll_until,
    ratio,
    running_server,
)
from sse_chat.testing.loadgen import percentile

#: The model name the service sends upstream (anything but ``fake``).
MODEL = "bench-upstream"
READY_TIMEOUT_S = 30.0


# --- the upstream -------------------------------------------------------------------------------


def _chunk(delta: dict | None = None, finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
            "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}]}
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def _http_chunk(data: bytes) -> bytes:
    return b"%X\r\n%s\r\n" % (len(data), data)


async def _serve_completion(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tokens: int,
                            delay_s: float) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
                     b"Connection: close\r\n\r\n")
        writer.write(_http_chunk(_chunk({"role": "assistant", "content": ""})))
        for index in range(tokens):
            await asyncio.sleep(delay_s)
            content = f"T{time.perf_counter():.6f}" if index == 0 else " word"
            writer.write(_http_chunk(_chunk({"content": content})))
            await writer.drain()
        writer.write(_http_chunk(_chunk(finish="stop")) + _http_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def serve_upstream(port: int, tokens: int, delay_s: float) -> None:
    """Serve the paced upstream on 127.0.0.1:``port`` until killed."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    server = await asyncio.start_server(lambda r, w: _serve_completion(r, w, tokens, delay_s), "127.0.0.1", port,
                                        backlog=4096)
    async with server:
        await server.serve_forever()


# --- the client ---------------------------------------------------------------------------------


@dataclass
class Reading:
    """One stream as the client saw it: arrival times of its events (``perf_counter``
    seconds), and the first token's latency from the upstream's send (seconds)."""

    events: list[float] = field(default_factory=list)
    first_token_latency_s: float | None = None
    done: bool = False
    error: str | None = None


class _Dechunker:
    """HTTP/1.1 chunked transfer decoding, fed as bytes arrive."""

    def __init__(self) -> None:
        self._raw = b""
        self._left: int | None = None
        self.finished = False

    def feed(self, data: bytes) -> bytes:
        self._raw += data
        out = []
        while not self.finished:
            if self._left is None:
                end = self._raw.find(b"\r\n")
                if end < 0:
                    break
                size = int(self._raw[:end].split(b";")[0], 16)
                self._raw = self._raw[end + 2:]
                if size == 0:
                    self.finished = True
                    break
                self._left = size + 2
            if len(self._raw) < self._left:
                break
            out.append(self._raw[:self._left - 2])
            self._raw, self._left = self._raw[self._left:], None
        return b"".join(out)


async def read_stream(port: int, path: str, body: dict, reading: Reading, direct: bool) -> None:
    """POST ``body`` to ``path`` and read the event stream to its end into ``reading``."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        reading.error = str(exc)
        return
    payload = json.dumps(body).encode()
    writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 f"Accept: text/event-stream\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
                 .encode() + payload)
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            reading.error = head.split(b"\r\n", 1)[0].decode()
            return
        dechunk, pending = _Dechunker(), b""
        while not dechunk.finished:
            data = await reader.read(65536)
            if not data:
                break
            now = time.perf_counter()
            *frames, pending = (pending + dechunk.feed(data)).split(b"\n\n")
            for frame in frames:
                _take_frame(frame, now, reading, direct)
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        reading.error = str(exc)
    finally:
        writer.close()


def _take_frame(frame: bytes, now: float, reading: Reading, direct: bool) -> None:
    lines = frame.split(b"\n")
    data = next((line[6:] for line in lines if line.startswith(b"data: ")), None)
    if data is None:
        return
    if direct:
        if data == b"[DONE]":
            reading.done = True
            return
        choices = json.loads(data)["choices"]
        content = choices[0]["delta"].get("content") if choices else None
    else:
        event = next((line[7:] for line in lines if line.startswith(b"event: ")), b"")
        reading.events.append(now)
        reading.done = reading.done or event == b"done"
        content = json.loads(data).get("content") if event == b"token" else None
    if content and content.startswith("T") and reading.first_token_latency_s is None:
        reading.first_token_latency_s = now - float(content[1:])


async def load(port: int, streams: int, ramp_s: float, direct: bool, tokens: int) -> list[Reading]:
    readings = [Reading() for _ in range(streams)]
    path = "/v1/chat/completions" if direct else "/v1/chat"

    async def one(index: int) -> None:
        await asyncio.sleep(ramp_s * index / streams)
        body = ({"model": MODEL, "stream": True, "messages": [{"role": "user", "content": f"bench {index}"}]}
                if direct else {"prompt": f"bench {index}", "model": MODEL, "max_tokens": tokens})
        await read_stream(port, path, body, readings[index], direct)

    await asyncio.gather(*(one(i) for i in range(streams)))
    return readings


def client_main(args: argparse.Namespace) -> None:
    """``--client``: one load, its summary as JSON on stdout."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    began = time.perf_counter()
    readings = asyncio.run(load(args.port, args.streams, args.ramp_s, args.direct, args.tokens))
    wall_s = time.perf_counter() - began
    latencies = [r.first_token_latency_s * 1000 for r in readings if r.first_token_latency_s is not None]
    gaps = [(b - a) * 1000 for r in readings for a, b in zip(r.events, r.events[1:], strict=False)]
    print(json.dumps({
        "streams": len(readings), "complete": sum(r.done and r.error is None for r in readings),
        "errors": [r.error for r in readings if r.error][:3], "events": sum(len(r.events) for r in readings),
        "wall_s": wall_s, "first_token_p50_ms": percentile(latencies, 50),
        "first_token_p99_ms": percentile(latencies, 99), "gap_p99_ms": percentile(gaps, 99) if gaps else None,
    }))


# --- running it ---------------------------------------------------------------------------------


def run_client(port: int, streams: int, tokens: int, ramp_s: float, direct: bool, cpus: str) -> dict[str, Any]:
    command = ["taskset", "-c", cpus, sys.executable, __file__, "--client", "--port", str(port),
               "--streams", str(streams), "--tokens", str(tokens), "--ramp-s", str(ramp_s)]
    if direct:
        command.append("--direct")
    done = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(setup: Setup, args: argparse.Namespace, upstream_port: int, tmp: Path) -> dict[str, Any]:
    """Direct streams (the upstream alone), then the same through the service."""
    direct = run_client(upstream_port, args.streams, args.tokens, args.ramp_s, True, setup.client_cpus)
    upstream_env = (("OPENAI_BASE_URL", f"http://127.0.0.1:{upstream_port}/v1"), ("OPENAI_API_KEY", "bench"),
                    ("SSE_CHAT_MODEL", MODEL))
    with running_server(replace(setup, env=upstream_env), Load(args.streams, args.tokens, 0), tmp, None) as server:
        service_port = int(server.url.rsplit(":", 1)[1])
        run_client(service_port, 2, 2, 0.0, False, setup.client_cpus)  # warm-up: the worker imports the SDK
        before = server.sched_times()
        result = run_client(service_port, args.streams, args.tokens, args.ramp_s, False,
                            setup.client_cpus)
        used = server.sched_times() - before
    result["server_cpu_us_per_event"] = used.cpu_s / result["events"] * 1e6 if result["events"] else None
    result["direct_first_token_p50_ms"] = direct["first_token_p50_ms"]
    result["added_first_token_p50_ms"] = result["first_token_p50_ms"] - direct["first_token_p50_ms"]
    result["added_first_token_p99_ms"] = result["first_token_p99_ms"] - direct["first_token_p50_ms"]
    return result


#: (key, label, format) of the printed figures.
FIGURES = (
    ("server_cpu_us_per_event", "server CPU/event (us)", "{:.1f}"),
    ("added_first_token_p50_ms", "first token added p50 (ms)", "{:.2f}"),
    ("added_first_token_p99_ms", "first token added p99 (ms)", "{:.2f}"),
    ("direct_first_token_p50_ms", "direct first token p50 (ms)", "{:.2f}"),
    ("gap_p99_ms", "gap p99 (ms)", "{:.1f}"),
    ("wall_s", "wall (s)", "{:.2f}"),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=60)
    parser.add_argument("--delay-ms", type=float, default=50.0, help="between the upstream's chunks")
    parser.add_argument("--ramp-s", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--before", type=Path, metavar="DIR", help="also run the project from this checkout")
    parser.add_argument("--serve-upstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--direct", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream is not None:
        asyncio.run(serve_upstream(args.serve_upstream, args.tokens, args.delay_ms / 1000))
        return 0
    if args.client:
        client_main(args)
        return 0

    server_cpu, client_cpu = pick_cpus()
    project = Setup("project", "project", str(server_cpu), str(client_cpu))
    sides = [("A", project)]
    if args.before is not None:
        sides.insert(0, ("before", replace(project, label="project before", project_dir=str(args.before.resolve()))))
    print(f"openai backend: {args.streams} streams x {args.tokens} tokens, upstream chunks {args.delay_ms:g} ms apart, "
          f"load average {os.getloadavg()[0]:.2f} at start; gunicorn taskset -c {server_cpu}, "
          f"upstream and client taskset -c {client_cpu}")
    port = free_port()
    upstream = subprocess.Popen(["taskset", "-c", str(client_cpu), sys.executable, __file__, "--serve-upstream",
                                 str(port), "--tokens", str(args.tokens), "--delay-ms", str(args.delay_ms)],
                                env=base_env())
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in sides}
    try:
        poll_until(lambda: _listening(port), READY_TIMEOUT_S, "the upstream")
        with tempfile.TemporaryDirectory(prefix="sse-chat-openai-") as tmp:
            for _ in range(args.repeat):
                for name, setup in sides:
                    print(f"  running {setup.label} ...", file=sys.stderr, flush=True)
                    runs[name].append(measure(setup, args, port, Path(tmp)))
    finally:
        upstream.kill()
        upstream.wait()
    _print(runs, args.repeat)
    return 0 if all(run["complete"] == run["streams"] for side in runs.values() for run in side) else 1


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _print(runs: dict[str, list[dict[str, Any]]], repeat: int) -> None:
    names = list(runs)
    medians = {name: {key: statistics.median([r[key] for r in side if r.get(key) is not None] or [float("nan")])
                      for key, _, _ in FIGURES} for name, side in runs.items()}
    print(f"   medians of {repeat} run(s) each" + (", alternated" if len(names) > 1 else ""))
    print(f"   {'':30}" + "".join(f"{name:>12}" for name in names) + ("  A / before" if len(names) > 1 else ""))
    for key, label, fmt in FIGURES:
        cells = "".join(f"{fmt.format(medians[name][key]):>12}" for name in names)
        extra = ""
        if len(names) > 1:
            value = ratio(medians["A"][key], medians["before"][key])
            extra = f"{value:>12.2f}" if value is not None else f"{'-':>12}"
        print(f"   {label:30}{cells}{extra}")
    for name, side in runs.items():
        complete = sum(r["complete"] for r in side)
        total = sum(r["streams"] for r in side)
        errors = [e for r in side for e in r["errors"]]
        print(f"   {name}: {complete}/{total} streams complete" + (f"; errors: {errors[:3]}" if errors else ""))


if __name__ == "__main__":
    sys.exit(main())

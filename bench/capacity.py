"""Benchmark: the figures a capacity plan needs, measured on this machine with the
fake model (no network). See docs/capacity.md for the plan built from them.

    python bench/capacity.py                          # every measurement once (about 2 minutes)
    python bench/capacity.py --repeat 3 --streams-20 500,1000 --json /tmp/capacity.json   # docs/capacity.md
    python bench/capacity.py --only mem-20 --only redis-20 --scale 0.3

Measurements:

* **CPU per event** (``mem-20``, ``redis-20``, ``redis-20-remote``, ``mem-fast``,
  ``redis-fast``): the gunicorn workers' user + system CPU seconds
  (``/proc/PID/stat``) over a load, divided by the events the load generator
  received; hence events/s per fully used worker core (1 / CPU per event).
  ``*-20`` are 60-token streams at 20 tokens/s (``SSE_CHAT_FAKE_DELAY_MS=50``),
  1,000 of them or one run per count of ``--streams-20``; ``*-fast`` are 100
  streams of 2,000 tokens at full speed (delay 0), where a producer's events
  coalesce into few writes.
* **Redis per event** (the ``redis-*`` runs): ``CONFIG RESETSTAT`` before the load;
  after it ``INFO commandstats`` (calls per command; Redis counts the commands a
  Lua script runs too, under their own names), ``INFO stats``
  (``total_net_input_bytes``/``total_net_output_bytes``, and
  ``total_reads_processed``: socket reads, about one per round trip or pipeline),
  ``INFO cpu`` (``used_cpu_user + used_cpu_sys``, delta) and ``INFO memory``
  (``used_memory`` delta per stream: the finished streams stay for the TTL), each
  divided by the events received; and ``MEMORY USAGE`` of the keys of up to 300
  finished streams.
* **A Redis Cluster** (``cluster-20``): as ``redis-20``, on a Cluster of 3 primaries
  and 3 replicas (:mod:`sse_chat.testing.redis_cluster`, every node on the load
  generator's core); Redis's figures are the primaries' summed, and the replicas'
  CPU per event is given apart.
* **Readers on another worker** (``redis-20-remote``): two gunicorns of one worker
  each on the same Redis. Every stream is started on A (``POST /v1/chat``; the
  client hangs up after the first event) and read to its end on B
  (``GET /v1/streams/{id}`` with ``Last-Event-ID``), so that B follows every
  stream through its fan-in ``XREAD``. CPU is reported per worker (producer A,
  reader B) and summed.
* **Memory per open stream** (``hold-mem``, ``hold-redis``): ``--hold`` streams of
  a slow fake model (``SSE_CHAT_FAKE_DELAY_MS=10000``: they sit between tokens)
  are opened in two halves after a warm-up; the worker's ``VmRSS`` (and Redis's
  ``used_memory``) is read after each step. Per stream: (RSS with all open - RSS
  after the warm-up) / streams opened since.

Layout, as in bench/compare.py (whose helpers start and stop everything here):
gunicorn under ``taskset -c`` the first core, the load generator (a subprocess)
under the second; redis-server shares the load generator's core, as a Redis on
another host would. The machine may be shared: rates and walls move with other
people's load, CPU seconds per event much less. Before each load a fixed Python
loop is timed on the server's core (``calib ms``: how fast the machine was then).
``--repeat N`` runs N whole passes and reports the medians (and the spread) of the
runs in which every stream completed gap-free. Every run is bounded by
``--run-timeout-s``; servers, Redis and clients are stopped after each run, also
on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compare import (
    LOADGEN_GRACE_S,
    Load,
    Redis,
    Setup,
    _finite,
    pick_cpus,
    run_json_command,
    run_loadgen,
    running_redis,
    running_server,
    sched_times,
)
from loadgen_cli import raise_nofile, summarize

from sse_chat.eventlog.redis_layout import entry_events
from sse_chat.testing.loadgen import StreamResult, resume_stream, run_stream
from sse_chat.testing.redis_cluster import RedisCluster
from sse_chat.testing.servers import PeakRss, rss_kib

if TYPE_CHECKING:
    from compare import Gunicorn

#: Clock ticks per second of /proc/PID/stat's utime and stime.
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: Commands of this script's own (stats and resets), left out of the counts.
OWN_COMMANDS = ("cmdstat_info", "cmdstat_config|resetstat")
#: Seconds a held stream's fake model waits per token (they sit idle between tokens).
HOLD_DELAY_MS = 10_000
#: Streams opened first in the memory runs, so that one-off allocations (imports,
#: the first connections, Redis scripts) fall before the baseline.
HOLD_WARMUP = 50
#: Streams whose keys ``MEMORY USAGE`` measures after a load.
STORED_SAMPLE = 300
#: Seconds to let a server settle after a step of held streams before reading RSS.
HOLD_SETTLE_S = 1.5
#: Spread each step's stream starts over this many seconds.
HOLD_RAMP_S = 2.0


# --- reading processes and Redis -----------------------------------------------------------------


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` so far, from /proc/PID/stat (exited: 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLK_TCK


class RedisStats:
    """``CONFIG RESETSTAT`` and the INFO sections read before and after a load."""

    def __init__(self, server: Redis) -> None:
        import redis

        self._client = redis.Redis.from_url(server.url, socket_timeout=10)
        self._cpu_before = 0.0
        self._memory_before = 0

    def reset(self) -> None:
        self._client.config_resetstat()
        self._cpu_before = self._cpu()
        self._memory_before = self.used_memory()

    def used_memory(self) -> int:
        return int(self._client.info("memory")["used_memory"])

    def version(self) -> str:
        return str(self._client.info("server")["redis_version"])

    def _cpu(self) -> float:
        cpu = self._client.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    def collect(self) -> dict[str, Any]:
        """What Redis did since :meth:`reset`: calls and microseconds per command,
        bytes in and out, socket reads, CPU seconds, ``used_memory`` growth."""
        stats = self._client.info("stats")  # first, so that the other INFO replies are not in its bytes
        commands = self._client.info("commandstats")
        calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in commands.items()
                 if name not in OWN_COMMANDS}
        usec = {name.removeprefix("cmdstat_"): int(v["usec"]) for name, v in commands.items()
                if name not in OWN_COMMANDS}
        return {"calls": calls, "usec": usec,
                "net_input_bytes": int(stats["total_net_input_bytes"]),
                "net_output_bytes": int(stats["total_net_output_bytes"]),
                "reads_processed": int(stats.get("total_reads_processed", 0)),
                "cpu_s": self._cpu() - self._cpu_before,
                "used_memory_growth": self.used_memory() - self._memory_before}

    def stored_per_stream(self, sample: int = STORED_SAMPLE) -> dict[str, float] | None:
        """``MEMORY USAGE`` (exact, ``SAMPLES 0``) of the events and meta keys of up
        to ``sample`` streams, and their events (the last entry's last seq + 1; an
        entry holds one write's events): bytes per stream and per stored event."""
        events_keys = []
        for key in self._client.scan_iter(match="sse-chat:*:events", count=1000):
            events_keys.append(key)
            if len(events_keys) >= sample:
                break
        if not events_keys:
            return None
        with self._client.pipeline(transaction=False) as pipe:
            for key in events_keys:
                pipe.memory_usage(key, samples=0)
                pipe.memory_usage(key[:-len(b"events")] + b"meta", samples=0)
                pipe.xrevrange(key, "+", "-", count=1)
            replies = pipe.execute()
        events_b = sum(replies[0::3]) / len(events_keys)
        meta_b = sum(r or 0 for r in replies[1::3]) / len(events_keys)
        length = sum(_events_held(top) for top in replies[2::3]) / len(events_keys)
        return {"streams_sampled": len(events_keys), "events_key_bytes": events_b, "meta_key_bytes": meta_b,
                "events_per_stream": length, "bytes_per_stream": events_b + meta_b,
                "events_key_bytes_per_event": events_b / length if length else 0.0}

    def close(self) -> None:
        self._client.close()


def _events_held(top: list[Any]) -> int:
    """Events in a stream, from its last entry (``XREVRANGE … COUNT 1``)."""
    if not top:
        return 0
    first_seq, frames, _ = entry_events(top[0][1])
    return first_seq + len(frames)


@contextmanager
def running_cluster(cpus: str, tmp: Path) -> Iterator[RedisCluster]:
    """A Redis Cluster of 3 primaries and 3 replicas (:mod:`sse_chat.testing.redis_cluster`),
    every node pinned to ``cpus``; stopped on exit."""
    nodes = RedisCluster(tmp / f"cluster-{time.monotonic_ns()}")
    try:
        for process in nodes.processes.values():
            subprocess.run(["taskset", "-pc", cpus, str(process.pid)], check=True, capture_output=True)
        yield nodes
    finally:
        nodes.stop()


class ClusterStats(RedisStats):
    """:class:`RedisStats` summed over a Cluster's nodes: the primaries' commands,
    bytes, reads and CPU, plus the replicas' CPU (``replica_cpu_s``: what
    replication costs them)."""

    def __init__(self, nodes: RedisCluster) -> None:  # not RedisStats's: no single client
        import redis

        self._clients = {port: redis.Redis(port=port, socket_timeout=10) for port in nodes.ports}
        self._cpu_before_by_port: dict[int, float] = {}
        self._memory_before = 0

    def _primaries(self) -> list[Any]:
        return [c for c in self._clients.values() if c.info("replication")["role"] == "master"]

    def _replicas(self) -> list[Any]:
        return [c for c in self._clients.values() if c.info("replication")["role"] != "master"]

    def reset(self) -> None:
        for port, client in self._clients.items():
            client.config_resetstat()
            cpu = client.info("cpu")
            self._cpu_before_by_port[port] = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
        self._memory_before = self.used_memory()

    def used_memory(self) -> int:
        return sum(int(c.info("memory")["used_memory"]) for c in self._primaries())

    def version(self) -> str:
        return str(next(iter(self._clients.values())).info("server")["redis_version"])

    def _cpu_of(self, clients: list[Any]) -> float:
        total = 0.0
        for port, client in self._clients.items():
            if client in clients:
                cpu = client.info("cpu")
                total += float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]) - self._cpu_before_by_port[port]
        return total

    def collect(self) -> dict[str, Any]:
        primaries = self._primaries()
        calls: dict[str, int] = {}
        usec: dict[str, int] = {}
        net_in = net_out = reads = 0
        for client in primaries:
            stats = client.info("stats")
            net_in += int(stats["total_net_input_bytes"])
            net_out += int(stats["total_net_output_bytes"])
            reads += int(stats.get("total_reads_processed", 0))
            for name, v in client.info("commandstats").items():
                if name not in OWN_COMMANDS:
                    key = name.removeprefix("cmdstat_")
                    calls[key] = calls.get(key, 0) + int(v["calls"])
                    usec[key] = usec.get(key, 0) + int(v["usec"])
        return {"calls": calls, "usec": usec, "net_input_bytes": net_in, "net_output_bytes": net_out,
                "reads_processed": reads, "cpu_s": self._cpu_of(primaries),
                "replica_cpu_s": self._cpu_of(self._replicas()),
                "used_memory_growth": self.used_memory() - self._memory_before}

    def stored_per_stream(self, sample: int = STORED_SAMPLE) -> dict[str, float] | None:
        return None

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


def redis_per_event(raw: dict[str, Any], events: int, streams: int) -> dict[str, Any]:
    """Per-event (and per-stream) figures from :meth:`RedisStats.collect`."""
    calls = raw["calls"]
    return {
        "commands_per_event": sum(calls.values()) / events,
        "calls_per_event": {name: n / events for name, n in sorted(calls.items(), key=lambda kv: -kv[1])},
        "usec_per_call": {name: raw["usec"][name] / n for name, n in calls.items() if n},
        "evalsha_per_event": calls.get("evalsha", 0) / events,
        "xread_per_event": calls.get("xread", 0) / events,
        "reads_per_event": raw["reads_processed"] / events,
        "bytes_in_per_event": raw["net_input_bytes"] / events,
        "bytes_out_per_event": raw["net_output_bytes"] / events,
        "redis_cpu_us_per_event": raw["cpu_s"] / events * 1e6,
        "replica_cpu_us_per_event": raw["replica_cpu_s"] / events * 1e6 if "replica_cpu_s" in raw else None,
        "used_memory_per_stream": raw["used_memory_growth"] / streams,
    }


# --- loads ---------------------------------------------------------------------------------------


def run_client(args: list[str], cpus: str, timeout_s: float) -> dict[str, Any]:
    """This script's ``--client`` mode pinned to ``cpus``; its JSON summary."""
    command = ["taskset", "-c", cpus, sys.executable, str(Path(__file__).resolve()), *args]
    return run_json_command(command, timeout_s + LOADGEN_GRACE_S, "the client")


#: A fixed pure-Python workload; its CPU time on the server's core, taken before each
#: load, shows how fast the (shared, virtual) machine was then.
CALIBRATION = """
import time
began = time.process_time()
total = 0
for i in range(3_000_000):
    total += i * i % 7
print(time.process_time() - began)
"""


def calibrate(cpus: str) -> float:
    """CPU milliseconds of :data:`CALIBRATION` pinned to ``cpus``."""
    done = subprocess.run(["taskset", "-c", cpus, sys.executable, "-c", CALIBRATION], check=True,
                          capture_output=True, text=True, timeout=60)
    return float(done.stdout) * 1000


def project_server(stack: ExitStack, setup: Setup, load: Load, tmp: Path,
                   cluster: bool = False) -> tuple[Gunicorn, RedisStats | None]:
    """Start, on ``stack``, the project's server for ``setup`` and, when it uses
    Redis, a redis-server on ``setup.redis_cpus`` (a Cluster of 3 primaries and
    3 replicas with ``cluster``); the server, and the Redis figures' collector
    (``None`` without Redis)."""
    if cluster:
        nodes = stack.enter_context(running_cluster(setup.redis_cpus or setup.client_cpus, tmp))
        server = stack.enter_context(running_server(setup, load, tmp, nodes.url))
        cluster_stats = ClusterStats(nodes)
        stack.callback(cluster_stats.close)
        return server, cluster_stats
    redis = stack.enter_context(running_redis(setup.redis_cpus or setup.client_cpus, tmp)) if setup.redis else None
    server = stack.enter_context(running_server(setup, load, tmp, redis.url if redis else None))
    stats = RedisStats(redis) if redis else None
    if stats:
        stack.callback(stats.close)
    return server, stats


def cpu_run(name: str, log: str, load: Load, ramp_s: float, timeout_s: float, cpus: tuple[int, int],
            tmp: Path) -> dict[str, Any]:
    """One load on one server of one worker (``log`` ``"memory"`` or ``"redis"``):
    the load generator's summary, the worker's CPU per event, Redis's figures."""
    server_cpus, client_cpus = str(cpus[0]), str(cpus[1])
    setup = Setup(name, "project", server_cpus, client_cpus, redis=log in ("redis", "cluster"), redis_cpus=client_cpus)
    with ExitStack() as stack:
        server, stats = project_server(stack, setup, load, tmp, cluster=log == "cluster")
        if stats:
            stats.reset()
        workers = server.worker_pids
        calibration_ms = calibrate(server_cpus)
        cpu_before, sched_before, rss_before = cpu_s(workers), sched_times(workers), rss_kib(workers)
        with PeakRss(lambda: workers) as peak:
            result = run_loadgen(server.url, load, client_cpus, ramp_s, timeout_s)
        result["worker_rss_before_kib"], result["worker_rss_peak_kib"] = rss_before, peak.peak_kib
        result["calibration_ms"] = calibration_ms
        worker_cpu_s = cpu_s(workers) - cpu_before
        sched = sched_times(workers) - sched_before
        raw = stats.collect() if stats else None
        if stats:
            result["redis_stored"] = stats.stored_per_stream()
        if result["gap_free"] != result["streams"]:
            result["server_log_tail"] = server.log_tail()
    return finish_record(result, {"worker": worker_cpu_s}, sched.wait_s, raw)


def remote_run(name: str, load: Load, ramp_s: float, timeout_s: float, cpus: tuple[int, int],
               tmp: Path) -> dict[str, Any]:
    """Streams produced on server A and read on server B (one worker each, one Redis)."""
    server_cpus, client_cpus = str(cpus[0]), str(cpus[1])
    setup = Setup(name, "project", server_cpus, client_cpus, redis=True, redis_cpus=client_cpus)
    with ExitStack() as stack:
        redis = stack.enter_context(running_redis(client_cpus, tmp))
        producer = stack.enter_context(running_server(setup, load, tmp, redis.url))
        reader = stack.enter_context(running_server(setup, load, tmp, redis.url))
        stats = RedisStats(redis)
        stack.callback(stats.close)
        stats.reset()
        a, b = producer.worker_pids, reader.worker_pids
        calibration_ms = calibrate(server_cpus)
        a_before, b_before = cpu_s(a), cpu_s(b)
        sched_before = sched_times(a + b)
        result = run_client(["--client", "relay", "--url", producer.url, "--reader-url", reader.url,
                             "--streams", str(load.streams), "--tokens", str(load.tokens),
                             "--ramp-s", str(ramp_s), "--timeout-s", str(timeout_s)], client_cpus, timeout_s)
        cpu = {"producer worker": cpu_s(a) - a_before, "reader worker": cpu_s(b) - b_before}
        result["calibration_ms"] = calibration_ms
        sched = sched_times(a + b) - sched_before
        raw = stats.collect()
        result["redis_stored"] = stats.stored_per_stream()
        if result["gap_free"] != result["streams"]:
            result["server_log_tail"] = producer.log_tail() + "\n--- reader ---\n" + reader.log_tail()
    return finish_record(result, cpu, sched.wait_s, raw)


def finish_record(result: dict[str, Any], cpu: dict[str, float], wait_s: float,
                  raw: dict[str, Any] | None) -> dict[str, Any]:
    events, wall_s = result["events"], result["wall_s"]
    total = sum(cpu.values())
    result["worker_cpu_s"] = cpu
    result["worker_cpu_us_per_event"] = total / events * 1e6 if events else None
    result["worker_cpu_us_per_event_by_worker"] = {k: v / events * 1e6 for k, v in cpu.items()} if events else {}
    result["events_per_core_s"] = events / total if total else None
    result["worker_cpu_pct"] = 100 * total / wall_s if wall_s else None
    result["worker_wait_pct"] = 100 * wait_s / wall_s if wall_s else None
    result["client_cpu_pct"] = 100 * result["client_cpu_s"] / wall_s if wall_s else None
    if raw is not None:
        result["redis_raw"] = raw
        result["redis"] = redis_per_event(raw, events, result["streams"]) if events else None
    return result


def hold_run(name: str, log: str, streams: int, timeout_s: float, cpus: tuple[int, int],
             tmp: Path) -> dict[str, Any]:
    """Open a warm-up, then ``streams`` idle streams in two halves; the worker's RSS
    (and Redis's used_memory) after each step."""
    server_cpus, client_cpus = str(cpus[0]), str(cpus[1])
    setup = Setup(name, "project", server_cpus, client_cpus, redis=log == "redis", redis_cpus=client_cpus)
    steps = [HOLD_WARMUP, streams // 2, streams - streams // 2]
    load = Load(sum(steps) + 100, 60, HOLD_DELAY_MS)  # streams: the server's SSE_CHAT_MAX_STREAMS
    record: dict[str, Any] = {"steps": []}
    with ExitStack() as stack:
        server, stats = project_server(stack, setup, load, tmp)
        record["worker_rss_idle_kib"] = rss_kib(server.worker_pids)
        client = subprocess.Popen(
            ["taskset", "-c", client_cpus, sys.executable, str(Path(__file__).resolve()), "--client", "hold",
             "--url", server.url, "--steps", ",".join(map(str, steps)), "--tokens", "60",
             "--ramp-s", str(HOLD_RAMP_S), "--timeout-s", str(timeout_s)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stack.callback(_stop_client, client)
        deadline = time.monotonic() + timeout_s
        for _ in steps:
            line = _read_line(client, deadline)
            step = json.loads(line)
            time.sleep(HOLD_SETTLE_S)
            step["worker_rss_kib"] = rss_kib(server.worker_pids)
            if stats:
                step["redis_used_memory"] = stats.used_memory()
            record["steps"].append(step)
            assert client.stdin is not None
            client.stdin.write("next\n")
            client.stdin.flush()
        _read_line(client, deadline)  # the client's goodbye: everything closed
    first, last = record["steps"][0], record["steps"][-1]
    opened = last["open"] - first["open"]
    record["streams_measured"] = opened
    record["failed"] = sum(s["failed"] for s in record["steps"])
    record["worker_rss_kib_per_stream"] = (last["worker_rss_kib"] - first["worker_rss_kib"]) / opened
    half = record["steps"][1]
    record["worker_rss_kib_per_stream_halves"] = [
        (half["worker_rss_kib"] - first["worker_rss_kib"]) / max(1, half["open"] - first["open"]),
        (last["worker_rss_kib"] - half["worker_rss_kib"]) / max(1, last["open"] - half["open"])]
    if stats:
        record["redis_bytes_per_open_stream"] = (last["redis_used_memory"] - first["redis_used_memory"]) / opened
    return record


def _read_line(client: subprocess.Popen, deadline: float) -> str:
    """The client's next stdout line, by ``deadline``.

    Raises:
        RuntimeError: the client exited or did not answer in time.
    """
    assert client.stdout is not None and client.stderr is not None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError("the hold client did not answer in time")
        ready, _, _ = select.select([client.stdout], [], [], left)
        if ready:
            line = client.stdout.readline()
            if not line:
                raise RuntimeError(f"the hold client exited: {client.stderr.read()[-2000:]}")
            return line


def _stop_client(client: subprocess.Popen) -> None:
    if client.poll() is None:
        client.kill()
    client.wait()


# --- the client modes (run in a subprocess on the load generator's core) --------------------------


class _Arrivals(list):
    """A ``seqs`` list that sets an asyncio event when an event arrives."""

    def __init__(self, arrived: asyncio.Event) -> None:
        super().__init__()
        self.arrived = arrived

    def append(self, item: Any) -> None:
        super().append(item)
        self.arrived.set()


async def _open_stream(url: str, body: dict, result: StreamResult) -> asyncio.Task:
    """Start ``run_stream`` into ``result`` and return its task once the first
    event arrived or the exchange ended."""
    arrived = asyncio.Event()
    result.seqs = _Arrivals(arrived)
    task = asyncio.create_task(run_stream(url, body, result))
    waiter = asyncio.create_task(arrived.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    return task


async def _open_later(delay_s: float, url: str, body: dict, result: StreamResult) -> asyncio.Task:
    await asyncio.sleep(delay_s)
    return await _open_stream(url, body, result)


async def _relay_one(url: str, reader_url: str, body: dict, merged: StreamResult) -> None:
    """Start a stream on ``url``, hang up after its first event, read the rest
    from ``reader_url`` with Last-Event-ID; ``merged`` gets both parts."""
    first = merged
    task = await _open_stream(url, body, first)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    if not first.seqs or first.terminal is not None:
        return  # failed (summarize() reports it) or finished before the hang-up
    first.error = None  # the hang-up
    rest = await resume_stream(reader_url, f"{first.stream_id}:{first.seqs[-1]}")
    first.seqs.extend(rest.seqs)
    first.event_times.extend(rest.event_times)
    first.terminal, first.error, first.error_data = rest.terminal, rest.error, rest.error_data


async def _relay_all(url: str, reader_url: str, bodies: list[dict], ramp_s: float,
                     timeout_s: float) -> list[StreamResult]:
    results = [StreamResult() for _ in bodies]

    async def one(index: int) -> None:
        await asyncio.sleep(ramp_s * index / len(bodies))
        await _relay_one(url, reader_url, bodies[index], results[index])

    tasks = [asyncio.create_task(one(i)) for i in range(len(bodies))]
    _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task, result in zip(tasks, results, strict=True):
        if task.cancelled():
            result.error = f"still running after the {timeout_s:g} s time limit"
        elif task.exception() is not None:
            result.error = f"{type(task.exception()).__name__}: {task.exception()}"
    return results


async def _hold(url: str, steps: list[int], tokens: int, ramp_s: float) -> None:
    """Open ``steps[0]`` streams, print how many are open, wait for a line on
    stdin; the same for each step; then close everything and say so."""
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task] = []
    results: list[StreamResult] = []
    for step in steps:
        base = len(results)
        new = [StreamResult() for _ in range(step)]
        results.extend(new)

        tasks.extend(await asyncio.gather(*(
            _open_later(ramp_s * i / step, url, {"prompt": f"hold {base + i}", "model": "fake", "max_tokens": tokens},
                        r) for i, r in enumerate(new))))
        open_now = sum(1 for r, t in zip(results, tasks, strict=True) if r.seqs and not t.done())
        print(json.dumps({"open": open_now, "failed": sum(1 for t in tasks[base:] if t.done())}), flush=True)
        if not await loop.run_in_executor(None, sys.stdin.readline):
            break  # the parent went away
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps({"closed": len(tasks)}), flush=True)


def client_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="capacity.py --client")
    parser.add_argument("mode", choices=("relay", "hold"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--reader-url")
    parser.add_argument("--streams", type=int, default=0)
    parser.add_argument("--steps", default="")
    parser.add_argument("--tokens", type=int, required=True)
    parser.add_argument("--ramp-s", type=float, default=1.0)
    parser.add_argument("--timeout-s", type=float, default=90.0)
    args = parser.parse_args(argv)
    if args.mode == "hold":
        steps = [int(s) for s in args.steps.split(",")]
        raise_nofile(sum(steps) + 256)
        asyncio.run(asyncio.wait_for(_hold(args.url, steps, args.tokens, args.ramp_s), args.timeout_s))
        return
    raise_nofile(2 * args.streams + 256)
    bodies = [{"prompt": f"bench {i}", "model": "fake", "max_tokens": args.tokens} for i in range(args.streams)]
    usage_before, began = os.times(), time.perf_counter()
    results = asyncio.run(_relay_all(args.url, args.reader_url, bodies, args.ramp_s, args.timeout_s))
    wall_s, usage = time.perf_counter() - began, os.times()
    client_cpu_s = usage.user + usage.system - usage_before.user - usage_before.system
    print(json.dumps(summarize(results, wall_s, client_cpu_s)))


# --- what to run and reporting -------------------------------------------------------------------

#: name -> (kind, log, streams, tokens, delay ms, what it is)
RUNS: dict[str, tuple[str, str, int, int, int, str]] = {
    "mem-20": ("cpu", "memory", 1000, 60, 50, "memory log, 1 worker, 20 tokens/s"),
    "redis-20": ("cpu", "redis", 1000, 60, 50, "Redis log, 1 worker (readers local), 20 tokens/s"),
    "redis-20-remote": ("remote", "redis", 1000, 60, 50,
                        "Redis log, producer on worker A, every reader on worker B (fan-in XREAD), 20 tokens/s"),
    "mem-fast": ("cpu", "memory", 100, 2000, 0, "memory log, 1 worker, full speed (events coalesce)"),
    "redis-fast": ("cpu", "redis", 100, 2000, 0, "Redis log, 1 worker, full speed (events coalesce)"),
    "cluster-20": ("cpu", "cluster", 1000, 60, 50,
                   "Redis log on a Cluster of 3 primaries + 3 replicas, 1 worker (readers local), 20 tokens/s"),
    "hold-mem": ("hold", "memory", 2000, 60, HOLD_DELAY_MS, "open idle streams, memory log"),
    "hold-redis": ("hold", "redis", 2000, 60, HOLD_DELAY_MS, "open idle streams, Redis log"),
}

#: Figures whose median over repeats is reported.
MEDIAN_KEYS = ("calibration_ms", "worker_rss_before_kib", "worker_rss_peak_kib", "worker_cpu_us_per_event",
               "events_per_core_s", "events_per_s", "wall_s", "worker_cpu_pct",
               "worker_wait_pct", "client_cpu_pct", "gap_p50_ms", "gap_p99_ms", "first_event_p99_ms")
REDIS_MEDIAN_KEYS = ("commands_per_event", "evalsha_per_event", "xread_per_event", "reads_per_event",
                     "bytes_in_per_event", "bytes_out_per_event", "redis_cpu_us_per_event", "used_memory_per_stream",
                     "replica_cpu_us_per_event")


def _median(values: list[Any]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize_runs(all_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the repeated runs in which every stream completed gap-free (and
    min/max of the CPU per event); stream and event counts of all runs."""
    runs = [r for r in all_runs if r["gap_free"] == r["streams"]] or all_runs
    out: dict[str, Any] = {k: _median([r.get(k) for r in runs]) for k in MEDIAN_KEYS}
    out["runs_used"], out["runs"] = len(runs), len(all_runs)
    per_event = [r["worker_cpu_us_per_event"] for r in runs if r.get("worker_cpu_us_per_event") is not None]
    out["worker_cpu_us_per_event_min_max"] = [min(per_event), max(per_event)] if per_event else None
    out["streams"] = sum(r["streams"] for r in all_runs)
    out["gap_free"] = sum(r["gap_free"] for r in all_runs)
    out["events"] = sum(r["events"] for r in all_runs)
    workers = runs[0]["worker_cpu_us_per_event_by_worker"].keys() if runs else []
    out["worker_cpu_us_per_event_by_worker"] = {
        w: _median([r["worker_cpu_us_per_event_by_worker"].get(w) for r in runs]) for w in workers}
    redis_runs = [r["redis"] for r in runs if r.get("redis")]
    if redis_runs:
        out["redis"] = {k: _median([r[k] for r in redis_runs]) for k in REDIS_MEDIAN_KEYS}
        names = sorted({n for r in redis_runs for n in r["calls_per_event"]},
                       key=lambda n: -(_median([r["calls_per_event"].get(n, 0) for r in redis_runs]) or 0))
        out["redis"]["calls_per_event"] = {n: _median([r["calls_per_event"].get(n, 0) for r in redis_runs])
                                           for n in names}
        out["redis"]["usec_per_call"] = {n: _median([r["usec_per_call"].get(n) for r in redis_runs]) for n in names}
        stored = [r["redis_stored"] for r in runs if r.get("redis_stored")]
        if stored:
            out["redis"]["stored"] = {k: _median([r[k] for r in stored]) for k in stored[0]}
        redis_us = [r["redis_cpu_us_per_event"] for r in redis_runs]
        out["redis"]["redis_cpu_us_per_event_min_max"] = [min(redis_us), max(redis_us)]
    return out


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_cpu_table(records: dict[str, dict[str, Any]]) -> None:
    rows = {n: r for n, r in records.items() if r["kind"] in ("cpu", "remote") and r.get("result")}
    if not rows:
        return
    print("\n== worker CPU per event (user+system, /proc/PID/stat); medians of the runs in which every stream "
          "completed gap-free")
    print(f"   {'run':16} {'load':>22} {'gap-free':>11} {'us/event':>9} {'min-max':>13} {'events/s/core':>13} "
          f"{'CPU %':>6} {'wait %':>6} {'events/s':>9} {'calib ms':>8}")
    for name, record in rows.items():
        res, spec = record["result"], record["spec"]
        load = f"{spec['streams']:,} x {spec['tokens']:,} @ {_rate(spec['delay_ms'])}"
        low_high = res["worker_cpu_us_per_event_min_max"]
        spread = f"{low_high[0]:.1f}-{low_high[1]:.1f}" if low_high else "-"
        print(f"   {name:16} {load:>22} {res['gap_free']:>5}/{res['streams']:<5} "
              f"{_fmt(res['worker_cpu_us_per_event'], '.1f'):>9} {spread:>13} "
              f"{_fmt(res['events_per_core_s'], ',.0f'):>13} {_fmt(res['worker_cpu_pct'], '.0f'):>6} "
              f"{_fmt(res['worker_wait_pct'], '.0f'):>6} {_fmt(res['events_per_s'], ',.0f'):>9} "
              f"{_fmt(res['calibration_ms'], '.0f'):>8}")
        if res["runs_used"] < res["runs"]:
            print(f"   {'':16} figures from the {res['runs_used']} of {res['runs']} runs in which every stream "
                  "completed gap-free")
        by_worker = res["worker_cpu_us_per_event_by_worker"]
        if len(by_worker) > 1:
            print(f"   {'':16} {'':>22} {'':>11} " + ", ".join(f"{w} {v:.1f}" for w, v in by_worker.items()))
    print("   CPU %: the workers' CPU in percent of one core over the wall; wait %: runnable but waiting for "
          "a CPU (other processes had it); calib ms: CPU time of a fixed Python loop on the server's core "
          "before the load (higher: a slower machine at that moment)")


def _rate(delay_ms: int) -> str:
    return f"{1000 / delay_ms:g}/s" if delay_ms else "full"


def print_redis_table(records: dict[str, dict[str, Any]]) -> None:
    rows = {n: r for n, r in records.items() if r.get("result", {}).get("redis")}
    if not rows:
        return
    print("\n== Redis per event (CONFIG RESETSTAT, then INFO commandstats / stats / cpu / memory); medians as above")
    print(f"   {'run':16} {'cmds':>6} {'EVALSHA':>8} {'XREAD':>7} {'reads':>7} {'B in':>7} {'B out':>7} "
          f"{'CPU us':>7} {'min-max':>11} {'mem B/stream':>13}")
    for name, record in rows.items():
        red = record["result"]["redis"]
        low_high = red["redis_cpu_us_per_event_min_max"]
        print(f"   {name:16} {red['commands_per_event']:>6.2f} {red['evalsha_per_event']:>8.3f} "
              f"{red['xread_per_event']:>7.4f} {red['reads_per_event']:>7.3f} {red['bytes_in_per_event']:>7.0f} "
              f"{red['bytes_out_per_event']:>7.0f} {red['redis_cpu_us_per_event']:>7.2f} "
              f"{low_high[0]:>5.2f}-{low_high[1]:<5.2f} {red['used_memory_per_stream']:>13,.0f}")
        calls = ", ".join(f"{n} {v:.3f}" for n, v in red["calls_per_event"].items() if v >= 0.0005)
        print(f"   {'':16} calls/event: {calls}")
        if red.get("replica_cpu_us_per_event") is not None:
            print(f"   {'':16} CPU above: the primaries' summed; the replicas' "
                  f"{red['replica_cpu_us_per_event']:.2f} us/event")
        stored = red.get("stored")
        if stored:
            print(f"   {'':16} stored (MEMORY USAGE, {stored['streams_sampled']:.0f} streams): events key "
                  f"{stored['events_key_bytes']:,.0f} B for {stored['events_per_stream']:.0f} events "
                  f"({stored['events_key_bytes_per_event']:.0f} B/event), meta {stored['meta_key_bytes']:,.0f} B")
    print("   cmds: every command Redis ran (commands inside the Lua scripts included), per event; reads: socket "
          "reads (about one per round trip or pipeline); mem B/stream: used_memory growth per finished stream, "
          "kept for the TTL")


def print_hold_table(records: dict[str, dict[str, Any]]) -> None:
    rows = {n: r for n, r in records.items() if r["kind"] == "hold" and r.get("result")}
    if not rows:
        return
    print("\n== memory per open stream (idle between tokens, SSE_CHAT_FAKE_DELAY_MS="
          f"{HOLD_DELAY_MS}; warm-up {HOLD_WARMUP} streams first)")
    print(f"   {'run':12} {'streams':>8} {'failed':>7} {'RSS idle':>10} {'RSS open':>10} {'KiB/stream':>11} "
          f"{'halves':>13} {'Redis B/stream':>15}")
    for name, record in rows.items():
        res = record["result"]
        halves = "/".join(f"{h:.1f}" for h in res["worker_rss_kib_per_stream_halves"])
        redis_b = res.get("redis_bytes_per_open_stream")
        print(f"   {name:12} {res['streams_measured']:>8,} {res['failed']:>7} "
              f"{res['worker_rss_idle_kib'] / 1024:>7.1f} MiB {res['steps'][-1]['worker_rss_kib'] / 1024:>6.1f} MiB "
              f"{res['worker_rss_kib_per_stream']:>11.1f} {halves:>13} {_fmt(redis_b, ',.0f'):>15}")


def machine_info() -> dict[str, Any]:
    return {"date": datetime.date.today().isoformat(), "cpus": sorted(os.sched_getaffinity(0)),
            "cpu_count": os.cpu_count(), "loadavg_1min_start": os.getloadavg()[0],
            "python": platform.python_version(), "kernel": platform.release()}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=list(RUNS), help="run only this (repeatable)")
    parser.add_argument("--repeat", type=int, default=1, help="run each CPU load this many times (medians)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply stream counts (not the held ones)")
    parser.add_argument("--streams-20", type=lambda v: [int(n) for n in v.split(",")], metavar="N[,N...]",
                        help="stream counts of the 20 tokens/s runs, one run each (default 1,000 x --scale)")
    parser.add_argument("--hold", type=int, default=2000, help="idle streams held open in the memory runs")
    parser.add_argument("--ramp-s", type=float, default=1.0, help="spread starts over this many seconds (x scale)")
    parser.add_argument("--run-timeout-s", type=float, default=90.0, help="bound on each run's load")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure to FILE")
    args = parser.parse_args()
    if args.repeat < 1 or args.scale <= 0 or args.hold < 2:
        parser.error("--repeat >= 1, --scale > 0 and --hold >= 2 please")
    return args


def main() -> int:
    args = parse_args()
    cpus = pick_cpus()
    info = machine_info()
    print(f"sse-chat capacity figures, {info['date']}: cpus {info['cpus']}, load average "
          f"{info['loadavg_1min_start']:.2f} at start; gunicorn on core {cpus[0]}, load generator "
          f"(and redis-server) on core {cpus[1]}")
    records: dict[str, dict[str, Any]] = {}
    for name in args.only or list(RUNS):
        kind, log, streams, tokens, delay_ms, what = RUNS[name]
        if kind == "hold":
            sizes = [args.hold]
        elif delay_ms and args.streams_20:
            sizes = args.streams_20
        else:
            sizes = [max(1, round(streams * args.scale))]
        for size in sizes:
            label = name if len(sizes) == 1 else f"{name}/{size}"
            records[label] = {"name": name, "kind": kind, "what": what, "errors": [], "runs": [],
                              "spec": {"log": log, "streams": size, "tokens": tokens, "delay_ms": delay_ms}}
    ok = True
    with tempfile.TemporaryDirectory(prefix="sse-chat-capacity-") as tmp_dir:
        tmp = Path(tmp_dir)
        for attempt in range(args.repeat):  # whole passes, so that a noisy minute hits one run of each
            for label, record in records.items():
                kind, spec = record["kind"], record["spec"]
                if kind == "hold" and attempt > 0:
                    continue
                load = Load(spec["streams"], spec["tokens"], spec["delay_ms"])
                print(f"[{label}, pass {attempt + 1}] {record['what']}: {load.describe()}", file=sys.stderr,
                      flush=True)
                try:
                    if kind == "cpu":
                        run = cpu_run(label, spec["log"], load, args.ramp_s * args.scale, args.run_timeout_s, cpus,
                                      tmp)
                    elif kind == "remote":
                        run = remote_run(label, load, args.ramp_s * args.scale, args.run_timeout_s, cpus, tmp)
                    else:
                        run = hold_run(label, spec["log"], spec["streams"], args.run_timeout_s, cpus, tmp)
                except (RuntimeError, OSError, ValueError) as exc:
                    record["errors"].append(f"{type(exc).__name__}: {exc}")
                    print(f"   !!! {label} failed: {exc}", file=sys.stderr, flush=True)
                    ok = False
                    continue
                record["runs"].append(run)
                if kind != "hold" and run["gap_free"] != run["streams"]:
                    ok = False
                    print(f"   !!! {run['streams'] - run['gap_free']} streams of {label} did not complete "
                          f"gap-free: {run['failures']}\n{run.get('server_log_tail', '')}", file=sys.stderr)
                if kind == "hold" and run["failed"]:
                    ok = False
    for record in records.values():
        if record["runs"]:
            record["result"] = record["runs"][0] if record["kind"] == "hold" else summarize_runs(record["runs"])
    print_cpu_table(records)
    print_redis_table(records)
    print_hold_table(records)
    for name, record in records.items():
        for error in record["errors"]:
            print(f"   !!! {name}: {error}")
    info["loadavg_1min_end"] = os.getloadavg()[0]
    print(f"\nload average {info['loadavg_1min_start']:.2f} at start, {info['loadavg_1min_end']:.2f} at the end "
          f"(2 means both cores busy on average)")
    if args.json is not None:
        args.json.write_text(json.dumps(_finite({"machine": info, "repeat": args.repeat, "scale": args.scale,
                                                 "runs": records}), indent=2) + "\n")
    return 0 if ok else 1


def _exit_on_sigterm(signum: int, frame: object) -> None:
    sys.exit(128 + signum)  # unwinds the with-blocks, which stop every server


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(sys.argv[2:])
    else:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        sys.exit(main())

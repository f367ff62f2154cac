"""Benchmark: sse-chat against a bare baseline, as ratios, in one invocation.

Each scenario loads two server set-ups (A and B) one after the other with the
same streams and prints both figures and the ratio A / B. The machine is shared
and noisy; the ratio of two runs taken a minute apart is the stable figure.

    python bench/compare.py                        # every scenario, full size (3 to 4 minutes)
    python bench/compare.py --scale 0.2            # fewer streams, for a quick look
    python bench/compare.py --scenario chat --repeat 3   # steady and crowd: the cost of chat streams
    python bench/compare.py --scenario fast --scenario crowd --json out.json
    python bench/compare.py --repeat 3             # A, B, A, B, A, B: medians, steadier on a busy machine
    python bench/compare.py --before /tmp/before   # also the project from another checkout, alternated

Scenarios (A / B):

* ``fast``: 100 streams x 2,000 tokens, no delay; the project (memory log) /
  the baseline (bench/baseline_app.py: one gevent generator per response, no
  event log, no producer greenlet). Headline: events per second.
* ``steady``: 1,000 streams x 60 tokens at 20 tokens/s (50 ms delay), one
  worker carrying chat streams; project / baseline. Headline: server CPU per
  event.
* ``crowd``: 3,000 streams x 60 tokens at 20 tokens/s, more than one core
  carries; project / baseline. Headline: wall time.
* ``starts``: 1,000 streams x 2 tokens at 20 tokens/s: what starting and ending a
  stream costs, beside its events (request, stream, producer, reader, log lines,
  metrics); project / baseline. Headline: server CPU per stream. ``steady``'s CPU
  per event holds both costs, one spread over 62 events.
* ``redis``: 1,000 streams x 60 tokens at 20 tokens/s; the project with the Redis
  Streams log / with the memory log, one worker each. Headline: wall time.
* ``redis-workers``: 100 x 2,000, no delay, Redis log; 2 workers / 1 worker.
  Headline: events per second.

Layout: the server (gunicorn master and workers) runs under ``taskset -c 0`` and
the load generator (bench/loadgen_cli.py, a subprocess) under ``taskset -c 1``.
redis-server shares the load generator's core by default, as a separate Redis
host would: it does not take CPU from the worker, whose every round trip would
otherwise wait for a context switch on its own core (``--redis-core server``
pins it beside the worker instead; the table shows Redis's CPU per event either
way). In ``redis-workers`` the server, Redis and the load generator all share
both cores in both runs, so only the worker count differs.

Every run says how many streams completed gap-free (ids 0, 1, 2, … then
``done``); failed streams are reported loudly and make the exit status 1. Each
run also shows the server's CPU time per event (microseconds), which depends
less on the machine's other load than rates and walls do, how busy the server
and the load generator were, and how long the server was runnable but waited for
a CPU that other processes held (then its rates say little about the project).

``--scenario chat`` runs ``steady``, ``crowd`` and ``starts``. ``--before DIR``
adds a third server to the project-against-baseline scenarios: the project run from another
checkout (a ``git worktree`` of the commit before a change), loaded in turn with
the other two (before, A, B, before, A, B, ...), so that a change is measured
against the code before it in the same invocation (A / before).

The server's CPU is that of its whole process group (gunicorn is started in a
session of its own: master, workers and anything they start), from
``/proc/PID/schedstat``.

Stream starts are spread over ``--ramp-s`` seconds (as bench/throughput.py does;
times ``--scale``, so that streams start at the same rate at any scale); wall
time runs from the first connect to the last stream's end, ramp included.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
#: Where the project's server runs from (``--project-dir``), for the servers this script starts.
PROJECT_DIR_ENV = "SSE_CHAT_BENCH_PROJECT_DIR"
BIN = Path(sys.executable).parent
#: gunicorn's configuration file and WSGI application of the baseline.
BASELINE_CONFIG = "bench/baseline_gunicorn_conf.py"
BASELINE_APP = "bench.baseline_app:app"
#: Seconds a server or redis-server gets to answer its readiness check.
READY_TIMEOUT_S = 30.0
#: Seconds between readiness polls.
POLL_INTERVAL_S = 0.05
#: Workers count as booted once they used less than SETTLED_CPU_S CPU seconds
#: in SETTLED_S seconds (an idle gevent worker still wakes once a second).
SETTLED_S = 0.3
SETTLED_CPU_S = 0.005
#: Seconds a server gets to stop after SIGINT before it is killed.
STOP_TIMEOUT_S = 10.0
#: Seconds the load generator process gets beyond its own time limit.
LOADGEN_GRACE_S = 30.0
#: Lines of a server's log shown when a run failed.
LOG_TAIL_LINES = 12
#: ``--scenario`` names that stand for several scenarios.
SCENARIO_GROUPS = {"chat": ("steady", "crowd", "starts")}


# --- what to run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """``streams`` concurrent streams of ``tokens`` tokens, ``delay_ms`` milliseconds apart."""

    streams: int
    tokens: int
    delay_ms: int

    def ideal_wall_s(self, ramp_s: float) -> float:
        """Wall time in seconds if serving cost nothing: the last stream's start
        (``ramp_s`` spreads starts evenly) plus one stream's delays."""
        return ramp_s * (self.streams - 1) / self.streams + self.tokens * self.delay_ms / 1000

    def describe(self) -> str:
        rate = f"at {1000 / self.delay_ms:g} tokens/s (delay {self.delay_ms} ms)" if self.delay_ms else "no delay"
        return f"{self.streams:,} streams x {self.tokens:,} tokens, {rate}"


@dataclass(frozen=True)
class Setup:
    """One server under load: ``app`` is ``"project"`` or ``"baseline"``; ``*_cpus``
    are ``taskset -c`` lists (``redis_cpus`` only with ``redis``); ``project_dir``:
    the checkout the project runs from (``None``: this one, or ``--project-dir``);
    ``env``: more environment variables of the server, ``(name, value)`` pairs;
    ``bin_dir``: the virtualenv ``bin`` directory whose gunicorn runs it (``None``:
    this interpreter's, :data:`BIN`)."""

    label: str
    app: str
    server_cpus: str
    client_cpus: str
    workers: int = 1
    redis: bool = False
    redis_cpus: str | None = None
    project_dir: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    bin_dir: str | None = None

    def layout(self) -> str:
        parts = [f"gunicorn ({self.workers} worker{'s' if self.workers > 1 else ''}) taskset -c {self.server_cpus}",
                 f"load generator taskset -c {self.client_cpus}"]
        if self.redis:
            parts.append(f"redis-server taskset -c {self.redis_cpus}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Scenario:
    """Load ``a`` and ``b`` with ``load``; ``headline`` is the metric whose ratio A / B
    is the scenario's answer; ``note`` says why the layout is fair; ``before``: the
    same as ``a`` from another checkout (``--before``), loaded in turn with them."""

    name: str
    load: Load
    a: Setup
    b: Setup
    headline: str
    note: str = ""
    before: Setup | None = None

    def sides(self) -> list[tuple[str, Setup]]:
        """(record key, setup) in the order each round loads them."""
        first = [("before", self.before)] if self.before is not None else []
        return [*first, ("a", self.a), ("b", self.b)]


def scenarios(scale: float, cpus: tuple[int, int], redis_core: str,
              before_dir: Path | None = None) -> dict[str, Scenario]:
    """Every scenario, stream counts multiplied by ``scale``; ``cpus`` are the
    server's and the load generator's cores; ``redis_core`` is ``"server"`` or
    ``"client"``; ``before_dir``: a checkout whose project the project-against-baseline
    scenarios also load, as ``before``."""
    server, client = str(cpus[0]), str(cpus[1])
    both = f"{cpus[0]},{cpus[1]}"
    redis_cpus = server if redis_core == "server" else client

    def load(streams: int, tokens: int, delay_ms: int) -> Load:
        return Load(max(1, round(streams * scale)), tokens, delay_ms)

    project = Setup("project", "project", server, client)
    before = (replace(project, label=f"project before ({before_dir.name})", project_dir=str(before_dir))
              if before_dir is not None else None)
    baseline = Setup("baseline", "baseline", server, client)
    redis_log = replace(project, label="project, Redis log", redis=True, redis_cpus=redis_cpus)
    memory_log = replace(project, label="project, memory log")
    shared = Setup("", "project", both, both, redis=True, redis_cpus=both)
    redis_note = (f"redis-server shares the load generator's core {client}, like a Redis on another host "
                  "(--redis-core server pins it beside the worker)"
                  if redis_core == "client" else
                  f"redis-server shares the worker's core {server}: one core for all server-side work, "
                  "every Redis round trip waits for a context switch (--redis-core client moves it)")
    shared_note = (f"server, Redis and load generator share cores {both} in both runs, "
                   "so only the worker count differs")
    return {
        "fast": Scenario("fast", load(100, 2000, 0), project, baseline, "events_per_s", before=before),
        "steady": Scenario("steady", load(1000, 60, 50), project, baseline, "server_cpu_us_per_event",
                           before=before),
        "crowd": Scenario("crowd", load(3000, 60, 50), project, baseline, "wall_s", before=before),
        "starts": Scenario("starts", load(1000, 2, 50), project, baseline, "server_cpu_us_per_stream",
                           before=before),
        "redis": Scenario("redis", load(1000, 60, 50), redis_log, memory_log, "wall_s", redis_note),
        "redis-workers": Scenario("redis-workers", load(100, 2000, 0),
                                  replace(shared, label="Redis log, 2 workers", workers=2),
                                  replace(shared, label="Redis log, 1 worker"), "events_per_s", shared_note),
    }


# --- processes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SchedTimes:
    """Seconds that processes ran on a CPU (``cpu_s``) and were runnable but waited
    for one (``wait_s``), from /proc/PID/schedstat."""

    cpu_s: float = 0.0
    wait_s: float = 0.0

    def __sub__(self, other: SchedTimes) -> SchedTimes:
        return SchedTimes(self.cpu_s - other.cpu_s, self.wait_s - other.wait_s)


def sched_times(pids: list[int]) -> SchedTimes:
    """The summed :class:`SchedTimes` of ``pids`` so far (exited ones count 0)."""
    cpu_ns = wait_ns = 0
    for pid in pids:
        try:
            on_cpu, waiting, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
        except (OSError, ValueError):
            continue
        cpu_ns, wait_ns = cpu_ns + int(on_cpu), wait_ns + int(waiting)
    return SchedTimes(cpu_ns / 1e9, wait_ns / 1e9)


def process_group(pgid: int) -> list[int]:
    """The pids of every live process in process group ``pgid``, from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, pgrp, ...
        if int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_env(**overrides: str) -> dict[str, str]:
    """This process's environment without sse-chat, OpenAI and gunicorn worker
    settings, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SSE_CHAT_", "OPENAI_")) and k != "WEB_CONCURRENCY"}
    env.update(overrides)
    return env


def poll_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Call ``predicate`` every :data:`POLL_INTERVAL_S` seconds until it is true.

    Raises:
        RuntimeError: after ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(POLL_INTERVAL_S)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (OSError, http.client.HTTPException):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Gunicorn:
    """A gunicorn master started by this script in a session (and process group) of
    its own, and its workers."""

    url: str
    process: subprocess.Popen
    log_path: Path
    worker_pids: list[int] = field(default_factory=list)

    def children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], check=False, capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]

    def sched_times(self) -> SchedTimes:
        """CPU and run-queue seconds so far of the server's process group: the master,
        its workers and whatever else they started."""
        return sched_times(process_group(self.process.pid))

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, workers: int) -> None:
        """Wait until ``/healthz`` answers and ``workers`` workers have booted (they
        were idle for :data:`SETTLED_S` seconds: the app is loaded)."""
        poll_until(lambda: self._exited() or _answers(self.url + "/healthz"), READY_TIMEOUT_S, "/healthz")
        poll_until(lambda: self._exited() or len(self.children()) >= workers, READY_TIMEOUT_S, f"{workers} workers")
        if self._exited():
            raise RuntimeError(f"gunicorn exited with status {self.process.returncode}:\n{self.log_tail()}")
        self.worker_pids = self.children()
        samples = [self.sched_times().cpu_s]

        def settled() -> bool:
            time.sleep(SETTLED_S)
            samples.append(self.sched_times().cpu_s)
            return samples[-1] - samples[-2] < SETTLED_CPU_S

        poll_until(settled, READY_TIMEOUT_S, "the workers to finish booting")

    def _exited(self) -> bool:
        return self.process.poll() is not None

    def stop(self) -> None:
        """Quick shutdown (SIGINT), then SIGKILL whatever of ours is still alive."""
        self.worker_pids = sorted(set(self.worker_pids) | set(self.children()))
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in self.worker_pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def server_command(setup: Setup, port: int) -> list[str]:
    """gunicorn's command line for ``setup``, pinned with taskset."""
    pin = ["taskset", "-c", setup.server_cpus, str(Path(setup.bin_dir or BIN) / "gunicorn")]
    if setup.app == "project":
        return [*pin, "-c", "gunicorn.conf.py"]
    return [*pin, "-c", BASELINE_CONFIG, "--workers", str(setup.workers), "--bind", f"127.0.0.1:{port}", BASELINE_APP]


def server_env(setup: Setup, load: Load, port: int, tmp: Path, redis_url: str | None) -> dict[str, str]:
    """The environment of the server: the fake model's delay, and for the project its
    bind, workers, log and a stream limit that admits every stream of ``load``."""
    env = {"SSE_CHAT_FAKE_DELAY_MS": str(load.delay_ms)}
    if setup.app == "project":
        metrics_dir = Path(tempfile.mkdtemp(prefix="metrics-", dir=tmp))
        env.update(SSE_CHAT_BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY=str(setup.workers),
                   SSE_CHAT_MAX_STREAMS=str(max(2000, load.streams)), PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
        if redis_url is not None:
            env["SSE_CHAT_REDIS_URL"] = redis_url
    env.update(setup.env)
    return base_env(**env)


@contextmanager
def running_server(setup: Setup, load: Load, tmp: Path, redis_url: str | None) -> Iterator[Gunicorn]:
    """A ready server for ``setup``; stopped (with its workers) on exit."""
    port = free_port()
    log_path = tmp / f"{setup.app}-{port}.log"
    with log_path.open("wb") as log:
        env = server_env(setup, load, port, tmp, redis_url)
        project_dir = Path(setup.project_dir or os.environ.get(PROJECT_DIR_ENV) or ROOT)
        if setup.app == "project" and project_dir != ROOT:  # another checkout's code, e.g. the code before a change
            env["PYTHONPATH"] = str(project_dir)
        process = subprocess.Popen(server_command(setup, port), cwd=project_dir if setup.app == "project" else ROOT,
                                   env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Gunicorn(f"http://127.0.0.1:{port}", process, log_path)
    try:
        server.wait_ready(setup.workers)
        yield server
    finally:
        server.stop()


@dataclass
class Redis:
    """A redis-server started by this script."""

    url: str
    process: subprocess.Popen

    def cpu_s(self) -> float:
        return sched_times([self.process.pid]).cpu_s

    def pings(self) -> bool:
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()


@contextmanager
def running_redis(cpus: str, tmp: Path) -> Iterator[Redis]:
    """A fresh redis-server on a free loopback port, pinned to ``cpus``, without
    persistence; stopped on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(["taskset", "-c", cpus, binary, "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no", "--dir", str(tmp)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Redis(f"redis://127.0.0.1:{port}/0", process)
    try:
        poll_until(lambda: process.poll() is not None or server.pings(), READY_TIMEOUT_S, "redis-server")
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with status {process.returncode}")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- measuring ----------------------------------------------------------------------------------


def run_loadgen(url: str, load: Load, cpus: str, ramp_s: float, timeout_s: float) -> dict[str, Any]:
    """Run bench/loadgen_cli.py pinned to ``cpus`` against ``url``; its JSON summary.

    Raises:
        RuntimeError: when the load generator fails or outlives its time limit.
    """
    command = ["taskset", "-c", cpus, sys.executable, str(BENCH / "loadgen_cli.py"), "--url", url,
               "--streams", str(load.streams), "--tokens", str(load.tokens),
               "--ramp-s", str(ramp_s), "--timeout-s", str(timeout_s)]
    return run_json_command(command, timeout_s + LOADGEN_GRACE_S, "the load generator")


def run_json_command(command: list[str], timeout_s: float, what: str) -> dict[str, Any]:
    """Run ``command`` (``what`` names it in errors) for at most ``timeout_s``
    seconds; the JSON object on the last line of its stdout.

    Raises:
        RuntimeError: when it fails or outlives its time limit.
    """
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what} did not finish within {timeout_s:g} s") from None
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(setup: Setup, load: Load, ramp_s: float, timeout_s: float, tmp: Path) -> dict[str, Any]:
    """Start what ``setup`` needs, load it once, stop it; the load generator's summary
    plus what the server did meanwhile: ``server_cpu_us_per_event`` (gunicorn
    processes) and ``redis_cpu_us_per_event``, CPU microseconds per event delivered;
    ``server_cpu_us_per_stream``, the server's per stream;
    ``server_cpu_pct`` and ``server_wait_pct``, the server's time on a CPU and
    runnable but waiting for one (another process had it), in percent of the wall."""
    with ExitStack() as stack:
        redis = stack.enter_context(running_redis(setup.redis_cpus or "", tmp)) if setup.redis else None
        server = stack.enter_context(running_server(setup, load, tmp, redis.url if redis else None))
        server_before, redis_before = server.sched_times(), redis.cpu_s() if redis else 0.0
        result = run_loadgen(server.url, load, setup.client_cpus, ramp_s, timeout_s)
        server_used = server.sched_times() - server_before
        redis_cpu_s = redis.cpu_s() - redis_before if redis else None
        if result["gap_free"] != result["streams"]:
            result["server_log_tail"] = server.log_tail(LOG_TAIL_LINES)
    events, wall_s = result["events"], result["wall_s"]
    result["server_cpu_us_per_event"] = server_used.cpu_s / events * 1e6 if events else None
    result["redis_cpu_us_per_event"] = redis_cpu_s / events * 1e6 if events and redis_cpu_s is not None else None
    result["server_cpu_us_per_stream"] = server_used.cpu_s / result["streams"] * 1e6 if result["streams"] else None
    result["server_cpu_pct"] = 100 * server_used.cpu_s / wall_s if wall_s else None
    result["server_wait_pct"] = 100 * server_used.wait_s / wall_s if wall_s else None
    result["client_cpu_pct"] = 100 * result["client_cpu_s"] / wall_s if wall_s else None
    return result


def run_scenario(scenario: Scenario, ramp_s: float, timeout_s: float, repeat: int, tmp: Path) -> dict[str, Any]:
    """Load (before,) A, then B, ``repeat`` times; a JSON-ready record with every
    run's result (``runs``), their medians (``result``; stream counts summed), the
    errors that stopped runs, and per metric the median of the rounds' ratios A / B
    (``ratios``) and, with a ``before`` side, A / before (``ratios_before``)."""
    record: dict[str, Any] = {"scenario": scenario.name, "load": asdict(scenario.load), "ramp_s": ramp_s,
                              "ideal_wall_s": scenario.load.ideal_wall_s(ramp_s), "headline": scenario.headline,
                              "note": scenario.note, "repeat": repeat}
    sides = scenario.sides()
    for key, setup in sides:
        record[key] = {**asdict(setup), "runs": [], "errors": []}
    rounds = []
    for _ in range(repeat):
        rounds.append({key: _measure_or_record(record[key], setup, scenario.load, ramp_s, timeout_s, tmp)
                       for key, setup in sides})
    for key, _ in sides:
        if record[key]["runs"]:
            record[key]["result"] = aggregate(record[key]["runs"])
    record["ratios"] = _round_ratios(rounds, "a", "b")
    if scenario.before is not None:
        record["ratios_before"] = _round_ratios(rounds, "a", "before")
    record["all_gap_free"] = all(not record[key]["errors"] and record[key]["result"]["gap_free"]
                                 == record[key]["result"]["streams"] for key, _ in sides)
    return record


def _round_ratios(rounds: list[dict[str, dict[str, Any] | None]], top: str, bottom: str) -> dict[str, float | None]:
    """Per metric, the median over the rounds in which both ran of ``top`` / ``bottom``."""
    return {k: _median([ratio(r[top].get(k), r[bottom].get(k)) for r in rounds if r[top] and r[bottom]])  # type: ignore[union-attr]
            for k, *_ in METRICS}


def _measure_or_record(side: dict[str, Any], setup: Setup, load: Load, ramp_s: float, timeout_s: float,
                       tmp: Path) -> dict[str, Any] | None:
    """One run of ``setup``, appended to ``side["runs"]``; its error goes to
    ``side["errors"]`` (and ``None`` is returned) when it could not run."""
    print(f"  running {setup.label} ...", file=sys.stderr, flush=True)
    try:
        result = measure(setup, load, ramp_s, timeout_s, tmp)
    except (RuntimeError, OSError, ValueError) as exc:
        side["errors"].append(f"{type(exc).__name__}: {exc}")
        return None
    side["runs"].append(result)
    return result


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The medians of the runs' figures; streams, gap-free streams and events summed;
    failure examples and server log tails of all runs."""
    result: dict[str, Any] = {k: _median([run.get(k) for run in runs]) for k, *_ in METRICS}
    for key in ("streams", "gap_free", "events"):
        result[key] = sum(run[key] for run in runs)
    result["failures"] = [f for run in runs for f in run["failures"]][:5]
    result["server_log_tail"] = "\n".join(run["server_log_tail"] for run in runs if "server_log_tail" in run)
    return result


def _median(values: list[float | None]) -> float | None:
    """The median of the finite values; ``None`` when there is none."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(finite) if finite else None


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``; ``None`` when either is missing or not finite, or ``b`` is 0."""
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b) or b == 0:
        return None
    return a / b


# --- reporting ----------------------------------------------------------------------------------

#: (key, row label, format) of the figures printed for each run.
METRICS = (
    ("events_per_s", "events/s", "{:,.0f}"),
    ("wall_s", "wall (s)", "{:.2f}"),
    ("first_event_p50_ms", "first event p50 (ms)", "{:.1f}"),
    ("first_event_p99_ms", "first event p99 (ms)", "{:.1f}"),
    ("first_token_p50_ms", "first token p50 (ms)", "{:.1f}"),
    ("first_token_p99_ms", "first token p99 (ms)", "{:.1f}"),
    ("gap_p50_ms", "gap p50 (ms)", "{:.1f}"),
    ("gap_p99_ms", "gap p99 (ms)", "{:.1f}"),
    ("gap_p99_settled_ms", "gap p99 after ramp (ms)", "{:.1f}"),
    ("server_cpu_us_per_event", "server CPU/event (us)", "{:.1f}"),
    ("server_cpu_us_per_stream", "server CPU/stream (us)", "{:,.0f}"),
    ("redis_cpu_us_per_event", "redis CPU/event (us)", "{:.1f}"),
    ("server_cpu_pct", "server CPU (% of a core)", "{:.0f}"),
    ("server_wait_pct", "server waiting for CPU (%)", "{:.0f}"),
    ("client_cpu_pct", "load gen CPU (% of a core)", "{:.0f}"),
)
#: Above this share of its core (percent) the load generator may be what limits a run.
CLIENT_BUSY_PCT = 90.0


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else fmt.format(value)


def _completion(run: dict[str, Any]) -> str:
    result = run.get("result")
    if result is None:
        return "RUN FAILED"
    failed_runs = f" +{len(run['errors'])} failed" if run["errors"] else ""
    return f"{result['gap_free']}/{result['streams']}{failed_runs}"


def print_scenario(record: dict[str, Any]) -> None:
    """A small table: one row per metric, columns A, B and A / B (and before and
    A / before with a ``before`` side)."""
    load = Load(**record["load"])
    sides = [key for key in ("before", "a", "b") if key in record]
    print(f"\n== {record['scenario']}: {load.describe()}; ramp {record['ramp_s']:g} s, "
          f"ideal wall {record['ideal_wall_s']:.2f} s")
    for key in sides:
        print(f"   {_side_name(key)}: {record[key]['label']}: "
              f"{Setup(**_setup_fields(record[key])).layout()}")
    if record["note"]:
        print(f"   layout: {record['note']}")
    if record["repeat"] > 1:
        order = ", ".join(_side_name(key) for key in sides)
        print(f"   figures: medians of {record['repeat']} runs each ({order}, ...); "
              "ratios: the median of the rounds' ratios; streams: summed")
    width = 14
    ratio_columns = [("A / before", "ratios_before")] if "before" in record else []
    ratio_columns.append(("A / B", "ratios"))
    heads = "".join(f" {_side_name(key):>{width}}" for key in sides)
    print(f"   {'':26}{heads}" + "".join(f" {title:>10}" for title, _ in ratio_columns))
    for metric, label, fmt in METRICS:
        values = [record[side].get("result", {}).get(metric) for side in sides]
        if all(v is None for v in values):
            continue
        mark = "  <- headline" if metric == record["headline"] else ""
        cells = "".join(f" {_cell(v, fmt):>{width}}" for v in values)
        ratios = "".join(f" {_cell(record[field].get(metric), '{:.2f}'):>10}" for _, field in ratio_columns)
        print(f"   {label:26}{cells}{ratios}{mark}")
    print(f"   {'streams gap-free':26}" + "".join(f" {_completion(record[side]):>{width}}" for side in sides))
    print_spread(record)
    print_failures(record)
    print_client_bound(record)


#: Besides the headline, the figures whose spread over the runs ``--repeat`` prints:
#: the tails the chat scenarios set targets on, which move more from run to run
#: than the medians.
SPREAD_METRICS = ("first_event_p99_ms", "gap_p99_ms")


def print_spread(record: dict[str, Any]) -> None:
    """With several runs: for the headline and each of :data:`SPREAD_METRICS`, each
    side's lowest and highest run and the widest of those spreads in percent of
    its side's median. Runs of one piece of code differ by that much on this
    machine at this time, so smaller ratios between sides are not measured
    differences."""
    labels = {metric: (label, fmt) for metric, label, fmt in METRICS}
    for metric in dict.fromkeys((record["headline"], *SPREAD_METRICS)):
        label, fmt = labels[metric]
        line = _spread_line(record, metric, fmt)
        if line:
            what = "the headline" if metric == record["headline"] else label
            print(f"   spread of {what} over the runs: {line}")


def _spread_line(record: dict[str, Any], metric: str, fmt: str) -> str | None:
    """``A low-high, B low-high; widest N% of its median (...)`` for ``metric``, or
    ``None`` when no side has two runs with it."""
    cells, widest = [], 0.0
    for key in ("before", "a", "b"):
        values = [run[metric] for run in record.get(key, {}).get("runs", []) if run.get(metric) is not None]
        if len(values) < 2:
            continue
        low, high, middle = min(values), max(values), statistics.median(values)
        widest = max(widest, (high - low) / middle * 100 if middle else 0.0)
        cells.append(f"{_side_name(key)} {_cell(low, fmt)}-{_cell(high, fmt)}")
    if not cells:
        return None
    return (f"{', '.join(cells)}; widest {widest:.0f}% of its median "
            "(a difference between sides smaller than that may be noise)")


def print_client_bound(record: dict[str, Any]) -> None:
    """Warn when the load generator was busier than the server (on a CPU or waiting
    for one): the run measured the client as much as the server."""
    for run in _runs(record):
        result = run.get("result") or {}
        client, server = result.get("client_cpu_pct"), result.get("server_cpu_pct")
        if server is not None:
            server += result.get("server_wait_pct") or 0.0
        if client is not None and server is not None and client >= CLIENT_BUSY_PCT and server < CLIENT_BUSY_PCT:
            print(f"   note: the load generator used {client:.0f}% of its core and the server ran or waited "
                  f"{server:.0f}% of the time "
                  f"during {run['label']}: that figure may be limited by the client")


def _setup_fields(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if k not in ("result", "runs", "errors")}


def print_failures(record: dict[str, Any]) -> None:
    """Say loudly which runs failed or lost streams, and how."""
    for run in _runs(record):
        result = run.get("result")
        for error in run["errors"]:
            print(f"   !!! RUN FAILED: {run['label']}: {error}")
        if result is not None and result["gap_free"] != result["streams"]:
            missing = result["streams"] - result["gap_free"]
            print(f"   !!! {missing} OF {result['streams']} STREAMS of {run['label']} DID NOT COMPLETE GAP-FREE; "
                  f"examples: {'; '.join(result['failures'])}")
            print("   server log (last lines):")
            print("\n".join(f"     | {line}" for line in result.get("server_log_tail", "").splitlines()))


def _side_name(key: str) -> str:
    """``A``, ``B`` or ``before``: how a side's column is headed."""
    return key if key == "before" else key.upper()


def _runs(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The sides of a scenario's record: (before,) A, B."""
    return [record[key] for key in ("before", "a", "b") if key in record]


#: (key, label, format) of the summary's figures per scenario.
SUMMARY_METRICS = (
    ("server_cpu_us_per_event", "CPU/event (us)", "{:.1f}"),
    ("server_cpu_us_per_stream", "CPU/stream (us)", "{:,.0f}"),
    ("gap_p99_ms", "gap p99 (ms)", "{:.0f}"),
    ("first_event_p99_ms", "first p99 (ms)", "{:.0f}"),
    ("first_token_p99_ms", "1st token p99 (ms)", "{:.0f}"),
    ("wall_s", "wall (s)", "{:.2f}"),
    ("events_per_s", "events/s", "{:,.0f}"),
)


def print_summary(records: list[dict[str, Any]]) -> None:
    """Per scenario, the figures a deployment pays for and feels (CPU per event and per stream, gap,
    first-event and first-token p99, wall, events/s), each side's and their ratios."""
    print("\n== summary (medians; ratios below 1 mean A costs or waits less, except events/s)")
    with_before = any("before" in record for record in records)
    heads = (f"{'before':>10} " if with_before else "") + f"{'A':>10} {'B':>10} " + \
        (f"{'A/before':>8} " if with_before else "") + f"{'A / B':>7}"
    print(f"   {'scenario':14} {'metric':16} {heads}")
    for record in records:
        for key, label, fmt in SUMMARY_METRICS:
            values = {side: record[side].get("result", {}).get(key) for side in ("before", "a", "b")
                      if side in record}
            mark = " <- headline" if key == record["headline"] else ""
            before = f"{_cell(values.get('before'), fmt):>10} " if with_before else ""
            before_ratio = (f"{_cell(record.get('ratios_before', {}).get(key), '{:.2f}'):>8} "
                            if with_before else "")
            print(f"   {record['scenario']:14} {label:16} {before}{_cell(values['a'], fmt):>10} "
                  f"{_cell(values['b'], fmt):>10} {before_ratio}{_cell(record['ratios'].get(key), '{:.2f}'):>7}{mark}")
        verdict = "yes" if record["all_gap_free"] else "NO  <-- FAILED STREAMS OR RUNS, figures not comparable"
        names = ", ".join(f"{side} = {record[side]['label']}" for side in ("before", "a", "b") if side in record)
        print(f"   {'':14} {names}; all streams gap-free: {verdict}")


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by ``None`` (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def machine() -> dict[str, Any]:
    """The cores this process may use and the load average at the start."""
    return {"cpus": sorted(os.sched_getaffinity(0)), "loadavg_1min": os.getloadavg()[0],
            "python": sys.version.split()[0]}


# --- main ---------------------------------------------------------------------------------------


def parse_args(names: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append", choices=[*names, *SCENARIO_GROUPS],
                        help="run only this scenario (repeatable; default: all, in the order listed); "
                             "chat: steady and crowd")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every stream count by this (e.g. 0.2)")
    parser.add_argument("--ramp-s", type=float, default=1.0,
                        help="spread stream starts over this many seconds at full scale (times --scale)")
    parser.add_argument("--run-timeout-s", type=float, default=90.0,
                        help="streams still running this many seconds into a run count as failed")
    parser.add_argument("--redis-core", choices=("client", "server"), default="client",
                        help="where redis-server runs in the redis scenario: the load generator's core "
                             "(default) or the server's")
    parser.add_argument("--repeat", type=int, default=1,
                        help="load A and B this many times each, alternately; report medians (default 1)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to FILE as JSON")
    parser.add_argument("--project-dir", type=Path, metavar="DIR",
                        help="run the project's server from this checkout (e.g. a `git worktree` of the commit "
                             "before a change), with this venv's packages; the baseline stays this checkout's")
    parser.add_argument("--before", type=Path, metavar="DIR",
                        help="also load the project run from this checkout (e.g. a `git worktree` of the commit "
                             "before a change), alternated with A and B in the project-against-baseline "
                             "scenarios; prints A / before")
    args = parser.parse_args()
    if args.before is not None:
        args.before = args.before.resolve()
        if not (args.before / "sse_chat").is_dir():
            parser.error(f"--before {args.before}: no sse_chat package there")
    if args.project_dir is not None:
        os.environ[PROJECT_DIR_ENV] = str(args.project_dir.resolve())
    if args.scale <= 0:
        parser.error("--scale must be > 0")
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    return args


def expand_scenarios(names: list[str]) -> list[str]:
    """``names`` with groups (:data:`SCENARIO_GROUPS`) replaced by their members,
    each scenario once, in the order given."""
    expanded = [member for name in names for member in SCENARIO_GROUPS.get(name, (name,))]
    return list(dict.fromkeys(expanded))


def pick_cpus() -> tuple[int, int]:
    """The first two cores this process may use: the server's and the load generator's."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit("compare.py needs two cores (one for the server, one for the load generator)")
    return cpus[0], cpus[1]


def main() -> int:
    names = list(scenarios(1.0, (0, 1), "client"))
    args = parse_args(names)
    chosen = scenarios(args.scale, pick_cpus(), args.redis_core, args.before)
    info = machine()
    print(f"sse-chat vs baseline: cpus {info['cpus']}, load average {info['loadavg_1min']:.2f} at start, "
          f"python {info['python']}, scale {args.scale:g}")
    records = []
    with tempfile.TemporaryDirectory(prefix="sse-chat-compare-") as tmp:
        for name in expand_scenarios(args.scenario or names):
            print(f"[{name}]", file=sys.stderr, flush=True)
            record = run_scenario(chosen[name], args.ramp_s * args.scale, args.run_timeout_s, args.repeat, Path(tmp))
            print_scenario(record)
            records.append(record)
    print_summary(records)
    if args.json is not None:
        report = {"machine": info, "scale": args.scale, "ramp_s": args.ramp_s * args.scale, "repeat": args.repeat,
                  "scenarios": records}
        args.json.write_text(json.dumps(_finite(report), indent=2) + "\n")
    return 0 if all(r["all_gap_free"] for r in records) else 1


def _exit_on_sigterm(signum: int, frame: object) -> None:
    sys.exit(128 + signum)  # unwinds the with-blocks, which stop every server


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    sys.exit(main())

"""Benchmark: the project and the bare baseline loaded at the same time, on the
same core, as a ratio of their CPU per stream.

bench/compare.py loads one server after the other; on a shared machine the speed
of a core moves between two runs a minute apart (its headline's spread is often
20-40%), more than a change to the event path saves. Here every server of a round
runs at once, pinned to the same core, each loaded by its own load generator
(all on the other core) with the same streams, so whatever slows the core slows
them alike: the ratio of their CPU per stream moves by about 2% from round to
round. A change is measured by adding the code before it (``--before DIR``, a
``git worktree`` of the commit before) as a third server.

    python bench/paired.py                                   # 400 streams x 60 tokens each, 5 rounds
    python bench/paired.py --tokens 200 --streams 300        # the cost of an event (starts weigh less)
    python bench/paired.py --tokens 2 --streams 700          # the cost of starting and ending a stream
    python bench/paired.py --before /tmp/before --json out.json

Each server's CPU is its process group's (``/proc/PID/schedstat``: master and
worker) from the load's start to its end, after ``--warm-up`` streams that fill
imports and caches, divided by the streams (and by the events) it delivered. The
servers share one core, so each runs slower than alone and the absolute figures
are higher than compare.py's; the ratios are the result. A stream that is not
gap-free fails the run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.compare import Load, Setup, pick_cpus, run_loadgen, running_server

#: Seconds the load generators have beyond the ideal wall time.
TIMEOUT_S = 120.0


def sides(server_cpus: str, client_cpus: str, before: Path | None) -> list[Setup]:
    """The servers of every round: the baseline, the project and, with ``before``,
    the project from that checkout."""
    project = Setup("project", "project", server_cpus, client_cpus)
    others = [replace(project, label=f"before ({before.name})", project_dir=str(before))] if before else []
    return [Setup("baseline", "baseline", server_cpus, client_cpus), project, *others]


def run_round(setups: list[Setup], load: Load, warm_up: int, ramp_s: float, tmp: Path) -> dict[str, dict[str, Any]]:
    """Start every server, warm each up alone, then load them all at once; per
    server label: CPU microseconds per stream and per event, and the load
    generator's summary.

    Raises:
        RuntimeError: a server or a load generator failed, or a stream was not gap-free.
    """
    with ExitStack() as stack:
        servers = [stack.enter_context(running_server(setup, load, tmp, None)) for setup in setups]
        for setup, server in zip(setups, servers, strict=True):
            run_loadgen(server.url, replace(load, streams=warm_up), setup.client_cpus, ramp_s, TIMEOUT_S)
        before = [server.sched_times() for server in servers]
        results: dict[str, dict[str, Any]] = {}

        def load_one(setup: Setup, url: str) -> None:
            results[setup.label] = run_loadgen(url, load, setup.client_cpus, ramp_s, TIMEOUT_S)

        threads = [threading.Thread(target=load_one, args=(setup, server.url))
                   for setup, server in zip(setups, servers, strict=True)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        used = [server.sched_times() - start for server, start in zip(servers, before, strict=True)]
    figures = {}
    for setup, cpu in zip(setups, used, strict=True):
        result = results.get(setup.label)
        if result is None or result["gap_free"] != load.streams:
            raise RuntimeError(f"{setup.label}: not every stream was gap-free: {result}")
        figures[setup.label] = {"cpu_us_per_stream": cpu.cpu_s / load.streams * 1e6,
                                "cpu_us_per_event": cpu.cpu_s / result["events"] * 1e6, "loadgen": result}
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=400, help="streams per server and round (default 400)")
    parser.add_argument("--tokens", type=int, default=60, help="tokens per stream (default 60)")
    parser.add_argument("--delay-ms", type=int, default=50, help="the fake model's delay between tokens (default 50)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--warm-up", type=int, default=100, help="streams each server serves first (default 100)")
    parser.add_argument("--ramp-s", type=float, default=1.0, help="seconds over which streams start (default 1)")
    parser.add_argument("--before", type=Path, help="also load the project from this checkout")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    server_core, client_core = pick_cpus()
    setups = sides(str(server_core), str(client_core), args.before)
    load = Load(args.streams, args.tokens, args.delay_ms)
    print(f"{load.describe()}, per server; servers on core {server_core} at once, load generators on core "
          f"{client_core}; {args.rounds} rounds", flush=True)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="sse-chat-paired-") as tmp:
        for number in range(args.rounds):
            figures = run_round(setups, load, args.warm_up, args.ramp_s, Path(tmp))
            rounds.append(figures)
            print(f"  round {number + 1}: " + ", ".join(f"{label} {f['cpu_us_per_stream']:,.0f} us/stream"
                                                       for label, f in figures.items()), flush=True)
    print("CPU per stream, medians (ratios: the median of the rounds' ratios to the baseline), and the medians of "
          "each round's p99 of the gap between a stream's events and of its first event:")
    for setup in setups:
        per_stream = [r[setup.label]["cpu_us_per_stream"] for r in rounds]
        per_event = [r[setup.label]["cpu_us_per_event"] for r in rounds]
        ratios = [r[setup.label]["cpu_us_per_stream"] / r["baseline"]["cpu_us_per_stream"] for r in rounds]
        latency = {name: statistics.median(r[setup.label]["loadgen"][name] for r in rounds)
                   for name in ("gap_p99_ms", "first_event_p99_ms")}
        print(f"   {setup.label:24s} {statistics.median(per_stream):9,.0f} us/stream  "
              f"{statistics.median(per_event):7.1f} us/event  / baseline {statistics.median(ratios):.3f}  "
              f"(rounds {min(ratios):.3f}-{max(ratios):.3f});  gap p99 {latency['gap_p99_ms']:.0f} ms, "
              f"first event p99 {latency['first_event_p99_ms']:.0f} ms")
    if args.json:
        args.json.write_text(json.dumps({"load": vars(load), "rounds": rounds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

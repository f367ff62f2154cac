"""What one stream costs a gunicorn worker in instructions, counted by
Valgrind's callgrind: the project, the bare baseline and, with ``--before DIR``,
the project from another checkout.

The CPU time bench/compare.py measures moves 15-40% between runs of the same
code on this shared machine, more than most single changes save. The
instructions a worker executes hardly move (0.2% between two runs): this script
counts them, for user space only (system calls count as their entry; their
kernel time is not in the figures: see ``strace -c`` for those).

For each side it runs the server twice under ``valgrind --tool=callgrind``, both
times with the same warm-up streams, once with ``--streams`` more streams of
``--tokens`` tokens and once without, and divides the difference of the
worker's totals by ``--streams``: start-up and warm-up cancel out. The
difference between two ``--tokens`` values, divided by theirs, is the cost of
one event::

    .venv/bin/python bench/instructions.py --tokens 2          # what starting and ending a stream costs
    .venv/bin/python bench/instructions.py --tokens 62         # a 60-token chat stream (compare.py's steady)
    .venv/bin/python bench/instructions.py --before /tmp/wt-main --json /tmp/ir.json

Needs ``valgrind`` (Debian's package). The server runs about 50 times slower
under it: each side takes a minute or two. Both sides parse requests with
gunicorn's Python parser here: valgrind cannot run the C parser's SSE4.2 code.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.compare import (  # the checkout's bench package, whatever the working directory
    BASELINE_APP,
    BASELINE_CONFIG,
    BIN,
    ROOT,
    Gunicorn,
    Load,
    Setup,
    _answers,
    free_port,
    poll_until,
    run_loadgen,
    server_env,
)

#: Streams run before counting starts, alike in both runs of a side: imports and
#: caches that the first streams fill are not charged to the counted ones.
WARM_UP_STREAMS = 20
#: Seconds the server gets to answer /healthz under valgrind (the app loads about 50 times slower).
READY_UNDER_VALGRIND_S = 600.0
#: Seconds the load generator may take under valgrind.
LOAD_TIMEOUT_S = 900.0
#: How much slower a worker runs under callgrind, and its CPU seconds without it
#: for a stream's start and end and for each event (compare.py's starts and steady).
VALGRIND_SLOWDOWN = 50
STREAM_CPU_S = 0.001
EVENT_CPU_S = 0.00004
#: The share of a core the counted streams may keep the server busy.
MAX_LOAD = 0.5


@dataclass(frozen=True)
class Side:
    """One server to count: ``app`` is ``"project"`` or ``"baseline"``; ``project_dir``
    the checkout it runs from (``None``: this one)."""

    label: str
    app: str
    project_dir: str | None = None


def callgrind_command(side: Side, port: int, out_dir: Path, cpus: str, cache_sim: bool = False) -> list[str]:
    """gunicorn's command line for ``side`` under callgrind, pinned to ``cpus``;
    each process writes ``out_dir/cg.{pid}``. ``cache_sim`` also simulates the
    caches (callgrind's ``--cache-sim=yes``: first-level and last-level misses)."""
    gunicorn = [sys.executable, str(BIN / "gunicorn")]
    if side.app == "project":
        gunicorn += ["-c", "gunicorn.conf.py"]
    else:
        gunicorn += ["-c", BASELINE_CONFIG, "--workers", "1", "--bind", f"127.0.0.1:{port}", BASELINE_APP]
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir}/cg.%p"]
    if cache_sim:
        valgrind.append("--cache-sim=yes")
    # Valgrind stops at the SSE4.2 instructions of gunicorn's C parser (gunicorn_h1c's
    # picohttpparser: SIGILL), so both sides parse with gunicorn's Python parser here.
    return ["taskset", "-c", cpus, *valgrind, *gunicorn, "--timeout", str(int(LOAD_TIMEOUT_S)),
            "--http-parser", "python"]


@contextmanager
def server_under_callgrind(side: Side, load: Load, cpus: str, tmp: Path,
                           cache_sim: bool = False) -> Iterator[tuple[Gunicorn, Path]]:
    """A ready server for ``side`` under callgrind; yields it and the directory its
    counts go to (complete once it stopped)."""
    port = free_port()
    out_dir = Path(tempfile.mkdtemp(prefix="callgrind-", dir=tmp))
    log_path = tmp / f"{side.label}-{port}.log"
    setup = Setup(side.label, side.app, cpus, cpus, project_dir=side.project_dir)
    env = server_env(setup, load, port, tmp, None)
    project_dir = Path(side.project_dir or ROOT)
    if side.app == "project" and project_dir != ROOT:
        env["PYTHONPATH"] = str(project_dir)
    with log_path.open("wb") as log:
        process = subprocess.Popen(callgrind_command(side, port, out_dir, cpus, cache_sim),
                                   cwd=project_dir if side.app == "project" else ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Gunicorn(f"http://127.0.0.1:{port}", process, log_path)
    try:
        poll_until(lambda: _answers(server.url + "/healthz"), READY_UNDER_VALGRIND_S, f"{side.label} under valgrind")
        server.worker_pids = server.children()
        yield server, out_dir
    finally:
        server.stop()


def worker_counts(out_dir: Path, worker_pids: list[int]) -> dict[str, int]:
    """The worker's totals from its callgrind file, by event name (``Ir``, the
    instructions; with the cache simulation also ``Dr``, ``D1mr``, ``DLmr``, …).

    Raises:
        RuntimeError: when no worker wrote one (it was killed: valgrind writes at exit).
    """
    totals: dict[str, int] = {}
    for pid in worker_pids:
        path = out_dir / f"cg.{pid}"
        if not path.exists():
            continue
        lines = path.read_text().splitlines()
        names = next(line.split()[1:] for line in lines if line.startswith("events:"))
        values = next(line.split()[1:] for line in lines if line.startswith(("totals:", "summary:")))
        for name, value in zip(names, values, strict=False):  # trailing zeros may be left out
            totals[name] = totals.get(name, 0) + int(value)
    if not totals:
        raise RuntimeError(f"no callgrind totals from the workers {worker_pids} in {out_dir}")
    return totals


def count(side: Side, load: Load, cpus: tuple[str, str], tmp: Path, cache_sim: bool = False) -> dict[str, Any]:
    """Instructions (and with ``cache_sim``, cache misses) per stream of ``load``
    for ``side``: two runs, with and without it."""
    totals = {}
    for streams in (0, load.streams):
        with server_under_callgrind(side, load, cpus[0], tmp, cache_sim) as (server, out_dir):
            warm_up = Load(WARM_UP_STREAMS, load.tokens, load.delay_ms)
            run_loadgen(server.url, warm_up, cpus[1], 1.0, LOAD_TIMEOUT_S)
            if streams:
                result = run_loadgen(server.url, load, cpus[1], ramp_s(load), LOAD_TIMEOUT_S)
                if result.get("gap_free") != load.streams:
                    raise RuntimeError(f"{side.label}: {result.get('gap_free')} of {load.streams} streams gap-free")
            pids = server.worker_pids
        totals[streams] = worker_counts(out_dir, pids)
    per_stream = {name: (totals[load.streams].get(name, 0) - totals[0].get(name, 0)) / load.streams
                  for name in totals[0].keys() | totals[load.streams].keys()}
    return {"label": side.label, "app": side.app, "instructions_without": totals[0]["Ir"],
            "instructions_with": totals[load.streams]["Ir"], "instructions_per_stream": per_stream["Ir"],
            "instructions_per_event": per_stream["Ir"] / (load.tokens + 2), "per_stream": per_stream}


def ramp_s(load: Load) -> float:
    """Seconds over which the counted streams start: slow enough that a server
    under valgrind (about 50 times slower) stays below half a core. An overloaded
    server takes other paths than a loaded one (events that gathered go out in one
    write, a reader woken once for several), and the count would describe those."""
    valgrind_s_per_stream = VALGRIND_SLOWDOWN * (STREAM_CPU_S + load.tokens * EVENT_CPU_S)
    return max(1.0, load.streams * valgrind_s_per_stream / MAX_LOAD)


def print_table(load: Load, records: list[dict[str, Any]]) -> None:
    print(f"\n== instructions a gunicorn worker executes (callgrind, user space): {load.describe()}")
    print(f"   {'side':<34}{'per stream':>14}{'per event':>12}{'/ baseline':>12}")
    baseline = next((r for r in records if r["app"] == "baseline"), None)
    for record in records:
        ratio = record["instructions_per_stream"] / baseline["instructions_per_stream"] if baseline else float("nan")
        print(f"   {record['label']:<34}{record['instructions_per_stream']:>14,.0f}"
              f"{record['instructions_per_event']:>12,.0f}{ratio:>12.3f}")
    before = next((r for r in records if r["label"].startswith("project before")), None)
    project = next((r for r in records if r["label"] == "project"), None)
    if before and project:
        change = project["instructions_per_stream"] / before["instructions_per_stream"]
        print(f"   project / project before: {change:.4f}")
    print("   (events per stream: tokens + start + end; per event = per stream / events)")
    if "D1mr" in records[0]["per_stream"]:
        print_misses(records)


#: callgrind's cache events: reads and writes that missed the first-level data
#: cache, and the last-level cache (instruction fetches apart).
MISS_EVENTS = ("D1mr", "D1mw", "DLmr", "DLmw", "ILmr")


def print_misses(records: list[dict[str, Any]]) -> None:
    """The simulated cache misses per stream of each side (callgrind's model: no
    prefetching, the host's cache sizes)."""
    print(f"\n   simulated cache misses per stream\n   {'side':<34}" + "".join(f"{name:>10}" for name in MISS_EVENTS))
    for record in records:
        print(f"   {record['label']:<34}" + "".join(f"{record['per_stream'][name]:>10,.0f}" for name in MISS_EVENTS))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=300, help="streams counted per side (default 300)")
    parser.add_argument("--tokens", type=int, default=2, help="tokens per stream (default 2)")
    parser.add_argument("--delay-ms", type=int, default=50, help="the fake model's delay between tokens")
    parser.add_argument("--before", type=Path, help="also count the project from this checkout")
    parser.add_argument("--server-cpus", default="0", help="taskset list of the server (default 0)")
    parser.add_argument("--client-cpus", default="1", help="taskset list of the load generator (default 1)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--cache-sim", action="store_true",
                        help="also simulate the caches and print the misses per stream (about twice as slow)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if shutil.which("valgrind") is None:
        print("instructions.py needs valgrind: apt-get install valgrind", file=sys.stderr)
        return 2
    load = Load(args.streams, args.tokens, args.delay_ms)
    sides = [Side("project", "project"), Side("baseline", "baseline")]
    if args.before is not None:
        sides.insert(0, Side(f"project before ({args.before.name})", "project", str(args.before.resolve())))
    with tempfile.TemporaryDirectory(prefix="instructions-") as tmp:
        records = []
        for side in sides:
            print(f"  counting {side.label} ...", file=sys.stderr, flush=True)
            records.append(count(side, load, (args.server_cpus, args.client_cpus), Path(tmp), args.cache_sim))
    print_table(load, records)
    if args.json is not None:
        args.json.write_text(json.dumps({"load": load.__dict__, "sides": records}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

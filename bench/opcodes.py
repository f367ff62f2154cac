"""Where a gunicorn worker's Python work goes, per stream and per event, by
function: the bytecode instructions (opcodes) each function executes, in the
project's worker and the bare baseline's (and with ``--before DIR``, the project
from another checkout).

``instructions.py`` counts a worker's machine instructions, exactly but as one
total; cProfile and py-spy name functions, but under gevent they charge a
function with time other greenlets spent, and their times move with the
machine's load. This script runs each server with bench/opcode_counting_conf.py,
which counts the opcodes of every Python function (``sys.settrace``'s ``opcode``
events, in every greenlet) between two signals, sent once the warm-up streams
are over and the worker is idle, and once the counted streams have ended. Each
side runs twice, with streams of 2 tokens and of ``--tokens``, started over the
same ramp: the first gives what starting and ending a stream costs (with 2
events), the difference divided by the tokens added gives what one more event
costs. Functions are named by file and qualified name, so that ``--before``
compares two versions function by function however their lines moved. Two runs
of the same code give the same counts within a few in 10,000::

    .venv/bin/python bench/opcodes.py                        # 40 streams of 2 and of 62 tokens
    .venv/bin/python bench/opcodes.py --top 40 --before /tmp/before

An opcode is not a unit of time: a call into C (a ``send``, a dict lookup)
counts as one, and compiled code counts nothing of its own (the event loop,
greenlet switches, gevent's Cython-compiled ``Greenlet``, ``Event`` and
``Waiter``). So fewer opcodes are not always less CPU; but the interpreter's
loop is most of what a worker spends in user space. What runs on a clock (the
worker's heartbeat, a once-a-second metrics flush) is counted too; the longer
run lasts some seconds more, which adds under one opcode per event. Counting
makes the worker about 50 times slower; the streams start slowly enough to keep
it below half a core.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
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
    free_port,
    poll_until,
    run_loadgen,
    server_env,
)
from bench.instructions import WARM_UP_STREAMS, Side, ramp_s
from bench.opcode_counting import print_differences

COUNTING_CONFIG = ROOT / "bench" / "opcode_counting_conf.py"
#: Seconds the load generator may take while the worker counts.
LOAD_TIMEOUT_S = 600.0


def server_command(side: Side, port: int, cpus: str) -> list[str]:
    """gunicorn's command line for ``side`` with the counting settings, pinned to ``cpus``."""
    command = ["taskset", "-c", cpus, str(BIN / "gunicorn"), "-c", str(COUNTING_CONFIG)]
    if side.app == "baseline":
        command += ["--workers", "1", "--bind", f"127.0.0.1:{port}", BASELINE_APP]
    return [*command, "--timeout", str(int(LOAD_TIMEOUT_S))]


def count_run(side: Side, load: Load, ramp: float, cpus: tuple[str, str], tmp: Path) -> dict[str, float]:
    """Opcodes per stream of ``load`` (started over ``ramp`` seconds) for ``side``, by function.

    Raises:
        RuntimeError: a stream was not gap-free, or the worker wrote no counts.
    """
    port = free_port()
    project_dir = Path(side.project_dir or ROOT)
    out = Path(tempfile.mkdtemp(prefix="opcodes-", dir=tmp)) / "counts"
    env = server_env(Setup(side.label, side.app, cpus[0], cpus[1]), load, port, tmp, None)
    env["SSE_CHAT_BENCH_OPCODES_OUT"] = str(out)
    if side.app == "project":
        env["SSE_CHAT_BENCH_BASE_CONF"] = str(project_dir / "gunicorn.conf.py")
        if project_dir != ROOT:
            env["PYTHONPATH"] = str(project_dir)
    else:
        env["SSE_CHAT_BENCH_BASE_CONF"] = str(ROOT / BASELINE_CONFIG)
    log_path = tmp / f"{side.label}-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(server_command(side, port, cpus[0]),
                                   cwd=project_dir if side.app == "project" else ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Gunicorn(f"http://127.0.0.1:{port}", process, log_path)
    try:
        server.wait_ready(1)
        run_loadgen(server.url, Load(WARM_UP_STREAMS, load.tokens, load.delay_ms), cpus[1], 1.0, LOAD_TIMEOUT_S)
        server.wait_ready(1)  # idle again: the warm-up's last work (closes, a metrics flush) is not counted
        _signal_workers(server, signal.SIGUSR2)  # start counting
        result = run_loadgen(server.url, load, cpus[1], ramp, LOAD_TIMEOUT_S)
        _signal_workers(server, signal.SIGUSR2)  # stop, and write the counts
        if result.get("gap_free") != load.streams:
            raise RuntimeError(f"{side.label}: {result.get('gap_free')} of {load.streams} streams gap-free; "
                               f"the server's log ends:\n{server.log_tail()}")
        poll_until(lambda: len(list(out.parent.glob("counts.*"))) == len(server.worker_pids), LOAD_TIMEOUT_S,
                   f"{side.label}'s counts")
    finally:
        server.stop()
    files = list(out.parent.glob("counts.*"))
    per_stream: dict[str, float] = {}
    for path in files:
        for function, opcodes in json.loads(path.read_text()).items():
            per_stream[function] = per_stream.get(function, 0.0) + opcodes / load.streams
    return per_stream


def _signal_workers(server: Gunicorn, signum: int) -> None:
    for pid in server.worker_pids:
        os.kill(pid, signum)


def count(side: Side, streams: int, tokens: int, delay_ms: int, cpus: tuple[str, str],
          tmp: Path) -> dict[str, Any]:
    """``side``'s opcodes per stream of 2 tokens and per event beyond them, by function."""
    long_load = Load(streams, tokens, delay_ms)
    ramp = ramp_s(long_load)  # the same for both runs: what runs on a clock is counted over about the same time
    short = count_run(side, Load(streams, 2, delay_ms), ramp, cpus, tmp)
    long = count_run(side, long_load, ramp, cpus, tmp)
    per_event = {function: (long.get(function, 0.0) - short.get(function, 0.0)) / (tokens - 2)
                 for function in short.keys() | long.keys()}
    return {"label": side.label, "app": side.app, "per_stream": short, "per_event": per_event}


def print_report(records: list[dict[str, Any]], top: int) -> None:
    print("\n== opcodes a gunicorn worker executes (sys.settrace), by side")
    print(f"   {'side':<34}{'per stream (2 tokens)':>24}{'per more event':>16}")
    for record in records:
        print(f"   {record['label']:<34}{sum(record['per_stream'].values()):>24,.0f}"
              f"{sum(record['per_event'].values()):>16,.1f}")
    project = next(r for r in records if r["label"] == "project")
    other = next((r for r in records if r["label"].startswith("project before")), None) or \
        next(r for r in records if r["app"] == "baseline")
    for key, what in (("per_stream", "a stream of 2 tokens"), ("per_event", "each more event")):
        print(f"\n   {what}: the {top} functions that differ most, project against {other['label']}")
        print_differences(project[key], other[key], top, "project", other["label"])


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=40, help="streams counted per run (default 40)")
    parser.add_argument("--tokens", type=int, default=62, help="tokens per stream of the longer run (default 62)")
    parser.add_argument("--delay-ms", type=int, default=50, help="the fake model's delay between tokens")
    parser.add_argument("--top", type=int, default=25, help="functions listed (default 25)")
    parser.add_argument("--before", type=Path, help="also count the project from this checkout, and list "
                                                    "the functions against it instead of the baseline")
    parser.add_argument("--server-cpus", default="0", help="taskset list of the server (default 0)")
    parser.add_argument("--client-cpus", default="1", help="taskset list of the load generator (default 1)")
    parser.add_argument("--json", type=Path, help="also write the counts here")
    args = parser.parse_args(argv)
    if args.tokens <= 2:
        parser.error("--tokens must be more than 2")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    sides = [Side("project", "project"), Side("baseline", "baseline")]
    if args.before is not None:
        sides.insert(0, Side(f"project before ({args.before.name})", "project", str(args.before.resolve())))
    records = []
    with tempfile.TemporaryDirectory(prefix="opcodes-") as tmp:
        for side in sides:
            print(f"  counting {side.label} ...", file=sys.stderr, flush=True)
            records.append(count(side, args.streams, args.tokens, args.delay_ms,
                                 (args.server_cpus, args.client_cpus), Path(tmp)))
    print_report(records, args.top)
    if args.json is not None:
        args.json.write_text(json.dumps(records, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Where a gunicorn worker's CPU time goes, by Python function: the project and
the bare baseline under one of bench/compare.py's loads, sampled by ``perf``.

Opcode counts (opcodes.py) and callgrind's instructions (instructions.py) say
how much work each side does, not how long it takes: at ``steady`` the
project runs fewer of both and still spends more CPU per event. ``perf`` measures
the time, and from Python 3.12 on it can name the Python function each sample
was in: with ``PYTHONPERFSUPPORT=1`` the interpreter enters every Python
function through a trampoline of its own that it lists in ``/tmp/perf-PID.map``
(https://docs.python.org/3/howto/perf_profiling.html). Each sample is charged
to the innermost Python function on its stack, with the C code it called (a
``send`` system call is its caller's), and printed in microseconds of the
worker's CPU per delivered event.

The servers run from a virtualenv of Python 3.12 or later (the project's may be
older)::

    python3.12 -m venv /tmp/v312 && /tmp/v312/bin/pip install -e '.[server,fast]'
    .venv/bin/python bench/python_functions.py --venv /tmp/v312 --scenario steady

Needs ``perf`` (Debian's ``linux-perf``); the call graphs are unwound from
DWARF (``--call-graph dwarf``: CPython is built without frame pointers), so keep
the sampling frequency modest. One run per side: the figures move 5-10% between
runs; compare functions, not totals.
"""

from __future__ import annotations

import argparse
import collections
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.compare import ROOT, Load, Setup, run_loadgen, running_server, scenarios

#: Seconds the load generator may take.
LOAD_TIMEOUT_S = 600.0
#: Bytes of each sample's stack that perf copies for the DWARF unwinding.
STACK_BYTES = 16384
#: A Python function's symbol in the interpreter's perf map: ``py::{qualname}:{file}``.
PYTHON_SYMBOL = re.compile(r"^py::(?P<name>.+):(?P<file>[^:]+)$")


def record(setup: Setup, load: Load, venv: Path, frequency: int, tmp: Path) -> tuple[Path, int]:
    """Load ``setup`` with ``load``, its worker sampled by perf (``frequency`` samples
    a second); the perf data file and the events delivered.

    Raises:
        RuntimeError: a stream was not gap-free.
    """
    setup = replace(setup, bin_dir=str(venv / "bin"), env=(*setup.env, ("PYTHONPERFSUPPORT", "1")))
    data = tmp / f"{setup.app}.perf.data"
    with running_server(setup, load, tmp, None) as server:
        perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", str(frequency),
                                 "--call-graph", f"dwarf,{STACK_BYTES}", "-o", str(data),
                                 "-p", ",".join(map(str, server.children()))],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # perf attaches
        try:
            result = run_loadgen(server.url, load, setup.client_cpus, 1.0, LOAD_TIMEOUT_S)
        finally:
            perf.send_signal(signal.SIGINT)
            perf.wait()
    if result["gap_free"] != result["streams"]:
        raise RuntimeError(f"{setup.label}: {result['gap_free']} of {result['streams']} streams gap-free")
    return data, result["events"]


def samples_by_function(data: Path) -> collections.Counter[str]:
    """Samples by the innermost Python function on each sample's stack
    (``file:qualname``; ``(no Python)`` for a stack without one)."""
    script = subprocess.run(["perf", "script", "-i", str(data), "-F", "ip,sym"], capture_output=True, text=True,
                            check=True).stdout
    counts: collections.Counter[str] = collections.Counter()
    frames: list[str] = []
    for line in [*script.splitlines(), ""]:  # a blank line ends a sample's frames
        if line.strip():
            frames.append(line.split(None, 1)[-1].rsplit("+0x", 1)[0])  # "ip symbol+0xoffset"
        elif frames:
            counts[_innermost_python_function(frames)] += 1
            frames = []
    return counts


def _innermost_python_function(symbols: list[str]) -> str:
    for symbol in symbols:  # innermost first
        match = PYTHON_SYMBOL.match(symbol)
        if match:
            path = re.sub(r"^.*/(site-packages|lib/python3\.\d+)/", "", match["file"]).removeprefix(f"{ROOT}/")
            return f"{path}:{match['name']}"
    return "(no Python)"


def print_report(sides: dict[str, dict[str, float]], top: int) -> None:
    """Microseconds per event by function for each side, the ``top`` that differ most."""
    labels = list(sides)
    print(f"\n== worker CPU per event by innermost Python function (us), {' against '.join(labels)}")
    print("   " + "".join(f"{label[:10]:>11}" for label in labels) + "   change  function")
    totals = "".join(f"{sum(per_event.values()):>11.2f}" for per_event in sides.values())
    print(f"   {totals}           (all)")
    functions = set().union(*(per_event.keys() for per_event in sides.values()))
    first, second = (sides[label] for label in labels[:2])
    for function in sorted(functions, key=lambda f: -abs(first.get(f, 0.0) - second.get(f, 0.0)))[:top]:
        cells = "".join(f"{per_event.get(function, 0.0):>11.2f}" for per_event in sides.values())
        print(f"   {cells}{first.get(function, 0.0) - second.get(function, 0.0):>+9.2f}  {function}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, required=True,
                        help="a virtualenv of Python >= 3.12 with the project installed")
    parser.add_argument("--scenario", default="steady", choices=["steady", "crowd", "starts", "fast"])
    parser.add_argument("--frequency", type=int, default=1000, help="samples per second (default 1000)")
    parser.add_argument("--top", type=int, default=30, help="functions listed (default 30)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    version = subprocess.run([str(args.venv / "bin" / "python"), "-c",
                              "import sys; print(sys.version_info >= (3, 12))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    if version != "True":
        sys.exit(f"{args.venv}: its Python is older than 3.12, which cannot name functions for perf")
    scenario = scenarios(1.0, (0, 1), "client")[args.scenario]
    sides: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="python-functions-") as tmp:
        for setup in (scenario.a, scenario.b):
            print(f"  sampling {setup.label} ...", file=sys.stderr, flush=True)
            data, events = record(setup, scenario.load, args.venv, args.frequency, Path(tmp))
            per_sample_us = 1e6 / args.frequency
            sides[setup.label] = {function: count * per_sample_us / events
                                  for function, count in samples_by_function(data).items()}
    print_report(sides, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Benchmark: what starting a stream costs the WSGI app alone, sse-chat's against
the bare baseline's (bench/baseline_app.py), in CPU microseconds per request.

Each request is ``POST /v1/chat`` of one token with no delay, called on the WSGI
app in-process (no HTTP parsing, no sockets) and read to its end, under gevent as
in a worker: the app's log lines go to stderr (here /dev/null) and its metrics to
Prometheus's multiprocess files, as under gunicorn. What it measures is the cost
per stream that ``bench/compare.py``'s ``steady`` and ``crowd`` scenarios pay
once a stream, beside the cost per event: the Flask view, the body's checks,
access, limits, the producer greenlet, the reader, metrics and log lines. Each
app runs in a process of its own (gevent patches before the app is imported),
alternated ``--repeat`` times; medians. A measurement, not a test.

    python bench/request_cost.py                       # 3,000 requests each, 3 times
    python bench/request_cost.py --requests 10000 --repeat 5
    python bench/request_cost.py --profile 40          # also sse-chat's 40 costliest functions (cProfile)
    python bench/request_cost.py --opcodes 40          # where the project's extra bytecode goes, by function

cProfile inflates every Python call about alike, so its times are for ranking;
the CPU per request is measured without it. Under gevent it also charges a
function with time spent in other greenlets. ``--opcodes`` counts instead the
bytecode instructions each function executes per request (``sys.settrace``'s
``opcode`` events, in every greenlet), in both apps, and lists the functions by
how much more the project executes than the baseline. Two runs of the same
code differ by a few opcodes in 10,000, so a change that saves 1% of the app
shows. An opcode is not a unit of time (a call into C counts as one), but the
interpreter's loop is most of the app's CPU.
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and "--child" in sys.argv:  # before anything imports socket or threading
    from gevent import monkey

    monkey.patch_all()

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.opcode_counting import OpcodeCounter, print_differences  # the checkout's bench package

ROOT = Path(__file__).resolve().parent.parent
WARM_UP_REQUESTS = 200
#: Requests whose opcodes ``--opcodes`` counts (tracing is about 50 times slower).
OPCODE_REQUESTS = 500


def _app(kind: str) -> Callable[..., Any]:
    """The WSGI app of ``kind`` (``project`` or ``baseline``), set up as a worker sets it up."""
    if kind == "baseline":
        os.environ["SSE_CHAT_FAKE_DELAY_MS"] = "0"
        sys.path.insert(0, str(ROOT))
        from bench.baseline_app import app
        return app
    from sse_chat.app import create_app
    from sse_chat.config import Settings
    from sse_chat.gunicorn_worker import log_app_lines_to_stderr
    log_app_lines_to_stderr()
    return create_app(Settings.from_env({"SSE_CHAT_FAKE_DELAY_MS": "0", "SSE_CHAT_MAX_STREAMS": "1000000"}))


def _request(app: Callable[..., Any], number: int) -> int:
    """Call ``app`` with one ``POST /v1/chat`` of one token and read the answer;
    returns its length in bytes."""
    body = json.dumps({"prompt": f"question {number}", "max_tokens": 1}).encode()
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/chat", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80",
               "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
               "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/json", "REMOTE_ADDR": "127.0.0.1",
               "HTTP_HOST": "127.0.0.1", "wsgi.errors": sys.stderr, "wsgi.multithread": True,
               "wsgi.multiprocess": False, "wsgi.run_once": False, "wsgi.version": (1, 0)}
    answer = app(environ, lambda status, headers, exc_info=None: None)
    try:
        return sum(len(chunk) for chunk in answer)
    finally:
        getattr(answer, "close", lambda: None)()


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def opcodes_per_request(app: Callable[..., Any], requests: int) -> dict[str, float]:
    """Bytecode instructions executed per request of ``app``, by function
    (:class:`~bench.opcode_counting.OpcodeCounter`, names relative to this checkout)."""
    counter = OpcodeCounter()
    counter.start()
    try:
        for number in range(requests):
            _request(app, number)
    finally:
        counter.stop()
    return {name: count / requests for name, count in counter.by_function([str(ROOT)]).items()}


def child(kind: str, requests: int, profile: int, opcodes: bool) -> None:
    """Measure ``requests`` requests of ``kind`` in this process; print a JSON line
    (with ``opcodes``, also their opcodes per request by function)."""
    app = _app(kind)
    for number in range(WARM_UP_REQUESTS):
        assert _request(app, number) > 0
    started = _cpu_s()
    for number in range(requests):
        _request(app, number)
    us_per_request = (_cpu_s() - started) / requests * 1e6
    figures: dict[str, Any] = {"kind": kind, "us_per_request": us_per_request}
    if opcodes:
        figures["opcode_requests"] = min(requests, OPCODE_REQUESTS)
        figures["opcodes"] = opcodes_per_request(app, figures["opcode_requests"])
    print(json.dumps(figures), flush=True)
    if profile:
        import cProfile
        import pstats
        profiler = cProfile.Profile()
        profiler.enable()
        for number in range(requests):
            _request(app, number)
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats("sse_chat", profile)
        print(out.getvalue(), file=sys.stdout, flush=True)


def _run_child(kind: str, requests: int, profile: int, opcodes: bool = False) -> tuple[dict[str, Any], str]:
    """The child's figures (its JSON line) and its profile's text."""
    with tempfile.TemporaryDirectory(prefix="sse-chat-metrics-") as metrics_dir:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir, "PYTHONPATH": str(ROOT)}
        ran = subprocess.run([sys.executable, __file__, "--child", kind, "--requests", str(requests),
                              "--profile", str(profile), *(["--opcodes", "1"] if opcodes else [])],
                             env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             check=True, timeout=600)
    first, _, rest = ran.stdout.partition("\n")
    return json.loads(first), rest


def print_opcodes(project: dict[str, float], baseline: dict[str, float], top: int, requests: int) -> None:
    """The opcodes per request of both apps (counted over ``requests`` requests),
    and the ``top`` functions by how many more the project executes than the
    baseline (negative: fewer)."""
    print(f"Opcodes per request (sys.settrace, {requests:,} requests): project {sum(project.values()):,.0f}, "
          f"baseline {sum(baseline.values()):,.0f}, difference {sum(project.values()) - sum(baseline.values()):,.0f}")
    print_differences(project, baseline, top, "project", "baseline")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="requests per run (default 3,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each app, alternated (default 3)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="after the last run, sse-chat's N costliest functions (cProfile, cumulative)")
    parser.add_argument("--opcodes", type=int, default=0, metavar="N",
                        help="after the runs, count both apps' opcodes per request and list the N functions "
                             "whose counts differ most")
    parser.add_argument("--child", choices=("project", "baseline"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.requests, args.profile, bool(args.opcodes))
        return
    figures: dict[str, list[float]] = {"project": [], "baseline": []}
    opcodes: dict[str, dict[str, float]] = {}
    profile_text = ""
    for round_number in range(args.repeat):
        for kind in figures:
            last = round_number == args.repeat - 1
            ran, text = _run_child(kind, args.requests, args.profile if last and kind == "project" else 0,
                                   bool(args.opcodes) and last)
            figures[kind].append(ran["us_per_request"])
            opcodes[kind] = ran.get("opcodes", {})
            profile_text = text or profile_text
    project, baseline = (statistics.median(figures[kind]) for kind in ("project", "baseline"))
    print(f"CPU per request, POST /v1/chat of one token, WSGI app alone, medians of {args.repeat} runs "
          f"of {args.requests:,} requests each:")
    print(f"   project    {project:8.1f} us   (runs: {', '.join(f'{us:.1f}' for us in figures['project'])})")
    print(f"   baseline   {baseline:8.1f} us   (runs: {', '.join(f'{us:.1f}' for us in figures['baseline'])})")
    print(f"   project - baseline {project - baseline:8.1f} us per stream;   "
          f"project / baseline {project / baseline:.2f}")
    if profile_text:
        print(profile_text)
    if args.opcodes:
        print_opcodes(opcodes["project"], opcodes["baseline"], args.opcodes, min(args.requests, OPCODE_REQUESTS))


if __name__ == "__main__":
    main()

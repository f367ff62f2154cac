"""Run one load (N concurrent streams) with :mod:`loadgen` and print a JSON summary.

Meant to run in its own process, pinned to its own core by the caller
(``taskset -c 1 python bench/loadgen_cli.py ...``), so that the load generator
and the server do not compete for a CPU. Raises its own open-files limit so
that thousands of connections fit.

    python bench/loadgen_cli.py --url http://127.0.0.1:8000 --streams 100 --tokens 2000 --ramp-s 1

The summary (one JSON object on stdout): ``streams``, ``gap_free`` (streams that
ended with ``done`` and ids 0, 1, 2, … without gaps), ``failures`` (up to 5
examples), ``events``, ``wall_s`` (seconds from the first connect to the last
stream's end, ramp included), ``events_per_s``, ``first_event_p50_ms`` /
``first_event_p99_ms`` (from connect to the first event, milliseconds),
``first_token_p50_ms`` / ``first_token_p99_ms`` (from connect to the second
event, the first after ``start``: what a person waits for, milliseconds),
``gap_p50_ms`` / ``gap_p99_ms`` (between consecutive events of a stream,
milliseconds), ``gap_p99_settled_ms`` (the same, of the events that arrived
:data:`SETTLE_S` seconds or more after the ramp ended: the steady state, without
the backlog that starting every stream leaves), ``client_cpu_s`` (this process's
user + system CPU seconds during the load).

During the load it only keeps each read with its time (``record=True``) and
decodes the reads once the load is over, outside ``client_cpu_s`` and ``wall_s``:
decoding as it read kept its core 88% busy at 3,000 streams, and its own queue
then added to the latencies it recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from typing import Any

from sse_chat.testing.loadgen import StreamResult, decode_recording, percentile, run_stream

#: Open files wanted: one socket per stream plus slack.
NOFILE_SLACK = 256
MAX_FAILURE_EXAMPLES = 5
#: Seconds after the ramp from which gaps count as the steady state's.
SETTLE_S = 1.0


def raise_nofile(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE to at least ``needed`` (up to the hard limit);
    return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


async def run_all(url: str, bodies: list[dict], ramp_s: float, timeout_s: float,
                  record: bool = False) -> list[StreamResult]:
    """Start one stream per body, spread evenly over ``ramp_s`` seconds, and read
    them all; streams still running after ``timeout_s`` seconds are cancelled and
    reported as failed, with the events they got. With ``record``, the results
    hold their reads undecoded (:func:`~sse_chat.testing.loadgen.decode_recording`)."""
    results = [StreamResult() for _ in bodies]

    async def one(index: int) -> None:
        await asyncio.sleep(ramp_s * index / len(bodies))
        await run_stream(url, bodies[index], results[index], record=record)

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


def summarize(results: list[StreamResult], wall_s: float, client_cpu_s: float,
              settled_after_s: float | None = None) -> dict[str, Any]:
    """The JSON summary described in the module docstring; ``settled_after_s``
    (seconds from the first stream's start) is where the steady state begins
    (``None``: no ``gap_p99_settled_ms``).

    Raises:
        ValueError: a result still holds undecoded reads (:func:`decode_recording` first).
    """
    if any(result.recording is not None for result in results):
        raise ValueError("summarize() got results whose reads are not decoded yet: decode_recording() them first")
    events = sum(len(r.seqs) for r in results)
    first = [(r.first_event - r.started) * 1000 for r in results if r.first_event is not None]
    first_token = [(r.event_times[1] - r.started) * 1000 for r in results if len(r.event_times) > 1]
    gaps = _gaps_ms(results)
    starts = [r.started for r in results if r.started]
    settled = _gaps_ms(results, min(starts) + settled_after_s) if settled_after_s is not None and starts else []
    failed = [r for r in results if not r.gap_free]
    return {
        "streams": len(results),
        "gap_free": len(results) - len(failed),
        "failures": [_describe_failure(r) for r in failed[:MAX_FAILURE_EXAMPLES]],
        "events": events,
        "wall_s": wall_s,
        "events_per_s": events / wall_s if wall_s > 0 else 0.0,
        "first_event_p50_ms": percentile(first, 50),
        "first_event_p99_ms": percentile(first, 99),
        "first_token_p50_ms": percentile(first_token, 50),
        "first_token_p99_ms": percentile(first_token, 99),
        "gap_p50_ms": percentile(gaps, 50),
        "gap_p99_ms": percentile(gaps, 99),
        "gap_p99_settled_ms": percentile(settled, 99) if settled else None,
        "client_cpu_s": client_cpu_s,
    }


def _gaps_ms(results: list[StreamResult], since: float = float("-inf")) -> list[float]:
    """Milliseconds between consecutive events of each stream, for the events that
    arrived at ``since`` (``time.perf_counter()`` seconds) or later."""
    return [(b - a) * 1000 for r in results for a, b in zip(r.event_times, r.event_times[1:], strict=False)
            if b >= since]


def _describe_failure(result: StreamResult) -> str:
    if result.error:
        return f"{result.error} (after {len(result.seqs)} events)"
    described = f"{len(result.seqs)} events, ids in order: {result.seqs == list(range(len(result.seqs)))}"
    if result.terminal == "error":
        return f"{described}, ended with error {result.error_data}"
    return f"{described}, terminal event {result.terminal!r}"


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--tokens", type=int, required=True, help="max_tokens of each stream")
    parser.add_argument("--ramp-s", type=float, default=1.0, help="spread stream starts over this many seconds")
    parser.add_argument("--timeout-s", type=float, default=90.0, help="give up on streams after this many seconds")
    args = parser.parse_args()

    raise_nofile(args.streams + NOFILE_SLACK)
    bodies = [{"prompt": f"bench {i}", "model": "fake", "max_tokens": args.tokens} for i in range(args.streams)]
    cpu_before, began = _cpu_s(), time.perf_counter()
    results = asyncio.run(run_all(args.url, bodies, args.ramp_s, args.timeout_s, record=True))
    wall_s, client_cpu_s = time.perf_counter() - began, _cpu_s() - cpu_before
    for result in results:  # after the load: decoding is not the client's work while it measures
        decode_recording(result)
    json.dump(summarize(results, wall_s, client_cpu_s, args.ramp_s + SETTLE_S), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

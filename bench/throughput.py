"""Benchmark: N concurrent fake-model streams against gunicorn with gevent workers.

Prints events per second, time to first event and the gap between events
(p50/p99, milliseconds) and the server's peak RSS. A measurement, not a test.

    python bench/throughput.py --streams 100 --tokens 2000 --delay-ms 0
    python bench/throughput.py --streams 1000 --tokens 200 --delay-ms 50      # 20 tokens/s
    python bench/throughput.py --streams 100 --tokens 2000 --delay-ms 0 --redis   # Redis log
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import tempfile
import time
from pathlib import Path

from sse_chat.testing.loadgen import percentile, run_many
from sse_chat.testing.redis_server import RedisServer
from sse_chat.testing.servers import PeakRss, start_gunicorn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--delay-ms", type=int, default=0, help="fake model delay per token (SSE_CHAT_FAKE_DELAY_MS)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--redis", action="store_true", help="use a Redis Streams event log (starts redis-server)")
    parser.add_argument("--ramp-s", type=float, default=1.0, help="spread stream starts over this many seconds")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sse-chat-bench-"))
    env = {"SSE_CHAT_FAKE_DELAY_MS": str(args.delay_ms), "WEB_CONCURRENCY": str(args.workers)}
    redis = RedisServer(tmp) if args.redis else None  # waits until it answers PING
    try:
        if redis is not None:
            env["SSE_CHAT_REDIS_URL"] = redis.url
        server = start_gunicorn(tmp, **env)
        try:
            bodies = [{"prompt": f"bench {i}", "model": "fake", "max_tokens": args.tokens}
                      for i in range(args.streams)]
            with PeakRss(lambda: [server.process.pid, *server.worker_pids()]) as rss:
                began = time.perf_counter()
                results = asyncio.run(run_many(server.url, bodies, ramp_s=args.ramp_s))
                wall_s = time.perf_counter() - began
        finally:
            server.stop()
    finally:
        if redis is not None:
            redis.stop()
    report(args, results, wall_s, rss.peak_kib)


def report(args, results, wall_s: float, peak_kib: int) -> None:
    events = sum(len(r.seqs) for r in results)
    ttfe = [(r.first_event - r.started) * 1000 for r in results if r.first_event]
    gaps = [(b - a) * 1000 for r in results for a, b in itertools.pairwise(r.event_times)]
    failed = [r for r in results if not r.gap_free]
    log = "redis" if args.redis else "memory"
    print(f"streams={args.streams} tokens={args.tokens} delay_ms={args.delay_ms} workers={args.workers} log={log}")
    print(f"  complete, gap-free streams: {len(results) - len(failed)}/{len(results)}"
          + (f" (first failure: {failed[0].error or failed[0].terminal})" if failed else ""))
    print(f"  events: {events} in {wall_s:.2f} s = {events / wall_s:,.0f} events/s")
    print(f"  time to first event: p50 {percentile(ttfe, 50):.1f} ms, p99 {percentile(ttfe, 99):.1f} ms")
    print(f"  gap between events:  p50 {percentile(gaps, 50):.2f} ms, p99 {percentile(gaps, 99):.2f} ms")
    print(f"  server peak RSS (master + workers): {peak_kib / 1024:.1f} MiB")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

"""Benchmark: the cost of a resume. Runs finished streams, then reconnects to each
at a random event with Last-Event-ID and measures the time from the reconnect to
the first replayed event (p50/p99, milliseconds), one at a time and all at once;
with the memory log (one worker) or the Redis log (``--redis``, two workers).

    python bench/resume.py --streams 200 --tokens 500
    python bench/resume.py --streams 200 --tokens 500 --redis
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

from sse_chat.testing.loadgen import percentile, resume_stream, run_many
from sse_chat.testing.redis_server import RedisServer
from sse_chat.testing.servers import start_gunicorn


async def _resume_all(url: str, ids: list[str], concurrent: bool):
    if concurrent:
        return await asyncio.gather(*(resume_stream(url, i) for i in ids))
    return [await resume_stream(url, i) for i in ids]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=500)
    parser.add_argument("--redis", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sse-chat-bench-"))
    env = {"SSE_CHAT_FAKE_DELAY_MS": "0"}
    redis = RedisServer(tmp) if args.redis else None  # waits until it answers PING
    if redis is not None:
        env.update(SSE_CHAT_REDIS_URL=redis.url, WEB_CONCURRENCY="2")
    try:
        server = start_gunicorn(tmp, **env)
    except BaseException:  # do not leave redis-server behind
        if redis is not None:
            redis.stop()
        raise
    rng = random.Random(0)
    try:
        bodies = [{"prompt": f"resume {i}", "model": "fake", "max_tokens": args.tokens} for i in range(args.streams)]
        streams = asyncio.run(run_many(server.url, bodies))
        picks = [(r, rng.randrange(0, len(r.seqs) - 1)) for r in streams]
        ids = [f"{r.stream_id}:{seq}" for r, seq in picks]
        print(f"log={'redis, 2 workers' if args.redis else 'memory, 1 worker'} "
              f"streams={args.streams} tokens={args.tokens}")
        for concurrent in (False, True):
            began = time.perf_counter()
            results = asyncio.run(_resume_all(server.url, ids, concurrent))
            wall = time.perf_counter() - began
            exact = sum(r.seqs == list(range(seq + 1, len(s.seqs))) for r, (s, seq) in zip(results, picks, strict=True))
            ttfe = [(r.first_event - r.started) * 1000 for r in results if r.first_event]
            events = sum(len(r.seqs) for r in results)
            print(f"  {'all at once' if concurrent else 'one at a time'}: reconnect to first replayed event "
                  f"p50 {percentile(ttfe, 50):.2f} ms, p99 {percentile(ttfe, 99):.2f} ms; "
                  f"{exact}/{len(results)} replays exact; {events / wall:,.0f} replayed events/s")
    finally:
        server.stop()
        if redis is not None:
            redis.stop()


if __name__ == "__main__":
    main()

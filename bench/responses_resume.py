"""Benchmark: the cost of resuming a Responses stream. A resume with
``starting_after=N`` reads the stream's events again from its start and turns them
into Responses events to find where N falls; this measures what that costs against a
resume of the same stream with ``Last-Event-ID`` on ``/v1/streams`` (which starts
at the event given), as the time from the request to the first event and to the
last (p50/p99, milliseconds), requests one at a time, alternated, at random
positions of finished streams.

    python bench/responses_resume.py --responses 100 --tokens 1000
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import httpx

from sse_chat.testing.loadgen import percentile
from sse_chat.testing.servers import start_gunicorn


def _timed(client: httpx.Client, url: str, **options) -> tuple[float, float, int]:
    """Seconds to the first event and to the end of the response, and its events."""
    began = time.perf_counter()
    first, events = 0.0, 0
    with client.stream("GET", url, **options) as answer:
        for line in answer.iter_lines():
            if line.startswith("data:"):
                events += 1
                first = first or time.perf_counter() - began
    return first, time.perf_counter() - began, events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--responses", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=1000)
    args = parser.parse_args()
    server = start_gunicorn(Path(tempfile.mkdtemp(prefix="sse-chat-bench-")), SSE_CHAT_FAKE_DELAY_MS="0")
    rng = random.Random(0)
    timings: dict[str, list[tuple[float, float, int]]] = {"responses": [], "streams": []}
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for n in range(args.responses):
                body = {"model": "fake", "input": f"resume {n}", "max_output_tokens": args.tokens}
                response = client.post("/v1/responses", json=body).json()
                stream_id = response["id"].removeprefix("resp_")
                token = rng.randrange(1, args.tokens)  # resume after this token's event, on both surfaces
                after = token + 3  # created, in_progress, output_item.added, content_part.added, then deltas
                timings["responses"].append(_timed(client, f"/v1/responses/{response['id']}",
                                                   params={"stream": "true", "starting_after": after}))
                timings["streams"].append(_timed(client, f"/v1/streams/{stream_id}",
                                                 headers={"Last-Event-ID": f"{stream_id}:{token}"}))
    finally:
        server.stop()
    print(f"memory log, 1 worker; {args.responses} finished responses of {args.tokens} tokens, "
          f"resumed at random positions")
    for name, rows in timings.items():
        first = [row[0] * 1000 for row in rows]
        whole = [row[1] * 1000 for row in rows]
        print(f"  {name:9}: first event p50 {percentile(first, 50):6.2f} ms, p99 {percentile(first, 99):6.2f} ms; "
              f"whole rest p50 {percentile(whole, 50):6.2f} ms; {sum(row[2] for row in rows):,} events")
    ratio = percentile([r[0] for r in timings["responses"]], 50) / percentile([r[0] for r in timings["streams"]], 50)
    print(f"  first event, responses / streams: {ratio:.1f} x")
    print(json.dumps({"ratio_first_event_p50": round(ratio, 2)}))


if __name__ == "__main__":
    main()

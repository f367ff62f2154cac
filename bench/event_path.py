"""Benchmark: the CPU cost of one event's way from the producer to the socket, in
one process, without HTTP, the network or the model's pauses.

``--streams`` streams are created in a memory event log; each has a reader
(:func:`sse_chat.streaming.reader.read_stream`, as a response body served by a
greenlet of its own) that waits caught up, with a
:class:`sse_chat.gunicorn_worker.ResponseWriter` on a
:class:`sse_chat.gunicorn_worker.ClientSocket` for the producer's direct writes.
The socket under it is a stand-in whose ``send`` is a C function that takes the
bytes and sends nothing (:func:`operator.length_hint`), so what is timed is the Python of the path:
the producer's append (``Producer._append_token``), the log, the wake-up, the
reader's offer, the response writer and the socket. Then each round appends one
token to every stream in turn, as producers whose tokens come due one after the
other would, and the figure is the CPU time (``time.process_time``) per event.

The streams take their turns round-robin, so each event touches the objects of
a stream that ran ``--streams`` events ago, as under load; with few streams,
everything stays in the processor's caches.

    python bench/event_path.py                          # 1,000 streams x 50 events, 5 repeats
    python bench/event_path.py --streams 10             # the same path, its objects in cache
    python bench/event_path.py --profile 25             # and the functions that cost most (cProfile)

The figure leaves out what a server adds around it (the greenlet switch and the
timer of the model's pause, the ``send`` system call: about 10 us of a worker's
CPU per event on loopback, bench/python_functions.py); it is for comparing one
version of the path with another (``git stash``, run again), not with
bench/compare.py's CPU per event.
"""

from __future__ import annotations

import argparse
import cProfile
import operator
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from gevent import monkey

monkey.patch_all()

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gevent  # noqa: E402

from sse_chat.eventlog import MemoryEventLog  # noqa: E402
from sse_chat.eventlog.wakeups import Wakeups  # noqa: E402
from sse_chat.gunicorn_worker import ClientSocket, ResponseWriter  # noqa: E402
from sse_chat.models import ChatRequest, Message  # noqa: E402
from sse_chat.models.fake import FakeModel  # noqa: E402
from sse_chat.streaming import reader as reader_module  # noqa: E402
from sse_chat.streaming.producer import Producer, ProducerLimits  # noqa: E402
from sse_chat.streaming.reader import ReaderSettings, ReadFrom, read_stream  # noqa: E402

#: The text of every token (the fake model's tokens are words of a few characters).
TOKEN = " tokens"


class _SinkSocket:
    """The socket under a :class:`ClientSocket`: ``send(data, flags)`` takes every
    byte and sends nothing, in a C function as a real socket's is
    (:func:`operator.length_hint` returns ``len(data)``)."""

    send = staticmethod(operator.length_hint)

    def fileno(self) -> int:
        return -1


class _GeventSocket:
    """What :class:`ClientSocket` reads of gevent's socket."""

    def __init__(self) -> None:
        self._sock = _SinkSocket()

    def recv(self, size: int) -> bytes:
        return b""

    def settimeout(self, timeout: float | None) -> None:
        pass

    def gettimeout(self) -> float | None:
        return None

    def setblocking(self, flag: bool) -> None:
        pass


class _Response:
    """What :class:`ResponseWriter` reads of gunicorn's response."""

    def __init__(self) -> None:
        self.sock = ClientSocket(_GeventSocket())
        self.chunked = True
        self.headers_sent = True
        self.response_length = None
        self.sent = 0


def _serve(body: Any) -> None:
    """Iterate ``body`` as a WSGI server would (what it yields goes nowhere)."""
    for _ in body:
        pass


def start_streams(count: int) -> tuple[list[Producer], list[Any]]:
    """``count`` streams, each with a producer (not run: the caller appends its
    tokens) and a reader greenlet waiting caught up."""
    log = MemoryEventLog(ttl_s=3600, max_events=1_000_000, wakeups=Wakeups(cooperative=True, tick_s=3600))
    readers = ReaderSettings(log, retry_ms=1000, heartbeat_s=3600)
    request = ChatRequest((Message("user", "hi"),), "fake", max_tokens=1)
    producers, servers = [], []
    for number in range(count):
        producer = Producer(log, f"s{number}", FakeModel(delay_s=0), request, ProducerLimits(abandon_s=3600))
        producer.create_stream(owner=None)
        body = read_stream(readers, ReadFrom(f"s{number}", -1))
        body.write_directly(ResponseWriter(_Response()))
        producers.append(producer)
        servers.append(gevent.spawn(_serve, body))
    gevent.sleep(0)  # every reader has written its first write and waits
    return producers, servers


def one_round(producers: list[Producer]) -> None:
    """One token appended to every stream, one stream after the other."""
    for producer in producers:
        producer._append_token(TOKEN)


def timed_rounds(producers: list[Producer], rounds: int) -> float:
    """CPU microseconds per event over ``rounds`` rounds."""
    started = time.process_time()
    for _ in range(rounds):
        one_round(producers)
    return (time.process_time() - started) / (rounds * len(producers)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000, help="streams taking turns (default 1,000)")
    parser.add_argument("--events", type=int, default=50, help="events per stream and repeat (default 50)")
    parser.add_argument("--repeat", type=int, default=5, help="timed repeats; the median is printed (default 5)")
    parser.add_argument("--profile", type=int, metavar="N", help="also list the N functions that cost most")
    args = parser.parse_args()
    reader_module.DIRECT_MIN_GAP_S = 0.0  # every event is written directly, as at 20 tokens/s
    producers, _servers = start_streams(args.streams)
    timed_rounds(producers, 2)  # warm up: specialised bytecode, allocator pools
    figures = [timed_rounds(producers, args.events) for _ in range(args.repeat)]
    events = sum(producer.events_written for producer in producers)
    print(f"{args.streams:,} streams, {args.events} events each per repeat, {args.repeat} repeats: "
          f"{statistics.median(figures):.2f} us of CPU per event (median; runs "
          f"{min(figures):.2f}-{max(figures):.2f}); {events:,} events in all")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(timed_rounds, producers, args.events)
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.profile)


if __name__ == "__main__":
    main()

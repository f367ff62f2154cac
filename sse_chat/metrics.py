"""Prometheus metrics (``GET /metrics``), with prometheus-client.

Under gunicorn, ``PROMETHEUS_MULTIPROC_DIR`` (set by ``gunicorn.conf.py``) makes
every worker write its values to files there, and ``/metrics`` adds up all
workers' (prometheus-client's multiprocess mode).
https://prometheus.github.io/client_python/multiprocess/

Each such write takes a lock, asks the kernel for the process id and writes a
memory-mapped file: about 10 us for the changes one stream makes. A
gunicorn worker therefore gathers the changes of its counters, gauges and
histograms and writes them once a second (:meth:`Metrics.defer_writes`).
"""

from __future__ import annotations

import logging
import os
from bisect import bisect_left
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from .background import every

log = logging.getLogger(__name__)

#: Time-to-first-token buckets, seconds.
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """This application's metrics, registered in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        registry = self.registry
        self.active_streams = Gauge("sse_chat_active_streams", "Streams whose producer is running.",
                                    registry=registry, multiprocess_mode="livesum")
        self.streams_started = Counter("sse_chat_streams_started", "Streams started, by backend (fake or upstream).",
                                       ["backend"], registry=registry)
        self.streams_ended = Counter("sse_chat_streams_ended", "Streams ended, by terminal event and reason.",
                                     ["event", "reason"], registry=registry)
        self.events_sent = Counter("sse_chat_events_sent", "Events written to clients.", registry=registry)
        self.repeated_starts = Counter("sse_chat_repeated_starts",
                                       "Starts answered with the stream an earlier request with the same "
                                       "Idempotency-Key started.", registry=registry)
        self.resumes = Counter("sse_chat_resumes", "Requests that resumed a stream from a last event id.",
                               registry=registry)
        self.client_disconnects = Counter("sse_chat_client_disconnects",
                                          "Readers that left before the end of their stream.", registry=registry)
        self.upstream_errors = Counter("sse_chat_upstream_errors", "Upstream failures, by error type.", ["type"],
                                       registry=registry)
        self.tool_calls = Counter("sse_chat_tool_calls", "Calls of server tools, by tool and outcome (ok, or "
                                  "the tool_result's error type).", ["tool", "outcome"], registry=registry)
        self.time_to_first_token = Histogram("sse_chat_time_to_first_token_seconds",
                                             "Seconds from the start of generation to the first token.",
                                             registry=registry, buckets=TTFT_BUCKETS)

        # While writes are deferred: the changes not written yet, by metric child.
        self._pending: dict[Any, float] | None = None

    def count(self, metric: Any, *values: str, amount: float = 1.0) -> None:
        """Add ``amount`` to the counter or gauge ``metric`` (its child for the label
        ``values``; a negative ``amount`` only for a gauge): at once, or, after
        :meth:`defer_writes`, at the next :meth:`flush`."""
        child = self._child((metric, values))  # wrong labels raise here, not at the flush
        pending = self._pending
        if pending is None:
            child.inc(amount)
        else:
            pending[child] = pending.get(child, 0.0) + amount

    def observe(self, histogram: Histogram, value: float) -> None:
        """Observe ``value`` in ``histogram`` (one without labels, or a child): at
        once, or, after :meth:`defer_writes`, gathered into its bucket's count and
        its sum and written at the next :meth:`flush`, as
        :meth:`prometheus_client.Histogram.observe` would have written it: the
        first bucket whose upper bound is at least ``value`` counts it. (The
        buckets and the sum are the histogram's own values, ``_upper_bounds``,
        ``_buckets`` and ``_sum`` in prometheus-client 0.20 to 0.26;
        ``tests/test_metrics_writes.py`` holds the two ways to the same figures. A
        histogram without them, from another version, is observed at once.)"""
        pending = self._pending
        bounds = getattr(histogram, "_upper_bounds", None)
        buckets = getattr(histogram, "_buckets", None)
        total = getattr(histogram, "_sum", None)
        if pending is None or bounds is None or buckets is None or total is None:
            histogram.observe(value)
            return
        bucket = buckets[bisect_left(bounds, value)]
        pending[bucket] = pending.get(bucket, 0.0) + 1.0
        pending[total] = pending.get(total, 0.0) + value

    def defer_writes(self, every_s: float) -> None:
        """From now on :meth:`count` only gathers changes, and :meth:`flush` writes
        them: every ``every_s`` seconds in the background
        (:func:`~sse_chat.background.every`), before :meth:`exposition`, and when
        the owner flushes (a worker that stops)."""
        self._pending = {}
        every(every_s, self.flush, "metrics-flush")

    def flush(self) -> None:
        """Write the changes gathered since the last flush (none unless deferred).
        A change that cannot be written (a negative amount for a counter) is
        logged, and the others are written."""
        pending = self._pending
        if not pending:
            return
        self._pending = {}
        for child, amount in pending.items():
            if amount:
                try:
                    child.inc(amount)
                except ValueError:
                    log.exception("a metric change could not be written: %+g to %r", amount, child)

    def _child(self, key: tuple[Any, tuple[str, ...]]) -> Any:
        """``metric.labels(*values)`` (the metric itself without values), kept here
        after the first call: skips prometheus-client's lock and label checks.
        Keeps one child per label set, as prometheus-client does."""
        child = self._children.get(key)
        if child is None:
            metric, values = key
            child = self._children[key] = metric.labels(*values) if values else metric
        return child

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text format of every worker's metrics (multiprocess mode)
        or of this process's, and its content type; this process's deferred changes
        are written first."""
        self.flush()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

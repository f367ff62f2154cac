"""sse_chat/metrics.py's writes: at once, or gathered and written at a flush
(what a gunicorn worker does, in prometheus-client's multiprocess mode)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sse_chat import metrics as metrics_module
from sse_chat.metrics import Metrics


@pytest.fixture
def timers(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, object, str]]:
    """The background timers metrics start (none runs)."""
    started: list[tuple[float, object, str]] = []
    monkeypatch.setattr(metrics_module, "every", lambda *args: started.append(args))
    return started


def _values(metrics: Metrics) -> dict[str, float]:
    """This process's samples, as /metrics gives them, without flushing first."""
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    return {f"{sample.name}{sorted(sample.labels.items())}": sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


STARTED = "sse_chat_streams_started_total[('backend', 'fake')]"
ACTIVE = "sse_chat_active_streams[]"


def test_without_deferring_a_count_is_written_at_once(timers):
    metrics = Metrics()
    metrics.count(metrics.streams_started, "fake")
    metrics.count(metrics.active_streams)
    assert _values(metrics)[STARTED] == 1 and _values(metrics)[ACTIVE] == 1
    assert timers == []


def test_deferred_counts_gather_and_a_flush_writes_their_sums(timers):
    metrics = Metrics()
    metrics.defer_writes(1.0)
    assert [(interval, callback) for interval, callback, _ in timers] == [(1.0, metrics.flush)]
    for _ in range(3):
        metrics.count(metrics.streams_started, "fake")
        metrics.count(metrics.active_streams)
    metrics.count(metrics.active_streams, amount=-2)
    metrics.count(metrics.events_sent, amount=40)
    assert _values(metrics).get(STARTED, 0) == 0 and _values(metrics)[ACTIVE] == 0
    metrics.flush()
    values = _values(metrics)
    assert (values[STARTED], values[ACTIVE], values["sse_chat_events_sent_total[]"]) == (3, 1, 40)
    metrics.flush()  # nothing gathered since: nothing written twice
    assert _values(metrics)[STARTED] == 3


def _ttft_samples(metrics: Metrics) -> dict[str, float]:
    return {name: value for name, value in _values(metrics).items()
            if "time_to_first_token" in name and "_created" not in name}


#: Times to first token on and around the buckets' bounds (0.01, 0.025, ... 30 s) and past the last.
TTFTS = (0.0, 0.004, 0.01, 0.0100001, 0.05, 0.2, 0.25, 1.0, 7.5, 30.0, 45.0, 0.05)


def test_deferred_observations_are_written_at_a_flush_as_prometheus_would_write_them(timers):
    at_once, deferred = Metrics(), Metrics()
    deferred.defer_writes(1.0)
    for seconds in TTFTS:
        at_once.observe(at_once.time_to_first_token, seconds)
        deferred.observe(deferred.time_to_first_token, seconds)
    assert _ttft_samples(deferred)["sse_chat_time_to_first_token_seconds_count[]"] == 0
    deferred.flush()
    written = _ttft_samples(deferred)
    assert written == _ttft_samples(at_once)
    assert written["sse_chat_time_to_first_token_seconds_count[]"] == len(TTFTS)
    assert written["sse_chat_time_to_first_token_seconds_bucket[('le', '0.01')]"] == 3  # 0, 0.004 and 0.01 itself
    assert written["sse_chat_time_to_first_token_seconds_bucket[('le', '30.0')]"] == len(TTFTS) - 1


def test_a_histogram_without_prometheus_clients_inner_values_is_observed_at_once(timers):
    class OtherHistogram:  # as a prometheus-client that keeps its buckets elsewhere might
        def __init__(self) -> None:
            self.observed: list[float] = []

        def observe(self, value: float) -> None:
            self.observed.append(value)

    metrics, histogram = Metrics(), OtherHistogram()
    metrics.defer_writes(1.0)
    metrics.observe(histogram, 0.3)  # type: ignore[arg-type]
    assert histogram.observed == [0.3]


def test_the_exposition_writes_what_was_gathered_first(timers, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    metrics = Metrics()
    metrics.defer_writes(1.0)
    metrics.count(metrics.streams_started, "fake")
    body, _ = metrics.exposition()
    assert b'sse_chat_streams_started_total{backend="fake"} 1.0' in body


class _Services:
    """What the worker's ``run`` reads of the app's services."""

    def __init__(self, metrics: Metrics) -> None:
        import threading

        self.metrics, self.draining = metrics, threading.Event()


def _worker(worker_class, metrics: Metrics):
    """A gunicorn worker as after its fork, with the app's services holding ``metrics``."""
    from gunicorn.config import Config

    worker = object.__new__(worker_class)  # gunicorn's arbiter builds it
    worker.cfg = Config()
    worker.wsgi = type("App", (), {"extensions": {"sse_chat": _Services(metrics)}})()
    return worker


def test_a_worker_that_stops_writes_what_its_metrics_gathered(timers, monkeypatch):
    from gunicorn.workers.ggevent import GeventWorker

    from sse_chat.gunicorn_worker import Worker

    monkeypatch.setattr(GeventWorker, "run", lambda self: None)  # gunicorn's loop, ended
    metrics = Metrics()
    metrics.defer_writes(1.0)
    metrics.count(metrics.streams_started, "fake")
    worker = _worker(Worker, metrics)
    worker.run()
    assert _values(metrics)[STARTED] == 1


def test_a_count_with_wrong_labels_fails_at_the_call_even_deferred(timers):
    metrics = Metrics()
    metrics.defer_writes(1.0)
    with pytest.raises(ValueError):
        metrics.count(metrics.streams_started, "fake", "extra")  # it has one label: backend


def test_a_change_that_cannot_be_written_is_logged_and_the_others_are_written(timers, caplog):
    metrics = Metrics()
    metrics.defer_writes(1.0)
    metrics.count(metrics.resumes, amount=-1)  # a counter only goes up
    metrics.count(metrics.streams_started, "fake")
    metrics.flush()
    assert _values(metrics)[STARTED] == 1
    assert "could not be written" in caplog.text


@pytest.mark.parametrize("stop", [SystemExit(0), KeyboardInterrupt()])
def test_a_worker_that_stops_quickly_still_writes_what_its_metrics_gathered(timers, monkeypatch, stop):
    from gunicorn.workers.ggevent import GeventWorker

    from sse_chat.gunicorn_worker import Worker

    def quick_stop(self):  # gunicorn's handle_quit and handle_abort end the worker by sys.exit
        raise stop

    monkeypatch.setattr(GeventWorker, "run", quick_stop)
    metrics = Metrics()
    metrics.defer_writes(1.0)
    metrics.count(metrics.streams_started, "fake")
    worker = _worker(Worker, metrics)
    with pytest.raises(type(stop)):
        worker.run()
    assert _values(metrics)[STARTED] == 1

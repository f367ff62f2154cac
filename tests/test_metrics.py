"""GET /metrics moves while streams run (gunicorn, prometheus-client multiprocess mode)."""

import asyncio

import requests
from prometheus_client.parser import text_string_to_metric_families

from sse_chat.testing.loadgen import run_many
from sse_chat.testing.servers import wait_until

from .event_reading import events_of, stream_of


def _scrape(url):
    response = requests.get(url + "/metrics", timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}"] = sample.value
    return values


def test_counters_move_during_a_benchmark_run(gunicorn, redis_server, upstream):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="0", SSE_CHAT_REDIS_URL=redis_server.url, WEB_CONCURRENCY="2",
                      OPENAI_BASE_URL=upstream.base_url, SSE_CHAT_UPSTREAM_MAX_RETRIES="0")
    before = _scrape(server.url)
    results = asyncio.run(run_many(server.url, [{"prompt": f"m{i}", "max_tokens": 30} for i in range(40)]))
    assert all(r.gap_free for r in results)
    events = events_of([requests.post(server.url + "/v1/chat", json={"prompt": "r", "max_tokens": 5}).content])
    stream_id = stream_of(events[0].last_event_id)
    requests.get(f"{server.url}/v1/streams/{stream_id}", headers={"Last-Event-ID": events[2].last_event_id})
    _ = requests.post(server.url + "/v1/chat", json={"prompt": "x", "model": "http429"}).content
    expected = {"sse_chat_streams_started_total{backend=fake}": 41,
                "sse_chat_streams_ended_total{event=done,reason=length}": 41,
                "sse_chat_resumes_total{}": 1,
                "sse_chat_upstream_errors_total{type=upstream_rate_limited}": 1,
                "sse_chat_time_to_first_token_seconds_count{}": 41}
    moved = {}

    def arrived():  # each worker writes its counts once a second: the other one's may come a second later
        after = _scrape(server.url)
        moved.update({name: after.get(name, 0) - before.get(name, 0)
                      for name in [*expected, "sse_chat_events_sent_total{}"]})
        moved["active"] = after["sse_chat_active_streams{}"]
        return {name: moved[name] for name in expected} == expected and moved["active"] == 0

    try:
        wait_until(arrived, 10, "both workers' counts")
    except AssertionError:
        raise AssertionError(f"expected {expected} and no active stream; moved {moved}") from None
    assert moved["sse_chat_events_sent_total{}"] >= 40 * 32


def test_a_worker_writes_its_counts_within_a_second_unasked(gunicorn, tmp_path):
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    files = tmp_path / "metrics"
    files.mkdir()
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="0", PROMETHEUS_MULTIPROC_DIR=str(files))
    for i in range(3):
        _ = requests.post(server.url + "/v1/chat", json={"prompt": f"q{i}", "max_tokens": 3}, timeout=10).content

    def started():  # read from the workers' files, as a scrape would, but without asking a worker (no GET /metrics)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(files))
        return registry.get_sample_value("sse_chat_streams_started_total", {"backend": "fake"}) or 0

    wait_until(lambda: started() == 3, 10, "the worker to write its counts")

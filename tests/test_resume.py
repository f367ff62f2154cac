"""Resumable streams for real: cut connections, several workers sharing Redis, a
killed producer."""

import json
import os
import re
import signal
import subprocess
import time

import pytest
import requests

from sse_chat.testing.servers import BIN, base_env, run_cli, wait_until

from . import ROOT
from .event_reading import assert_well_formed, events_of, seq_of, stream_of
from .proxy import CuttingProxy


@pytest.fixture(params=["memory-1-worker", "redis-2-workers"])
def resumable_server(request, gunicorn):
    env = {"SSE_CHAT_FAKE_DELAY_MS": "2", "SSE_CHAT_RETRY_MS": "10"}
    if request.param.startswith("redis"):
        env.update(SSE_CHAT_REDIS_URL=request.getfixturevalue("redis_server").url, WEB_CONCURRENCY="2")
    return gunicorn(**env)


def test_cut_every_few_hundred_bytes_the_cli_prints_the_uncut_answer_six_times_of_six(resumable_server):
    uncut = run_cli("ask", "--url", resumable_server.url, "--max-tokens", "400", "resume me")
    assert uncut.returncode == 0 and len(uncut.stdout) > 2000
    host, port = resumable_server.url.removeprefix("http://").split(":")
    for seed in range(6):
        with CuttingProxy((host, int(port)), 200, 3000, seed=seed) as proxy:
            cut = run_cli("ask", "--url", proxy.url, "--max-tokens", "400", "resume me")
        assert cut.returncode == 0, cut.stderr
        assert proxy.connections > 5
        assert cut.stdout == uncut.stdout, f"seed {seed}"


def test_json_events_across_cuts_have_no_gap_and_no_repeat(resumable_server):
    host, port = resumable_server.url.removeprefix("http://").split(":")
    with CuttingProxy((host, int(port)), 200, 3000, seed=42) as proxy:
        result = run_cli("ask", "--url", proxy.url, "--json", "--max-tokens", "300", "x")
    ids = [json.loads(line)["id"] for line in result.stdout.splitlines()]
    assert [seq_of(i) for i in ids] == list(range(302))


def test_resume_on_another_worker_replays_exactly_the_later_events(gunicorn, redis_server):
    server = gunicorn(SSE_CHAT_REDIS_URL=redis_server.url, WEB_CONCURRENCY="2", SSE_CHAT_FAKE_DELAY_MS="0")
    events = events_of([requests.post(server.url + "/v1/chat", json={"prompt": "q", "max_tokens": 50}).content])
    stream_id = stream_of(events[0].last_event_id)
    for position in (0, 10, 49):
        # new connections each time, spread over both workers by the kernel
        resumed = events_of([requests.get(f"{server.url}/v1/streams/{stream_id}",
                                          headers={"Last-Event-ID": events[position].last_event_id}).content])
        assert ([(e.data, e.last_event_id) for e in resumed]
                == [(e.data, e.last_event_id) for e in events[position + 1:]])
    assert requests.get(f"{server.url}/v1/streams/{stream_id}",
                        headers={"Last-Event-ID": events[-1].last_event_id}).status_code == 204


def test_delete_from_any_worker_cancels_within_a_second(gunicorn, redis_server):
    server = gunicorn(SSE_CHAT_REDIS_URL=redis_server.url, WEB_CONCURRENCY="2", SSE_CHAT_FAKE_DELAY_MS="20")
    with requests.post(server.url + "/v1/chat", json={"prompt": "q", "max_tokens": 100_000}, stream=True) as response:
        chunks = response.iter_content(chunk_size=None)
        first = next(chunks)
        stream_id = stream_of(events_of([first])[0].last_event_id)
        asked = time.monotonic()
        assert requests.delete(f"{server.url}/v1/streams/{stream_id}").status_code == 202
        events = events_of([first, *chunks])
        took_s = time.monotonic() - asked
    assert_well_formed(events)
    assert json.loads(events[-1].data)["finish_reason"] == "cancelled"
    assert took_s < 1.0


def _producer_pid(server, stream_id):
    match = re.search(rf"\[(\d+)\] \[DEBUG\] sse_chat.streaming.producer: stream {re.escape(stream_id)} started",
                      server.log())
    return int(match.group(1)) if match else None


def test_sigkill_of_the_producing_worker_ends_the_stream_with_stream_lost(gunicorn, redis_server):
    server = gunicorn(SSE_CHAT_REDIS_URL=redis_server.url, WEB_CONCURRENCY="2", SSE_CHAT_FAKE_DELAY_MS="20",
                      GUNICORN_CMD_ARGS="--log-level debug")  # the producer's "started" line names its worker
    with requests.post(server.url + "/v1/chat", json={"prompt": "q", "max_tokens": 100_000}, stream=True) as response:
        start = events_of([next(response.iter_content(chunk_size=None))])[0]
    stream_id = stream_of(start.last_event_id)
    wait_until(lambda: _producer_pid(server, stream_id) is not None, 10, "the producer's log line")
    reader = subprocess.Popen([str(BIN / "sse-chat"), "ask", "--url", server.url, "--json", "--resume",
                               start.last_event_id],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=base_env())
    reader.stdout.readline()  # attached and following
    os.kill(_producer_pid(server, stream_id), signal.SIGKILL)
    killed = time.monotonic()
    stdout, stderr = reader.communicate(timeout=30)
    took_s = time.monotonic() - killed
    assert reader.returncode == 1, stderr
    assert b"stream_lost" in stderr and b"Traceback" not in stderr
    last = json.loads(stdout.splitlines()[-1])
    assert last["event"] == "error" and json.loads(last["data"])["error"]["type"] == "stream_lost"
    assert took_s < 20
    # a reader that comes later gets the same ending
    later = events_of([requests.get(f"{server.url}/v1/streams/{stream_id}").content])
    assert_well_formed(later)
    assert later[-1].data == json.loads(stdout.splitlines()[-1])["data"]


@pytest.mark.parametrize("how", [{"WEB_CONCURRENCY": "2"}, {"GUNICORN_CMD_ARGS": "--workers 2"}])
def test_two_workers_without_redis_refuse_to_start(how):
    result = subprocess.run([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py"], cwd=ROOT, capture_output=True,
                            env=base_env(SSE_CHAT_BIND="127.0.0.1:1", **how), timeout=30)
    assert result.returncode != 0
    assert b"SSE_CHAT_REDIS_URL" in result.stderr and b"in-memory event log" in result.stderr

"""The Redis log on a real Redis Cluster (3 primaries, 1 replica each, from Debian's
redis-server): two service hosts pointed at one node share their streams, and a
primary SIGKILLed under load loses no answer."""

import json
import re
import subprocess
import threading
import time

import pytest
import requests

from sse_chat.eventlog import EventLogUnavailable
from sse_chat.eventlog.redis_layout import Layout, StreamKeys
from sse_chat.eventlog.redis_nodes import _cluster_option
from sse_chat.eventlog.redis_streams import CLUSTER_GROUPS, RedisEventLog
from sse_chat.testing.redis_cluster import RedisCluster
from sse_chat.testing.servers import BIN, base_env, free_port, run_cli, wait_until

from .event_reading import events_of, seq_of, stream_of

pytestmark = pytest.mark.redis


def test_the_url_may_say_whether_redis_is_a_cluster():
    assert _cluster_option("redis://127.0.0.1:7000/0?cluster=yes") == ("redis://127.0.0.1:7000/0", True)
    assert _cluster_option("redis://h:1/0?cluster=no&socket_timeout=3") == ("redis://h:1/0?socket_timeout=3", False)
    assert _cluster_option("redis://h:1/0") == ("redis://h:1/0", None)
    with pytest.raises(ValueError, match="cluster=yes"):
        _cluster_option("redis://h:1/0?cluster=1")


def test_a_clusters_streams_fall_into_groups_and_their_keys_name_them():
    layout = Layout(64)
    keys = [layout.keys(f"stream-{i}") for i in range(1000)]
    assert len({k.tag for k in keys}) == 64  # every group used
    assert all(k.events.startswith(f"sse-chat:{{{k.tag}}}:{k.stream_id}:") for k in keys)
    assert {StreamKeys.stream_of(k.events.encode()) for k in keys} == {k.stream_id for k in keys}
    assert StreamKeys.stream_of(Layout().keys("abc").events.encode()) == "abc"  # one Redis: a tag per stream


def test_a_cluster_named_in_the_url_may_be_down_when_the_log_starts():
    log = RedisEventLog.from_url(f"redis://127.0.0.1:{free_port()}/0?cluster=yes", ttl_s=60, max_events=100)
    assert not log.ready()
    with pytest.raises(EventLogUnavailable):
        log.info("any")
    with pytest.raises(EventLogUnavailable):
        log.create("any", None, b"start")


@pytest.fixture
def cluster(tmp_path):
    cluster = RedisCluster(tmp_path / "cluster")
    yield cluster
    cluster.stop()


def _two_hosts(gunicorn, cluster, **env):
    """Two gunicorns of one worker each (two hosts), both pointed at the Cluster's first node."""
    return [gunicorn(SSE_CHAT_REDIS_URL=cluster.url, **env) for _ in range(2)]


def _started_then_resumed(host_a, host_b, prompt, tokens, results, index):
    """Start a stream on A, hang up after its first three events, resume it on B with
    the last event ID: the events of both, in order."""
    with requests.post(host_a.url + "/v1/chat", json={"prompt": prompt, "max_tokens": tokens}, stream=True,
                       timeout=30) as response:
        chunks, first = response.iter_content(chunk_size=None), []
        while len(events_of(first)) < 3:
            first.append(next(chunks))
    before = events_of(first)[:3]
    resumed = requests.get(f"{host_b.url}/v1/streams/{stream_of(before[-1].last_event_id)}",
                           headers={"Last-Event-ID": before[-1].last_event_id}, timeout=30)
    results[index] = before + events_of([resumed.content])


def test_two_hosts_on_one_node_resume_each_others_streams_uncut(gunicorn, cluster):
    host_a, host_b = _two_hosts(gunicorn, cluster, SSE_CHAT_FAKE_DELAY_MS="20")
    for host in (host_a, host_b):
        assert requests.get(host.url + "/readyz", timeout=10).status_code == 200
    results = [None] * 40
    threads = [threading.Thread(target=_started_then_resumed, args=(host_a, host_b, f"question {i}", 40, results, i))
               for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # The streams' keys are spread over the three primaries (40 streams, 64 groups).
    primaries = {cluster.primary_of(Layout(CLUSTER_GROUPS).keys(stream_of(events[0].last_event_id)).events)
                 for events in results}
    assert len(primaries) == 3
    for i, events in enumerate(results):
        uncut = events_of([requests.post(host_b.url + "/v1/chat", json={"prompt": f"question {i}", "max_tokens": 40},
                                         timeout=30).content])
        assert [seq_of(e.last_event_id) for e in events] == list(range(len(uncut)))
        assert [(e.type, json.loads(e.data)) for e in events[1:]] == [(e.type, json.loads(e.data))
                                                                        for e in uncut[1:]], i
    for host in (host_a, host_b):
        assert "Traceback" not in host.log()


def _ask(url, prompt):
    return subprocess.Popen([str(BIN / "sse-chat"), "ask", "--url", url, "--max-tokens", "200", prompt],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=base_env())


def test_a_primary_killed_under_load_loses_no_answer(gunicorn, cluster):
    uncut_server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="0")  # the same fake model, in memory, at full speed
    uncut = {i: run_cli("ask", "--url", uncut_server.url, "--max-tokens", "200", f"failover {i}").stdout
             for i in range(20)}
    host_a, host_b = _two_hosts(gunicorn, cluster, SSE_CHAT_FAKE_DELAY_MS="50",
                                GUNICORN_CMD_ARGS="--log-level debug")  # the producers' "started" lines
    asks = {i: _ask((host_a, host_b)[i % 2].url, f"failover {i}") for i in range(20)}
    wait_until(lambda: sum(host.log().count("sse_chat.streaming.producer: stream") for host in (host_a, host_b)) >= 20,
               60, "every answer to start")
    time.sleep(1.5)  # every answer is well under way (200 tokens take 10 s)
    victim = cluster.primary_of(Layout(CLUSTER_GROUPS).keys("any").events)
    # Its replica falls behind (stopped for a moment), so the writes the primary
    # acknowledged last are lost when the replica takes over.
    [replica] = cluster.replicas_of(victim)
    cluster.pause(replica)
    cluster.cut_replication(victim)
    time.sleep(0.5)
    cluster.kill(victim)
    cluster.resume(replica)
    statuses = []  # new questions while the replica is being elected
    while cluster.primary_of(Layout(CLUSTER_GROUPS).keys("any").events) == victim or not cluster.is_ok():
        response = requests.post(host_a.url + "/v1/chat", json={"prompt": "during", "max_tokens": 1}, timeout=30)
        statuses.append((response.status_code, response.headers.get("Retry-After"),
                         response.json()["error"]["type"] if response.status_code == 503 else None))
        time.sleep(0.2)
    for i, ask in asks.items():
        stdout, stderr = ask.communicate(timeout=90)
        assert ask.returncode == 0, (i, stderr.decode())
        assert stdout == uncut[i], (i, stderr.decode())
    assert statuses and all(status == (200, None, None) or (status[0] == 503 and status[1] and
                            status[2] == "event_log_unavailable") for status in statuses), statuses
    # The producers noticed that the new primary lacked events and wrote them again.
    assert sum(host.log().count("written again") for host in (host_a, host_b)) > 0
    # What Redis holds now is whole: every stream, read afresh from the other host.
    whole = 0
    for host, other in ((host_a, host_b), (host_b, host_a)):
        for stream_id in re.findall(r"sse_chat.streaming.producer: stream (\S+) started", host.log()):
            replay = events_of([requests.get(f"{other.url}/v1/streams/{stream_id}", timeout=30).content])
            assert [seq_of(e.last_event_id) for e in replay] == list(range(len(replay))), stream_id
            assert replay[-1].type == "done", stream_id
            whole += len(replay) == 202  # start, 200 tokens, done: one of the 20 answers
    assert whole == 20
    for host in (host_a, host_b):  # new streams on both hosts after the failover
        after = run_cli("ask", "--url", host.url, "--max-tokens", "20", "after the failover")
        assert after.returncode == 0 and after.stdout == run_cli(
            "ask", "--url", uncut_server.url, "--max-tokens", "20", "after the failover").stdout
        assert "Traceback" not in host.log()

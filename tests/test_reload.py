"""Zero-loss reloads: gunicorn (two workers, Redis) reloads while streams run."""

import signal
import subprocess

import requests

from sse_chat.models import ChatRequest, Message
from sse_chat.models.fake import fake_tokens
from sse_chat.testing.servers import CLI, base_env, wait_until

PROMPTS = [f"reload question {i}" for i in range(20)]


def _active_streams(url: str) -> float:
    """The workers' running producers, from GET /metrics."""
    metrics = requests.get(url + "/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in metrics.splitlines()
               if line.startswith("sse_chat_active_streams"))


def test_twenty_streams_survive_a_reload_with_exactly_the_uncut_answers(gunicorn, redis_server):
    server = gunicorn(SSE_CHAT_REDIS_URL=redis_server.url, WEB_CONCURRENCY="2", SSE_CHAT_FAKE_DELAY_MS="20",
                      SSE_CHAT_RETRY_MS="100")
    uncut = {p: "".join(fake_tokens(ChatRequest((Message("user", p),), "fake", 150))).encode() for p in PROMPTS}
    old_workers = set(server.worker_pids())
    clients = {p: subprocess.Popen([CLI, "ask", "--url", server.url, "--max-tokens", "150", p],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                   env=base_env())
               for p in PROMPTS}
    wait_until(lambda: _active_streams(server.url) >= 20, 30, "all 20 streams to start")
    server.process.send_signal(signal.SIGHUP)
    results = {p: c.communicate(timeout=120) for p, c in clients.items()}
    for prompt, (stdout, stderr) in results.items():
        assert clients[prompt].returncode == 0, stderr
        assert stdout == uncut[prompt], prompt
    wait_until(lambda: not old_workers & set(server.worker_pids()), 60, "the old workers to exit")
    log = server.log()
    assert "Hang up" in log and "stream_lost" not in log
    assert "for a graceful stop" in log

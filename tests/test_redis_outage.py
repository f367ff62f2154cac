"""Redis goes away and comes back (restarted with its append-only data) while 20
``sse-chat ask`` clients stream from 2 gunicorn workers: every answer arrives
whole, ``/readyz`` says 503 meanwhile, and a new question works once it is back
(docs/resume.md, "Redis outages")."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest
import requests

from sse_chat.testing.redis_server import RedisServer
from sse_chat.testing.servers import CLI, base_env, run_cli, wait_until

pytestmark = pytest.mark.redis

CLIENTS = 20
PROMPT = "survive the outage"
#: 300 tokens at 20 ms: about 6 s per answer, longer than the time to start every
#: client plus the outage's start.
MAX_TOKENS = "300"
DELAY_MS = "20"
OUTAGE_S = 3.0
#: The longest waits (seconds): for every client's first tokens; after Redis is
#: back, for readiness, for a new question, and for the 20 clients to finish.
#: Together they bound the test to about a minute.
FIRST_TOKENS_S = 15
READY_AGAIN_S = 10
NEW_QUESTION_S = 10
FINISH_S = 25


class Client:
    """One ``sse-chat ask`` subprocess; its stdout and stderr are collected by
    threads, so that what it printed so far can be looked at."""

    def __init__(self, url: str, prompt: str, max_tokens: str) -> None:
        self.process = subprocess.Popen([CLI, "ask", "--fake", "--url", url, "--max-tokens", max_tokens, prompt],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env=base_env())
        self.stdout, self.stderr = bytearray(), bytearray()
        self._readers = [threading.Thread(target=_collect, args=(self.process.stdout, self.stdout), daemon=True),
                         threading.Thread(target=_collect, args=(self.process.stderr, self.stderr), daemon=True)]
        for reader in self._readers:
            reader.start()

    def wait(self, deadline: float) -> int | None:
        """The exit status, waiting until ``deadline`` (``time.monotonic()``); on
        time-out kill it and return ``None``."""
        try:
            self.process.wait(max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None
        finally:
            for reader in self._readers:
                reader.join(5)
        return self.process.returncode


def _collect(pipe, into: bytearray) -> None:
    while chunk := pipe.read1(65536):
        into.extend(chunk)


def _readyz(url: str) -> int | str:
    """``GET /readyz``'s status, or the name of the error when there is no answer
    within 2 s."""
    try:
        return requests.get(url + "/readyz", timeout=2).status_code
    except requests.RequestException as exc:
        return type(exc).__name__


def _outage(redis_server: RedisServer, url: str) -> list[int | str]:
    """Stop Redis, keep it down for :data:`OUTAGE_S` s while polling ``/readyz``,
    start it again on the same port and directory; the statuses seen meanwhile."""
    redis_server.stop()
    seen, back_at = [], time.monotonic() + OUTAGE_S
    while time.monotonic() < back_at:
        seen.append(_readyz(url))
        time.sleep(0.1)
    redis_server.start()
    return seen


@pytest.fixture
def redis_aof(tmp_path):
    """A redis-server of its own, with its append-only file in ``tmp_path``."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory, appendonly=True)
    yield server
    server.stop()


def _ready_within(url: str, timeout_s: float) -> bool:
    try:
        wait_until(lambda: _readyz(url) == 200, timeout_s, "GET /readyz 200")
    except AssertionError:
        return False
    return True


def _ask_after(url: str) -> subprocess.CompletedProcess | str:
    """A new question once Redis is back, or why it did not end in time."""
    try:
        return run_cli("ask", "--fake", "--url", url, "--max-tokens", "20", "after", timeout=NEW_QUESTION_S)
    except subprocess.TimeoutExpired:
        return f"still running after {NEW_QUESTION_S} s"


def _client_problems(clients: list[Client], statuses: list[int | None], expected: bytes) -> list[str]:
    problems = []
    for i, (client, status) in enumerate(zip(clients, statuses, strict=True)):
        stderr = bytes(client.stderr).decode(errors="replace").strip()
        if status != 0:
            problems.append(f"client {i}: exit {'(killed: still running)' if status is None else status}; "
                            f"stderr: {stderr!r}")
        elif bytes(client.stdout) != expected:
            problems.append(f"client {i}: printed {len(client.stdout)} bytes, not the uncut {len(expected)}; "
                            f"stderr: {stderr!r}")
    return problems


def test_a_redis_restart_loses_no_answer_and_hangs_nothing(redis_aof, gunicorn):
    quick = base_env(SSE_CHAT_FAKE_DELAY_MS="0")
    expected = run_cli("ask", "--fake", "--max-tokens", MAX_TOKENS, PROMPT, env=quick).stdout
    after = run_cli("ask", "--fake", "--max-tokens", "20", "after", env=quick).stdout
    assert expected and after
    server = gunicorn(WEB_CONCURRENCY="2", SSE_CHAT_REDIS_URL=redis_aof.url, SSE_CHAT_FAKE_DELAY_MS=DELAY_MS)
    problems = [f"/readyz before the outage: {status}"
                for status in [_readyz(server.url)] if status != 200]

    clients = [Client(server.url, PROMPT, MAX_TOKENS) for _ in range(CLIENTS)]
    try:
        wait_until(lambda: all(c.stdout for c in clients), FIRST_TOKENS_S, "every client's first tokens")
        assert all(c.process.poll() is None for c in clients), "answers ended before the outage: raise MAX_TOKENS"
        seen = _outage(redis_aof, server.url)
        ready_again = _ready_within(server.url, READY_AGAIN_S)
        fresh = _ask_after(server.url) if ready_again else "not asked: /readyz never said 200"
        deadline = time.monotonic() + FINISH_S
        statuses = [client.wait(deadline) for client in clients]
    finally:
        for client in clients:
            client.wait(time.monotonic())  # kills what still runs after a failure above

    if set(seen) != {503}:
        problems.append(f"/readyz while Redis was down (every 0.1 s): {seen}")
    problems += _client_problems(clients, statuses, expected)
    if not ready_again:
        problems.append(f"/readyz did not answer 200 within {READY_AGAIN_S} s after Redis came back: "
                        f"{_readyz(server.url)}")
    elif isinstance(fresh, str) or (fresh.returncode, fresh.stdout) != (0, after):
        problems.append(f"a new question after the outage: {fresh if isinstance(fresh, str) else fresh.stderr!r}")
    if "unhandled error" in server.log():
        problems.append("the service answered 500 (\"unhandled error\" in its log)")
    assert not problems, "\n".join(problems) + "\n--- gunicorn log (end) ---\n" + server.log()[-4000:]

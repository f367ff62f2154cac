"""``sse_chat.testing.redis_server.RedisServer``, the real redis-server that the
tests' fixtures and the benchmarks start: it leaves no process behind when it
fails to start."""

from __future__ import annotations

import os
import stat

import pytest

from sse_chat.testing import redis_server
from sse_chat.testing.redis_server import RedisServer

pytestmark = pytest.mark.redis


def test_a_server_that_answers_ping_is_ready_and_stops(tmp_path):
    server = RedisServer(tmp_path)
    try:
        assert server.client.ping()
    finally:
        server.stop()
    assert server.process is not None and server.process.returncode is not None


def test_a_server_that_never_answers_ping_is_killed_when_the_wait_gives_up(tmp_path, monkeypatch):
    pid_file = tmp_path / "pid"
    silent = tmp_path / "silent-redis-server"  # takes redis-server's arguments, answers nothing
    silent.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 60\n")
    silent.chmod(silent.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(redis_server, "require_binary", lambda name: str(silent))
    waited = redis_server.wait_until
    monkeypatch.setattr(redis_server, "wait_until", lambda predicate, timeout_s, what: waited(predicate, 1.0, what))

    with pytest.raises(AssertionError, match="timed out"):
        RedisServer(tmp_path)

    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left running without an owner
        os.kill(pid, 0)

"""A real redis-server on a free loopback port, for tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import redis

from sse_chat.testing.servers import free_port, require_binary, wait_until


class RedisServer:
    """``redis-server`` on a free loopback port, keeping its files in ``directory``.

    Args:
        directory: its working directory (the append-only file goes there).
        appendonly: log every write to the append-only file, so that a stop
            (SIGTERM) and :meth:`start` on the same port and directory keep the data.
    """

    def __init__(self, directory: Path, appendonly: bool = False) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._command = [require_binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
                         "--save", "", "--appendonly", "yes" if appendonly else "no", "--dir", str(directory)]
        self.client = redis.Redis.from_url(self.url)
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        """Start it (again, on the same port and directory); wait until it answers
        ``PING`` (after loading its data), at most 10 s.

        Raises:
            AssertionError: it exited, or did not answer in time (it is killed then).
        """
        process = self.process = subprocess.Popen(self._command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: process.poll() is not None or self._pings(), 10, "redis-server")
        except BaseException:  # not left running without an owner: the caller never got it
            process.kill()
            process.wait()
            raise
        if process.poll() is not None:
            raise AssertionError(f"redis-server exited with status {process.returncode}: {self._command}")

    def _pings(self) -> bool:
        try:
            return self.client.ping()
        except redis.ConnectionError:  # also BusyLoadingError while it loads its data
            return False

    def stop(self) -> None:
        """SIGTERM, then wait for the exit (at most 10 s): redis-server writes its
        append-only file out before it exits."""
        self.client.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

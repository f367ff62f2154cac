"""A real redis-server on a free loopback port, for tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import redis

from .servers import free_port, require_binary, wait_until


class RedisServer:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [require_binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis.from_url(self.url)
        wait_until(self._pings, 10, "redis-server")

    def _pings(self) -> bool:
        try:
            return self.client.ping()
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(10)

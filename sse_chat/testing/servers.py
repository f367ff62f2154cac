"""Starting real processes for tests and benchmarks: gunicorn with gevent workers on a
free loopback port, the CLI as a subprocess."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

BIN = Path(sys.executable).parent
CLI = str(BIN / "sse-chat")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    """Poll ``predicate`` every ``interval_s`` until it is true; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def base_env(**overrides: str) -> dict[str, str]:
    """The test process's environment without sse-chat/OpenAI settings, plus
    ``overrides``. Without ``PROMETHEUS_MULTIPROC_DIR`` too: each gunicorn master
    makes a fresh one (importing ``sse_chat.gunicorn_config`` in the test process
    sets it there), so that no server adds up the metrics another left behind."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SSE_CHAT_", "OPENAI_")) and k not in ("WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR")}
    env.update(overrides)
    return env


@dataclass
class Gunicorn:
    """A running ``gunicorn -c gunicorn.conf.py`` on a free loopback port."""

    url: str
    process: subprocess.Popen
    log_path: Path
    pids: list[int] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # quick shutdown; graceful stops are tested on their own
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_gunicorn(tmp_path: Path, **env: str) -> Gunicorn:
    """Start gunicorn with the project's config and ``env`` settings; wait for /healthz."""
    port = free_port()
    log_path = tmp_path / f"gunicorn-{port}.log"
    process = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", "python:sse_chat.gunicorn_config"],  # what gunicorn.conf.py holds
        cwd=tmp_path, env=base_env(SSE_CHAT_BIND=f"127.0.0.1:{port}", **env),
        stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
    )
    server = Gunicorn(f"http://127.0.0.1:{port}", process, log_path)
    try:
        wait_until(lambda: process.poll() is not None or _answers(server.url + "/healthz"), 30, "gunicorn")
    except AssertionError:
        server.stop()
        raise
    if process.poll() is not None:
        raise AssertionError(f"gunicorn exited: {server.log()}")
    return server


def run_cli(*args: str, env: dict[str, str] | None = None, input: bytes | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``sse-chat ARGS`` as a subprocess; stdout and stderr captured as bytes."""
    return subprocess.run([CLI, *args], env=env or base_env(), input=input,
                          stdin=None if input is not None else subprocess.DEVNULL,
                          capture_output=True, timeout=timeout)


def require_binary(name: str) -> str:
    """The path of ``name``; skips the test when missing, but fails under ``CI=true``."""
    import pytest

    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (.ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def rss_kib(pids: list[int]) -> int:
    """The summed resident set size (``VmRSS``) of ``pids``, in KiB; a process that
    is gone counts 0."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


class PeakRss:
    """The highest summed ``VmRSS`` (KiB) of the processes ``pids_of()`` names,
    sampled every 100 ms in a thread while the ``with`` block runs."""

    def __init__(self, pids_of: Callable[[], list[int]]) -> None:
        self._pids_of = pids_of
        self.peak_kib = rss_kib(pids_of())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak_kib = max(self.peak_kib, rss_kib(self._pids_of()))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

"""Tools of a hostile client and of the bystanders it would hurt, for tests against
a real server on loopback: raw sockets, a live stream whose silences are timed,
and a ``/healthz`` prober."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import requests


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def open_raw(url: str, head: bytes, timeout_s: float = 10) -> socket.socket:
    """A connection to ``url`` that has sent ``head`` (a request head, or part of one)."""
    sock = socket.create_connection(address(url), timeout=timeout_s)
    sock.sendall(head)
    return sock


def read_answer(sock: socket.socket, timeout_s: float) -> bytes:
    """Everything the server sends until it closes, or what came within ``timeout_s``."""
    sock.settimeout(timeout_s)
    chunks = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and (data := sock.recv(65536)):
            chunks.append(data)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


class TimedStream(threading.Thread):
    """Reads one event stream (``requests.request(method, url, **kwargs)``) to its
    end in a thread, noting the longest silence between two reads, in seconds."""

    def __init__(self, method: str, url: str, **kwargs) -> None:
        super().__init__(daemon=True)
        self._request = (method, url, kwargs)
        self.body = b""
        self.status: int | None = None
        self.longest_silence_s = 0.0
        self.started_reading = threading.Event()
        self._first = b""
        self.ended_at: float | None = None

    def stream_id(self) -> str:
        """The stream id its ``start`` event named (once reading started)."""
        return self._first.split(b'"stream_id":"')[1].split(b'"')[0].decode()

    def run(self) -> None:
        method, url, kwargs = self._request
        chunks = []
        with requests.request(method, url, stream=True, timeout=60, **kwargs) as response:
            self.status = response.status_code
            last = time.monotonic()
            for chunk in response.iter_content(chunk_size=None):
                now = time.monotonic()
                if chunks:
                    self.longest_silence_s = max(self.longest_silence_s, now - last)
                last = now
                chunks.append(chunk)
                if not self._first:
                    self._first = chunk
                self.started_reading.set()
        self.body = b"".join(chunks)
        self.ended_at = time.monotonic()
        self.started_reading.set()


class HealthProbe(threading.Thread):
    """Asks ``/healthz`` again and again (every ``every_s``) until stopped, noting
    the slowest answer in seconds (a failed one counts as its timeout, 30 s)."""

    def __init__(self, url: str, every_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self._url = url + "/healthz"
        self._every_s = every_s
        self._stopping = threading.Event()
        self.slowest_s = 0.0
        self.answers = 0

    def run(self) -> None:
        while not self._stopping.wait(self._every_s):
            started = time.monotonic()
            try:
                ok = requests.get(self._url, timeout=30).status_code == 200
            except requests.RequestException:
                ok = False
            took = time.monotonic() - started
            self.slowest_s = max(self.slowest_s, took if ok else 30.0)
            self.answers += ok

    def stop(self) -> HealthProbe:
        self._stopping.set()
        self.join()
        return self


#: A client that, for SECONDS, sends HEAD and then zeros as fast as it can,
#: connecting again whenever the server closes; prints "CONNECTIONS BYTES".
_FLOOD = """
import socket, sys, time
host, port, seconds, head = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4].encode()
chunk, deadline, connections, sent = bytes(1 << 20), time.monotonic() + seconds, 0, 0
while time.monotonic() < deadline:
    connections += 1
    try:
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(head)
            while time.monotonic() < deadline:
                sock.sendall(chunk)
                sent += len(chunk)
    except OSError:
        pass
print(connections, sent)
"""


def flood(url: str, head: bytes, seconds: float) -> tuple[int, int]:
    """Upload as fast as possible for ``seconds`` (see :data:`_FLOOD`), from another
    process, so that this one's threads keep their share of the interpreter;
    returns the connections made and the bytes sent."""
    host, port = address(url)
    done = subprocess.run([sys.executable, "-c", _FLOOD, host, str(port), str(seconds), head.decode("latin-1")],
                          capture_output=True, text=True, timeout=seconds + 30, check=True)
    connections, sent = done.stdout.split()
    return int(connections), int(sent)


#: Reads one response to its end on a raw socket (little CPU: no HTTP library):
#: HOST PORT REQUEST; prints "STATUS LENGTH CHUNKS" (CHUNKS: how often
#: "chat.completion.chunk" occurs) and then the repr of the last 200 bytes.
_READ = """
import socket, sys
host, port, request = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode("latin-1")
data = bytearray()
with socket.create_connection((host, port), timeout=120) as sock:
    sock.sendall(request)
    while chunk := sock.recv(1 << 20):
        data += chunk
print(int(data[9:12]), len(data), data.count(b"chat.completion.chunk"))
print(repr(bytes(data[-200:])))
"""


class ReaderProcess:
    """Sends ``request`` (a whole HTTP/1.1 request with ``Connection: close``) and
    reads the response to its end in another process, so that this one's threads
    keep their share of the interpreter; :meth:`result` gives ``(status, length
    in bytes, how often "chat.completion.chunk" occurs, its last 200 bytes)``."""

    def __init__(self, url: str, request: bytes) -> None:
        host, port = address(url)
        self._process = subprocess.Popen([sys.executable, "-c", _READ, host, str(port), request.decode("latin-1")],
                                         stdout=subprocess.PIPE, text=True)

    def result(self, timeout_s: float = 120) -> tuple[int, int, int, bytes]:
        import ast

        out, _ = self._process.communicate(timeout=timeout_s)
        first, tail = out.splitlines()[:2]
        status, length, chunks = (int(part) for part in first.split())
        return status, length, chunks, ast.literal_eval(tail)

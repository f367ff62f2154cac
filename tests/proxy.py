"""A TCP proxy that cuts every connection after a random number of bytes from the
server, to test reconnection for real."""

from __future__ import annotations

import contextlib
import random
import socket
import threading


class LoopbackListener:
    """Accepts connections on a free loopback port (``url``) in a thread while the
    ``with`` block runs, handing each to :meth:`_handle`."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = False

    def __enter__(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._handle(client)

    def _handle(self, client: socket.socket) -> None:
        raise NotImplementedError


class CuttingProxy(LoopbackListener):
    """Listens on a free loopback port and forwards to ``target`` (host, port); each
    connection is closed after ``randint(min_bytes, max_bytes)`` bytes of response
    (seeded, so a failure can be replayed). With ``only_event_streams``, bytes count
    only from the first ``text/event-stream`` response on, so a page and its assets
    load whole. ``connections`` counts accepted ones."""

    def __init__(self, target: tuple[str, int], min_bytes: int, max_bytes: int, seed: int = 0,
                 only_event_streams: bool = False) -> None:
        self._target = target
        self._only_event_streams = only_event_streams
        self._range = (min_bytes, max_bytes)
        self._random = random.Random(seed)
        super().__init__()
        self.connections = 0

    def _handle(self, client: socket.socket) -> None:
        self.connections += 1
        upstream = socket.create_connection(self._target)
        budget = self._random.randint(*self._range)
        threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
        threading.Thread(target=self._pump, args=(upstream, client, budget, self._only_event_streams),
                         daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, budget: int | None, wait_for_stream: bool = False) -> None:
        try:
            while budget is None or budget > 0:
                counting = budget is not None and not wait_for_stream
                data = source.recv(min(65536, budget) if counting else 65536)
                if not data:
                    break
                if wait_for_stream and b"content-type: text/event-stream" in data.lower():
                    wait_for_stream = False
                    data, rest = data[:budget], data[budget:]
                    if rest:
                        sink.sendall(data)
                        break
                sink.sendall(data)
                if budget is not None and not wait_for_stream:
                    budget -= len(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

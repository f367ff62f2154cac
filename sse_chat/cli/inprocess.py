"""Serving the fake model inside the CLI's own process (``sse-chat ask --fake``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from werkzeug.serving import WSGIRequestHandler, make_server

from sse_chat.app import create_app
from sse_chat.config import Settings


class _QuietRequestHandler(WSGIRequestHandler):
    """Writes no access log: the CLI's stderr is for the user."""

    def log(self, type: str, message: str, *args: object) -> None:
        pass


@contextmanager
def serve_fake_model(settings: Settings) -> Iterator[str]:
    """Run the service with the in-memory log on a free loopback port, in threads,
    for as long as the ``with`` block lasts; yields its base URL.

    Raises:
        OSError: when no loopback port can be bound.
    """
    settings = settings.with_overrides(model="fake", redis_url=None, workers=1)
    server = make_server("127.0.0.1", 0, create_app(settings), threaded=True,
                         request_handler=_QuietRequestHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="sse-chat-inprocess", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()

"""A pytest plugin for testing clients of sse-chat against the real service
(docs/testing-clients.md).

Registered through the ``pytest11`` entry point, so installing sse-chat is all
it takes: every pytest run in that environment gets

* ``sse_chat_server``: a running service (gunicorn with gevent workers, the
  ``fake`` model) on a free loopback port, with ``.url`` (``http://127.0.0.1:PORT``)
  and ``.log()`` (its output so far). One server is started per distinct settings
  and kept for the session, then stopped;
* ``sse_chat_settings``: the ``SSE_CHAT_*`` (and ``WEB_CONCURRENCY``) environment
  settings of that server, as a ``dict[str, str]``; override it in a test module or
  ``conftest.py`` to change them (see :data:`DEFAULT_SETTINGS`);
* ``sse_chat_server_pool``: the session's servers, for a test that needs a server
  with other settings: ``sse_chat_server_pool.get({...})``;
* ``--sse-chat-redis`` (or the ini setting ``sse_chat_redis = true``): start a
  ``redis-server`` for the session and keep the servers' streams there
  (``SSE_CHAT_REDIS_URL``), unless the settings name one.

pytest imports this module in every run of every project in the environment, so
it imports nothing but pytest and the standard library at import time; the
servers' code is imported by the fixtures. ``-p no:sse_chat`` turns it off.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

#: The settings ``sse_chat_settings`` returns unless overridden: the fake model,
#: tokens as fast as the server can send them (0 ms apart, override with
#: ``SSE_CHAT_FAKE_DELAY_MS`` or a request's ``"fake": {"delay_ms": …}``), and a
#: 100 ms reconnection time (``retry:``) so that clients resume quickly.
DEFAULT_SETTINGS: dict[str, str] = {
    "SSE_CHAT_MODEL": "fake",
    "SSE_CHAT_FAKE_DELAY_MS": "0",
    "SSE_CHAT_RETRY_MS": "100",
}

_REDIS_OPTION = "--sse-chat-redis"
_REDIS_INI = "sse_chat_redis"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sse-chat", "sse-chat test server (docs/testing-clients.md)")
    group.addoption(_REDIS_OPTION, action="store_true", default=None,
                    help="start a redis-server for the session and keep the sse_chat_server's streams in it")
    parser.addini(_REDIS_INI, type="bool", default=False,
                  help="as --sse-chat-redis: the sse_chat_server keeps its streams in a redis-server")


@pytest.fixture
def sse_chat_settings() -> dict[str, str]:
    """The environment settings of ``sse_chat_server`` (``SSE_CHAT_*`` names to
    string values): :data:`DEFAULT_SETTINGS`. Override it to change them, e.g.::

        @pytest.fixture
        def sse_chat_settings(sse_chat_settings):
            return {**sse_chat_settings, "SSE_CHAT_UPSTREAM_TIMEOUT_S": "2"}
    """
    return dict(DEFAULT_SETTINGS)


@pytest.fixture(scope="session")
def sse_chat_server_pool(request: pytest.FixtureRequest,
                         tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    """The session's servers, one per distinct settings; all stopped at the end."""
    option = request.config.getoption(_REDIS_OPTION)
    use_redis = bool(option if option is not None else request.config.getini(_REDIS_INI))
    pool = ServerPool(tmp_path_factory.mktemp("sse-chat"), use_redis=use_redis)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def sse_chat_server(sse_chat_server_pool: ServerPool, sse_chat_settings: Mapping[str, str]) -> Any:
    """A running sse-chat service with ``sse_chat_settings``: ``.url`` is its base
    URL (``http://127.0.0.1:PORT``), ``.log()`` its output. Shared by the tests of
    the session that use the same settings (stream ids never repeat)."""
    return sse_chat_server_pool.get(sse_chat_settings)


class ServerPool:
    """Servers started on demand and kept by settings.

    Args:
        directory: where the servers run and write their logs.
        use_redis: start one ``redis-server`` (on first need) and give its URL to
            every server whose settings name no ``SSE_CHAT_REDIS_URL``.
    """

    def __init__(self, directory: Path, *, use_redis: bool) -> None:
        self._directory = directory
        self._use_redis = use_redis
        self._redis: Any = None
        self._servers: dict[tuple[tuple[str, str], ...], Any] = {}

    def get(self, settings: Mapping[str, str]) -> Any:
        """The running server with ``settings`` (``SSE_CHAT_*`` names to strings),
        started now if there is none or it exited. Waits until it answers
        ``/healthz`` (at most 30 s).

        Raises:
            AssertionError: the server did not start; the message holds its output.
        """
        env = self._environment(settings)
        key = tuple(sorted(env.items()))
        server = self._servers.get(key)
        if server is None or server.process.poll() is not None:
            from sse_chat.testing.servers import start_gunicorn

            server = self._servers[key] = start_gunicorn(self._directory, **env)
        return server

    @property
    def redis_url(self) -> str | None:
        """The URL of the session's redis-server once started (``redis://127.0.0.1:PORT/0``), else ``None``."""
        return self._redis.url if self._redis is not None else None

    def close(self) -> None:
        """Stop every server, then the redis-server."""
        for server in self._servers.values():
            server.stop()
        self._servers.clear()
        if self._redis is not None:
            self._redis.stop()
            self._redis = None

    def _environment(self, settings: Mapping[str, str]) -> dict[str, str]:
        env = {str(name): str(value) for name, value in settings.items()}
        if self._use_redis and not env.get("SSE_CHAT_REDIS_URL"):
            env["SSE_CHAT_REDIS_URL"] = self._redis_url()
        return env

    def _redis_url(self) -> str:
        if self._redis is None:
            from sse_chat.testing.redis_server import RedisServer

            directory = self._directory / "redis"
            directory.mkdir(exist_ok=True)
            self._redis = RedisServer(directory)
        return self._redis.url

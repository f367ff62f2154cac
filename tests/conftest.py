from __future__ import annotations

import openai
import pytest

from sse_chat.app import create_app
from sse_chat.config import Settings
from sse_chat.testing.redis_server import RedisServer
from sse_chat.testing.servers import start_gunicorn

from .browser import launch_chromium
from .upstream import FakeUpstream


@pytest.fixture
def make_app():
    """Build an app with the in-memory log: ``make_app(fake_delay_ms=0, ...)``."""

    def build(**overrides):
        return create_app(Settings().with_overrides(**{"fake_delay_ms": 0, **overrides}))

    return build


@pytest.fixture
def gunicorn(tmp_path):
    """Start gunicorn with gevent workers: ``server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="0")``."""
    started = []

    def start(**env: str):
        server = start_gunicorn(tmp_path, **env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def upstream():
    with FakeUpstream(stall_s=5.0) as server:
        yield server


@pytest.fixture
def upstream_server(gunicorn, upstream):
    """gunicorn with the fake model at full speed, its OpenAI-compatible backend
    pointed at ``upstream`` (no upstream retries)."""
    return gunicorn(SSE_CHAT_FAKE_DELAY_MS="0", OPENAI_BASE_URL=upstream.base_url, OPENAI_API_KEY="sk-up",
                    SSE_CHAT_UPSTREAM_MAX_RETRIES="0")


@pytest.fixture
def openai_sdk(upstream_server):
    """The official ``openai`` client for ``upstream_server``'s ``/v1`` (no retries)."""
    return openai.OpenAI(base_url=upstream_server.url + "/v1", api_key="unused", max_retries=0, timeout=30)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server for the whole session (fails under CI=true when missing)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium through Playwright, for one test module: while
    Playwright's sync API is open an asyncio loop runs in this thread, which other
    modules' ``asyncio.run`` cannot share."""
    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def page(browser):
    """A new page of the module's Chromium, 900 x 700 CSS pixels, closed after the test."""
    page = browser.new_page(viewport={"width": 900, "height": 700})
    yield page
    page.close()


@pytest.fixture(scope="session", autouse=True)
def _cli_log_in_a_temporary_folder(tmp_path_factory):
    """``sse-chat ask`` keeps a local log under the user data folder (platformdirs,
    which reads XDG_DATA_HOME; ``base_env`` keeps it): point it at a temporary folder
    so that the suite writes nothing into the real one."""
    import os

    previous = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))
    yield
    if previous is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = previous

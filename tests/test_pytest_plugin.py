"""The pytest plugin (sse_chat.testing.pytest_plugin, docs/testing-clients.md) as
its users get it: registered by installing sse-chat, used from test files outside
this project, run by plain ``python -m pytest`` in a subprocess."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests

from sse_chat.testing.servers import base_env, require_binary

from . import ROOT
from .event_reading import events_of

DOC = ROOT / "docs" / "testing-clients.md"
#: Modules the plugin must not import when pytest loads it (in every run of any
#: project in the environment).
HEAVY = ("flask", "gevent", "requests", "redis", "werkzeug", "openai", "sse_chat.app", "sse_chat.testing.servers")


def fenced_block(text: str, language: str, first_line: str) -> str:
    """The fenced ``language`` code block of a Markdown text whose first line is
    ``first_line`` (that line starts with it); the test fails when there is none."""
    for match in re.finditer(rf"^```{language}\n(.*?)^```$", text, re.MULTILINE | re.DOTALL):
        if match.group(1).startswith(first_line):
            return match.group(1)
    raise AssertionError(f"no ```{language} block starting with {first_line!r}")


def run_pytest_in(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """Plain ``python -m pytest`` with this environment's Python (where sse-chat
    is installed) in ``folder``, with none of this session's settings; at most 120 s."""
    env = base_env()
    for name in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTHONPATH"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def _outside_the_project(tmp_path: Path) -> Path:
    folder = tmp_path / "client-project"
    folder.mkdir()
    assert ROOT not in folder.resolve().parents
    return folder


def test_installing_registers_the_plugin_and_loading_it_imports_nothing_heavy():
    script = textwrap.dedent(f"""
        import sys
        from importlib.metadata import entry_points
        [plugin] = [e for e in entry_points(group="pytest11") if e.name == "sse_chat"]
        assert plugin.value == "sse_chat.testing.pytest_plugin", plugin
        plugin.load()
        heavy = sorted(m for m in sys.modules if m.startswith({HEAVY!r}))
        assert not heavy, heavy
    """)
    result = subprocess.run([sys.executable, "-c", script], env=base_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_test_file_outside_the_project_passes_under_plain_pytest(tmp_path):
    folder = _outside_the_project(tmp_path)
    (folder / "test_outside.py").write_text(textwrap.dedent("""
        import requests


        def test_the_fixture_serves_the_fake_model(sse_chat_server):
            assert sse_chat_server.url.startswith("http://127.0.0.1:")
            response = requests.post(sse_chat_server.url + "/v1/chat", json={"prompt": "Hi", "max_tokens": 3},
                                     timeout=10)
            assert response.status_code == 200
            assert response.text.count("event: token") == 3 and "event: done" in response.text


        def test_faults_on_request(sse_chat_server):
            response = requests.post(sse_chat_server.url + "/v1/chat", timeout=10,
                                     json={"prompt": "Hi", "max_tokens": 9, "fake": {"drop_every": 4}})
            assert response.text.count("\\nid: ") + response.text.startswith("id: ") == 4
            assert "event: done" not in response.text
    """))
    result = run_pytest_in(folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_the_python_example_of_the_docs_passes_under_plain_pytest(tmp_path):
    folder = _outside_the_project(tmp_path)
    (folder / "test_my_client.py").write_text(fenced_block(DOC.read_text(encoding="utf-8"), "python",
                                                           "# test_my_client.py"))
    result = run_pytest_in(folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


@pytest.mark.redis
def test_the_redis_option_keeps_the_servers_streams_in_a_redis_server(tmp_path):
    require_binary("redis-server")
    folder = _outside_the_project(tmp_path)
    (folder / "test_redis.py").write_text(textwrap.dedent("""
        import redis
        import requests


        def test_streams_are_in_redis(sse_chat_server, sse_chat_server_pool):
            response = requests.post(sse_chat_server.url + "/v1/chat", json={"prompt": "Hi"}, timeout=10)
            stream_id = response.text.split("id: ", 1)[1].split(":", 1)[0]
            keys = redis.Redis.from_url(sse_chat_server_pool.redis_url).keys(f"sse-chat:{{{stream_id}}}:*")
            assert len(keys) >= 2, keys
    """))
    result = run_pytest_in(folder, "--sse-chat-redis")
    assert result.returncode == 0, result.stdout + result.stderr
    (folder / "pytest.ini").write_text("[pytest]\nsse_chat_redis = true\n")
    result = run_pytest_in(folder)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_fixture_in_this_project(sse_chat_server):
    """This project's own tests get the fixture too (the plugin is installed here)."""
    response = requests.get(sse_chat_server.url + "/v1/chat?prompt=Hi&max_tokens=2", timeout=10)
    assert [e.type for e in events_of([response.content])] == ["start", "token", "token", "done"]
    assert response.content.startswith(b"retry: 100\n")


def test_servers_are_kept_per_settings(sse_chat_server, sse_chat_server_pool, sse_chat_settings):
    assert sse_chat_server_pool.get(dict(sse_chat_settings)) is sse_chat_server
    other = sse_chat_server_pool.get({**sse_chat_settings, "SSE_CHAT_RETRY_MS": "250"})
    assert other is not sse_chat_server
    assert requests.get(other.url + "/v1/chat?prompt=Hi", timeout=10).content.startswith(b"retry: 250\n")

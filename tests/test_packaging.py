"""The project as a user installs it: ``python -m sse_chat``, the wheel's contents and
metadata, and the wheel installed into a fresh virtualenv, run from outside the
checkout (the client alone first, then with the ``server`` extra)."""

from __future__ import annotations

import email.parser
import os
import signal
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
import requests

from sse_chat.testing.servers import base_env, free_port, wait_until

from . import ROOT


def test_python_m_sse_chat_is_the_command():
    result = subprocess.run([sys.executable, "-m", "sse_chat", "ask", "--fake", "hi"],
                            env=base_env(SSE_CHAT_LOG="0"), capture_output=True, timeout=60,
                            stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("You asked: «hi ».".encode())
    usage = subprocess.run([sys.executable, "-m", "sse_chat", "--help"], capture_output=True, text=True,
                           timeout=30, check=True).stdout
    assert usage.startswith("Usage: sse-chat ")


@pytest.mark.parametrize(("args", "what"), [(["serve"], "sse-chat serve"),
                                            (["ask", "--fake", "hi"], "--fake without --url")])
def test_without_the_server_extra_serve_and_fake_say_what_to_install(args, what):
    """Flask and gunicorn hidden (``sys.modules[name] = None`` makes them unfindable)."""
    code = ("import sys\n"
            "for name in ('flask', 'gunicorn'): sys.modules[name] = None\n"
            "from sse_chat.cli.main import main\n"
            f"sys.argv = ['sse-chat', *{args!r}]\n"
            "main()\n")
    result = subprocess.run([sys.executable, "-c", code], env=base_env(SSE_CHAT_LOG="0"), capture_output=True,
                            text=True, timeout=30, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 2, result.stderr
    assert f"{what} runs the service" in result.stderr and "(flask, gunicorn)" in result.stderr
    assert "pip install 'sse-chat[server]'" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from the checkout (``pip wheel --no-deps``)."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    [built] = out.glob("sse_chat-*.whl")
    return built


def test_the_wheel_holds_one_top_level_package_a_licence_and_full_metadata(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = next(name.split("/")[0] for name in names if name.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(archive.read(f"{dist_info}/METADATA").decode())
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    top_level = {name.split("/")[0] for name in names} - {dist_info}
    assert top_level == {"sse_chat"}
    assert "sse_chat/cli/main.py" in names and "sse_chat/__main__.py" in names
    assert "sse_chat/gunicorn_config.py" in names and "sse_chat/static/index.html" in names
    assert f"{dist_info}/licenses/LICENSE" in names
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Requires-Python"] == ">=3.10"
    assert len(metadata.get_all("Classifier")) >= 5
    assert "sse-chat = sse_chat.cli.main:main" in entry_points
    requires = metadata.get_all("Requires-Dist")
    base = [req for req in requires if "extra ==" not in req]
    assert not [req for req in base if req.split(">")[0].split("[")[0] in ("flask", "gunicorn", "gevent", "redis")]
    assert any(req.startswith("flask") and 'extra == "server"' in req for req in requires)


def _venv_bin(path: Path) -> Path:
    venv.create(path, with_pip=True)
    return path / "bin"


def _pip_install(bin_dir: Path, requirement: str) -> None:
    subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", requirement],
                   check=True, capture_output=True, timeout=600)


def test_the_wheel_installed_in_a_fresh_venv_asks_serves_and_shows_the_page(wheel, tmp_path):
    """From a directory outside the checkout: the client alone, then ``[server]``:
    ``ask --fake``, ``serve``, the page, and the README's gunicorn command."""
    bin_dir = _venv_bin(tmp_path / "venv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = base_env(SSE_CHAT_HOME=str(tmp_path / "home"), PYTHONPATH="")
    env.pop("PYTHONPATH")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL, check=False)

    _pip_install(bin_dir, str(wheel))
    client_only = run(str(bin_dir / "python"), "-c",
                      "import sse_chat.client, sse_chat.cli.main, importlib.util as u; "
                      "print(sse_chat.client.__file__, u.find_spec('flask'), u.find_spec('cli'))")
    assert client_only.returncode == 0, client_only.stderr
    assert client_only.stdout.startswith(str(tmp_path / "venv")) and client_only.stdout.split()[1:] == ["None"] * 2
    needs_server = run(str(bin_dir / "sse-chat"), "ask", "--fake", "hi")
    assert needs_server.returncode == 2 and "pip install 'sse-chat[server]'" in needs_server.stderr

    _pip_install(bin_dir, f"{wheel}[server]")
    asked = run(str(bin_dir / "sse-chat"), "ask", "--fake", "hi")
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.startswith("You asked: «hi ».")
    assert run(str(bin_dir / "python"), "-m", "sse_chat", "--version").stdout.strip() == "sse-chat, version 0.1.0"

    for command in ([str(bin_dir / "sse-chat"), "serve", "--port", "{port}"],
                    [str(bin_dir / "gunicorn"), "-c", "python:sse_chat.gunicorn_config", "-b", "127.0.0.1:{port}"]):
        port = free_port()
        argv = [part.format(port=port) for part in command]
        log = tmp_path / f"server-{port}.log"
        server = subprocess.Popen(argv, cwd=elsewhere, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            up = lambda server=server, url=url: server.poll() is not None or _answers(url + "/healthz")  # noqa: E731
            wait_until(up, 60, f"{argv[0]} to answer")
            assert server.poll() is None, log.read_text()
            page = requests.get(url + "/", timeout=10)
            assert page.status_code == 200 and "<title>" in page.text and "chat.js" in page.text
            assert requests.get(url + "/static/chat.js", timeout=10).status_code == 200
            remote = run(str(bin_dir / "sse-chat"), "ask", "--url", url, "hi")
            assert remote.returncode == 0 and remote.stdout == asked.stdout, remote.stderr
        finally:
            server.send_signal(signal.SIGINT)  # gunicorn's quick shutdown
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False

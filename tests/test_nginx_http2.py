"""The README's nginx block, run as it is written (certificate and ports swapped)
in front of gunicorn: browsers reach the page and its streams over HTTP/2, where
one origin's event streams share one connection, so a seventh open stream does
not wait as it does over HTTP/1.1 (6 connections per origin)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from sse_chat.testing.servers import free_port, require_binary, wait_until

pytestmark = pytest.mark.browser
README = Path(__file__).resolve().parents[1] / "README.md"
STREAMS = 7  # one more than a browser's 6 HTTP/1.1 connections per origin


def readme_nginx_block() -> str:
    """The ```nginx block of README.md."""
    match = re.search(r"```nginx\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert match, "README.md has no nginx block"
    return match.group(1)


def nginx_conf(tmp_path: Path, listen_port: int, upstream_port: int) -> Path:
    """A whole nginx.conf around the README's server block, runnable without root."""
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([require_binary("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(certificate)], check=True, capture_output=True)
    server = readme_nginx_block()
    replacements = {"listen 443 ": f"listen 127.0.0.1:{listen_port} ", "/etc/ssl/chat/fullchain.pem": str(certificate),
                    "/etc/ssl/chat/privkey.pem": str(key), "http://127.0.0.1:8000": f"http://127.0.0.1:{upstream_port}"}
    for old, new in replacements.items():
        assert old in server, f"the README's nginx block no longer has {old!r}"
        server = server.replace(old, new)
    temp = "\n".join(f"    {kind}_temp_path {tmp_path / kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                               "uwsgi", "scgi"))
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"daemon off;\nworker_processes 1;\npid {tmp_path / 'nginx.pid'};\n"
                    f"error_log {tmp_path / 'error.log'} warn;\nevents {{}}\n"
                    f"http {{\n    access_log off;\n{temp}\n{server}}}\n")
    return conf


@pytest.fixture
def nginx(gunicorn, tmp_path):
    """gunicorn (fake model, 100 ms per token) behind nginx with the README's block:
    ``(nginx_url, gunicorn_url)``."""
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if binary is None:
        require_binary("nginx")  # fails under CI=true, skips elsewhere
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="100")
    port = free_port()
    conf = nginx_conf(tmp_path, port, int(server.url.rsplit(":", 1)[1]))
    process = subprocess.Popen([binary, "-c", str(conf), "-p", str(tmp_path)], stderr=subprocess.PIPE)
    url = f"https://127.0.0.1:{port}"

    def up() -> bool:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else "nginx exited"
        try:
            return requests.get(url + "/healthz", verify=str(tmp_path / "cert.pem"), timeout=2).ok
        except requests.RequestException:
            return False

    try:
        wait_until(up, 20, "nginx")
        yield url, server.url
    finally:
        process.terminate()
        process.wait(10)


OPEN_STREAMS = """async (count) => {
    // Open `count` EventSources at once; note the order of their start and done
    // events. Each answer runs about 2 s (20 tokens, 100 ms apart).
    const order = [];
    await Promise.all([...Array(count).keys()].map((i) => new Promise((resolve, reject) => {
        const source = new EventSource(`/v1/chat?prompt=stream+${i}&max_tokens=20`);
        source.addEventListener("start", () => order.push(["start", i]));
        source.addEventListener("done", () => { order.push(["done", i]); source.close(); resolve(); });
        source.onerror = () => { if (source.readyState === EventSource.CLOSED) reject(new Error("closed")); };
    })));
    return {order, protocol: performance.getEntriesByType("navigation")[0].nextHopProtocol};
}"""


def _starts_before_first_done(order: list) -> int:
    first_done = next(i for i, (kind, _) in enumerate(order) if kind == "done")
    return sum(1 for kind, _ in order[:first_done] if kind == "start")


def test_seven_event_sources_stream_at_once_over_http2_and_not_over_http1(browser, nginx):
    nginx_url, gunicorn_url = nginx
    context = browser.new_context(ignore_https_errors=True)
    try:
        page = context.new_page()
        page.goto(nginx_url + "/")
        over_h2 = page.evaluate(OPEN_STREAMS, STREAMS)
        page.goto(gunicorn_url + "/")
        over_h1 = page.evaluate(OPEN_STREAMS, STREAMS)
    finally:
        context.close()
    assert over_h2["protocol"] == "h2" and over_h1["protocol"] == "http/1.1"
    assert _starts_before_first_done(over_h2["order"]) == STREAMS
    assert _starts_before_first_done(over_h1["order"]) == 6  # the seventh waited for a connection


def test_the_page_streams_its_answer_through_nginx_over_http2(browser, nginx):
    nginx_url, gunicorn_url = nginx
    body = {"messages": [{"role": "user", "content": "Why is the sky blue?"}], "max_tokens": 12}
    expected = requests.post(gunicorn_url + "/v1/chat", json=body, timeout=30)
    assert expected.ok
    context = browser.new_context(ignore_https_errors=True)
    try:
        page = context.new_page()
        page.goto(nginx_url + "/?max_tokens=12")
        page.fill("#prompt", "Why is the sky blue?")
        page.press("#prompt", "Enter")
        page.wait_for_function("() => document.querySelector('#conversation li.assistant')?.dataset.finishReason",
                               timeout=30_000)
        shown = page.evaluate("() => document.querySelector('#conversation li.assistant .answer').textContent")
        protocol = page.evaluate("() => performance.getEntriesByType('resource')"
                                 ".find((e) => e.name.endsWith('/v1/chat'))?.nextHopProtocol")
    finally:
        context.close()
    from .event_reading import answer_text, events_of

    assert protocol == "h2"
    assert re.sub(r"\s+", "", shown) == re.sub(r"\s+", "", answer_text(events_of([expected.content])))

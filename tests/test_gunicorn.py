"""The real deployment: gunicorn with gevent workers on a free loopback port."""

import asyncio
import json
import logging
import socket
import subprocess
import sys

import pytest
import requests

from sse_chat.testing.loadgen import run_many
from sse_chat.testing.servers import wait_until

from .event_reading import answer_text, assert_well_formed, events_of, stream_of


def _stream(url, **body):
    response = requests.post(url + "/v1/chat", json=body, stream=True, timeout=30)
    return response, events_of(response.iter_content(chunk_size=None))


def test_streams_over_real_http_with_chunked_encoding_and_no_patch_warnings(gunicorn):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="1")
    response, events = _stream(server.url, prompt="Hello 你好", max_tokens=100)
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in response.headers and "Content-Encoding" not in response.headers
    assert_well_formed(events)
    assert len(events) == 102
    log = server.log()
    assert "Using worker: sse_chat.gunicorn_worker.Worker" in log   # gunicorn's gevent worker, subclassed
    for bad in ("MonkeyPatchWarning", "RecursionError", "Traceback"):
        assert bad not in log


def _raw_request(url: str, head: bytes, body: bytes = b"") -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


@pytest.mark.parametrize("data,content_type,status", [
    (b"{not json", "application/json", 400),
    (b"{}", "application/json", 400),
    (b'{"prompt": "a", "messages": [{"role": "user", "content": "a"}]}', "application/json", 400),
    (b'{"prompt": ["a"]}', "application/json", 400),
    (b'{"prompt": "a", "max_tokens": "many"}', "application/json", 400),
    (b'{"prompt": "a"}', "text/plain", 415),
    (b'{"prompt": "a"}', "application/x-www-form-urlencoded", 415),
])
def test_bad_requests_get_4xx_json_and_the_server_keeps_serving(sse_chat_server, data, content_type, status):
    server = sse_chat_server  # one server for every case (the pytest plugin's)
    response = requests.post(server.url + "/v1/chat", data=data, headers={"Content-Type": content_type}, timeout=10)
    assert response.status_code == status
    assert set(response.json()["error"]) == {"type", "message"}
    assert _stream(server.url, prompt="still there?", max_tokens=3)[1][-1].type == "done"


def test_twenty_megabyte_body_is_413_json_and_the_server_keeps_serving(gunicorn):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="0")
    body = b'{"prompt": "' + b"x" * (20 * 1024 * 1024) + b'"}'
    head = (f"POST /v1/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    answer = _raw_request(server.url, head, body)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["type"] == "payload_too_large"
    # and through requests, which sends the whole body before it reads
    response = requests.post(server.url + "/v1/chat", data=body, headers={"Content-Type": "application/json"},
                             timeout=30)
    assert response.status_code == 413 and response.json()["error"]["type"] == "payload_too_large"
    assert _stream(server.url, prompt="still there?", max_tokens=3)[1][-1].type == "done"


def test_one_worker_carries_500_concurrent_streams_with_gap_free_ids(gunicorn):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="20")
    bodies = [{"prompt": f"load {i}", "max_tokens": 50} for i in range(500)]
    results = asyncio.run(run_many(server.url, bodies))
    assert [r.error for r in results if r.error] == []
    assert all(r.gap_free for r in results)
    assert sum(len(r.seqs) for r in results) == 500 * 52
    assert len({r.stream_id for r in results}) == 500


def test_producer_outlives_its_reader_and_is_resumable(gunicorn):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="5")
    with requests.post(server.url + "/v1/chat", json={"prompt": "x", "max_tokens": 200}, stream=True,
                       timeout=10) as response:
        first = next(response.iter_content(chunk_size=None))
    start = events_of([first])[0]
    stream_id = stream_of(start.last_event_id)
    resumed = requests.get(f"{server.url}/v1/streams/{stream_id}", headers={"Last-Event-ID": start.last_event_id},
                           timeout=30)
    events = events_of([resumed.content])
    assert_well_formed(events, first_seq=1)
    assert len(events) == 201


def test_abandoned_producer_stops(gunicorn):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="20", SSE_CHAT_ABANDON_S="0.3")
    with requests.post(server.url + "/v1/chat", json={"prompt": "x", "max_tokens": 100_000}, stream=True,
                       timeout=10) as response:
        first = next(response.iter_content(chunk_size=None))
    start = events_of([first])[0]
    stream_id = stream_of(start.last_event_id)

    def ended():
        # The first chunk of a replay holds every event logged so far. Reading it
        # attaches a reader for a moment, so poll less often than SSE_CHAT_ABANDON_S.
        with requests.get(f"{server.url}/v1/streams/{stream_id}", stream=True, timeout=30) as tail:
            return b"stream_abandoned" in next(tail.iter_content(chunk_size=None))

    wait_until(ended, 20, "the abandoned producer to stop", interval_s=1.0)
    events = events_of([requests.get(f"{server.url}/v1/streams/{stream_id}", timeout=30).content])
    assert_well_formed(events)
    assert len(events) < 1000


def test_openai_backend_through_gunicorn_never_leaks_the_key(gunicorn, upstream):
    secret = "sk-live-DO-NOT-LEAK-42"
    server = gunicorn(OPENAI_BASE_URL=upstream.base_url, OPENAI_API_KEY=secret, SSE_CHAT_MODEL="ok",
                      SSE_CHAT_UPSTREAM_MAX_RETRIES="0")
    _, events = _stream(server.url, prompt="Capital of France?")
    assert_well_formed(events)
    assert answer_text(events) == "Paris is the capital.\n 你好"
    _, events = _stream(server.url, prompt="x", model="http401")
    assert_well_formed(events)
    error = json.loads(events[-1].data)["error"]
    assert error["type"] == "upstream_unauthorized" and "HTTP 401" in error["message"]
    assert all(secret not in e.data for e in events)
    assert secret not in server.log()


def test_the_readmes_gunicorn_conf_py_holds_the_projects_settings():
    """``gunicorn -c gunicorn.conf.py`` (the README's command) loads the same settings
    as ``python:sse_chat.gunicorn_config`` (what the tests start)."""
    from sse_chat.testing.servers import BIN, base_env

    from . import ROOT

    checked = subprocess.run([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "--check-config", "--print-config"],
                             cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    settings = dict(line.split("=", 1) for line in checked.stdout.splitlines() if "=" in line)
    settings = {name.strip(): value.strip() for name, value in settings.items()}
    assert settings["worker_class"] == "sse_chat.gunicorn_worker.Worker"
    assert settings["wsgi_app"] == "sse_chat.app:create_app()"
    assert settings["http_parser"] == "auto"


def test_request_heads_are_parsed_by_gunicorns_c_parser():
    """``http_parser = "auto"`` with the ``fast`` extra installed (the ``test``
    extra includes it): gunicorn parses request heads with gunicorn_h1c."""
    from gunicorn.config import Config
    from gunicorn.http import message

    from sse_chat import gunicorn_config

    cfg = Config()
    cfg.set("http_parser", gunicorn_config.http_parser)
    assert message._check_fast_parser(cfg)  # what gunicorn's Request asks before each parse


def test_a_worker_freezes_what_it_loaded_and_raises_the_collector_thresholds():
    """The worker class's ``load_wsgi`` sends the app's log lines to stderr (at
    gunicorn's log level), loads
    the app and then tunes the garbage collector: what it loaded sits in the
    permanent generation and the thresholds are ``GC_THRESHOLDS`` (run in a fresh
    interpreter: ``gc`` and ``logging`` state is process-wide)."""
    from sse_chat.testing.servers import base_env

    from . import ROOT

    script = """
import gc, json, logging, types
from gunicorn.workers.ggevent import GeventWorker
from sse_chat.app import create_app
from sse_chat.gunicorn_worker import GC_THRESHOLDS, Worker
before = gc.get_threshold()
worker = Worker.__new__(Worker)   # gunicorn's arbiter builds it; here only the app is needed
worker.app = types.SimpleNamespace(wsgi=create_app)
worker.cfg = types.SimpleNamespace(loglevel="debug")   # gunicorn's --log-level
worker.load_wsgi()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count(),
                  "wanted": GC_THRESHOLDS, "gevent_worker": isinstance(worker, GeventWorker),
                  "app": "sse_chat" in worker.wsgi.extensions,
                  "handlers": len(logging.getLogger("sse_chat").handlers),
                  "level": logging.getLogger("sse_chat").level}))
"""
    ran = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=base_env(), capture_output=True,
                         text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    state = json.loads(ran.stdout)
    assert state["before"] != state["after"] == list(state["wanted"])
    assert state["frozen"] > 10_000  # Flask, werkzeug, the openai SDK, the app
    assert state["gevent_worker"] and state["app"] and state["handlers"] == 1
    assert state["level"] == logging.DEBUG  # the app's lines follow gunicorn's --log-level

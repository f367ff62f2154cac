"""The service as a hostile client meets it, against gunicorn on loopback (issue
"bounded under abuse and faults"): bad input is a 4xx, never a 500 or a traceback."""

from __future__ import annotations

import json

import pytest
import requests

from sse_chat.testing.servers import base_env, run_cli, start_gunicorn

KEY = "k-abuse"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    started = start_gunicorn(tmp_path_factory.mktemp("abuse"), SSE_CHAT_API_KEYS=KEY, SSE_CHAT_FAKE_DELAY_MS="0")
    yield started
    started.stop()


def _post(server, path: str, raw: bytes, **headers: str) -> requests.Response:
    return requests.post(server.url + path, data=raw, timeout=10,
                         headers={**AUTH, "Content-Type": "application/json", **headers})


def _assert_no_failure_logged(server) -> None:
    log = server.log()
    assert "Traceback" not in log and "internal_error" not in log and "[ERROR]" not in log, log[-3000:]


@pytest.mark.parametrize("path,body,field", [
    ("/v1/chat", {"prompt": "\ud800"}, '"prompt"'),
    ("/v1/chat", {"prompt": "hi", "system": "\udfff"}, '"system"'),
    ("/v1/chat", {"messages": [{"role": "user", "content": "a\udc80b"}]}, '"messages[0].content"'),
    ("/v1/chat/completions", {"model": "fake", "messages": [{"role": "user", "content": "\ud800"}]},
     '"messages[0].content"'),
    ("/v1/chat/completions", {"model": "fake", "stream": True, "messages": [{"role": "user", "content": "\ud800"}]},
     '"messages[0].content"'),
])
def test_a_lone_surrogate_is_400_naming_the_field(server, path, body, field):
    response = _post(server, path, json.dumps(body).encode(), **{"Idempotency-Key": "surrogate-" + field})
    assert response.status_code == 400, response.text
    assert field in response.json()["error"]["message"]
    _assert_no_failure_logged(server)


def test_deep_nesting_with_an_idempotency_key_is_400(server):
    for depth in (100, 967, 968, 5000):
        raw = b'{"prompt": "hi", "x": ' + b"[" * depth + b"]" * depth + b"}"
        response = _post(server, "/v1/chat", raw, **{"Idempotency-Key": f"deep-{depth}"})
        assert response.status_code == 400 and "deep" in response.json()["error"]["message"]
    _assert_no_failure_logged(server)


@pytest.mark.parametrize("digits", [20, 4200, 4400, 8000])  # gunicorn refuses headers over 8,190 bytes
def test_a_huge_last_event_id_is_404(server, digits):
    last_event_id = "abc:" + "9" * digits
    for method, path in (("GET", "/v1/streams/abc"), ("POST", "/v1/chat"), ("GET", "/v1/chat?prompt=x"),
                         ("POST", "/v1/chat/completions")):
        response = requests.request(method, server.url + path, json={"prompt": "x"}, timeout=10,
                                    headers={**AUTH, "Last-Event-ID": last_event_id})
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["type"] == "stream_not_found"
    _assert_no_failure_logged(server)


def test_cli_reads_non_utf8_input_with_replacement_characters(server):
    env = base_env(SSE_CHAT_URL=server.url, SSE_CHAT_API_KEY=KEY, SSE_CHAT_LOG="0")
    done = run_cli("ask", "-s", "sys\udcfe", "caf\udce9", "-", input=b"piped \xff bytes\n", env=env)
    # "-" alone reads stdin only; here it is a word, and stdin is piped too
    assert done.returncode == 0, done.stderr
    assert "\ufffd" in done.stdout.decode() and b"Traceback" not in done.stderr
    _assert_no_failure_logged(server)

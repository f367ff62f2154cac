"""``sse-chat ask`` as a user runs it: a subprocess, against real servers."""

import json
import signal
import subprocess

import pytest
import requests

from sse_chat.client import MAX_BACKOFF_MS, retry_after_ms
from sse_chat.testing.servers import CLI, base_env, free_port, run_cli

from .event_reading import assert_well_formed, events_of
from .gateway import Answer, Forward, ScriptedGateway, unavailable
from .proxy import CuttingProxy


def test_fake_works_with_no_server_and_no_configuration():
    result = run_cli("ask", "--fake", "Why is the sky blue?")
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    assert result.stdout.decode().startswith("You asked: «Why is the sky blue? ».")


def test_stdout_is_exactly_the_answer_text_of_the_stream(sse_chat_server):
    server = sse_chat_server  # the pytest plugin's default fake server
    text = run_cli("ask", "--url", server.url, "--max-tokens", "300", "hello").stdout
    events = events_of([requests.post(server.url + "/v1/chat", json={"prompt": "hello", "max_tokens": 300}).content])
    assert text.decode() == "".join(json.loads(e.data)["content"] for e in events if e.type == "token")


def test_closed_stdout_ends_quietly():
    result = subprocess.run(f"'{CLI}' ask --fake --max-tokens 3000 x | head -c 20; exit ${{PIPESTATUS[0]}}",
                            shell=True, executable="/bin/bash", capture_output=True, env=base_env(), timeout=60,
                            check=False)
    assert result.returncode in (0, 141)
    assert len(result.stdout) == 20
    assert result.stderr == b""


def test_json_lines_carry_id_event_and_unparsed_data():
    result = run_cli("ask", "--fake", "--json", "--max-tokens", "3", "hi")
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [line["event"] for line in lines] == ["start", "token", "token", "token", "done"]
    stream_id = json.loads(lines[0]["data"])["stream_id"]
    assert [line["id"] for line in lines] == [f"{stream_id}:{i}" for i in range(5)]
    assert json.loads(lines[-1]["data"])["finish_reason"] == "length"


def test_raw_writes_the_bytes_of_the_event_stream():
    raw = run_cli("ask", "--fake", "--raw", "--max-tokens", "5", "hi").stdout
    assert raw.startswith(b"retry: 1000\nid: ")
    assert_well_formed(events_of([raw]))


@pytest.mark.parametrize("args,stdin,expected", [
    (["a", "b"], None, "a b"),
    (["words"], b"piped text\n", "piped text\n\nwords"),
    (["-"], b"only stdin\n", "only stdin"),
])
def test_prompt_from_words_and_piped_stdin(args, stdin, expected):
    result = run_cli("ask", "--fake", *args, input=stdin)
    assert result.returncode == 0
    assert f"«{expected} »" in result.stdout.decode()


def test_no_prompt_is_a_usage_error():
    result = run_cli("ask", "--fake", input=b"")
    assert result.returncode == 2 and b"give a prompt" in result.stderr and b"Traceback" not in result.stderr


def test_a_refused_first_connection_exits_3_at_once_naming_the_url_and_how_to_start_a_server():
    url = f"http://127.0.0.1:{free_port()}"
    result = run_cli("ask", "--url", url, "--retries", "5", "hi")
    assert result.returncode == 3
    stderr = result.stderr.decode()
    assert f"could not connect to {url}" in stderr and "reconnecting" not in stderr
    assert "sse-chat serve" in stderr and "gunicorn -c python:sse_chat.gunicorn_config" in stderr and "--fake" in stderr
    assert "Traceback" not in stderr and result.stdout == b""


@pytest.mark.parametrize("url", ["notaurl", "ftp://127.0.0.1:8000", "http://", "http://127.0.0.1:notaport"])
def test_a_malformed_url_is_a_usage_error(url):
    result = run_cli("ask", "-u", url, "hi")
    assert result.returncode == 2
    assert b"--url" in result.stderr and b"is not a URL" in result.stderr and b"Traceback" not in result.stderr
    assert result.stdout == b""


def test_usage_goes_to_stderr_after_the_answer():
    result = run_cli("ask", "--fake", "--max-tokens", "7", "--usage", "q")
    plain = run_cli("ask", "--fake", "--max-tokens", "7", "q")
    assert result.returncode == 0
    assert result.stdout == plain.stdout and b"usage" not in result.stdout
    assert b"7 completion" in result.stderr and b"finish_reason length" in result.stderr


def test_http_error_exits_1_with_the_servers_message(gunicorn):
    server = gunicorn()
    result = run_cli("ask", "--url", server.url, "-m", "gpt-4o", "hi")
    assert result.returncode == 1
    assert b"503 backend_unavailable" in result.stderr and b"OPENAI_BASE_URL" in result.stderr


def _address(url):
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def test_503_with_retry_after_is_retried_and_the_answer_is_uncut(gunicorn):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="0")
    uncut = run_cli("ask", "--url", server.url, "--max-tokens", "50", "busy")
    with ScriptedGateway(_address(server.url), [unavailable(retry_after_s=2), unavailable(retry_after_s=2)]) as gateway:
        result = run_cli("ask", "--url", gateway.url, "--max-tokens", "50", "busy")
    assert result.returncode == 0, result.stderr
    assert result.stdout == uncut.stdout
    assert [(s.method, s.path) for s in gateway.seen] == [("POST", "/v1/chat")] * 3
    # Retry-After is the least wait: backoff alone would wait 1 to 1.5 s after the first 503
    assert gateway.seen[1].at - gateway.seen[0].at >= 2.0
    assert result.stderr.count(b"HTTP 503 event_log_unavailable") == 2 and b"attempt 2 of 5" in result.stderr


def test_502_and_504_on_a_resume_are_retried(gunicorn):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="1", SSE_CHAT_RETRY_MS="10")
    uncut = run_cli("ask", "--url", server.url, "--max-tokens", "300", "through a gateway")
    script = [Forward(cut_after=1500), Answer(502, body=b"<html>bad gateway</html>"), Answer(504)]
    with ScriptedGateway(_address(server.url), script) as gateway:
        result = run_cli("ask", "--url", gateway.url, "--max-tokens", "300", "through a gateway")
    assert result.returncode == 0, result.stderr
    assert result.stdout == uncut.stdout
    assert [s.method for s in gateway.seen] == ["POST", "GET", "GET", "GET"]
    assert all(s.path.startswith("/v1/streams/") for s in gateway.seen[1:])
    assert b"HTTP 502 <html>bad gateway</html>" in result.stderr and b"HTTP 504" in result.stderr


def test_503s_count_against_retries_then_exit_3():
    with ScriptedGateway(("127.0.0.1", free_port()), [unavailable(retry_after_s=0)] * 3) as gateway:
        result = run_cli("ask", "--url", gateway.url, "--retries", "2", "hi")
    assert result.returncode == 3
    assert len(gateway.seen) == 3
    assert b"gave up after 2 reconnection attempts: the server answered HTTP 503" in result.stderr
    assert result.stdout == b"" and b"Traceback" not in result.stderr


def test_other_http_errors_are_not_retried():
    body = b'{"error": {"type": "internal_error", "message": "the server failed; try again"}}'
    with ScriptedGateway(("127.0.0.1", free_port()), [Answer(500, body=body)]) as gateway:
        result = run_cli("ask", "--url", gateway.url, "hi")
    assert result.returncode == 1 and len(gateway.seen) == 1
    assert b"HTTP 500 internal_error: the server failed" in result.stderr


@pytest.mark.parametrize("header,expected_ms", [
    ("2", 2000.0), ("0", 0.0), (None, 0.0), ("-1", 0.0), ("soon", 0.0),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), ("86400", float(MAX_BACKOFF_MS)),
])
def test_retry_after_is_read_in_seconds_and_capped(header, expected_ms):
    assert retry_after_ms(header) == expected_ms


def test_error_event_exits_1_and_says_what_the_upstream_did(gunicorn, upstream):
    secret = "sk-cli-SECRET-77"
    server = gunicorn(OPENAI_BASE_URL=upstream.base_url, OPENAI_API_KEY=secret, SSE_CHAT_UPSTREAM_MAX_RETRIES="0")
    result = run_cli("ask", "--url", server.url, "-m", "http429", "hi")
    assert result.returncode == 1
    assert b"upstream_rate_limited" in result.stderr and b"HTTP 429" in result.stderr
    assert secret.encode() not in result.stderr + result.stdout and b"Traceback" not in result.stderr


def test_tokens_reach_stdout_as_they_arrive(gunicorn):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="300")
    process = subprocess.Popen([CLI, "ask", "--url", server.url, "--max-tokens", "10", "x"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=base_env())
    first = process.stdout.read1(4096)
    still_running = process.poll() is None  # 9 tokens × 300 ms still to come
    rest, _ = process.communicate(timeout=30)
    assert first and still_running
    assert process.returncode == 0 and len(first) < len(first + rest)


def test_ctrl_c_cancels_the_stream_says_how_to_resume_and_exits_130(gunicorn):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="20")
    # SIGINT at its default: a test run started in the background (`pytest &`) ignores
    # it, and Python then installs no KeyboardInterrupt handler in the child.
    process = subprocess.Popen([CLI, "ask", "--url", server.url, "--json", "--max-tokens", "100000", "x"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=base_env(),
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first_line = process.stdout.readline()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    assert b"--resume" in stderr and b"Traceback" not in stderr
    stream_id = json.loads(json.loads(first_line)["data"])["stream_id"]
    events = events_of([requests.get(f"{server.url}/v1/streams/{stream_id}", timeout=30).content])
    assert json.loads(events[-1].data)["finish_reason"] == "cancelled"


def test_resume_prints_only_what_follows_the_event_id(sse_chat_server):
    server = sse_chat_server
    lines = [json.loads(line)
             for line in run_cli("ask", "--url", server.url, "--json", "--max-tokens", "20", "q").stdout.splitlines()]
    tokens = [json.loads(line["data"])["content"] for line in lines if line["event"] == "token"]
    result = run_cli("ask", "--url", server.url, "--resume", lines[10]["id"])
    assert result.returncode == 0
    assert result.stdout.decode() == "".join(tokens[10:])


def test_reconnects_through_a_cutting_proxy_and_prints_the_uncut_answer(gunicorn):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="1", SSE_CHAT_RETRY_MS="10")
    uncut = run_cli("ask", "--url", server.url, "--max-tokens", "400", "resume me")
    host, port = server.url.removeprefix("http://").split(":")
    with CuttingProxy((host, int(port)), 200, 3000, seed=1) as proxy:
        cut = run_cli("ask", "--url", proxy.url, "--max-tokens", "400", "resume me")
    assert cut.returncode == 0, cut.stderr
    assert proxy.connections > 3
    assert cut.stdout == uncut.stdout


def test_retries_zero_never_reconnects(gunicorn):
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="1", SSE_CHAT_RETRY_MS="10")
    host, port = server.url.removeprefix("http://").split(":")
    with CuttingProxy((host, int(port)), 400, 400) as proxy:
        result = run_cli("ask", "--url", proxy.url, "--retries", "0", "--max-tokens", "400", "x")
    assert result.returncode == 3 and proxy.connections == 1
    assert b"sse-chat ask --url" in result.stderr and b"--resume" in result.stderr


def test_show_reasoning_writes_the_thinking_to_stderr_dimmed(gunicorn, upstream):
    server = gunicorn(OPENAI_BASE_URL=upstream.base_url, SSE_CHAT_UPSTREAM_MAX_RETRIES="0")
    shown = run_cli("ask", "--url", server.url, "-m", "reasoning", "--show-reasoning", "q")
    hidden = run_cli("ask", "--url", server.url, "-m", "reasoning", "q")
    assert shown.stdout == hidden.stdout == b"Answer"
    assert b"\x1b[2mThink" in shown.stderr and b"ing." in shown.stderr
    assert hidden.stderr == b""


def test_resume_needs_an_event_id():
    result = run_cli("ask", "--resume", "not-an-event-id")
    assert result.returncode == 2 and b"STREAM_ID:SEQ" in result.stderr and b"Traceback" not in result.stderr


def test_api_key_from_option_or_environment(gunicorn):
    server = gunicorn(SSE_CHAT_API_KEYS="cli-key", SSE_CHAT_FAKE_DELAY_MS="0")
    refused = run_cli("ask", "--url", server.url, "hi")
    assert refused.returncode == 1 and b"401 unauthorized" in refused.stderr
    assert run_cli("ask", "--url", server.url, "--api-key", "cli-key", "hi").returncode == 0
    keyed = run_cli("ask", "--url", server.url, "hi", env=base_env(SSE_CHAT_API_KEY="cli-key"))
    assert keyed.returncode == 0 and b"cli-key" not in keyed.stdout + keyed.stderr


def test_serve_runs_gunicorn_with_the_projects_settings(tmp_path):
    import signal as signals

    from sse_chat.testing.servers import wait_until

    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen([CLI, "serve", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                              env=base_env(SSE_CHAT_FAKE_DELAY_MS="0"))
    url = f"http://127.0.0.1:{port}"
    try:
        def up():
            try:
                return requests.get(url + "/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_until(up, 30, "sse-chat serve")
        result = run_cli("ask", "--url", url, "--max-tokens", "3", "hi")
        assert result.returncode == 0 and result.stdout
        assert b"Using worker: sse_chat.gunicorn_worker.Worker" in (tmp_path / "serve.log").read_bytes()
    finally:
        server.send_signal(signals.SIGINT)
        server.wait(20)

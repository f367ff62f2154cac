"""``sse-chat ask`` on ordinary mistakes: a placeholder event id, an OpenAI-style
``/v1`` URL, a missing key, a host that does not resolve, a key no header can
carry, a prompt of megabytes. A message that says what to do, never a traceback."""

import json

import pytest

from sse_chat.client import ChatClient
from sse_chat.testing.servers import base_env, run_cli


def _stderr(result) -> str:
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr, stderr
    return stderr


@pytest.mark.parametrize("event_id", ["Xq3…:41", "abc def:3", "abc:4x", "id-only"])
def test_a_resume_id_that_no_header_carries_is_a_usage_error(event_id):
    result = run_cli("ask", "--resume", event_id)
    stderr = _stderr(result)
    assert result.returncode == 2
    assert "Invalid value for --resume" in stderr and "is not an event id STREAM_ID:SEQ" in stderr


def test_the_client_refuses_such_an_id_before_any_round_trip():
    client = ChatClient("http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(ValueError, match="not an event id"):
        client.resume("Xq3…:41")


def test_a_key_that_no_header_carries_is_a_usage_error():
    result = run_cli("ask", "--url", "http://127.0.0.1:9", "hi", env=base_env(SSE_CHAT_API_KEY="clé"))
    assert result.returncode == 2 and "printable ASCII" in _stderr(result)


def test_a_url_ending_in_v1_gets_a_hint_to_drop_it(sse_chat_server):
    result = run_cli("ask", "--url", sse_chat_server.url + "/v1", "hi")
    stderr = _stderr(result)
    assert result.returncode == 1 and "HTTP 404" in stderr
    assert f"the URL ends with /v1: give the service's root, --url {sse_chat_server.url} " in stderr


def test_a_401_names_the_option_and_the_variable(gunicorn):
    server = gunicorn(SSE_CHAT_API_KEYS="right-key")
    missing = run_cli("ask", "--url", server.url, "hi")
    assert missing.returncode == 1
    assert "give it with --api-key KEY or the environment variable SSE_CHAT_API_KEY" in _stderr(missing)
    wrong = run_cli("ask", "--url", server.url, "--api-key", "wrong-key", "hi")
    assert wrong.returncode == 1
    assert "the key given with --api-key or SSE_CHAT_API_KEY was refused" in _stderr(wrong)
    assert b"wrong-key" not in wrong.stderr


def test_a_host_that_does_not_resolve_is_named_as_such():
    result = run_cli("ask", "--url", "http://no-such-host.invalid:8000", "hi")
    stderr = _stderr(result)
    assert result.returncode == 3
    assert "cannot resolve the host name 'no-such-host.invalid'" in stderr
    assert "is a server running there" not in stderr


def test_the_local_log_keeps_at_most_100000_characters_of_a_prompt(tmp_path):
    env = base_env(SSE_CHAT_HOME=str(tmp_path))
    asked = run_cli("ask", "--fake", "--max-tokens", "1", "-", input=b"x" * 250_000, env=env)
    assert asked.returncode == 0, asked.stderr
    [logged] = [json.loads(line) for line in run_cli("logs", "--json", env=env).stdout.splitlines()]
    assert logged["prompt"] == "x" * 100_000 + "\n[sse-chat: 150,000 more characters not kept in the log]"
    assert (tmp_path / "log.sqlite3").stat().st_size < 250_000


@pytest.mark.parametrize("args", [["ask", "--url", "http://127.0.0.1:9", "-m", b"caf\xe9", "hi"],
                                  ["ask", "--fake", "--cid", b"\xe9", "hi"],
                                  ["logs", "--cid", b"\xe9"]])
def test_non_utf8_bytes_in_any_option_are_no_traceback(args, tmp_path):
    import os
    import subprocess

    from sse_chat.testing.servers import CLI

    argv = [os.fsencode(CLI), *[arg if isinstance(arg, bytes) else arg.encode() for arg in args]]
    result = subprocess.run(argv, env=base_env(SSE_CHAT_HOME=str(tmp_path)), capture_output=True, timeout=60,
                            stdin=subprocess.DEVNULL, check=False)
    assert b"Traceback" not in result.stderr and b"UnicodeEncodeError" not in result.stderr, result.stderr
    assert result.returncode in (0, 2, 3)

"""``sse-chat models``, ``-o/--option``, ``--no-stream``, ``logs -n 0``, ``logs path``:
the CLI as a subprocess against the pytest plugin's fake server."""

import json

import pytest

from sse_chat.cli.main import _fields
from sse_chat.cli.model_options import model_options
from sse_chat.client import ChatClient
from sse_chat.testing.servers import base_env, free_port, run_cli


def test_models_lists_the_services_models(sse_chat_server):
    listed = run_cli("models", "--url", sse_chat_server.url)
    assert listed.returncode == 0, listed.stderr
    expected = [model["id"] for model in ChatClient(sse_chat_server.url).models()]
    assert listed.stdout.decode().splitlines() == expected and "fake" in expected
    as_json = [json.loads(line)
               for line in run_cli("models", "--url", sse_chat_server.url, "--json").stdout.splitlines()]
    assert [model["id"] for model in as_json] == expected and all(m["object"] == "model" for m in as_json)


def test_models_without_a_server_says_so():
    result = run_cli("models", "--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 3 and b"connection_refused" in result.stderr and b"Traceback" not in result.stderr


def test_option_values_read_as_json_when_they_can():
    assert model_options([("top_p", "0.9"), ("seed", "7"), ("stop", '["\\n"]'), ("user", "me"), ("seed", "8")]) == \
        {"top_p": 0.9, "seed": 8, "stop": ["\n"], "user": "me"}
    for bad in (("fake", "{}"), ("not a name", "1")):
        with pytest.raises(ValueError):
            model_options([bad])


def test_options_fill_the_named_fields_and_send_the_rest_as_they_are():
    fields = _fields(model=None, system=None, max_tokens=None, temperature=0.3, fake=False, fake_pairs=(),
                     option_pairs=(("max_tokens", "4"), ("temperature", "1.5"), ("top_p", "0.5")))
    assert fields == {"max_tokens": 4, "temperature": 0.3, "extra_body": {"top_p": 0.5}}


def test_an_option_reaches_the_request(sse_chat_server):
    result = run_cli("ask", "--url", sse_chat_server.url, "--json", "-o", "max_tokens", "3", "-o", "top_p", "0.5",
                     "hi")
    events = [json.loads(line)["event"] for line in result.stdout.splitlines()]
    assert result.returncode == 0 and events == ["start", "token", "token", "token", "done"]
    refused = run_cli("ask", "--url", sse_chat_server.url, "-o", "max_tokens", "0", "hi")
    assert refused.returncode != 0 and b"max_tokens" in refused.stderr and b"Traceback" not in refused.stderr


def test_no_stream_writes_the_same_answer_at_once(sse_chat_server):
    streamed = run_cli("ask", "--url", sse_chat_server.url, "--max-tokens", "30", "hi")
    whole = run_cli("ask", "--url", sse_chat_server.url, "--max-tokens", "30", "--no-stream", "hi")
    assert whole.returncode == 0 and whole.stdout == streamed.stdout and whole.stdout


def test_logs_n_0_shows_all_and_logs_path_names_the_file(tmp_path):
    env = base_env(SSE_CHAT_HOME=str(tmp_path))
    for i in range(5):
        assert run_cli("ask", "--fake", "--max-tokens", "1", f"question {i}", env=env).returncode == 0
    every = [json.loads(line)["prompt"] for line in run_cli("logs", "-n", "0", "--json", env=env).stdout.splitlines()]
    assert every == [f"question {i}" for i in range(5)]
    assert len(run_cli("logs", "--json", env=env).stdout.splitlines()) == 3
    path = run_cli("logs", "path", env=env)
    assert path.returncode == 0 and path.stdout.decode().strip() == str(tmp_path / "log.sqlite3")


def test_sampling_options_reach_the_upstream_and_bad_ones_are_400(upstream_server, upstream):
    result = run_cli("ask", "--url", upstream_server.url, "-m", "ok", "-o", "top_p", "0.5", "-o", "seed", "7",
                     "-o", "stop", '["END", "\\n\\n"]', "-o", "presence_penalty", "-1", "hi")
    assert result.returncode == 0, result.stderr
    _, body = upstream.requests[-1]
    assert (body["top_p"], body["seed"], body["stop"], body["presence_penalty"]) == (0.5, 7, ["END", "\n\n"], -1)
    assert "frequency_penalty" not in body
    for name, value in (("top_p", "2"), ("seed", "1.5"), ("stop", "[]"), ("frequency_penalty", "3")):
        refused = run_cli("ask", "--url", upstream_server.url, "-m", "ok", "-o", name, value, "hi")
        assert refused.returncode == 1 and f'HTTP 400 invalid_request: "{name}" must be'.encode() in refused.stderr

"""``sse-chat ask``'s local log and conversations, ``sse-chat logs``, ``--help``
examples and ``sse-chat completion``: the CLI as a subprocess, the log in tmp_path."""

import json

import pytest

from sse_chat.testing.servers import base_env, run_cli

from .upstream import OK_TOKENS, FakeUpstream


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """gunicorn in front of a recording OpenAI-compatible upstream (model ``ok``)."""
    from sse_chat.testing.servers import start_gunicorn

    with FakeUpstream() as upstream:
        server = start_gunicorn(tmp_path_factory.mktemp("log"), OPENAI_BASE_URL=upstream.base_url,
                                OPENAI_API_KEY="k", SSE_CHAT_UPSTREAM_MAX_RETRIES="0")
        yield server, upstream
        server.stop()


def _env(home, **more):
    return base_env(SSE_CHAT_HOME=str(home), **more)


def _logs(home, *args):
    result = run_cli("logs", "--json", *args, env=_env(home))
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def test_continue_sends_the_earlier_turns_as_messages_and_logs_show_the_conversation(recorded, tmp_path):
    server, upstream = recorded
    first = run_cli("ask", "-u", server.url, "-m", "ok", "first", env=_env(tmp_path))
    assert first.returncode == 0, first.stderr
    assert first.stdout.decode() == "".join(OK_TOKENS)
    second = run_cli("ask", "-u", server.url, "-m", "ok", "-c", "second", env=_env(tmp_path))
    assert second.returncode == 0, second.stderr
    sent = [m for m in upstream.requests[-1][1]["messages"] if m["role"] != "system"]
    assert sent == [{"role": "user", "content": "first"}, {"role": "assistant", "content": first.stdout.decode()},
                    {"role": "user", "content": "second"}]

    exchanges = _logs(tmp_path)
    assert [e["prompt"] for e in exchanges] == ["first", "second"]
    assert exchanges[0]["conversation_id"] == exchanges[1]["conversation_id"]
    for exchange in exchanges:
        assert exchange["answer"] == "".join(OK_TOKENS) and exchange["model"] == "ok"
        assert exchange["status"] == "complete" and exchange["finish_reason"] == "stop"
        assert exchange["usage"] == {"prompt_tokens": 7, "completion_tokens": 6, "total_tokens": 13}
        assert exchange["last_event_id"].startswith(exchange["stream_id"] + ":") and exchange["time"]

    # a new question starts a new conversation; --cid goes back to the first one
    run_cli("ask", "-u", server.url, "-m", "ok", "elsewhere", env=_env(tmp_path))
    cid = exchanges[0]["conversation_id"]
    third = run_cli("ask", "-u", server.url, "-m", "ok", "--cid", cid, "third", env=_env(tmp_path))
    assert third.returncode == 0, third.stderr
    turns = [(m["role"], m["content"]) for m in upstream.requests[-1][1]["messages"] if m["role"] != "system"]
    answer = "".join(OK_TOKENS)
    assert turns == [("user", "first"), ("assistant", answer), ("user", "second"), ("assistant", answer),
                     ("user", "third")]  # all five turns, in order
    assert [e["prompt"] for e in _logs(tmp_path, "--cid", cid, "-n", "10")] == ["first", "second", "third"]
    assert len(_logs(tmp_path, "-n", "2")) == 2
    text = run_cli("logs", "-n", "1", env=_env(tmp_path)).stdout.decode()
    assert f"conversation {cid}" in text and "> third" in text and "".join(OK_TOKENS) in text


def test_no_log_and_sse_chat_log_0_leave_no_trace(tmp_path):
    for args, env in ((["--no-log"], {}), ([], {"SSE_CHAT_LOG": "0"})):
        result = run_cli("ask", "--fake", "--max-tokens", "3", *args, "secret question", env=_env(tmp_path, **env))
        assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []
    run_cli("ask", "--fake", "--max-tokens", "3", "kept", env=_env(tmp_path))
    assert [e["prompt"] for e in _logs(tmp_path)] == ["kept"]


def test_continue_and_resume_last_need_something_in_the_log(tmp_path):
    for args in (["-c", "hi"], ["--cid", "nope", "hi"], ["--resume", "last"]):
        result = run_cli("ask", "--fake", *args, env=_env(tmp_path))
        assert result.returncode == 2 and b"Traceback" not in result.stderr, result.stderr


def test_a_half_finished_answer_is_logged_and_resume_last_completes_it(sse_chat_server, tmp_path):
    ask = ["ask", "-u", sse_chat_server.url, "--fake", "--max-tokens", "30", "cut short"]
    uncut = run_cli(*ask, "--no-log", env=_env(tmp_path))
    cut = run_cli(*ask, "--fake-option", "drop_every=6", "--retries", "0", env=_env(tmp_path))
    assert cut.returncode == 3 and b"to resume" in cut.stderr
    [half] = _logs(tmp_path)
    assert half["status"] == "unfinished" and half["last_event_id"] == f"{half['stream_id']}:5"
    assert half["answer"] == cut.stdout.decode() and uncut.stdout.startswith(cut.stdout)

    rest = run_cli("ask", "--resume", "last", env=_env(tmp_path))
    assert rest.returncode == 0, rest.stderr
    assert cut.stdout + rest.stdout == uncut.stdout
    [whole] = _logs(tmp_path)
    assert whole["id"] == half["id"] and whole["status"] == "complete" and whole["finish_reason"] == "length"
    assert whole["answer"] == uncut.stdout.decode() and whole["usage"]["completion_tokens"] == 30
    again = run_cli("ask", "--resume", "last", env=_env(tmp_path))
    assert again.returncode == 2 and b"no unfinished answer" in again.stderr


@pytest.mark.parametrize("command", [[], ["ask"], ["logs"], ["serve"], ["completion"]])
def test_every_help_ends_with_examples(command):
    lines = run_cli(*command, "--help").stdout.decode().rstrip().splitlines()
    examples = lines.index("  Examples:")
    assert len(lines) - examples >= 4 and all(line.strip().startswith(("sse-chat", "git diff", "eval", "SSE_CHAT"))
                                              for line in lines[examples + 1:])


@pytest.mark.parametrize("shell,marker", [("bash", "complete -o nosort -F"), ("zsh", "compdef"),
                                          ("fish", "complete --no-files --command sse-chat")])
def test_completion_prints_clicks_script(shell, marker):
    result = run_cli("completion", shell)
    script = result.stdout.decode()
    assert result.returncode == 0 and marker in script and "_SSE_CHAT_COMPLETE" in script


def test_completion_completes_commands():
    result = run_cli(env=base_env(_SSE_CHAT_COMPLETE="bash_complete", COMP_WORDS="sse-chat lo", COMP_CWORD="1"))
    assert result.stdout.decode().split() == ["plain,logs"]

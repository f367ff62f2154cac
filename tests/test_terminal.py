"""What a person sees in a terminal: ``sse-chat ask`` driven in tmux."""

import json
import os
import re
import subprocess
import uuid

import pytest

from sse_chat.testing.servers import BIN, base_env, require_binary, run_cli, wait_until


@pytest.fixture
def tmux():
    binary = require_binary("tmux")
    server = f"sse-chat-test-{uuid.uuid4().hex[:8]}"
    env_path = f"{BIN}:{os.environ.get('PATH', '')}"
    subprocess.run([binary, "-L", server, "-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", "110", "-y", "40",
                    "bash --norc --noprofile"], check=True)
    subprocess.run([binary, "-L", server, "send-keys", "-t", "t",
                    f"export PATH='{env_path}' SSE_CHAT_FAKE_DELAY_MS=120; clear", "Enter"], check=True)

    class Tmux:
        def type(self, line):
            subprocess.run([binary, "-L", server, "send-keys", "-t", "t", line, "Enter"], check=True)

        def keys(self, *keys):
            """Send tmux key names (``C-c``, ``C-d``) or text without Enter."""
            subprocess.run([binary, "-L", server, "send-keys", "-t", "t", *keys], check=True)

        def screen(self):
            return subprocess.run([binary, "-L", server, "capture-pane", "-p", "-t", "t"],
                                  capture_output=True, text=True, check=True).stdout

    yield Tmux()
    subprocess.run([binary, "-L", server, "kill-server"], check=False)


def _ended(screen):
    return re.search(r"EXIT=\d", screen) is not None


def test_markdown_renders_while_it_streams_in_a_terminal(tmux):
    tmux.type("sse-chat ask --fake --markdown 'Why is the sky blue?'; echo EXIT=$?")
    wait_until(lambda: "Fake answer" in tmux.screen(), 30, "the answer to start")
    mid_stream = tmux.screen()
    assert not _ended(mid_stream), "the answer should still be streaming"
    assert "**Fake" not in mid_stream
    wait_until(lambda: _ended(tmux.screen()), 30, "the command to end")
    screen = tmux.screen()
    assert "EXIT=0" in screen
    assert "• one" in screen and "**" not in screen and "`two`" not in screen


def test_the_same_command_piped_prints_plain_text(tmux):
    tmux.type("sse-chat ask --fake --markdown 'Why is the sky blue?' | cat; echo EXIT=$?")
    wait_until(lambda: _ended(tmux.screen()), 30, "the command to end")
    screen = tmux.screen()
    assert "**Fake answer**" in screen and "- `two`" in screen and "EXIT=0" in screen


@pytest.mark.parametrize("mode", ["--plain", "--markdown"])
def test_an_error_in_the_middle_of_the_answer_is_a_line_of_its_own(tmux, mode):
    """The answer is half a line when the error event comes: the status line
    starts on the next line, and the Markdown display does not draw over it."""
    tmux.type(f"sse-chat ask --fake {mode} --fake-option error_after=12 'Why is the sky blue?'; echo EXIT=$?")
    wait_until(lambda: _ended(tmux.screen()), 30, "the command to end")
    screen = tmux.screen()
    assert "EXIT=1" in screen
    assert re.search(r"^sse-chat: error \(\w+\): the fake model failed after 12 tokens", screen, re.M), screen
    assert screen.count("You asked: «Why is the sky blue? ».") == 1, screen


def test_ctrl_c_during_a_markdown_answer_shows_it_once_and_says_so(tmux):
    tmux.type("SSE_CHAT_FAKE_DELAY_MS=400 sse-chat ask --fake --markdown 'Why is the sky blue?'; echo EXIT=$?")
    wait_until(lambda: "Fake answer" in tmux.screen(), 30, "the answer to start")
    tmux.keys("C-c")
    wait_until(lambda: _ended(tmux.screen()), 30, "the command to end")
    screen = tmux.screen()
    assert "EXIT=130" in screen
    assert screen.count("You asked:") == 1, screen
    assert re.search(r"^sse-chat: interrupted", screen, re.M), screen


def _prompts(screen):
    return len(re.findall(r"^>( |$)", screen, re.M))  # capture-pane drops trailing spaces


def test_chat_two_turns_then_ctrl_d_and_the_log_holds_one_conversation(tmux, tmp_path):
    tmux.type(f"export SSE_CHAT_HOME='{tmp_path}'; clear; sse-chat chat --fake --max-tokens 6; echo EXIT=$?")
    wait_until(lambda: "chatting with fake" in tmux.screen() and _prompts(tmux.screen()) == 1, 30, "the first prompt")
    tmux.type("first question")
    wait_until(lambda: _prompts(tmux.screen()) == 2, 30, "the first answer and the next prompt")
    tmux.type("second question")
    wait_until(lambda: _prompts(tmux.screen()) == 3, 30, "the second answer and the next prompt")
    tmux.keys("C-d")
    wait_until(lambda: _ended(tmux.screen()), 30, "the session to end")
    screen = tmux.screen()
    assert "EXIT=0" in screen and "Traceback" not in screen
    logged = [json.loads(line) for line in
              run_cli("logs", "--json", env=base_env(SSE_CHAT_HOME=str(tmp_path))).stdout.splitlines()]
    assert [exchange["prompt"] for exchange in logged] == ["first question", "second question"]
    assert logged[0]["conversation_id"] == logged[1]["conversation_id"]
    assert all(exchange["status"] == "complete" and exchange["answer"] for exchange in logged)
    for exchange in logged:  # each answer was shown after its question, on a line of its own
        assert re.search(f"^> {exchange['prompt']}\n+ ?{re.escape(exchange['answer'].strip())}\n+>", screen, re.M)


def test_chat_ctrl_c_stops_the_answer_not_the_session_and_exit_ends_it(tmux, tmp_path):
    tmux.type(f"export SSE_CHAT_HOME='{tmp_path}'; clear; SSE_CHAT_FAKE_DELAY_MS=300 sse-chat chat --fake; "
              "echo EXIT=$?")
    wait_until(lambda: _prompts(tmux.screen()) == 1, 30, "the first prompt")
    tmux.type("Why is the sky blue?")
    wait_until(lambda: "You asked" in tmux.screen(), 30, "the answer to start")
    tmux.keys("C-c")
    wait_until(lambda: _prompts(tmux.screen()) == 2, 30, "a new prompt after Ctrl-C")
    screen = tmux.screen()
    assert re.search(r"^sse-chat: interrupted", screen, re.M) and not _ended(screen), screen
    tmux.type("exit")
    wait_until(lambda: _ended(tmux.screen()), 30, "the session to end")
    assert "EXIT=0" in tmux.screen()
    [logged] = [json.loads(line) for line in
                run_cli("logs", "--json", env=base_env(SSE_CHAT_HOME=str(tmp_path))).stdout.splitlines()]
    assert logged["prompt"] == "Why is the sky blue?" and logged["answer"].startswith("You asked")
    assert logged["status"] != "complete" and logged["finish_reason"] is None

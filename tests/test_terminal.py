"""What a person sees in a terminal: ``sse-chat ask`` driven in tmux."""

import os
import re
import subprocess
import uuid

import pytest

from sse_chat.testing.servers import BIN, require_binary, wait_until


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

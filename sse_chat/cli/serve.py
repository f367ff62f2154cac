"""``sse-chat serve``: run gunicorn with the project's settings."""

from __future__ import annotations

import os
import sys


def exec_gunicorn(bind: str) -> None:
    """Replace this process by ``gunicorn -c python:sse_chat.gunicorn_config`` bound to
    ``bind`` (``HOST:PORT``), so that signals reach gunicorn directly."""
    env = {**os.environ, "SSE_CHAT_BIND": bind}
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:sse_chat.gunicorn_config"]
    os.execvpe(sys.executable, argv, env)

"""``sse-chat completion SHELL``: Click's shell completion script for ``sse-chat``."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

#: The environment variable the script sets when it asks ``sse-chat`` for completions.
COMPLETE_VAR = "_SSE_CHAT_COMPLETE"


def completion_script(command: click.Command, shell: str) -> str:
    """The script that ``eval``/``source`` in ``shell`` (``bash``, ``zsh`` or ``fish``)
    to complete ``sse-chat`` commands and options.

    Raises:
        ValueError: a shell Click does not support.
    """
    completion_class = get_completion_class(shell)
    if completion_class is None:
        raise ValueError(f"no completion for shell {shell!r}")
    return completion_class(command, {}, "sse-chat", COMPLETE_VAR).source()

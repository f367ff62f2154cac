"""Server tools for the tests (``SSE_CHAT_TOOLS=tests.server_tools:shout``): each
call appends one line, ``NAME ARGUMENT``, to the file ``SSE_CHAT_TEST_TOOL_CALLS``
names, so that a test counts the calls every worker and host made."""

from __future__ import annotations

import os
import time


def _record(name: str, argument: str) -> None:
    with open(os.environ["SSE_CHAT_TEST_TOOL_CALLS"], "a", encoding="utf-8") as calls:
        calls.write(f"{name} {argument}\n")


def shout(text: str) -> str:
    """Say ``text`` in capitals."""
    _record("shout", text)
    return text.upper()


def explode(text: str) -> str:
    """A tool that always fails."""
    _record("explode", text)
    raise ValueError(f"cannot explode {text!r}")


def dawdle(text: str) -> str:
    """A tool slower than the tests' SSE_CHAT_TOOL_TIMEOUT_S."""
    _record("dawdle", text)
    time.sleep(5)
    return text


def calls(path: str) -> list[str]:
    """The calls recorded in ``path``, one ``NAME ARGUMENT`` each."""
    try:
        with open(path, encoding="utf-8") as recorded:
            return recorded.read().splitlines()
    except FileNotFoundError:
        return []

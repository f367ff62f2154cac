"""Building the prompt text from command-line words and piped standard input."""

from __future__ import annotations

from typing import TextIO


class EmptyPrompt(ValueError):
    """Neither words nor standard input gave any text."""


def build_prompt(words: tuple[str, ...], stdin: TextIO) -> str:
    """Join ``words`` with spaces; when standard input is piped (not a terminal), read
    it and place it before the words, separated by a blank line. A lone ``-`` means
    standard input only.

    Raises:
        EmptyPrompt: when the result is empty or only whitespace.
    """
    stdin_only = words == ("-",)
    piped = stdin_only or not _is_terminal(stdin)
    stdin_text = stdin.read().strip("\n") if piped else ""
    word_text = "" if stdin_only else " ".join(words)
    prompt = "\n\n".join(part for part in (stdin_text, word_text) if part)
    if not prompt.strip():
        raise EmptyPrompt("give a prompt as arguments, or pipe text into standard input")
    return prompt


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False

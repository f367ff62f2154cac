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

    Bytes that are not UTF-8, in words or standard input, become U+FFFD
    replacement characters (see :func:`readable_text`).
    """
    stdin_only = words == ("-",)
    piped = stdin_only or not _is_terminal(stdin)
    stdin_text = _read_text(stdin).strip("\n") if piped else ""
    word_text = "" if stdin_only else " ".join(readable_text(word) for word in words)
    prompt = "\n\n".join(part for part in (stdin_text, word_text) if part)
    if not prompt.strip():
        raise EmptyPrompt("give a prompt as arguments, or pipe text into standard input")
    return prompt


def readable_text(text: str) -> str:
    """``text`` with what was not UTF-8 replaced by U+FFFD: Python hands undecodable
    bytes of arguments and of a standard input under the C locale over as lone
    surrogates (PEP 383, ``surrogateescape``), which are not text and which the
    service refuses."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no undecodable byte stands for
        raw = text.encode("utf-8", "replace")
    return raw.decode("utf-8", "replace")


def _read_text(stdin: TextIO) -> str:
    """All of standard input as text, undecodable bytes replaced (U+FFFD)."""
    buffer = getattr(stdin, "buffer", None)
    if buffer is not None:
        return buffer.read().decode("utf-8", "replace")
    return readable_text(stdin.read())


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False

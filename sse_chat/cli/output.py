"""Where ``sse-chat ask`` writes what it receives: answer text, raw bytes or JSON lines.

Every write is flushed at once, so a pipe's reader sees each token as it arrives.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from collections.abc import Callable
from typing import Any, BinaryIO, TextIO

from sse_chat.protocol import DispatchedEvent, EventType


class TextOutput:
    """Writes only the answer text (``token`` contents) as UTF-8. On a terminal, ends
    the answer with a newline if it lacks one, so the prompt starts on its own line."""

    def __init__(self, out: BinaryIO, is_terminal: bool) -> None:
        self._out = out
        self._is_terminal = is_terminal
        self._last_byte = b"\n"

    def raw(self, chunk: bytes) -> None:
        """Raw bytes are not shown in text mode."""

    def event(self, event: DispatchedEvent, payload: dict | None) -> None:
        if event.type == EventType.TOKEN and payload is not None:
            content = payload.get("content")
            if isinstance(content, str) and content:
                data = content.encode("utf-8")
                self._out.write(data)
                self._out.flush()
                self._last_byte = data[-1:]

    def break_line(self) -> None:
        """Before a status line on stderr: on a terminal, end a half-written line of
        answer, so that the status line starts on its own."""
        if self._is_terminal and self._last_byte != b"\n":
            self._out.write(b"\n")
            self._out.flush()
            self._last_byte = b"\n"

    def finish(self) -> None:
        self.break_line()


class MarkdownOutput:
    """Renders the answer as Markdown on a terminal while it streams (``--markdown``),
    with rich's ``Live`` display, redrawn at most ``refresh_per_second`` times.

    A status line on stderr (:meth:`break_line`) stops the display where it is, so
    that it never redraws over the line; text after it is rendered below, on its own.
    While the display runs, the terminal does not echo typed keys (:func:`quiet_keys`):
    rich fills whole lines, and an echoed ``^C`` would wrap to the next line, so that
    the final redraw started a line too low and showed the first lines twice.
    """

    def __init__(self, out: BinaryIO, refresh_per_second: int = 12) -> None:
        from rich.console import Console

        self._console = Console(file=io.TextIOWrapper(out, encoding="utf-8", write_through=True))
        self._refresh = refresh_per_second
        self._text = ""  # the text of the part being displayed (since the last break_line)
        self._live: Any = None  # rich.live.Live once the part's first token arrives
        self._restore_keys: Callable[[], None] = _nothing

    def raw(self, chunk: bytes) -> None:
        """Raw bytes are not shown in Markdown mode."""

    def event(self, event: DispatchedEvent, payload: dict | None) -> None:
        if event.type != EventType.TOKEN or payload is None or not isinstance(payload.get("content"), str):
            return
        from rich.live import Live
        from rich.markdown import Markdown

        self._text += payload["content"]
        if self._live is None:
            # Not redirecting stdout/stderr: status lines go through break_line first.
            self._live = Live(console=self._console, refresh_per_second=self._refresh, vertical_overflow="visible",
                              redirect_stdout=False, redirect_stderr=False)
            self._restore_keys = quiet_keys(sys.stdin)
            self._live.start()
        self._live.update(Markdown(self._text))

    def break_line(self) -> None:
        """Draw the part received so far one last time and stop redrawing it."""
        if self._live is not None:
            try:
                self._live.stop()
            finally:
                self._live = None
                self._text = ""
                self._restore_keys()
                self._restore_keys = _nothing

    def finish(self) -> None:
        self.break_line()


class RawOutput:
    """Writes the bytes of the event stream exactly as received (``--raw``)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def raw(self, chunk: bytes) -> None:
        self._out.write(chunk)
        self._out.flush()

    def event(self, event: DispatchedEvent, payload: dict | None) -> None:
        """Events were already written as raw bytes."""

    def break_line(self) -> None:
        """The bytes are written as they came."""

    def finish(self) -> None:
        """Nothing to add."""


class JsonOutput:
    """Writes each dispatched event as one JSON line (``--json``):
    ``{"id": str or null, "event": str, "data": str}``, where ``id`` is the last event
    ID after the event (null while it is the empty string) and ``data`` is unparsed."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def raw(self, chunk: bytes) -> None:
        """Raw bytes are not shown in JSON mode."""

    def event(self, event: DispatchedEvent, payload: dict | None) -> None:
        line = {"id": event.last_event_id or None, "event": event.type, "data": event.data}
        self._out.write(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")
        self._out.flush()

    def break_line(self) -> None:
        """Every line is whole."""

    def finish(self) -> None:
        """Nothing to add."""


class BufferedOutput:
    """``--no-stream``: holds back what ``inner`` would write and writes it all at
    once at :meth:`finish`, when the answer is complete (or stopped)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._held: list[tuple[str, tuple]] = []

    def raw(self, chunk: bytes) -> None:
        self._held.append(("raw", (chunk,)))

    def event(self, event: DispatchedEvent, payload: dict | None) -> None:
        self._held.append(("event", (event, payload)))

    def break_line(self) -> None:
        """Nothing was written yet."""

    def finish(self) -> None:
        held, self._held = self._held, []
        for method, args in held:
            getattr(self._inner, method)(*args)
        self._inner.finish()


def usage_line(done: dict | None) -> str:
    """``--usage``: the ``done`` event's token counts as one line for stderr,
    ``sse-chat: usage: 5 prompt + 7 completion = 12 tokens (finish_reason length)``;
    says so when the server gave no usage or the stream did not end with ``done``."""
    if done is None:
        return "sse-chat: usage: unknown (the answer did not finish)\n"
    usage = done.get("usage")
    reason = done.get("finish_reason")
    if not isinstance(usage, dict):
        return f"sse-chat: usage: not reported (finish_reason {reason})\n"
    return (f"sse-chat: usage: {usage.get('prompt_tokens')} prompt + {usage.get('completion_tokens')} completion"
            f" = {usage.get('total_tokens')} tokens (finish_reason {reason})\n")


def _nothing() -> None:
    pass


def quiet_keys(stream: TextIO) -> Callable[[], None]:
    """Stop terminal ``stream`` (standard input) from echoing typed keys (POSIX
    termios ``ECHO`` and ``ECHOCTL``: no ``^C`` drawn into the display); returns the
    function that restores its settings. Does nothing when ``stream`` is not a
    terminal or termios is missing (Windows)."""
    try:
        import termios

        fd = stream.fileno()
        if not stream.isatty():
            return _nothing
        saved = termios.tcgetattr(fd)
        quiet = termios.tcgetattr(fd)
        quiet[3] &= ~(termios.ECHO | getattr(termios, "ECHOCTL", 0))
        termios.tcsetattr(fd, termios.TCSANOW, quiet)
    except (ImportError, AttributeError, ValueError, OSError):
        return _nothing

    def restore() -> None:
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(fd, termios.TCSANOW, saved)
    return restore

"""Where ``sse-chat ask`` writes what it receives: answer text, raw bytes or JSON lines.

Every write is flushed at once, so a pipe's reader sees each token as it arrives.
"""

from __future__ import annotations

import io
import json
from typing import Any, BinaryIO

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

    def finish(self) -> None:
        if self._is_terminal and self._last_byte != b"\n":
            self._out.write(b"\n")
            self._out.flush()
            self._last_byte = b"\n"


class MarkdownOutput:
    """Renders the answer as Markdown on a terminal while it streams (``--markdown``),
    with rich's ``Live`` display, redrawn at most ``refresh_per_second`` times."""

    def __init__(self, out: BinaryIO, refresh_per_second: int = 12) -> None:
        from rich.console import Console

        self._console = Console(file=io.TextIOWrapper(out, encoding="utf-8", write_through=True))
        self._refresh = refresh_per_second
        self._text = ""
        self._live: Any = None  # rich.live.Live once the first token arrives

    def raw(self, chunk: bytes) -> None:
        """Raw bytes are not shown in Markdown mode."""

    def event(self, event: DispatchedEvent, payload: dict | None) -> None:
        if event.type != EventType.TOKEN or payload is None or not isinstance(payload.get("content"), str):
            return
        from rich.live import Live
        from rich.markdown import Markdown

        self._text += payload["content"]
        if self._live is None:
            self._live = Live(console=self._console, refresh_per_second=self._refresh, vertical_overflow="visible")
            self._live.start()
        self._live.update(Markdown(self._text))

    def finish(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


class RawOutput:
    """Writes the bytes of the event stream exactly as received (``--raw``)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def raw(self, chunk: bytes) -> None:
        self._out.write(chunk)
        self._out.flush()

    def event(self, event: DispatchedEvent, payload: dict | None) -> None:
        """Events were already written as raw bytes."""

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

    def finish(self) -> None:
        """Nothing to add."""


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

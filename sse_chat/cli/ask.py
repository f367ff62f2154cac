"""``sse-chat ask``: follow one stream with :class:`sse_chat.client.ChatClient`
(which reconnects with ``Last-Event-ID``) and write what arrives to the output and
stderr."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol, TextIO

from sse_chat.client import (  # noqa: F401 - re-exported for the CLI's tests
    CONNECTION_REFUSED,
    GAVE_UP,
    MAX_BACKOFF_MS,
    ChatClient,
    ChatError,
    ChatEvent,
    ChatStream,
    backoff_ms,
    retry_after_ms,
)
from sse_chat.protocol import DispatchedEvent, EventType

from .tools_file import tool_call_line, tool_result_line


class ExitCode(IntEnum):
    """Exit statuses of ``sse-chat ask`` (docs/cli.md, "Exit status")."""

    OK = 0
    FAILED = 1          # an ``error`` event, or an HTTP error answer
    USAGE = 2
    UNREACHABLE = 3     # connection refused, or failed (or 502/503/504) after all retries
    INTERRUPTED = 130   # Ctrl-C
    BROKEN_PIPE = 141   # stdout closed by its reader (128 + SIGPIPE)


class Output(Protocol):
    def raw(self, chunk: bytes) -> None: ...
    def event(self, event: DispatchedEvent, payload: dict | None) -> None: ...
    def finish(self) -> None: ...


@dataclass(frozen=True)
class AskRequest:
    """What to ask: either a ``body`` for ``POST /v1/chat`` (the keyword arguments
    of :meth:`ChatClient.stream`) or a ``resume_from`` event id."""

    body: dict | None = None
    resume_from: str | None = None


class StreamFollower:
    """Writes one stream of a :class:`ChatClient` to ``output`` (answer text, JSON
    lines, …) and ``stderr`` (reasoning, tool calls and the results of the
    service's own tools, errors, how to resume). Types that
    :data:`sse_chat.protocol.EVENT_TYPES` does not declare go to the output
    (``--json``, ``--raw``) and are otherwise ignored.

    Args:
        client: the client; its ``on_chunk`` should be ``output.raw`` for ``--raw``.
        output: where events go (:mod:`sse_chat.cli.output`).
        stderr: for status, warnings and errors.
        show_reasoning: write ``reasoning`` text to stderr, dimmed.
    """

    def __init__(self, client: ChatClient, output: Output, stderr: TextIO, *, show_reasoning: bool = False) -> None:
        self.client = client
        self._output = output
        self._stderr = stderr
        self._show_reasoning = show_reasoning
        self.stream: ChatStream | None = None
        self.text = ""  # the answer text received (token contents)
        self.error: ChatError | None = None

    @property
    def stream_id(self) -> str | None:
        return self.stream.stream_id if self.stream else None

    @property
    def last_event_id(self) -> str:
        return self.stream.last_event_id if self.stream else ""

    @property
    def done(self) -> dict | None:
        """The ``done`` event's data once the stream ended with it."""
        return self.stream.done if self.stream else None

    def run(self, request: AskRequest) -> ExitCode:
        """Ask (or resume) and follow; returns the exit status. Raises
        ``KeyboardInterrupt`` and ``BrokenPipeError`` for the caller to handle (see
        :meth:`cancel`); the caller also calls the output's ``finish``."""
        if request.resume_from:
            self.stream = self.client.resume(request.resume_from)
        else:
            self.stream = self.client.stream(**(request.body or {}))
        try:
            for event in self.stream:
                self._dispatch(event)
        except ChatError as exc:
            return self._failed(exc)
        return ExitCode.OK

    def cancel(self) -> bool:
        """Ask the server to stop the stream; True if it agreed."""
        return bool(self.stream_id) and self.client.cancel(self.stream_id or "")

    def resume_hint(self) -> str:
        """The command that resumes this stream after the last event received."""
        return f"sse-chat ask --url {self.client.base_url} --resume {self.last_event_id}"

    def _dispatch(self, event: ChatEvent) -> None:
        payload = event.data if isinstance(event.data, dict) else None
        self._output.event(DispatchedEvent(event.event, event.raw_data, event.id), payload)
        if event.event == EventType.TOKEN.value:
            self.text += event.content
        if event.event == EventType.REASONING.value and self._show_reasoning:
            self._stderr.write(f"\x1b[2m{event.content}\x1b[0m")
            self._stderr.flush()
        if event.event == EventType.TOOL_RESULT.value and payload is not None:
            self._stderr.write(tool_result_line(payload))
            self._stderr.flush()
        if event.event == EventType.DONE.value and payload is not None:
            self._report_tool_calls(payload.get("tool_calls"))

    def _report_tool_calls(self, calls: object) -> None:
        """One ``tool call NAME ARGUMENTS`` line on stderr per call of ``done``."""
        if not isinstance(calls, list):
            return
        for call in calls:
            if isinstance(call, dict):
                self._stderr.write(tool_call_line(call))
        self._stderr.flush()

    def _failed(self, exc: ChatError) -> ExitCode:
        self.error = exc
        if exc.type == CONNECTION_REFUSED:
            self._stderr.write(
                f"sse-chat: {exc.message}: is a server running there?\n"
                "sse-chat: start one with `sse-chat serve` (or `gunicorn -c python:sse_chat.gunicorn_config`), "
                "give its address with --url, or use --fake to ask the fake model in this process\n")
            return ExitCode.UNREACHABLE
        if exc.type == GAVE_UP:
            self._stderr.write(f"sse-chat: {exc.message}\n")
            if self.stream_id and self.last_event_id:
                self._stderr.write(f"sse-chat: to resume, run: {self.resume_hint()}\n")
            return ExitCode.UNREACHABLE
        if exc.status is not None:
            self._stderr.write(f"sse-chat: the server answered HTTP {exc.status} {exc.type}: {exc.message}\n")
        else:
            self._stderr.write(f"sse-chat: error ({exc.type}): {exc.message}\n")
        return ExitCode.FAILED

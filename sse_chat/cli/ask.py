"""``sse-chat ask``: follow one stream with :class:`sse_chat.client.ChatClient`
(which reconnects with ``Last-Event-ID``) and write what arrives to the output and
stderr."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol
from urllib.parse import urlsplit

from sse_chat.client import (
    CONNECTION_REFUSED,
    GAVE_UP,
    UNKNOWN_HOST,
    ChatClient,
    ChatError,
    ChatEvent,
    ChatStream,
)
from sse_chat.protocol import DispatchedEvent, EventType

from .status import Status
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
    def break_line(self) -> None: ...
    def finish(self) -> None: ...


@dataclass(frozen=True)
class AskRequest:
    """What to ask: either a ``body`` for ``POST /v1/chat`` (the keyword arguments
    of :meth:`ChatClient.stream`) or a ``resume_from`` event id."""

    body: dict | None = None
    resume_from: str | None = None


def retry_reporter(status: Status):
    """The client's ``on_retry`` for the command line: one status line per reconnection."""
    def report(reason: str, wait_s: float, attempt: int, retries: int) -> None:
        status.line(f"sse-chat: {reason}; reconnecting in {wait_s:.1f} s (attempt {attempt} of {retries})")
    return report


class StreamFollower:
    """Writes one stream of a :class:`ChatClient` to ``output`` (answer text, JSON
    lines, …) and ``stderr`` (reasoning, tool calls and the results of the
    service's own tools, errors, how to resume). Types that
    :data:`sse_chat.protocol.EVENT_TYPES` does not declare go to the output
    (``--json``, ``--raw``) and are otherwise ignored.

    Args:
        client: the client; its ``on_chunk`` should be ``output.raw`` for ``--raw``.
        output: where events go (:mod:`sse_chat.cli.output`).
        status: stderr, for status, warnings and errors (:mod:`sse_chat.cli.status`).
        show_reasoning: write ``reasoning`` text to stderr, dimmed.
    """

    def __init__(self, client: ChatClient, output: Output, status: Status, *, show_reasoning: bool = False) -> None:
        self.client = client
        self._output = output
        self._status = status
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
        if event.event == EventType.REASONING.value and self._show_reasoning and event.content:
            self._status.text(f"\x1b[2m{event.content}\x1b[0m")
        if event.event == EventType.TOOL_RESULT.value and payload is not None:
            self._status.line(tool_result_line(payload))
        if event.event == EventType.DONE.value and payload is not None:
            self._report_tool_calls(payload.get("tool_calls"))

    def _report_tool_calls(self, calls: object) -> None:
        """One ``tool call NAME ARGUMENTS`` line on stderr per call of ``done``."""
        if not isinstance(calls, list):
            return
        for call in calls:
            if isinstance(call, dict):
                self._status.line(tool_call_line(call))

    def _failed(self, exc: ChatError) -> ExitCode:
        self.error = exc
        line = self._status.line
        if exc.type == UNKNOWN_HOST:
            host = urlsplit(self.client.base_url).hostname
            line(f"sse-chat: cannot resolve the host name {host!r} of {self.client.base_url}: "
                 "check the name in --url or SSE_CHAT_URL")
            return ExitCode.UNREACHABLE
        if exc.type == CONNECTION_REFUSED:
            line(f"sse-chat: {exc.message}: is a server running there?\n"
                 "sse-chat: start one with `sse-chat serve` (or `gunicorn -c python:sse_chat.gunicorn_config`), "
                 "give its address with --url, or use --fake to ask the fake model in this process")
            return ExitCode.UNREACHABLE
        if exc.type == GAVE_UP:
            line(f"sse-chat: {exc.message}")
            if self.stream_id and self.last_event_id:
                line(f"sse-chat: to resume, run: {self.resume_hint()}")
            return ExitCode.UNREACHABLE
        if exc.status is not None:
            line(f"sse-chat: the server answered HTTP {exc.status} {exc.type}: {exc.message}")
            hint = self._hint(exc.status)
            if hint:
                line(f"sse-chat: {hint}")
        else:
            line(f"sse-chat: error ({exc.type}): {exc.message}")
        return ExitCode.FAILED

    def _hint(self, status: int) -> str | None:
        """What to change after an HTTP error answer ``status``, when the cause is a
        common one: an OpenAI-style URL ending in ``/v1`` (404), a missing or wrong
        key (401)."""
        path = urlsplit(self.client.base_url).path.rstrip("/")
        if status == 404 and path.endswith("/v1"):
            root = self.client.base_url.rstrip("/").removesuffix("/v1")
            return f"the URL ends with /v1: give the service's root, --url {root} (sse-chat adds /v1/chat itself)"
        if status == 401:
            if self.client.api_key:
                return "the key given with --api-key or SSE_CHAT_API_KEY was refused: check it"
            return "this service needs a key: give it with --api-key KEY or the environment variable SSE_CHAT_API_KEY"
        return None

"""``sse-chat ask``: post a prompt, follow the event stream, reconnect with
``Last-Event-ID`` when the connection drops, write the answer as it arrives."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol, TextIO

import requests
import urllib3

from sse_chat.protocol import DispatchedEvent, EventId, EventStreamDecoder, EventType


class ExitCode(IntEnum):
    """Exit statuses of ``sse-chat ask`` (docs/cli.md, "Exit status")."""

    OK = 0
    FAILED = 1          # an ``error`` event, or an HTTP error answer
    USAGE = 2
    UNREACHABLE = 3     # connection failed (or 502/503/504) after all retries
    INTERRUPTED = 130   # Ctrl-C
    BROKEN_PIPE = 141   # stdout closed by its reader (128 + SIGPIPE)


#: Seconds to wait for a connection, and for the next bytes of a stream (the server
#: sends a ``: ping`` every 15 s by default, so silence this long means a dead link).
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 90.0
#: Reconnection waits grow from the server's ``retry:`` up to this (milliseconds).
MAX_BACKOFF_MS = 30_000
DEFAULT_RETRY_MS = 1000
READ_SIZE_BYTES = 65536

#: HTTP answers retried like a dropped connection: a proxy's bad gateway or time-out,
#: or "unavailable, try again" (e.g. 503 ``event_log_unavailable`` while Redis is down).
RETRIED_STATUSES = frozenset({502, 503, 504})
#: Error types of such answers that no retry changes: 503 ``backend_unavailable``
#: means no upstream is configured for the model.
PERMANENT_ERROR_TYPES = frozenset({"backend_unavailable"})

_DROPPED = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
            urllib3.exceptions.HTTPError)
_STREAM_HEADERS = {"Accept": "text/event-stream", "Accept-Encoding": "identity", "Cache-Control": "no-cache"}


class Output(Protocol):
    def raw(self, chunk: bytes) -> None: ...
    def event(self, event: DispatchedEvent, payload: dict | None) -> None: ...
    def finish(self) -> None: ...


@dataclass(frozen=True)
class AskRequest:
    """What to ask: the service's ``base_url``, and either a ``body`` for
    ``POST /v1/chat`` or a ``resume_from`` event id; ``retries`` is how many
    reconnections in a row may fail before giving up."""

    base_url: str
    body: dict | None = None
    resume_from: str | None = None
    retries: int = 5


class ServerUnavailable(Exception):
    """A 502, 503 or 504 answer, retried like a dropped connection;
    ``retry_after_ms`` is the least wait the server asked for (0 when none)."""

    def __init__(self, reason: str, retry_after_ms: float) -> None:
        super().__init__(reason)
        self.retry_after_ms = retry_after_ms


def retry_after_ms(value: str | None) -> float:
    """A ``Retry-After`` header given in seconds, as milliseconds capped at
    :data:`MAX_BACKOFF_MS`; 0 when absent, negative or not a number (an HTTP date
    is not honoured)."""
    try:
        seconds = float(value or "")
    except ValueError:
        return 0.0
    return min(seconds * 1000, float(MAX_BACKOFF_MS)) if seconds >= 0 else 0.0


def backoff_ms(retry_ms: int, failures: int, jitter: float) -> float:
    """Milliseconds to wait before reconnection attempt ``failures`` (1, 2, …): the
    server's reconnection time doubled per failure, times ``1 + jitter/2`` (``jitter``
    in [0, 1)), capped at :data:`MAX_BACKOFF_MS`, never below ``retry_ms``."""
    grown = retry_ms * 2 ** max(failures - 1, 0) * (1 + jitter / 2)
    return max(float(retry_ms), min(float(MAX_BACKOFF_MS), grown))


class StreamFollower:
    """Follows one stream across reconnections until its terminal event.

    Args:
        session: the ``requests`` session to use.
        output: where events go (:mod:`cli.output`).
        stderr: for status, warnings and errors.
        show_reasoning: write ``reasoning`` text to stderr, dimmed.
    """

    def __init__(self, session: requests.Session, output: Output, stderr: TextIO, *,
                 show_reasoning: bool = False, sleep: Callable[[float], None] = time.sleep,
                 jitter: Callable[[], float] = random.random) -> None:
        self._session = session
        self._output = output
        self._stderr = stderr
        self._show_reasoning = show_reasoning
        self._sleep = sleep
        self._jitter = jitter
        self.stream_id: str | None = None
        self.last_event_id = ""
        self._progressed = False

    def run(self, request: AskRequest) -> ExitCode:
        """Ask and follow; returns the exit status. Raises ``KeyboardInterrupt`` and
        ``BrokenPipeError`` for the caller to handle (see :meth:`cancel`); the caller
        also calls the output's ``finish``."""
        if request.resume_from:
            self.last_event_id = request.resume_from
            resume_from = EventId.parse(request.resume_from)
            if resume_from is None:
                raise ValueError(f"not an event id: {request.resume_from!r}")
            self.stream_id = resume_from.stream_id
        retry_ms, failures = DEFAULT_RETRY_MS, 0
        while True:
            decoder = EventStreamDecoder(self.last_event_id)
            self._progressed = False
            outcome = self._try(request, decoder)
            if isinstance(outcome, ExitCode):
                return outcome
            reason, least_wait_ms = outcome
            self.last_event_id = decoder.last_event_id or self.last_event_id
            retry_ms = decoder.reconnection_time_ms or retry_ms
            failures = 1 if self._progressed else failures + 1
            if failures > request.retries:
                return self._give_up(request, reason)
            wait_ms = max(backoff_ms(retry_ms, failures, self._jitter()), least_wait_ms)
            self._stderr.write(f"sse-chat: {reason}; reconnecting in {wait_ms / 1000:.1f} s "
                               f"(attempt {failures} of {request.retries})\n")
            self._sleep(wait_ms / 1000)

    def cancel(self, base_url: str) -> bool:
        """Ask the server to stop the stream (``DELETE /v1/streams/{id}``); True if it agreed."""
        if not self.stream_id:
            return False
        try:
            response = self._session.delete(f"{base_url}/v1/streams/{self.stream_id}", timeout=5)
        except requests.RequestException:
            return False
        return response.status_code < 300

    def resume_hint(self, base_url: str) -> str:
        """The command that resumes this stream after the last event received."""
        return f"sse-chat ask --url {base_url} --resume {self.last_event_id}"

    def _open(self, request: AskRequest) -> requests.Response:
        timeout = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
        if self.stream_id and self.last_event_id:
            headers = {**_STREAM_HEADERS, "Last-Event-ID": self.last_event_id}
            return self._session.get(f"{request.base_url}/v1/streams/{self.stream_id}",
                                     headers=headers, stream=True, timeout=timeout)
        return self._session.post(f"{request.base_url}/v1/chat", json=request.body,
                                  headers=_STREAM_HEADERS, stream=True, timeout=timeout)

    def _try(self, request: AskRequest, decoder: EventStreamDecoder) -> ExitCode | tuple[str, float]:
        """One connection: its exit status, or why to retry and the least wait the
        server asked for (milliseconds)."""
        try:
            outcome = self._attempt(request, decoder)
        except _DROPPED as exc:
            return _describe(exc), 0.0
        except ServerUnavailable as exc:
            return str(exc), exc.retry_after_ms
        return outcome if outcome is not None else ("the stream ended before its last event", 0.0)

    def _attempt(self, request: AskRequest, decoder: EventStreamDecoder) -> ExitCode | None:
        """One connection: its exit status, or ``None`` when it ended too early.

        Raises:
            ServerUnavailable: the server answered 502, 503 or 504 (to retry).
        """
        with self._open(request) as response:
            if response.status_code == 204:
                return ExitCode.OK
            if response.status_code != 200:
                return self._refused(response)
            for event in decoder.iter_events(self._chunks(response)):
                self._progressed = True
                self.last_event_id = decoder.last_event_id
                outcome = self._dispatch(event)
                if outcome is not None:
                    return outcome
        return None

    def _chunks(self, response: requests.Response) -> Iterator[bytes]:
        # read1: whatever one socket read delivers, even part of an HTTP chunk, so
        # that neither 128-byte reads (iter_content's default) nor a large chunk
        # cut in the middle (a dropped connection) holds back received events.
        while chunk := response.raw.read1(READ_SIZE_BYTES):
            self._output.raw(chunk)
            yield chunk

    def _dispatch(self, event: DispatchedEvent) -> ExitCode | None:
        payload = _json_object(event.data)
        if event.type == EventType.START and payload and isinstance(payload.get("stream_id"), str):
            self.stream_id = payload["stream_id"]
        self._output.event(event, payload)
        if event.type == EventType.REASONING and self._show_reasoning and payload:
            self._stderr.write(f"\x1b[2m{payload.get('content', '')}\x1b[0m")
            self._stderr.flush()
        if event.type == EventType.DONE:
            return ExitCode.OK
        if event.type == EventType.ERROR:
            error = (payload or {}).get("error") or {}
            self._stderr.write(f"sse-chat: error ({error.get('type', 'unknown')}): "
                               f"{error.get('message', event.data)}\n")
            return ExitCode.FAILED
        return None

    def _refused(self, response: requests.Response) -> ExitCode:
        """Report an HTTP error answer and fail, or raise :class:`ServerUnavailable`
        for one to retry."""
        error_type, reason = _error_answer(response)
        if response.status_code in RETRIED_STATUSES and error_type not in PERMANENT_ERROR_TYPES:
            raise ServerUnavailable(reason, retry_after_ms(response.headers.get("Retry-After")))
        self._stderr.write(f"sse-chat: {reason}\n")
        return ExitCode.FAILED

    def _give_up(self, request: AskRequest, reason: str) -> ExitCode:
        self._stderr.write(f"sse-chat: gave up after {request.retries} reconnection attempts: {reason}\n")
        if self.stream_id and self.last_event_id:
            self._stderr.write(f"sse-chat: to resume, run: {self.resume_hint(request.base_url)}\n")
        return ExitCode.UNREACHABLE


def _error_answer(response: requests.Response) -> tuple[str | None, str]:
    """An HTTP error answer's error type (``None`` when its body is not the
    service's JSON error) and a one-line description of it."""
    error = (_json_object(response.text) or {}).get("error")
    if isinstance(error, dict):
        error_type = error.get("type")
        detail = f"{error_type or 'error'}: {error.get('message', '')}"
    else:
        error_type, detail = None, response.text.strip()[:300] or response.reason
    return error_type, f"the server answered HTTP {response.status_code} {detail}"


def _json_object(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _describe(exc: Exception) -> str:
    if isinstance(exc, (requests.Timeout, urllib3.exceptions.ReadTimeoutError)):
        return "the server sent nothing for too long"
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError)):
        return "the connection was cut in the middle of the stream"
    return f"could not connect ({type(exc).__name__})"

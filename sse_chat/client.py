"""The Python client of this service: ask a question, follow its event stream
across dropped connections with ``Last-Event-ID``, resume or cancel a stream.

It imports only :mod:`sse_chat.protocol`, ``requests`` and the standard library
(never the server), so programs and the ``sse-chat`` command line start fast.
docs/python-client.md shows it in use.

Example::

    from sse_chat.client import ChatClient, ChatError

    client = ChatClient("http://127.0.0.1:8000")
    answer = client.ask("Why is the sky blue?", max_tokens=50)
    print(answer, answer.finish_reason, answer.usage)

Errors: every failure raises :class:`ChatError` (an ``error`` event, an HTTP error
answer, a refused first connection, too many failed reconnections).
"""

from __future__ import annotations

import json
import random
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3

from sse_chat.protocol import TERMINAL_TYPES, EventId, EventStreamDecoder, EventType

__all__ = [
    "Answer", "ChatClient", "ChatError", "ChatEvent", "ChatStream", "backoff_ms", "check_api_key", "check_base_url",
    "check_event_id", "retry_after_ms",
]

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
#: Error types retried whatever their status: 409 ``idempotency_key_in_use`` (the
#: first request with this question's key is still starting its stream).
RETRIED_ERROR_TYPES = frozenset({"idempotency_key_in_use"})

#: :attr:`ChatError.type` of the client's own failures (the others are the server's).
CONNECTION_REFUSED = "connection_refused"
UNKNOWN_HOST = "unknown_host"
GAVE_UP = "gave_up"

_DROPPED = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
            urllib3.exceptions.HTTPError)
_STREAM_HEADERS = {"Accept": "text/event-stream", "Accept-Encoding": "identity", "Cache-Control": "no-cache"}


class ChatError(Exception):
    """The one exception of this client.

    Attributes:
        type: the error's type: the server's (``"upstream_error"``, ``"unauthorized"``,
            ``"stream_lost"``, …, from an ``error`` event or a JSON error answer),
            ``"http_error"`` for an HTTP error answer without the service's JSON body,
            :data:`CONNECTION_REFUSED` when the first connection could not be made,
            :data:`UNKNOWN_HOST` when the URL's host name does not resolve, or
            :data:`GAVE_UP` after ``retries`` failed reconnections in a row.
        message: one line for people.
        status: the HTTP status of an error answer; ``None`` for an ``error`` event
            or a connection failure.
        stream_id, last_event_id: how far the stream got (``None`` / ``""`` when it
            never started); :meth:`ChatClient.resume` takes ``last_event_id``.
    """

    def __init__(self, type: str, message: str, status: int | None = None, *,
                 stream_id: str | None = None, last_event_id: str = "") -> None:
        super().__init__(f"{type}: {message}" if status is None else f"HTTP {status} {type}: {message}")
        self.type = type
        self.message = message
        self.status = status
        self.stream_id = stream_id
        self.last_event_id = last_event_id


@dataclass(frozen=True)
class ChatEvent:
    """One event of a stream.

    Attributes:
        id: the last event ID after this event (``"STREAM_ID:SEQ"``; ``""`` if none).
        event: its type, one of :data:`sse_chat.protocol.EVENT_TYPES`: ``start``,
            ``token``, ``reasoning``, ``tool_call``, ``tool_result``, ``done`` or
            ``error`` (a type that table does not declare is yielded too, and
            does not end the stream).
        data: the data parsed as JSON: ``start`` ``{"stream_id", "model", "created"}``;
            ``token``/``reasoning`` ``{"content"}``; ``tool_call`` ``{"index", "id",
            "name", "arguments"}`` (a fragment; :class:`~sse_chat.protocol.ToolCalls`
            joins them); ``tool_result`` ``{"tool_call_id", "name", "content"}`` or
            with ``"error": {"type", "message"}`` instead of ``content`` (a tool the
            service ran itself); ``done`` ``{"finish_reason", "usage": {"prompt_tokens",
            "completion_tokens", "total_tokens"} or None}``, with ``"tool_calls":
            [{"id", "name", "arguments"}, …]`` when the answer called tools;
            ``error`` ``{"error": {"type", "message"}}``. The data string itself when
            it is not a JSON object.
        raw_data: the data string as received.
    """

    id: str
    event: str
    data: Any
    raw_data: str

    @property
    def content(self) -> str:
        """The text of a ``token`` or ``reasoning`` event; ``""`` for the others."""
        if self.event in (EventType.TOKEN.value, EventType.REASONING.value) and isinstance(self.data, dict):
            content = self.data.get("content")
            return content if isinstance(content, str) else ""
        return ""


class Answer(str):
    """The whole answer text of :meth:`ChatClient.ask` (a ``str``), with the final
    ``done`` event's data as :attr:`done` (``{"finish_reason", "usage"}``) and the
    stream's :attr:`stream_id` and :attr:`last_event_id`."""

    done: dict
    stream_id: str | None
    last_event_id: str

    @property
    def finish_reason(self) -> str | None:
        """``"stop"``, ``"length"``, ``"cancelled"``, …"""
        return self.done.get("finish_reason")

    @property
    def usage(self) -> dict | None:
        """``{"prompt_tokens", "completion_tokens", "total_tokens"}`` (counts of tokens), or ``None``."""
        return self.done.get("usage")

    @property
    def tool_calls(self) -> list[dict]:
        """The tools the answer called, ``[{"id", "name", "arguments"}, …]`` in order
        (``arguments`` a string of JSON), when ``finish_reason`` is
        ``"tool_calls"``; ``[]`` otherwise. Run them and send the results back as
        ``tool`` messages."""
        return list(self.done.get("tool_calls") or [])


def check_base_url(base_url: str) -> str:
    """``base_url`` without a trailing ``/``.

    Raises:
        ValueError: not an ``http://`` or ``https://`` URL with a host (e.g. ``notaurl``).
    """
    try:
        parts = urlsplit(base_url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"{base_url!r} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{base_url!r} is not a URL such as http://127.0.0.1:8000")
    return base_url.rstrip("/")


#: A stream id as the service makes them (URL-safe base64, RFC 4648 §5).
_STREAM_ID = re.compile(r"[A-Za-z0-9_-]+")


def check_event_id(value: str) -> EventId:
    """``value``, an event id ``"STREAM_ID:SEQ"`` as :attr:`ChatEvent.id` gives it,
    parsed; checked here because it travels in the ``Last-Event-ID`` header and the
    URL, which carry ASCII only.

    Raises:
        ValueError: not ``STREAM_ID:SEQ`` with a stream id of letters, digits, ``-``
            and ``_`` (e.g. a placeholder such as ``'Xq3…:41'``) and a seq of digits.
    """
    event_id = EventId.parse(value)
    if event_id is None or not _STREAM_ID.fullmatch(event_id.stream_id):
        raise ValueError(f"{value!r} is not an event id STREAM_ID:SEQ (a stream id of letters, digits, "
                         "- and _, a colon, a number), such as the ids sse-chat prints")
    return event_id


def check_api_key(api_key: str) -> str:
    """``api_key`` unchanged, once checked to fit an ``Authorization`` header.

    Raises:
        ValueError: it holds characters other than printable ASCII (RFC 6750's
            ``b64token`` is ASCII; ``requests`` cannot send others).
    """
    if not (api_key.isascii() and api_key.isprintable()):
        raise ValueError("the API key holds characters other than printable ASCII, which no key has")
    return api_key


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


#: ``on_retry(reason, wait_s, attempt, retries)``: called before each reconnection wait.
RetryHook = Callable[[str, float, int, int], None]


class _Retry(Exception):
    """One connection ended without a terminal event; ``least_wait_ms`` is what the
    server asked for with ``Retry-After`` (0 when nothing)."""

    def __init__(self, reason: str, least_wait_ms: float = 0.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.least_wait_ms = least_wait_ms


class ChatStream:
    """One stream, followed across reconnections; iterate it for :class:`ChatEvent`.

    It yields every event, the terminal one included; after an ``error`` event the
    next step raises :class:`ChatError` with its type and message. A resumed stream
    that was already over (204) yields nothing. Reconnection: once the stream is
    known (after ``start``) with ``GET /v1/streams/{id}`` and ``Last-Event-ID``, so no
    event is lost or repeated; before that the question is posted again with the same
    ``Idempotency-Key``. :attr:`stream_id` and :attr:`last_event_id` say how far it got.

    Raises (while iterating):
        ChatError: see :class:`ChatError`.
    """

    def __init__(self, client: ChatClient, body: dict | None, last_event_id: str = "") -> None:
        self._client = client
        self._body = body
        self.idempotency_key = str(uuid.uuid4()) if body is not None else None
        self.last_event_id = last_event_id
        parsed = EventId.parse(last_event_id) if last_event_id else None
        self.stream_id: str | None = parsed.stream_id if parsed else None
        self.done: dict | None = None
        self._iterator = self._follow()

    def __iter__(self) -> Iterator[ChatEvent]:
        return self._iterator

    def __next__(self) -> ChatEvent:
        return next(self._iterator)

    def _follow(self) -> Iterator[ChatEvent]:
        client = self._client
        retry_ms, failures, connections = DEFAULT_RETRY_MS, 0, 0
        while True:
            decoder = EventStreamDecoder(self.last_event_id)
            progressed = False
            connections += 1
            try:
                for event in self._connection(decoder):
                    progressed = True
                    yield event
                    if event.event == EventType.ERROR.value:
                        raise self._error_event(event)
                    if event.event == EventType.DONE.value:
                        return
                return  # 204: the stream was already over
            except _Retry as exc:
                reason, least_wait_ms = exc.reason, exc.least_wait_ms
            except _DROPPED as exc:
                if connections == 1 and not progressed and _unknown_host(exc):
                    raise ChatError(UNKNOWN_HOST, f"cannot resolve the host name of {client.base_url}",
                                    stream_id=self.stream_id, last_event_id=self.last_event_id) from None
                if connections == 1 and not progressed and _refused(exc):
                    raise ChatError(CONNECTION_REFUSED, f"could not connect to {client.base_url}",
                                    stream_id=self.stream_id, last_event_id=self.last_event_id) from None
                reason, least_wait_ms = _describe(exc), 0.0
            self.last_event_id = decoder.last_event_id or self.last_event_id
            retry_ms = decoder.reconnection_time_ms or retry_ms
            failures = 1 if progressed else failures + 1
            if failures > client.retries:
                raise ChatError(GAVE_UP, f"gave up after {client.retries} reconnection attempts: {reason}",
                                stream_id=self.stream_id, last_event_id=self.last_event_id)
            wait_ms = max(backoff_ms(retry_ms, failures, client._jitter()), least_wait_ms)
            if client._on_retry is not None:
                client._on_retry(reason, wait_ms / 1000, failures, client.retries)
            client._sleep(wait_ms / 1000)

    def _connection(self, decoder: EventStreamDecoder) -> Iterator[ChatEvent]:
        """The events of one connection; ends early on a 204.

        Raises:
            _Retry: a 502/503/504 answer, or the stream ended before its last event.
            ChatError: another HTTP error answer.
        """
        with self._client._open(self) as response:
            if response.status_code == 204:
                return
            if response.status_code != 200:
                raise self._refused_answer(response)
            for event in decoder.iter_events(self._chunks(response)):
                self.last_event_id = decoder.last_event_id
                data = _json_object(event.data)
                if event.type == EventType.START.value and data and isinstance(data.get("stream_id"), str):
                    self.stream_id = data["stream_id"]
                if event.type == EventType.DONE.value:
                    self.done = data or {}
                yield ChatEvent(event.last_event_id, event.type, event.data if data is None else data, event.data)
                if event.type in TERMINAL_TYPES:
                    return
        raise _Retry("the stream ended before its last event")

    def _chunks(self, response: requests.Response) -> Iterator[bytes]:
        # read1: whatever one socket read delivers, even part of an HTTP chunk, so
        # that neither 128-byte reads (iter_content's default) nor a large chunk
        # cut in the middle (a dropped connection) holds back received events.
        on_chunk = self._client._on_chunk
        while chunk := response.raw.read1(READ_SIZE_BYTES):
            if on_chunk is not None:
                on_chunk(chunk)
            yield chunk

    def _error_event(self, event: ChatEvent) -> ChatError:
        error = (event.data.get("error") if isinstance(event.data, dict) else None) or {}
        return ChatError(str(error.get("type", "unknown")), str(error.get("message", event.raw_data)),
                         stream_id=self.stream_id, last_event_id=self.last_event_id)

    def _refused_answer(self, response: requests.Response) -> Exception:
        error = (_json_object(response.text) or {}).get("error")
        if isinstance(error, dict):
            error_type = str(error.get("type") or "error")
            message = str(error.get("message", ""))
            detail = f"{error_type}: {message}"
        else:
            error_type, message = "http_error", response.text.strip()[:300] or response.reason
            detail = message
        if (response.status_code in RETRIED_STATUSES and error_type not in PERMANENT_ERROR_TYPES) \
                or error_type in RETRIED_ERROR_TYPES:
            return _Retry(f"the server answered HTTP {response.status_code} {detail}",
                          retry_after_ms(response.headers.get("Retry-After")))
        return ChatError(error_type, message, response.status_code,
                         stream_id=self.stream_id, last_event_id=self.last_event_id)


class ChatClient:
    """A client of one sse-chat service.

    Args:
        base_url: the service, e.g. ``"http://127.0.0.1:8000"``.
        api_key: bearer key for a service with ``SSE_CHAT_API_KEYS``.
        retries: failed reconnections in a row before giving up (a connection that
            delivered an event starts the count again); 0 never reconnects.
        session: a ``requests.Session`` to use (a new one when not given).
        on_retry: ``on_retry(reason, wait_s, attempt, retries)``, called before each
            reconnection wait (the CLI prints it).
        on_chunk: ``on_chunk(bytes)``, called with every chunk of the event stream as
            received (the CLI's ``--raw``).

    Raises:
        ValueError: ``base_url`` is not an http(s) URL; ``api_key`` is not printable
            ASCII (:func:`check_api_key`).
    """

    def __init__(self, base_url: str, api_key: str | None = None, retries: int = 5, *,
                 session: requests.Session | None = None, on_retry: RetryHook | None = None,
                 on_chunk: Callable[[bytes], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep, jitter: Callable[[], float] = random.random,
                 timeout: tuple[float, float] = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S)) -> None:
        self.base_url = check_base_url(base_url)
        self.api_key = api_key
        self.retries = retries
        self.session = session or requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {check_api_key(api_key)}"
        self._on_retry = on_retry
        self._on_chunk = on_chunk
        self._sleep = sleep
        self._jitter = jitter
        self._timeout = timeout

    def stream(self, prompt: str | None = None, *, messages: list[dict] | None = None, model: str | None = None,
               system: str | None = None, max_tokens: int | None = None, temperature: float | None = None,
               fake: dict | None = None, **fields: Any) -> ChatStream:
        """Ask a new question (``POST /v1/chat``) and return its stream of
        :class:`ChatEvent` (see :class:`ChatStream`). Give ``prompt``, ``messages``
        (``[{"role": "user" | "assistant" | "system", "content": str}, …]``) or both
        (the prompt is then sent as the last ``user`` message); ``fake`` is the fake model's faults
        (docs/testing-clients.md); other ``fields`` go into the body as they are.
        Every call has a fresh ``Idempotency-Key``, sent again on its retries.

        Nothing is sent until the first event is asked for.
        """
        if messages is not None and prompt is not None:
            messages, prompt = [*messages, {"role": "user", "content": prompt}], None
        body: dict[str, Any] = {}
        for key, value in (("messages", messages), ("prompt", prompt), ("model", model), ("system", system),
                           ("max_tokens", max_tokens), ("temperature", temperature), ("fake", fake or None)):
            if value is not None:
                body[key] = value
        body.update(fields)
        return ChatStream(self, body)

    def resume(self, last_event_id: str) -> ChatStream:
        """The events of an existing stream after ``last_event_id``
        (``"STREAM_ID:SEQ"``, as :attr:`ChatEvent.id` gives it), read with
        ``GET /v1/streams/{id}`` and ``Last-Event-ID``; see :class:`ChatStream`.

        Raises:
            ValueError: ``last_event_id`` is not ``STREAM_ID:SEQ`` (:func:`check_event_id`).
        """
        check_event_id(last_event_id)
        return ChatStream(self, None, last_event_id)

    def ask(self, prompt: str | None = None, **options: Any) -> Answer:
        """Ask and wait for the whole answer: the text of its ``token`` events as an
        :class:`Answer` (a ``str`` with ``.done``, ``.finish_reason``, ``.usage``).
        Takes the arguments of :meth:`stream`.

        Raises:
            ChatError: an ``error`` event, an HTTP error, or no connection.
        """
        stream = self.stream(prompt, **options)
        answer = Answer("".join(event.content for event in stream if event.event == EventType.TOKEN.value))
        answer.done = stream.done or {}
        answer.stream_id = stream.stream_id
        answer.last_event_id = stream.last_event_id
        return answer

    def cancel(self, stream_id: str) -> bool:
        """Ask the server to stop generating stream ``stream_id``
        (``DELETE /v1/streams/{id}``); True if it agreed (2xx), False on any other
        answer or no connection. The stream then ends with ``done``,
        ``finish_reason`` ``"cancelled"``."""
        try:
            response = self.session.delete(f"{self.base_url}/v1/streams/{stream_id}", timeout=5)
        except requests.RequestException:
            return False
        return response.status_code < 300

    def _open(self, stream: ChatStream) -> requests.Response:
        if stream.stream_id and stream.last_event_id:
            headers = {**_STREAM_HEADERS, "Last-Event-ID": stream.last_event_id}
            return self.session.get(f"{self.base_url}/v1/streams/{stream.stream_id}",
                                    headers=headers, stream=True, timeout=self._timeout)
        headers = {**_STREAM_HEADERS, "Idempotency-Key": stream.idempotency_key or str(uuid.uuid4())}
        return self.session.post(f"{self.base_url}/v1/chat", json=stream._body,
                                 headers=headers, stream=True, timeout=self._timeout)


def _json_object(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _caused_by(exc: BaseException, types: tuple[type[BaseException], ...]) -> bool:
    """True when ``exc`` or an exception it stems from (cause, context, ``reason``,
    an argument) is one of ``types``."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, types):
            return True
        if isinstance(current, BaseException):
            todo.extend([current.__cause__, current.__context__, getattr(current, "reason", None),
                         *[arg for arg in current.args if isinstance(arg, BaseException)]])
    return False


def _refused(exc: BaseException) -> bool:
    """True when ``exc`` is a connection that could not be made at all, as opposed
    to one that dropped or timed out (a connect time-out is a ``ConnectTimeoutError``,
    not a ``NewConnectionError``)."""
    return _caused_by(exc, (urllib3.exceptions.NewConnectionError, ConnectionRefusedError))


def _unknown_host(exc: BaseException) -> bool:
    """True when ``exc`` stems from a host name that does not resolve (``getaddrinfo``)."""
    return _caused_by(exc, (socket.gaierror,))


def _describe(exc: Exception) -> str:
    if isinstance(exc, (requests.Timeout, urllib3.exceptions.ReadTimeoutError)):
        return "the server sent nothing for too long"
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError)):
        return "the connection was cut in the middle of the stream"
    return f"could not connect ({type(exc).__name__})"

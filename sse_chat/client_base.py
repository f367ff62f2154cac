"""What the blocking client (:mod:`sse_chat.client`, on ``requests``) and the asyncio
client (:mod:`sse_chat.async_client`, on ``httpx``) share, without I/O: the error,
event and answer types, checking arguments before any round trip, building the
request body, reading an error answer, following a stream's events, and the
reconnection policy. docs/python-client.md describes them for users.
"""

from __future__ import annotations

import json
import re
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sse_chat.protocol import TERMINAL_TYPES, DispatchedEvent, EventId, EventType

#: Seconds to wait for a connection, and for the next bytes of a stream (the server
#: sends a ``: ping`` every 15 s by default, so silence this long means a dead link).
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 90.0
#: Seconds a ``DELETE /v1/streams/{id}`` (:meth:`cancel`) may take.
CANCEL_TIMEOUT_S = 5.0
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

STREAM_HEADERS = {"Accept": "text/event-stream", "Accept-Encoding": "identity", "Cache-Control": "no-cache"}

#: ``on_retry(reason, wait_s, attempt, retries)``: called before each reconnection wait.
RetryHook = Callable[[str, float, int, int], None]
#: ``timeout``: seconds for both, or ``(connect, read)``: the longest wait for a
#: connection, and the longest silence while reading.
Timeout = float | tuple[float, float]


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
            never started); ``resume()`` takes ``last_event_id``.
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
    """The whole answer text of ``ask()`` (a ``str``), with the final ``done``
    event's data as :attr:`done` (``{"finish_reason", "usage"}``) and the stream's
    :attr:`stream_id` and :attr:`last_event_id`."""

    done: dict
    stream_id: str | None
    last_event_id: str

    @classmethod
    def of(cls, text: str, stream: StreamState) -> Answer:
        """The answer ``text`` of ``stream``, which ended."""
        answer = cls(text)
        answer.done = stream.done or {}
        answer.stream_id = stream.stream_id
        answer.last_event_id = stream.last_event_id
        return answer

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
    event_id = EventId.parse(value) if isinstance(value, str) else None
    if event_id is None or not _STREAM_ID.fullmatch(event_id.stream_id):
        raise ValueError(f"{value!r} is not an event id STREAM_ID:SEQ (a stream id of letters, digits, "
                         "- and _, a colon, a number), such as the ids sse-chat prints")
    return event_id


def check_api_key(api_key: str) -> str:
    """``api_key`` unchanged, once checked to fit an ``Authorization`` header.

    Raises:
        ValueError: it holds characters other than printable ASCII (RFC 6750's
            ``b64token`` is ASCII; HTTP libraries cannot send others).
    """
    if not (api_key.isascii() and api_key.isprintable()):
        raise ValueError("the API key holds characters other than printable ASCII, which no key has")
    return api_key


def check_timeout(timeout: Timeout) -> tuple[float, float]:
    """``timeout`` as ``(connect_s, read_s)``.

    Raises:
        ValueError: a value that is not a positive number of seconds.
    """
    pair = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    if len(pair) != 2 or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in pair):
        raise ValueError(f"timeout must be a positive number of seconds or (connect, read), not {timeout!r}")
    return float(pair[0]), float(pair[1])


def chat_body(prompt: str | None, *, messages: list[dict] | None, model: str | None, system: str | None,
              max_tokens: int | None, temperature: float | None, tools: list[dict] | None,
              tool_choice: str | dict | None, fake: dict | None, extra_body: Mapping[str, Any] | None) -> dict:
    """The JSON body of ``POST /v1/chat`` (docs/http-api.md), checked here so that a
    mistake costs no round trip. With both ``prompt`` and ``messages`` the prompt is
    the last ``user`` message. ``extra_body``'s fields are added as they are (for
    fields this client does not name; they override the others).

    Raises:
        ValueError: no prompt and no messages (or an empty prompt); ``max_tokens``
            below 1; ``temperature`` outside 0 to 2.
        TypeError: an argument of the wrong type (``prompt`` not a ``str``,
            ``messages`` not a list of objects, …).
    """
    if prompt is not None and not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
    if messages is not None and not (isinstance(messages, list) and all(isinstance(m, dict) for m in messages)):
        raise TypeError("messages must be a list of {'role', 'content'} dicts")
    if not prompt and not messages:
        raise ValueError("give a prompt or messages: there is nothing to ask")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise ValueError(f"max_tokens must be a whole number of at least 1, not {max_tokens!r}")
    if temperature is not None and (not isinstance(temperature, (int, float)) or isinstance(temperature, bool)
                                    or not 0 <= temperature <= 2):
        raise ValueError(f"temperature must be a number from 0 to 2, not {temperature!r}")
    for name, given, kind in (("tools", tools, list), ("fake", fake, dict), ("extra_body", extra_body, Mapping)):
        if given is not None and not isinstance(given, kind):
            raise TypeError(f"{name} must be a {kind.__name__}, not {type(given).__name__}")
    if messages is not None and prompt:
        messages, prompt = [*messages, {"role": "user", "content": prompt}], None
    body: dict[str, Any] = {}
    for key, value in (("messages", messages), ("prompt", prompt), ("model", model), ("system", system),
                       ("max_tokens", max_tokens), ("temperature", temperature), ("tools", tools),
                       ("tool_choice", tool_choice), ("fake", fake or None)):
        if value is not None:
            body[key] = value
    body.update(extra_body or {})
    return body


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


class Retry(Exception):
    """One connection ended without a terminal event; ``least_wait_ms`` is what the
    server asked for with ``Retry-After`` (0 when nothing)."""

    def __init__(self, reason: str, least_wait_ms: float = 0.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.least_wait_ms = least_wait_ms


class StreamState:
    """How far one stream got, and what its events mean; the streams of both
    clients follow it. ``body`` is the question (``None`` for a resume);
    :attr:`idempotency_key` is sent with every post of it.

    Reconnection: once the stream is known (after ``start``) with
    ``GET /v1/streams/{id}`` and ``Last-Event-ID``, so no event is lost or repeated;
    before that the question is posted again with the same ``Idempotency-Key``.
    """

    def __init__(self, body: dict | None, last_event_id: str = "") -> None:
        self.body = body
        self.idempotency_key = str(uuid.uuid4()) if body is not None else None
        self.last_event_id = last_event_id
        parsed = EventId.parse(last_event_id) if last_event_id else None
        self.stream_id: str | None = parsed.stream_id if parsed else None
        self.done: dict | None = None

    def request(self, base_url: str) -> tuple[str, str, dict[str, str]]:
        """The next connection's method, URL and headers."""
        if self.stream_id and self.last_event_id:
            return "GET", f"{base_url}/v1/streams/{self.stream_id}", {**STREAM_HEADERS,
                                                                       "Last-Event-ID": self.last_event_id}
        return "POST", f"{base_url}/v1/chat", {**STREAM_HEADERS,
                                                "Idempotency-Key": self.idempotency_key or str(uuid.uuid4())}

    def event(self, dispatched: DispatchedEvent) -> ChatEvent:
        """The :class:`ChatEvent` of a dispatched event, noting its id, the stream id
        of ``start`` and the data of ``done``."""
        self.last_event_id = dispatched.last_event_id
        data = json_object(dispatched.data)
        if dispatched.type == EventType.START.value and data and isinstance(data.get("stream_id"), str):
            self.stream_id = data["stream_id"]
        if dispatched.type == EventType.DONE.value:
            self.done = data or {}
        return ChatEvent(dispatched.last_event_id, dispatched.type, dispatched.data if data is None else data,
                         dispatched.data)

    @staticmethod
    def ends(event: ChatEvent) -> bool:
        """True for the stream's last event (``done``, ``error``)."""
        return event.event in TERMINAL_TYPES

    def error_of(self, event: ChatEvent) -> ChatError | None:
        """The :class:`ChatError` that an ``error`` event stands for; ``None`` for others."""
        if event.event != EventType.ERROR.value:
            return None
        error = (event.data.get("error") if isinstance(event.data, dict) else None) or {}
        return ChatError(str(error.get("type", "unknown")), str(error.get("message", event.raw_data)),
                         stream_id=self.stream_id, last_event_id=self.last_event_id)

    def refusal(self, status: int, text: str, reason: str, retry_after: str | None) -> Retry | ChatError:
        """What an answer other than 200 and 204 means: :class:`Retry` (502/503/504
        but for :data:`PERMANENT_ERROR_TYPES`, and :data:`RETRIED_ERROR_TYPES`) or
        the :class:`ChatError` to raise. ``text`` is its body, ``reason`` its reason
        phrase, ``retry_after`` its ``Retry-After`` header."""
        error = (json_object(text) or {}).get("error")
        if isinstance(error, dict):
            error_type = str(error.get("type") or "error")
            message = str(error.get("message", ""))
            detail = f"{error_type}: {message}"
        else:
            error_type, message = "http_error", text.strip()[:300] or reason
            detail = message
        if (status in RETRIED_STATUSES and error_type not in PERMANENT_ERROR_TYPES) \
                or error_type in RETRIED_ERROR_TYPES:
            return Retry(f"the server answered HTTP {status} {detail}", retry_after_ms(retry_after))
        return ChatError(error_type, message, status, stream_id=self.stream_id, last_event_id=self.last_event_id)

    def connect_error(self, exc: BaseException, base_url: str,
                      refused: tuple[type[BaseException], ...]) -> ChatError | None:
        """The :class:`ChatError` of a first connection that could not be made
        (:data:`UNKNOWN_HOST`, :data:`CONNECTION_REFUSED`: ``exc`` stems from one of
        ``refused``); ``None`` when ``exc`` is another failure (retried)."""
        if caused_by(exc, (socket.gaierror,)):
            return ChatError(UNKNOWN_HOST, f"cannot resolve the host name of {base_url}",
                             stream_id=self.stream_id, last_event_id=self.last_event_id)
        if caused_by(exc, (ConnectionRefusedError, *refused)):
            return ChatError(CONNECTION_REFUSED, f"could not connect to {base_url}",
                             stream_id=self.stream_id, last_event_id=self.last_event_id)
        return None


def model_list(status: int, text: str, reason: str) -> list[dict]:
    """The models of a ``GET /v1/models`` answer: ``[{"id", "object": "model",
    "owned_by", …}, …]`` (OpenAI's shape).

    Raises:
        ChatError: an HTTP error answer, or a body that is not such a list.
    """
    if status != 200:
        refused = StreamState(None).refusal(status, text, reason, None)
        raise refused if isinstance(refused, ChatError) else ChatError("http_error", refused.reason, status)
    data = (json_object(text) or {}).get("data")
    if not isinstance(data, list):
        raise ChatError("http_error", "GET /v1/models did not answer a list of models", status)
    return [model for model in data if isinstance(model, dict)]


class Reconnection:
    """The reconnection policy of one stream (docs/python-client.md, "Reconnection"):
    after a failed connection, the wait before the next one, or :data:`GAVE_UP`.

    Args:
        retries: failed reconnections in a row before giving up; a connection that
            delivered an event starts the count again.
        jitter: returns a number in [0, 1) for each wait (:func:`backoff_ms`).
    """

    def __init__(self, retries: int, jitter: Callable[[], float]) -> None:
        self.retries = retries
        self._jitter = jitter
        self.retry_ms = DEFAULT_RETRY_MS
        self.failures = 0
        self.connections = 0

    def wait_s(self, state: StreamState, reason: str, *, progressed: bool, least_wait_ms: float = 0.0,
               retry_ms: int | None = None) -> float:
        """Seconds to wait before reconnecting after a connection that ended for
        ``reason`` (``progressed``: it delivered an event; ``retry_ms``: the last
        ``retry:`` it sent).

        Raises:
            ChatError: :data:`GAVE_UP`, after ``retries`` failures in a row.
        """
        self.retry_ms = retry_ms or self.retry_ms
        self.failures = 1 if progressed else self.failures + 1
        if self.failures > self.retries:
            raise ChatError(GAVE_UP, f"gave up after {self.retries} reconnection attempts: {reason}",
                            stream_id=state.stream_id, last_event_id=state.last_event_id)
        return max(backoff_ms(self.retry_ms, self.failures, self._jitter()), least_wait_ms) / 1000


def json_object(text: str) -> dict | None:
    """``text`` parsed as a JSON object; ``None`` when it is not one."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def caused_by(exc: BaseException, types: tuple[type[BaseException], ...]) -> bool:
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

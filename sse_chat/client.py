"""The Python client of this service: ask a question, follow its event stream
across dropped connections with ``Last-Event-ID``, resume or cancel a stream.

:class:`ChatClient` blocks (on ``requests``); :class:`AsyncChatClient` (on ``httpx``,
in :mod:`sse_chat.async_client`, imported when first named) has the same methods for
asyncio programs. Both import only :mod:`sse_chat.protocol`, their HTTP library and
the standard library (never the server), so programs and the ``sse-chat`` command
line start fast. docs/python-client.md shows them in use.

Example::

    from sse_chat.client import ChatClient, ChatError

    with ChatClient("http://127.0.0.1:8000") as client:
        answer = client.ask("Why is the sky blue?", max_tokens=50)
        print(answer, answer.finish_reason, answer.usage)

Errors: every failure raises :class:`ChatError` (an ``error`` event, an HTTP error
answer, a refused first connection, too many failed reconnections); a mistake in
the arguments raises ``ValueError`` or ``TypeError`` before anything is sent.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import requests
import urllib3

from sse_chat.client_base import (
    CANCEL_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    CONNECTION_REFUSED,
    GAVE_UP,
    MAX_BACKOFF_MS,
    PERMANENT_ERROR_TYPES,
    READ_SIZE_BYTES,
    READ_TIMEOUT_S,
    RETRIED_ERROR_TYPES,
    RETRIED_STATUSES,
    UNKNOWN_HOST,
    Answer,
    ChatError,
    ChatEvent,
    Reconnection,
    Retry,
    RetryHook,
    StreamState,
    Timeout,
    backoff_ms,
    chat_body,
    check_api_key,
    check_base_url,
    check_event_id,
    check_timeout,
    model_list,
    retry_after_ms,
)
from sse_chat.protocol import EventStreamDecoder, EventType

if TYPE_CHECKING:
    from sse_chat.async_client import AsyncChatClient, AsyncChatStream

__all__ = [
    "Answer", "AsyncChatClient", "AsyncChatStream", "ChatClient", "ChatError", "ChatEvent", "ChatStream",
    "backoff_ms", "check_api_key", "check_base_url", "check_event_id", "retry_after_ms",
    # constants the command line and tests use
    "CONNECTION_REFUSED", "CONNECT_TIMEOUT_S", "GAVE_UP", "MAX_BACKOFF_MS", "PERMANENT_ERROR_TYPES",
    "READ_TIMEOUT_S", "RETRIED_ERROR_TYPES", "RETRIED_STATUSES", "UNKNOWN_HOST",
]

_DROPPED = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
            urllib3.exceptions.HTTPError)


def __getattr__(name: str) -> Any:
    """``AsyncChatClient`` and ``AsyncChatStream``, imported (with httpx) when first named."""
    if name in ("AsyncChatClient", "AsyncChatStream"):
        from sse_chat import async_client

        return getattr(async_client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ChatStream:
    """One stream, followed across reconnections; iterate it for :class:`ChatEvent`.

    It yields every event, the terminal one included; after an ``error`` event the
    next step raises :class:`ChatError` with its type and message. A resumed stream
    that was already over (204) yields nothing. Reconnection: once the stream is
    known (after ``start``) with ``GET /v1/streams/{id}`` and ``Last-Event-ID``, so no
    event is lost or repeated; before that the question is posted again with the same
    ``Idempotency-Key``. :attr:`stream_id` and :attr:`last_event_id` say how far it got.

    A context manager: leaving the ``with`` block (or :meth:`close`) closes its
    connection; the stream goes on on the server (``cancel()`` stops it there).

    Raises (while iterating):
        ChatError: see :class:`ChatError`.
    """

    def __init__(self, client: ChatClient, body: dict | None, last_event_id: str = "") -> None:
        self._client = client
        self._state = StreamState(body, last_event_id)
        self._iterator = self._follow()

    @property
    def stream_id(self) -> str | None:
        """The stream's id, once known (after ``start``, or from the resumed id)."""
        return self._state.stream_id

    @property
    def last_event_id(self) -> str:
        """The last event ID received (``"STREAM_ID:SEQ"``; ``""`` before any)."""
        return self._state.last_event_id

    @property
    def done(self) -> dict | None:
        """The ``done`` event's data once the stream ended with it."""
        return self._state.done

    @property
    def idempotency_key(self) -> str | None:
        """The ``Idempotency-Key`` of a new question (a UUID4), the same on all its posts."""
        return self._state.idempotency_key

    def __iter__(self) -> Iterator[ChatEvent]:
        return self._iterator

    def __next__(self) -> ChatEvent:
        return next(self._iterator)

    def close(self) -> None:
        """Close the connection and end the iteration; idempotent."""
        self._iterator.close()

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _follow(self) -> Generator[ChatEvent, None, None]:
        client, state = self._client, self._state
        reconnection = Reconnection(client.retries, client._jitter)
        while True:
            decoder = EventStreamDecoder(state.last_event_id)
            progressed = False
            reconnection.connections += 1
            try:
                for event in self._connection(decoder):
                    progressed = True
                    yield event
                    error = state.error_of(event)
                    if error is not None:
                        raise error
                    if event.event == EventType.DONE.value:
                        return
                return  # 204: the stream was already over
            except Retry as exc:
                reason, least_wait_ms = exc.reason, exc.least_wait_ms
            except _DROPPED as exc:
                failed = state.connect_error(exc, client.base_url, (urllib3.exceptions.NewConnectionError,))
                if reconnection.connections == 1 and not progressed and failed is not None:
                    raise failed from None
                reason, least_wait_ms = _describe(exc), 0.0
            state.last_event_id = decoder.last_event_id or state.last_event_id
            wait_s = reconnection.wait_s(state, reason, progressed=progressed, least_wait_ms=least_wait_ms,
                                         retry_ms=decoder.reconnection_time_ms)
            if client._on_retry is not None:
                client._on_retry(reason, wait_s, reconnection.failures, client.retries)
            client._sleep(wait_s)

    def _connection(self, decoder: EventStreamDecoder) -> Iterator[ChatEvent]:
        """The events of one connection; ends early on a 204.

        Raises:
            Retry: a 502/503/504 answer, or the stream ended before its last event.
            ChatError: another HTTP error answer.
        """
        state = self._state
        with self._client._open(state) as response:
            if response.status_code == 204:
                return
            if response.status_code != 200:
                raise state.refusal(response.status_code, response.text, response.reason or "",
                                    response.headers.get("Retry-After"))
            for dispatched in decoder.iter_events(self._chunks(response)):
                event = state.event(dispatched)
                yield event
                if state.ends(event):
                    return
        raise Retry("the stream ended before its last event")

    def _chunks(self, response: requests.Response) -> Iterator[bytes]:
        # read1: whatever one socket read delivers, even part of an HTTP chunk, so
        # that neither 128-byte reads (iter_content's default) nor a large chunk
        # cut in the middle (a dropped connection) holds back received events.
        on_chunk = self._client._on_chunk
        while chunk := response.raw.read1(READ_SIZE_BYTES):
            if on_chunk is not None:
                on_chunk(chunk)
            yield chunk


class ChatClient:
    """A client of one sse-chat service; a context manager (``with ChatClient(url)
    as client:``), or call :meth:`close`.

    Args:
        base_url: the service, e.g. ``"http://127.0.0.1:8000"``.
        api_key: bearer key for a service with ``SSE_CHAT_API_KEYS``.
        retries: failed reconnections in a row before giving up (a connection that
            delivered an event starts the count again); 0 never reconnects.
        timeout: seconds, or ``(connect, read)`` seconds: how long to wait for a
            connection, and the longest silence while reading an answer (the server
            sends a ``: ping`` every 15 s by default); either is a dropped connection,
            reconnected. Default ``(10, 90)``.
        session: a ``requests.Session`` to use (a new one when not given; only a
            session the client made is closed by :meth:`close`).
        on_retry: ``on_retry(reason, wait_s, attempt, retries)``, called before each
            reconnection wait (the CLI prints it).
        on_chunk: ``on_chunk(bytes)``, called with every chunk of the event stream as
            received (the CLI's ``--raw``).
        sleep, jitter: the wait between reconnections (seconds) and its jitter, a
            number in [0, 1) (for tests).

    Raises:
        ValueError: ``base_url`` is not an http(s) URL; ``api_key`` is not printable
            ASCII (:func:`check_api_key`); ``timeout`` is not positive.
        TypeError: an unknown keyword argument.
    """

    def __init__(self, base_url: str, api_key: str | None = None, retries: int = 5, *,
                 timeout: Timeout = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S), session: requests.Session | None = None,
                 on_retry: RetryHook | None = None, on_chunk: Callable[[bytes], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep, jitter: Callable[[], float] = random.random) -> None:
        self.base_url = check_base_url(base_url)
        self.api_key = check_api_key(api_key) if api_key else None
        self.retries = retries
        self._timeout = check_timeout(timeout)
        self._owns_session = session is None
        self.session = session or requests.Session()
        if self.api_key:
            self.session.headers["Authorization"] = f"Bearer {self.api_key}"
        self._on_retry = on_retry
        self._on_chunk = on_chunk
        self._sleep = sleep
        self._jitter = jitter

    def stream(self, prompt: str | None = None, *, messages: list[dict] | None = None, model: str | None = None,
               system: str | None = None, max_tokens: int | None = None, temperature: float | None = None,
               tools: list[dict] | None = None, tool_choice: str | dict | None = None, fake: dict | None = None,
               extra_body: Mapping[str, Any] | None = None) -> ChatStream:
        """Ask a new question (``POST /v1/chat``) and return its stream of
        :class:`ChatEvent` (see :class:`ChatStream`). Give ``prompt``, ``messages``
        (``[{"role": "user" | "assistant" | "system" | "tool", "content": str}, …]``)
        or both (the prompt is then sent as the last ``user`` message). ``tools`` and
        ``tool_choice`` are OpenAI's; ``fake`` is the fake model's faults
        (docs/testing-clients.md); ``extra_body`` holds more fields for the body, sent
        as they are. Every call has a fresh ``Idempotency-Key``, sent again on its
        retries.

        Nothing is sent until the first event is asked for; the arguments are
        checked at once.

        Raises:
            ValueError: nothing to ask, ``max_tokens`` below 1, ``temperature``
                outside 0 to 2.
            TypeError: an unknown keyword, or an argument of the wrong type.
        """
        return ChatStream(self, chat_body(prompt, messages=messages, model=model, system=system,
                                          max_tokens=max_tokens, temperature=temperature, tools=tools,
                                          tool_choice=tool_choice, fake=fake, extra_body=extra_body))

    def resume(self, last_event_id: str) -> ChatStream:
        """The events of an existing stream after ``last_event_id``
        (``"STREAM_ID:SEQ"``, as :attr:`ChatEvent.id` gives it), read with
        ``GET /v1/streams/{id}`` and ``Last-Event-ID``; see :class:`ChatStream`.

        Raises:
            ValueError: ``last_event_id`` is not ``STREAM_ID:SEQ`` (:func:`check_event_id`).
        """
        check_event_id(last_event_id)
        return ChatStream(self, None, last_event_id)

    def ask(self, prompt: str | None = None, *, messages: list[dict] | None = None, model: str | None = None,
            system: str | None = None, max_tokens: int | None = None, temperature: float | None = None,
            tools: list[dict] | None = None, tool_choice: str | dict | None = None, fake: dict | None = None,
            extra_body: Mapping[str, Any] | None = None) -> Answer:
        """Ask and wait for the whole answer: the text of its ``token`` events as an
        :class:`Answer` (a ``str`` with ``.done``, ``.finish_reason``, ``.usage``).
        Takes the arguments of :meth:`stream`.

        Raises:
            ChatError: an ``error`` event, an HTTP error, or no connection.
            ValueError, TypeError: as :meth:`stream`, before anything is sent.
        """
        with self.stream(prompt, messages=messages, model=model, system=system, max_tokens=max_tokens,
                         temperature=temperature, tools=tools, tool_choice=tool_choice, fake=fake,
                         extra_body=extra_body) as stream:
            text = "".join(event.content for event in stream if event.event == EventType.TOKEN.value)
            return Answer.of(text, stream._state)

    def cancel(self, stream_id: str) -> bool:
        """Ask the server to stop generating stream ``stream_id``
        (``DELETE /v1/streams/{id}``); True if it agreed (2xx), False on any other
        answer or no connection. The stream then ends with ``done``,
        ``finish_reason`` ``"cancelled"``."""
        try:
            response = self.session.delete(f"{self.base_url}/v1/streams/{stream_id}", timeout=CANCEL_TIMEOUT_S)
        except requests.RequestException:
            return False
        return response.status_code < 300

    def models(self) -> list[dict]:
        """The service's models (``GET /v1/models``): ``[{"id": str, "object":
        "model", "owned_by": str, …}, …]``.

        Raises:
            ChatError: an HTTP error answer, or no connection (``connection_refused``,
                ``unknown_host``, ``gave_up`` for a dropped one).
        """
        try:
            response = self.session.get(f"{self.base_url}/v1/models", timeout=self._timeout)
        except _DROPPED as exc:
            raise StreamState(None).connect_error(exc, self.base_url, (urllib3.exceptions.NewConnectionError,)) \
                or ChatError(GAVE_UP, f"{_describe(exc)} ({self.base_url})") from None
        return model_list(response.status_code, response.text, response.reason or "")

    def close(self) -> None:
        """Close the client's connections (the session, if the client made it)."""
        if self._owns_session:
            self.session.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _open(self, state: StreamState) -> requests.Response:
        method, url, headers = state.request(self.base_url)
        return self.session.request(method, url, json=state.body if method == "POST" else None, headers=headers,
                                    stream=True, timeout=self._timeout)


def _describe(exc: Exception) -> str:
    if isinstance(exc, (requests.Timeout, urllib3.exceptions.ReadTimeoutError)):
        return "the server sent nothing for too long"
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError)):
        return "the connection was cut in the middle of the stream"
    return f"could not connect ({type(exc).__name__})"

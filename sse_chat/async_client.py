"""The asyncio client of this service, on ``httpx``: :class:`AsyncChatClient` has the
methods of :class:`sse_chat.client.ChatClient` as coroutines, and follows a stream
across dropped connections with ``Last-Event-ID`` the same way (the shared rules are
in :mod:`sse_chat.client_base`). Also importable as ``sse_chat.client.AsyncChatClient``.

Example::

    from sse_chat.client import AsyncChatClient

    async with AsyncChatClient("http://127.0.0.1:8000") as client:
        async with client.stream("Why is the sky blue?") as stream:
            async for event in stream:
                print(event.content, end="", flush=True)
        answer = await client.ask("And at sunset?")
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any

import httpx

from sse_chat.client_base import (
    CANCEL_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    GAVE_UP,
    READ_TIMEOUT_S,
    Answer,
    ChatError,
    ChatEvent,
    Reconnection,
    Retry,
    RetryHook,
    StreamState,
    Timeout,
    chat_body,
    check_api_key,
    check_base_url,
    check_event_id,
    check_timeout,
    model_list,
)
from sse_chat.protocol import EventStreamDecoder, EventType

__all__ = ["AsyncChatClient", "AsyncChatStream"]

#: What counts as a dropped connection, reconnected (httpx's transport errors:
#: connect, read and write errors and time-outs, a cut chunked body).
_DROPPED = (httpx.TransportError,)


class AsyncChatStream:
    """One stream, followed across reconnections: ``async for event in stream``
    gives :class:`~sse_chat.client.ChatEvent` s, as :class:`sse_chat.client.ChatStream`
    does (every event, the terminal one included; after an ``error`` event the next
    step raises :class:`~sse_chat.client.ChatError`). An async context manager:
    leaving the ``async with`` block (or ``await close()``) closes its connection.

    Raises (while iterating):
        ChatError: see :class:`~sse_chat.client.ChatError`.
    """

    def __init__(self, client: AsyncChatClient, body: dict | None, last_event_id: str = "") -> None:
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

    def __aiter__(self) -> AsyncIterator[ChatEvent]:
        return self._iterator

    async def __anext__(self) -> ChatEvent:
        return await self._iterator.__anext__()

    async def close(self) -> None:
        """Close the connection and end the iteration; idempotent."""
        await self._iterator.aclose()

    aclose = close

    async def __aenter__(self) -> AsyncChatStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _follow(self) -> AsyncGenerator[ChatEvent, None]:
        client, state = self._client, self._state
        reconnection = Reconnection(client.retries, client._jitter)
        while True:
            decoder = EventStreamDecoder(state.last_event_id)
            progressed = False
            reconnection.connections += 1
            try:
                async for event in self._connection(decoder):
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
                failed = state.connect_error(exc, client.base_url, (httpx.ConnectError,))
                if reconnection.connections == 1 and not progressed and failed is not None:
                    raise failed from None
                reason, least_wait_ms = _describe(exc), 0.0
            state.last_event_id = decoder.last_event_id or state.last_event_id
            wait_s = reconnection.wait_s(state, reason, progressed=progressed, least_wait_ms=least_wait_ms,
                                         retry_ms=decoder.reconnection_time_ms)
            if client._on_retry is not None:
                client._on_retry(reason, wait_s, reconnection.failures, client.retries)
            await client._sleep(wait_s)

    async def _connection(self, decoder: EventStreamDecoder) -> AsyncIterator[ChatEvent]:
        """The events of one connection; ends early on a 204.

        Raises:
            Retry: a 502/503/504 answer, or the stream ended before its last event.
            ChatError: another HTTP error answer.
        """
        state, on_chunk = self._state, self._client._on_chunk
        method, url, headers = state.request(self._client.base_url)
        body = state.body if method == "POST" else None
        async with self._client.http.stream(method, url, json=body, headers=headers) as response:
            if response.status_code == 204:
                return
            if response.status_code != 200:
                text = (await response.aread()).decode("utf-8", "replace")
                raise state.refusal(response.status_code, text, response.reason_phrase,
                                    response.headers.get("Retry-After"))
            async for chunk in response.aiter_raw():
                if on_chunk is not None:
                    on_chunk(chunk)
                for dispatched in decoder.feed(chunk):
                    event = state.event(dispatched)
                    yield event
                    if state.ends(event):
                        return
        raise Retry("the stream ended before its last event")


class AsyncChatClient:
    """A client of one sse-chat service for asyncio programs, with the arguments and
    methods of :class:`sse_chat.client.ChatClient`; ``stream()`` and ``resume()``
    return an :class:`AsyncChatStream`, ``ask()``, ``cancel()`` and ``close()`` are
    coroutines. An async context manager (``async with AsyncChatClient(url) as
    client:``).

    Args:
        base_url, api_key, retries, timeout, on_retry, on_chunk: as
            :class:`~sse_chat.client.ChatClient`'s.
        http: an ``httpx.AsyncClient`` to use (a new one when not given; only a
            client this one made is closed by :meth:`close`).
        sleep: the wait between reconnections, a coroutine function of seconds;
            jitter: a number in [0, 1) per wait (for tests).

    Raises:
        ValueError: ``base_url`` is not an http(s) URL; ``api_key`` is not printable
            ASCII; ``timeout`` is not positive.
        TypeError: an unknown keyword argument.
    """

    def __init__(self, base_url: str, api_key: str | None = None, retries: int = 5, *,
                 timeout: Timeout = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S), http: httpx.AsyncClient | None = None,
                 on_retry: RetryHook | None = None, on_chunk: Callable[[bytes], None] | None = None,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 jitter: Callable[[], float] = random.random) -> None:
        self.base_url = check_base_url(base_url)
        self.api_key = check_api_key(api_key) if api_key else None
        self.retries = retries
        connect_s, read_s = check_timeout(timeout)
        self._owns_http = http is None
        self.http = http or httpx.AsyncClient(timeout=httpx.Timeout(read_s, connect=connect_s))
        if self.api_key:
            self.http.headers["Authorization"] = f"Bearer {self.api_key}"
        self._on_retry = on_retry
        self._on_chunk = on_chunk
        self._sleep = sleep
        self._jitter = jitter

    def stream(self, prompt: str | None = None, *, messages: list[dict] | None = None, model: str | None = None,
               system: str | None = None, max_tokens: int | None = None, temperature: float | None = None,
               tools: list[dict] | None = None, tool_choice: str | dict | None = None, fake: dict | None = None,
               extra_body: Mapping[str, Any] | None = None) -> AsyncChatStream:
        """Ask a new question; as :meth:`sse_chat.client.ChatClient.stream` (checked
        at once, sent when the first event is awaited)."""
        return AsyncChatStream(self, chat_body(prompt, messages=messages, model=model, system=system,
                                               max_tokens=max_tokens, temperature=temperature, tools=tools,
                                               tool_choice=tool_choice, fake=fake, extra_body=extra_body))

    def resume(self, last_event_id: str) -> AsyncChatStream:
        """The events of an existing stream after ``last_event_id``; as
        :meth:`sse_chat.client.ChatClient.resume`.

        Raises:
            ValueError: ``last_event_id`` is not ``STREAM_ID:SEQ``.
        """
        check_event_id(last_event_id)
        return AsyncChatStream(self, None, last_event_id)

    async def ask(self, prompt: str | None = None, *, messages: list[dict] | None = None, model: str | None = None,
                  system: str | None = None, max_tokens: int | None = None, temperature: float | None = None,
                  tools: list[dict] | None = None, tool_choice: str | dict | None = None, fake: dict | None = None,
                  extra_body: Mapping[str, Any] | None = None) -> Answer:
        """The whole answer; as :meth:`sse_chat.client.ChatClient.ask`."""
        async with self.stream(prompt, messages=messages, model=model, system=system, max_tokens=max_tokens,
                               temperature=temperature, tools=tools, tool_choice=tool_choice, fake=fake,
                               extra_body=extra_body) as stream:
            text = "".join([event.content async for event in stream if event.event == EventType.TOKEN.value])
            return Answer.of(text, stream._state)

    async def cancel(self, stream_id: str) -> bool:
        """Ask the server to stop stream ``stream_id``; as
        :meth:`sse_chat.client.ChatClient.cancel`."""
        try:
            response = await self.http.delete(f"{self.base_url}/v1/streams/{stream_id}", timeout=CANCEL_TIMEOUT_S)
        except httpx.HTTPError:
            return False
        return response.status_code < 300

    async def models(self) -> list[dict]:
        """The service's models; as :meth:`sse_chat.client.ChatClient.models`."""
        try:
            response = await self.http.get(f"{self.base_url}/v1/models")
        except _DROPPED as exc:
            raise StreamState(None).connect_error(exc, self.base_url, (httpx.ConnectError,)) \
                or ChatError(GAVE_UP, f"{_describe(exc)} ({self.base_url})") from None
        return model_list(response.status_code, response.text, response.reason_phrase)

    async def close(self) -> None:
        """Close the client's connections (the ``httpx.AsyncClient``, if this client made it)."""
        if self._owns_http:
            await self.http.aclose()

    aclose = close

    async def __aenter__(self) -> AsyncChatClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.close()


def _describe(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "the server sent nothing for too long"
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
        return "the connection was cut in the middle of the stream"
    return f"could not connect ({type(exc).__name__})"

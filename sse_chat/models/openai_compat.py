"""The ``openai`` backend: any OpenAI-compatible upstream, through the official SDK.

Maps Chat Completions stream chunks (``chat.completion.chunk``) onto deltas:
``choices[0].delta.content`` → content, ``delta.reasoning_content`` (DeepSeek,
vLLM, llama.cpp) or ``delta.reasoning`` → reasoning, ``delta.tool_calls`` → tool-call
fragments, ``finish_reason`` and the final ``usage`` chunk
(``stream_options={"include_usage": True}``) → the last delta. ``tools`` and
``tool_choice`` go to the upstream as the caller gave them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import openai

from .base import ChatRequest, Delta, ToolCallDelta, UpstreamError, Usage

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 10.0
_MAX_DETAIL_CHARS = 300


class OpenAIChatModel:
    """Streams from the upstream's ``POST /chat/completions`` with ``stream: true``,
    through the SDK's client (its retries, timeouts and errors), reading each
    chunk as parsed JSON rather than as an SDK model.

    Args:
        client: an ``openai.OpenAI`` client (its timeouts and retries are the
            caller's choice; see :func:`make_openai_client`).
        secret: the API key, scrubbed from every error message.
    """

    def __init__(self, client: openai.OpenAI, secret: str | None = None) -> None:
        self._client = client
        self._secret = secret

    def stream(self, request: ChatRequest) -> Iterator[Delta]:
        stream = self._open(request)
        try:
            yield from self._deltas(stream)
        except UpstreamError:
            raise
        except openai.APITimeoutError:
            raise UpstreamError("upstream_timeout", "the upstream sent nothing for longer than "
                                "SSE_CHAT_UPSTREAM_TIMEOUT_S allows, so the stream was stopped") from None
        except openai.APIStatusError as exc:
            raise _status_error(exc, self._secret) from None
        except openai.APIConnectionError:
            raise UpstreamError("upstream_stream_cut",
                                "the upstream closed the connection in the middle of its answer") from None
        except openai.APIError as exc:
            detail = _scrub(exc.message, self._secret)
            raise UpstreamError("upstream_error_event", f"the upstream sent an error in its stream: {detail}") from None
        except (json.JSONDecodeError, ValueError, TypeError, AttributeError) as exc:
            log.warning("malformed upstream chunk: %s", _scrub(str(exc), self._secret))
            detail = _scrub(str(exc), self._secret)[:_MAX_DETAIL_CHARS]
            message = f"the upstream sent a chunk that is not a valid chat.completion.chunk ({detail})"
            raise UpstreamError("upstream_malformed_chunk", message) from None
        finally:
            stream.close()

    def _open(self, request: ChatRequest) -> Any:
        options: dict[str, Any] = {}
        if request.max_tokens is not None:
            options["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.tools is not None:
            options["tools"] = list(request.tools)
        if request.tool_choice is not None:
            options["tool_choice"] = request.tool_choice
        for name, value in request.sampling:
            options[name] = list(value) if isinstance(value, tuple) else value
        body = {"model": request.model, "messages": _sdk_messages(request), "stream": True,
                "stream_options": {"include_usage": True}, **options}
        try:
            # The SDK's own request, retries, errors and event-stream reading, but its
            # chunks as parsed JSON (cast_to=object), not pydantic models: building a
            # ChatCompletionChunk costs about 60 us per chunk, and reading them so
            # cut a real stream's cost per event by a third (docs/capacity.md).
            return self._client.post("/chat/completions", body=body, cast_to=object, stream=True,
                                     stream_cls=openai.Stream[object])
        except openai.APITimeoutError:
            raise UpstreamError("upstream_timeout", "the upstream did not answer in time") from None
        except openai.APIConnectionError as exc:
            detail = _scrub(str(exc.__cause__ or exc), self._secret)
            raise UpstreamError("upstream_unreachable",
                                f"could not connect to the upstream at {self._client.base_url}: {detail}") from None
        except openai.APIStatusError as exc:
            raise _status_error(exc, self._secret) from None

    @staticmethod
    def _deltas(stream: Any) -> Iterator[Delta]:
        """The deltas of ``stream``'s chunks (JSON objects, as the upstream sent them).

        Raises:
            UpstreamError: ``upstream_stream_cut`` when the stream ends before a
                ``finish_reason``.
            ValueError, TypeError, AttributeError: a chunk that is not a
                ``chat.completion.chunk``.
        """
        finish_reason: str | None = None
        usage: Usage | None = None
        for chunk in stream:
            reported = chunk.get("usage")
            if reported:
                usage = Usage(reported.get("prompt_tokens") or 0, reported.get("completion_tokens") or 0)
            choices = chunk.get("choices")
            if not choices:
                continue
            choice = choices[0]
            delta = choice.get("delta") or {}
            content = _text(delta, "content")
            reasoning = _reasoning(delta)
            tool_calls = _tool_call_fragments(delta)
            if content or reasoning or tool_calls:
                yield Delta(content=content, reasoning=reasoning, tool_calls=tool_calls)
            if choice.get("finish_reason"):
                finish_reason = choice["finish_reason"]
        if finish_reason is None:
            raise UpstreamError("upstream_stream_cut", "the upstream stream ended before a finish_reason")
        yield Delta(finish_reason=finish_reason, usage=usage)


def make_openai_client(api_key: str | None, base_url: str | None, timeout_s: float, max_retries: int) -> openai.OpenAI:
    """Build the SDK client. ``timeout_s`` bounds the wait for each read (so a stalled
    stream ends); ``max_retries`` is the SDK's own retries of failed connects, 429
    and 5xx, which happen only before the stream starts."""
    return openai.OpenAI(
        api_key=api_key or "sse-chat-no-key",
        base_url=base_url,
        timeout=openai.Timeout(timeout_s, connect=_CONNECT_TIMEOUT_S),
        max_retries=max_retries,
    )


def _text(delta: dict[str, Any], name: str) -> str:
    """``delta[name]``: a string, or ``""`` when absent or null.

    Raises:
        ValueError: it is something else.
    """
    value = delta.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"delta.{name} is {type(value).__name__}, not a string")
    return value


def _reasoning(delta: dict[str, Any]) -> str:
    """A reasoning model's thinking: ``delta.reasoning_content`` (DeepSeek, vLLM,
    llama.cpp) or ``delta.reasoning``."""
    for name in ("reasoning_content", "reasoning"):
        value = delta.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def _tool_call_fragments(delta: dict[str, Any]) -> tuple[ToolCallDelta, ...]:
    """``delta.tool_calls`` (``[{"index", "id"?, "function": {"name"?, "arguments"?}}]``)
    as fragments; ``()`` when there are none. ``index`` may be missing (older
    Ollama): :class:`~sse_chat.protocol.ToolCalls` then continues the last call.

    Raises:
        ValueError: an ``index`` that is not a whole number >= 0, or ``arguments``
            that are not a string (the stream ends with ``upstream_malformed_chunk``).
        AttributeError: an item or its ``function`` that is not an object.
    """
    calls = delta.get("tool_calls")
    if not calls:
        return ()
    fragments = []
    for call in calls:
        function = call.get("function") or {}
        arguments = function.get("arguments") or ""
        index = call.get("index")
        if (index is not None and (isinstance(index, bool) or not isinstance(index, int) or index < 0)) \
                or not isinstance(arguments, str):
            raise ValueError(f"a delta.tool_calls item with index {index!r} and arguments of type "
                             f"{type(arguments).__name__}")
        fragments.append(ToolCallDelta(index=index, id=call.get("id") or None,
                                       name=function.get("name") or None, arguments=arguments))
    return tuple(fragments)


_STATUS_TYPES = {401: "upstream_unauthorized", 403: "upstream_unauthorized", 429: "upstream_rate_limited"}


def _status_error(exc: openai.APIStatusError, secret: str | None) -> UpstreamError:
    status = exc.status_code
    error_type = _STATUS_TYPES.get(status) or ("upstream_server_error" if status >= 500 else "upstream_rejected")
    detail = _scrub(exc.message, secret)[:_MAX_DETAIL_CHARS]
    return UpstreamError(error_type, f"the upstream answered HTTP {status}: {detail}")


def _scrub(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, "[redacted]")
    return text


def _sdk_messages(request: ChatRequest) -> Any:
    """``messages`` for the SDK: ``[{"role", "content"}, …]`` with the tool turns'
    ``tool_calls`` and ``tool_call_id`` (typed ``Any``: the SDK's per-role
    TypedDicts cannot be told apart from a role held in a variable)."""
    return [m.as_openai() for m in request.messages]

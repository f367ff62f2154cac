"""OpenAI Chat Completions shapes, built from this service's events. Pure: no Flask.

Shapes follow OpenAI's API reference: ``chat.completion`` (non-streaming),
``chat.completion.chunk`` frames ending with ``data: [DONE]`` (streaming), and
``{"error": {"message", "type", "param", "code"}}``.
https://platform.openai.com/docs/api-reference/chat
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..bodies.chat import SAMPLING_OPTIONS, check_streamed, parse_chat_body
from ..errors import invalid_request
from ..models import ChatRequest
from ..models.registry import option_names
from ..protocol import TERMINAL_TYPES, Event, EventId, EventType, ServerSentEvent, compact_json, read_frame

DONE_FRAME = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class CompletionRequest:
    """A ``POST /v1/chat/completions`` body: the chat, and how to answer it."""

    chat: ChatRequest
    stream: bool
    include_usage: bool


def parse_completion_body(payload: Any, default_model: str) -> CompletionRequest:
    """Validate OpenAI's request shape (``messages`` required; ``model``, ``stream``,
    ``stream_options.include_usage``, ``max_tokens`` or ``max_completion_tokens``,
    ``temperature``, ``top_p``, ``seed``, ``stop``, ``presence_penalty``, ``frequency_penalty``,
    ``tools`` and ``tool_choice`` (passed on as given; ``messages``
    may hold tool turns), and this service's options of a backend (the fake
    model's faults, docs/testing-clients.md; one that ends each response early
    only with ``stream``); other fields are ignored).

    Raises:
        ApiError: 400 ``invalid_request`` naming the field.
    """
    if not isinstance(payload, dict):
        raise invalid_request("the JSON body must be an object with \"messages\"")
    if "messages" not in payload:
        raise invalid_request("\"messages\" is required: a list of {\"role\", \"content\"} objects")
    fields = {key: payload[key] for key in ("messages", "model", "temperature", "tools", "tool_choice",
                                            *SAMPLING_OPTIONS, *option_names()) if key in payload}
    max_tokens = payload.get("max_completion_tokens", payload.get("max_tokens"))
    if max_tokens is not None:
        fields["max_tokens"] = max_tokens
    messages = payload["messages"]
    fields["messages"] = [_plain_message(m) for m in messages] if isinstance(messages, list) else messages
    stream = payload.get("stream", False)
    options = payload.get("stream_options") or {}
    if not isinstance(stream, bool):
        raise invalid_request("\"stream\" must be true or false")
    if not isinstance(options, dict):
        raise invalid_request("\"stream_options\" must be an object")
    chat = parse_chat_body(fields, default_model)
    check_streamed(chat, stream)
    return CompletionRequest(chat, stream, bool(options.get("include_usage")))


def _plain_message(message: Any) -> Any:
    """Accept OpenAI's content parts (``[{"type": "text", "text": …}]``) as text;
    ``developer`` is OpenAI's newer name for ``system``."""
    if not isinstance(message, dict):
        return message
    content = message.get("content")
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        message = {**message, "content": "".join(str(p.get("text", "")) for p in content)}
    if message.get("role") == "developer":
        message = {**message, "role": "system"}
    return message


def openai_error(error_type: str, message: str) -> dict:
    """``{"error": {"message", "type", "param": null, "code": null}}``."""
    return {"error": {"message": message, "type": error_type, "param": None, "code": None}}


@dataclass
class CompletionChunks:
    """Turns a stream's events into ``chat.completion.chunk`` frames, each with the
    event's ``id:`` so that ``Last-Event-ID`` resumes (docs/openai.md, "Resuming chunks").
    ``created`` (Unix seconds) is the ``start`` event's once that is read, so that
    every reading of a stream from its start has the same chunks.

    Calls of ``server_tools`` (tools the service runs itself) are resolved inside
    the service: their ``tool_call`` fragments, like their ``tool_result``s,
    give no chunk, so the client sees only the final answer."""

    stream_id: str
    model: str
    created: int
    include_usage: bool
    server_tools: frozenset[str] = frozenset()
    ended: bool = field(default=False, init=False)
    _hidden: dict[int, bool] = field(default_factory=dict, init=False, repr=False)

    def frames(self, event: Event) -> list[bytes]:
        """The SSE frames for one event: one chunk, or at the end the finishing
        chunk, the usage chunk when asked for, and ``data: [DONE]``; an ``error``
        gives one ``{"error": …}`` frame and no ``[DONE]``. A type that OpenAI's
        chunks have no place for (``tool_result``: server tools are resolved
        inside the service) or that :data:`~sse_chat.protocol.EVENT_TYPES` does
        not declare gives no frame; only a terminal type ends the chunks."""
        if event.type == EventType.START:
            self.created = event.data.get("created", self.created)
            return [self._frame(event.id, {"role": "assistant", "content": ""})]
        if event.type == EventType.TOKEN:
            return [self._frame(event.id, {"content": event.data["content"]})]
        if event.type == EventType.REASONING:
            return [self._frame(event.id, {"reasoning_content": event.data["content"]})]
        if event.type == EventType.TOOL_CALL:
            if self._server_call(event.data):
                return []
            return [self._frame(event.id, {"tool_calls": [_tool_call_delta(event.data)]})]
        if event.type not in TERMINAL_TYPES:
            return []
        self.ended = True
        if event.type == EventType.ERROR:
            error = event.data["error"]
            body = openai_error(error["type"], error["message"])
            return [ServerSentEvent(compact_json(body), id=str(event.id)).encode()]
        frames = [self._frame(event.id, {}, finish_reason=event.data.get("finish_reason"))]
        if self.include_usage:
            frames.append(ServerSentEvent(compact_json(self._chunk([], usage=event.data.get("usage")))).encode())
        frames.append(DONE_FRAME)
        return frames

    def _server_call(self, fragment: dict) -> bool:
        """Whether ``fragment`` belongs to a call of a server tool: a call's first
        fragment (it has an ``id`` or a ``name``) says so for its ``index``."""
        index: int = fragment["index"]
        if fragment.get("id") is not None or fragment.get("name") is not None:
            self._hidden[index] = fragment.get("name") in self.server_tools
        return self._hidden.get(index, False)

    def _frame(self, event_id: EventId, delta: dict, finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return ServerSentEvent(compact_json(self._chunk([choice])), id=str(event_id)).encode()

    def _chunk(self, choices: list, **extra: Any) -> dict:
        chunk = {"id": f"chatcmpl-{self.stream_id}", "object": "chat.completion.chunk", "created": self.created,
                 "model": self.model, "choices": choices}
        if self.include_usage:
            chunk["usage"] = extra.get("usage")
        return chunk


def _tool_call_delta(fragment: dict) -> dict:
    """A ``tool_call`` event's data as an item of OpenAI's ``delta.tool_calls``: the
    first fragment of a call has ``id``, ``type`` and ``function.name``, later
    ones only ``index`` and ``function.arguments``."""
    item: dict[str, Any] = {"index": fragment["index"]}
    if fragment.get("id") is not None:
        item["id"] = fragment["id"]
        item["type"] = "function"
    function = {"arguments": fragment.get("arguments", "")}
    if fragment.get("name") is not None:
        function = {"name": fragment["name"], **function}
    item["function"] = function
    return item


def _message(content: list[str], reasoning: list[str], done: dict) -> dict[str, Any]:
    """A ``chat.completion``'s ``message``: ``content`` is ``null`` when the answer
    only called tools (``tool_calls`` from ``done``)."""
    text = "".join(content)
    tool_calls = [{"id": call["id"], "type": "function",
                   "function": {"name": call["name"], "arguments": call["arguments"]}}
                  for call in done.get("tool_calls") or ()]
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not tool_calls else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    return message


def completion(stream_id: str, model: str, created: int, events: Iterable[Event]) -> tuple[dict | None, dict | None]:
    """Collect a whole stream into a ``chat.completion`` (with ``message.tool_calls``
    when the answer called tools); returns ``(completion, None)``, or ``(None,
    error)`` with the ``error`` event's data. ``created`` (Unix seconds) gives way
    to the ``start`` event's, so that the same stream always makes the same
    completion."""
    content, reasoning = [], []
    for event in events:
        if event.type == EventType.START:
            created = event.data.get("created", created)
        elif event.type == EventType.TOKEN:
            content.append(event.data["content"])
        elif event.type == EventType.REASONING:
            reasoning.append(event.data["content"])
        elif event.type == EventType.ERROR:
            return None, event.data["error"]
        elif event.type == EventType.DONE:
            return {
                "id": f"chatcmpl-{stream_id}", "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": _message(content, reasoning, event.data), "logprobs": None,
                             "finish_reason": event.data.get("finish_reason")}],
                "usage": event.data.get("usage"),
            }, None
    return None, {"type": "stream_lost", "message": "the stream ended without a final event"}


def logged_events(batches: Iterable[list[bytes]]) -> Iterator[Event]:
    """Flatten :func:`~sse_chat.streaming.reader.follow` batches into events."""
    for frames in batches:
        for frame in frames:
            yield read_frame(frame)


def model_list(names: Iterable[str]) -> dict:
    """``GET /v1/models``: ``{"object": "list", "data": [{"id", "object": "model", …}]}``."""
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "sse-chat"}
                                        for name in names]}


__all__ = ["DONE_FRAME", "CompletionChunks", "CompletionRequest", "completion", "logged_events", "model_list",
           "openai_error", "parse_completion_body"]

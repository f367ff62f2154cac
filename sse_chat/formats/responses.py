"""The Responses API's objects and streaming events, derived from a stream's events.
Pure: no Flask, no I/O.

A response is a stream: its id is ``resp_{stream_id}``, and everything about it is
read from the stream's event log (the request it answers is kept in the ``start``
event's data under ``"responses"``; see :mod:`.responses_request`). One log event
becomes zero or more Responses events, by a deterministic state machine
(:class:`ResponseEvents`), and ``sequence_number`` counts the Responses events
from 0: the same log always gives the same numbered events, so a client that
read up to sequence number N resumes exactly after it by reading the log from its
start again and skipping events up to N.

Shapes follow the Open Responses specification (``ResponseResource`` and the
``*StreamingEvent`` schemas) and OpenAI's Responses API reference:
https://platform.openai.com/docs/api-reference/responses-streaming
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..protocol import Event, EventType, ServerSentEvent, compact_json

#: A response id is this prefix and the stream id.
RESPONSE_ID_PREFIX = "resp_"
#: The key of the ``start`` event's data under which the request is kept.
RECORD_KEY = "responses"
#: ``finish_reason`` values that end a response ``incomplete``, and the reason given.
INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter", "cancelled": "cancelled"}
#: Statuses of a response that will not change any more.
FINAL_STATUSES = frozenset({"completed", "incomplete", "failed", "cancelled"})


def response_id(stream_id: str) -> str:
    """``resp_{stream_id}``."""
    return RESPONSE_ID_PREFIX + stream_id


def stream_id_of(response_id: str) -> str | None:
    """The stream id inside a response id, or ``None`` when it is not one."""
    if not response_id.startswith(RESPONSE_ID_PREFIX) or len(response_id) == len(RESPONSE_ID_PREFIX):
        return None
    return response_id[len(RESPONSE_ID_PREFIX):]


def responses_error(error_type: str, message: str, param: str | None = None, code: str | None = None) -> dict:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def event_frame(event: dict[str, Any]) -> bytes:
    """One Responses event as an SSE frame: ``event:`` its ``type``, ``data:`` the
    event. No ``id:`` field, as OpenAI sends none: the openai SDK's decoder keeps
    the last event ID and would take every later comment (a heartbeat) for an
    event without data."""
    return ServerSentEvent(compact_json(event), event=event["type"]).encode()


def deleted_response(rid: str) -> dict[str, Any]:
    """``{"id", "object": "response.deleted", "deleted": true}``."""
    return {"id": rid, "object": "response.deleted", "deleted": True}


@dataclass
class _Item:
    """One output item being built: a ``message`` or ``reasoning`` item (``text``
    pieces), a ``function_call`` (``call_id``, ``name``, ``arguments`` pieces) or a
    ``function_call_output`` (``call_id``, ``output``)."""

    type: str
    id: str
    text: list[str] = field(default_factory=list)
    call_id: str = ""
    name: str = ""
    output: str = ""
    status: str = "in_progress"

    def as_output(self) -> dict[str, Any]:
        """The item as a response's ``output`` holds it (``Message`` or ``FunctionCall``)."""
        if self.type == "message":
            content = [_output_text("".join(self.text))] if self.text else []
            return {"type": "message", "id": self.id, "status": self.status, "role": "assistant", "content": content}
        if self.type == "reasoning":
            parts = [{"type": "reasoning_text", "text": "".join(self.text)}] if self.text else []
            return {"type": "reasoning", "id": self.id, "summary": [], "content": parts}
        if self.type == "function_call_output":
            return {"type": "function_call_output", "id": self.id, "call_id": self.call_id, "output": self.output,
                    "status": self.status}
        return {"type": "function_call", "id": self.id, "call_id": self.call_id, "name": self.name,
                "arguments": "".join(self.text), "status": self.status}


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _reasoning_text(text: str) -> dict[str, Any]:
    return {"type": "reasoning_text", "text": text}


class ResponseEvents:
    """One stream's events, read in order from its first (``start``), turned into
    Responses streaming events (:meth:`take`) while keeping the response object
    they describe (:meth:`snapshot`).

    * ``start``: ``response.created`` and ``response.in_progress``.
    * ``token``: ``response.output_text.delta``, after ``response.output_item.added``
      (a ``message``) and ``response.content_part.added`` when no message is open.
    * ``reasoning`` (a reasoning model's thinking): ``response.reasoning.delta`` of
      a ``reasoning`` item, opened alike (a ``reasoning_text`` part); the first
      token or tool call after it closes it (``response.reasoning.done``).
    * ``tool_call``: a call's first fragment closes an open message and opens a
      ``function_call`` item (``response.output_item.added``); every fragment with
      arguments is a ``response.function_call_arguments.delta``.
    * ``tool_result`` (a tool the service ran itself): every open item is closed,
      then a ``function_call_output`` item is added and done at once (its
      ``output`` the result's ``content``, or its ``error`` as JSON); the model's
      answer after it opens a new message.
    * ``done`` / ``error``: every open item is closed (``.done`` events; status
      ``completed``, or ``incomplete`` when the answer was cut), then
      ``response.completed``, ``response.incomplete`` (``length``: reason
      ``max_output_tokens``; ``cancelled``: status ``cancelled``) or
      ``response.failed`` (``error``: the response's ``error`` has its type as
      ``code``).
    * other types: no event.
    """

    def __init__(self, stream_id: str) -> None:
        self.id = response_id(stream_id)
        self._stream_id = stream_id
        self.sequence_number = 0
        self.record: dict[str, Any] = {}
        self.model = ""
        self.created_at = 0
        self.status = "queued"
        self._items: list[_Item] = []
        self._open_text: int | None = None  # the open message or reasoning item
        self._calls: dict[int, int] = {}  # a tool call's index -> its output index
        self._open_calls: list[int] = []
        self._error: dict[str, str] | None = None
        self._incomplete: dict[str, str] | None = None
        self._usage: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        """True once the stream's terminal event was taken."""
        return self.status in FINAL_STATUSES

    def take(self, event: Event) -> list[dict[str, Any]]:
        """The Responses events for the stream's next event, numbered on from
        the last (``sequence_number``)."""
        out: list[dict[str, Any]] = []
        if event.type == EventType.START:
            self._start(event.data, out)
        elif event.type == EventType.TOKEN:
            self._text("message", event.data["content"], out)
        elif event.type == EventType.REASONING:
            self._text("reasoning", event.data["content"], out)
        elif event.type == EventType.TOOL_CALL:
            self._tool_call(event.data, out)
        elif event.type == EventType.TOOL_RESULT:
            self._tool_result(event.data, out)
        elif event.type == EventType.DONE:
            self._done(event.data, out)
        elif event.type == EventType.ERROR:
            self._failed(event.data["error"], out)
        return out

    def snapshot(self) -> dict[str, Any]:
        """The response object (``ResponseResource``) as the events so far describe it."""
        record = self.record
        return {
            "id": self.id, "object": "response", "created_at": self.created_at, "completed_at": None,
            "status": self.status, "incomplete_details": self._incomplete, "model": self.model,
            "previous_response_id": record.get("previous_response_id"),
            "instructions": record.get("instructions"),
            "output": [item.as_output() for item in self._items], "error": self._error,
            "tools": record.get("tools", []), "tool_choice": _tool_choice(record.get("tool_choice")),
            "truncation": "disabled", "parallel_tool_calls": True, "text": {"format": {"type": "text"}},
            "top_p": _number(record.get("top_p"), 1.0), "presence_penalty": 0.0, "frequency_penalty": 0.0,
            "top_logprobs": 0, "temperature": _number(record.get("temperature"), 1.0), "reasoning": None,
            "usage": self._usage, "max_output_tokens": record.get("max_output_tokens"), "max_tool_calls": None,
            "store": record.get("store", True), "background": record.get("background", False),
            "service_tier": "default", "metadata": record.get("metadata") or {}, "safety_identifier": None,
            "prompt_cache_key": None,
        }

    def conversation(self) -> list[dict[str, Any]]:
        """The input items and the output items of this response, for a later
        request's ``previous_response_id`` (OpenAI: instructions are not carried on)."""
        return [*self.record.get("input", []), *(item.as_output() for item in self._items)]

    # --- the state machine ---------------------------------------------------

    def _emit(self, out: list[dict[str, Any]], event_type: str, **fields: Any) -> None:
        out.append({"type": event_type, "sequence_number": self.sequence_number, **fields})
        self.sequence_number += 1

    def _start(self, data: dict[str, Any], out: list[dict[str, Any]]) -> None:
        self.record = data.get(RECORD_KEY) or {}
        self.model = data.get("model", "")
        self.created_at = data.get("created", 0)
        self.status = "in_progress"
        self._emit(out, "response.created", response=self.snapshot())
        self._emit(out, "response.in_progress", response=self.snapshot())

    def _new_item(self, item: _Item, out: list[dict[str, Any]]) -> int:
        index = len(self._items)
        self._items.append(item)
        self._emit(out, "response.output_item.added", output_index=index, item=item.as_output())
        return index

    def _text(self, kind: str, text: str, out: list[dict[str, Any]]) -> None:
        """A piece of a ``message``'s text or of a ``reasoning`` item's."""
        index = self._open_text
        if index is not None and self._items[index].type != kind:
            self._close_text("completed", out)
            index = None
        if index is None:
            prefix, part = ("msg", _output_text("")) if kind == "message" else ("rs", _reasoning_text(""))
            index = self._open_text = self._new_item(_Item(kind, self._item_id(prefix)), out)
            self._emit(out, "response.content_part.added", item_id=self._items[index].id, output_index=index,
                       content_index=0, part=part)
        item = self._items[index]
        item.text.append(text)
        if kind == "message":
            self._emit(out, "response.output_text.delta", item_id=item.id, output_index=index, content_index=0,
                       delta=text, logprobs=[])
        else:
            self._emit(out, "response.reasoning.delta", item_id=item.id, output_index=index, content_index=0,
                       delta=text)

    def _tool_call(self, fragment: dict[str, Any], out: list[dict[str, Any]]) -> None:
        call = fragment.get("index") or 0
        index = self._calls.get(call)
        if index is None:
            self._close_text("completed", out)
            item = _Item("function_call", self._item_id("fc"), call_id=fragment.get("id") or "",
                         name=fragment.get("name") or "")
            index = self._calls[call] = self._new_item(item, out)
            self._open_calls.append(index)
        item = self._items[index]
        item.name = item.name or fragment.get("name") or ""
        item.call_id = item.call_id or fragment.get("id") or ""
        if fragment.get("arguments"):
            item.text.append(fragment["arguments"])
            self._emit(out, "response.function_call_arguments.delta", item_id=item.id, output_index=index,
                       delta=fragment["arguments"])

    def _tool_result(self, result: dict[str, Any], out: list[dict[str, Any]]) -> None:
        self._close_all("completed", out)
        self._calls = {}  # the model's next calls are numbered from 0 again
        content = result.get("content")
        output = content if isinstance(content, str) else compact_json({"error": result.get("error")})
        item = _Item("function_call_output", self._item_id("fco"), call_id=result.get("tool_call_id") or "",
                     output=output)
        index = self._new_item(item, out)
        item.status = "completed"
        self._emit(out, "response.output_item.done", output_index=index, item=item.as_output())

    def _close_text(self, status: str, out: list[dict[str, Any]]) -> None:
        """Close the open message or reasoning item, if any, as ``status``."""
        index = self._open_text
        if index is None:
            return
        self._open_text = None
        item = self._items[index]
        text = "".join(item.text)
        fields = {"item_id": item.id, "output_index": index, "content_index": 0}
        if item.type == "message":
            self._emit(out, "response.output_text.done", **fields, text=text, logprobs=[])
            self._emit(out, "response.content_part.done", **fields, part=_output_text(text))
        else:
            self._emit(out, "response.reasoning.done", **fields, text=text)
            self._emit(out, "response.content_part.done", **fields, part=_reasoning_text(text))
        item.status = status
        self._emit(out, "response.output_item.done", output_index=index, item=item.as_output())

    def _close_all(self, status: str, out: list[dict[str, Any]]) -> None:
        self._close_text(status, out)
        for index in self._open_calls:
            item = self._items[index]
            self._emit(out, "response.function_call_arguments.done", item_id=item.id, output_index=index,
                       arguments="".join(item.text))
            item.status = status
            self._emit(out, "response.output_item.done", output_index=index, item=item.as_output())
        self._open_calls = []

    def _done(self, data: dict[str, Any], out: list[dict[str, Any]]) -> None:
        finish_reason = data.get("finish_reason")
        self._usage = _usage(data.get("usage"))
        reason = INCOMPLETE_REASONS.get(finish_reason or "")
        self._close_all("incomplete" if reason else "completed", out)
        if reason is None:
            self.status = "completed"
            self._emit(out, "response.completed", response=self.snapshot())
            return
        self.status = "cancelled" if finish_reason == "cancelled" else "incomplete"
        self._incomplete = {"reason": reason}
        self._emit(out, "response.incomplete", response=self.snapshot())

    def _failed(self, error: dict[str, Any], out: list[dict[str, Any]]) -> None:
        self._close_all("incomplete", out)
        self.status = "failed"
        self._error = {"code": error.get("type", "server_error"), "message": error.get("message", "")}
        self._emit(out, "response.failed", response=self.snapshot())

    def _item_id(self, prefix: str) -> str:
        return f"{prefix}_{self._stream_id}_{len(self._items)}"


def _usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """Chat Completions' ``usage`` in the Responses shape."""
    if not usage:
        return None
    return {"input_tokens": usage.get("prompt_tokens", 0), "output_tokens": usage.get("completion_tokens", 0),
            "total_tokens": usage.get("total_tokens", 0), "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}}


def _tool_choice(choice: Any) -> Any:
    return choice if choice is not None else "auto"


def _number(value: Any, default: float) -> float:
    return float(value) if value is not None else default


__all__ = ["FINAL_STATUSES", "RECORD_KEY", "RESPONSE_ID_PREFIX", "ResponseEvents", "deleted_response", "event_frame",
           "response_id", "responses_error", "stream_id_of"]

"""This service's events: their types, ids, data and frames.

Every event of a stream is one SSE event (see :mod:`.encoding`) with three fields:

* ``id: {stream_id}:{seq}``: ``stream_id`` is 22 URL-safe base64 characters (128
  random bits, never ``:``), ``seq`` counts 0, 1, 2, … without gaps. It becomes the
  client's last event ID, which resumes the stream after that event.
* ``event:`` one of :class:`EventType`: ``start``, then ``token``,
  ``reasoning``, ``tool_call`` and ``tool_result`` events, then exactly one
  terminal ``done`` or ``error``.
* ``data:`` one line of compact JSON, whose fields :data:`EVENT_TYPES` declares.

:data:`EVENT_TYPES` is the one declaration of the event types: the encoder, the
OpenAI surface, the CLI, the Python client and the chat page (which loads it as
``/static/events.js``) all follow it. docs/event-stream.md describes them for users.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Any

from .encoding import ServerSentEvent, compact_json, encode_line_event, json_string

#: 16 random bytes = 128 bits; ``token_urlsafe`` never yields ``:``.
STREAM_ID_BYTES = 16
#: The most digits of an event id's ``seq`` (2**63 has 19).
MAX_SEQ_DIGITS = 19


class EventType(str, Enum):
    """The ``event:`` field of this service's events (:data:`EVENT_TYPES` says
    what each carries)."""

    START = "start"
    TOKEN = "token"
    REASONING = "reasoning"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    DONE = "done"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class EventKind:
    """What one event type is: the ``fields`` its data always holds (a
    ``tool_result`` holds ``content`` or ``error``, see ``optional``), whether it
    ends the stream (``terminal``), whether its ``content`` is answer text
    (``answer_text``: what the CLI writes to stdout and the OpenAI surface sends as
    ``content``), a one-line ``summary`` and an ``example`` of its data."""

    type: EventType
    summary: str
    fields: tuple[str, ...]
    example: Mapping[str, Any]
    terminal: bool = False
    answer_text: bool = False
    optional: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """``{"summary", "fields", "optional", "terminal", "answer_text", "example"}``:
        the declaration as the chat page reads it."""
        return {"summary": self.summary, "fields": list(self.fields), "optional": list(self.optional),
                "terminal": self.terminal, "answer_text": self.answer_text, "example": dict(self.example)}


def _kinds(*kinds: EventKind) -> Mapping[str, EventKind]:
    return MappingProxyType({kind.type.value: kind for kind in kinds})


#: The event types, in the order a stream has them: the one declaration that
#: every producer and consumer of events follows. A consumer that meets a type
#: not in this table ignores it (a newer server may send more), and a type's
#: ``terminal`` flag, not its name, says whether the stream has ended.
EVENT_TYPES: Mapping[str, EventKind] = _kinds(
    EventKind(EventType.START, "the stream began: always first", ("stream_id", "model", "created"),
              {"stream_id": "kLZ2q1XyS1uO0mBdu3Jm0Q", "model": "fake", "created": 1763700000}),
    EventKind(EventType.TOKEN, "a piece of the answer text", ("content",), {"content": " Hello"},
              answer_text=True),
    EventKind(EventType.REASONING, "a piece of a reasoning model's thinking", ("content",),
              {"content": " Let me think."}),
    EventKind(EventType.TOOL_CALL, "a fragment of the model's call of tool number index",
              ("index", "id", "name", "arguments"),
              {"index": 0, "id": "call_1", "name": "shout", "arguments": "{\"text\": \"hi\"}"}),
    EventKind(EventType.TOOL_RESULT, "the result of a call of a tool the service ran itself",
              ("tool_call_id", "name"), {"tool_call_id": "call_1", "name": "shout", "content": "HI"},
              optional=("content", "error")),
    EventKind(EventType.DONE, "the answer ended: finish_reason, usage, and the client's tool calls",
              ("finish_reason", "usage"),
              {"finish_reason": "stop", "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}},
              terminal=True, optional=("tool_calls",)),
    EventKind(EventType.ERROR, "the stream failed", ("error",),
              {"error": {"type": "upstream_error", "message": "the upstream answered HTTP 500"}}, terminal=True),
)

#: The types that end a stream: exactly one of them, last.
TERMINAL_TYPES = frozenset(name for name, kind in EVENT_TYPES.items() if kind.terminal)


def event_types_module() -> str:
    """:data:`EVENT_TYPES` as an ES module, ``export const EVENT_TYPES = {…};``,
    served to the chat page as ``/static/events.js``."""
    table = {name: kind.as_json() for name, kind in EVENT_TYPES.items()}
    return ("// The event types of this service, generated from sse_chat/protocol/events.py (EVENT_TYPES).\n"
            f"export const EVENT_TYPES = Object.freeze({json.dumps(table, ensure_ascii=False, indent=1)});\n")


def new_stream_id() -> str:
    """Return a fresh stream id: 22 URL-safe base64 characters (128 random bits)."""
    return secrets.token_urlsafe(STREAM_ID_BYTES)


@dataclass(frozen=True, slots=True)
class EventId:
    """The id of event ``seq`` (0, 1, …) of stream ``stream_id``; ``str()`` gives the
    wire form ``"{stream_id}:{seq}"``."""

    stream_id: str
    seq: int

    def __str__(self) -> str:
        return f"{self.stream_id}:{self.seq}"

    @classmethod
    def parse(cls, value: str) -> EventId | None:
        """Read ``"{stream_id}:{seq}"``; ``None`` when malformed: no colon, an empty
        stream id or one holding ``:``, or a seq that is not ASCII digits or has more
        than :data:`MAX_SEQ_DIGITS` of them (no stream is that long, and Python
        refuses to convert integers of more than 4,300 digits)."""
        stream_id, colon, seq = value.rpartition(":")
        if not colon or not stream_id or ":" in stream_id or not (seq.isascii() and seq.isdigit()) \
                or len(seq) > MAX_SEQ_DIGITS:
            return None
        return cls(stream_id, int(seq))


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a stream: its id, type (an :class:`EventType` value) and JSON data."""

    id: EventId
    type: str
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        """True for ``done`` and ``error``, the last event of a stream."""
        return self.type in TERMINAL_TYPES

    def encode(self) -> bytes:
        """The frame: ``id:``, ``event:``, one ``data:`` line of compact JSON."""
        return ServerSentEvent(compact_json(self.data), event=self.type, id=str(self.id)).encode()


class ToolCalls:
    """Tool calls rebuilt from ``tool_call`` fragments, as OpenAI streams
    ``delta.tool_calls``: fragments of one call share its ``index``; the first
    brings its ``id`` and ``name``; the ``arguments`` fragments, joined in
    order, are its JSON arguments (a string, not parsed).

    >>> calls = ToolCalls()
    >>> calls.add({"index": 0, "id": "call_1", "name": "f", "arguments": ""})
    {'index': 0, 'id': 'call_1', 'name': 'f', 'arguments': ''}
    >>> calls.add({"index": 0, "id": "call_1", "name": "f", "arguments": '{"a": 1}'})
    {'index': 0, 'id': None, 'name': None, 'arguments': '{"a": 1}'}
    >>> calls.finished()
    [{'id': 'call_1', 'name': 'f', 'arguments': '{"a": 1}'}]
    """

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}  # by the index this service streams
        self._by_index: dict[int, int] = {}  # the upstream's index -> ours
        self._last: int | None = None

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, fragment: dict[str, Any]) -> dict[str, Any]:
        """Take one fragment, ``{"index": int|None, "id": str|None, "name":
        str|None, "arguments": str}`` (as an upstream streams it), and return it
        as this service streams it (a ``tool_call`` event's data):

        * ``id`` and ``name`` only where they first become known, ``None`` after
          (llama.cpp repeats them in every fragment);
        * ``index`` as the upstream gave it, except that a fragment with a new
          ``id`` at an index whose call already has another ``id`` begins a new
          call, numbered after the others (Ollama streams parallel calls all at
          index 0), and a fragment without an index continues the last call
          (older Ollama sends none).

        Raises:
            ValueError: ``index`` is not ``None`` nor a whole number >= 0, or
                ``arguments`` is not a string.
        """
        index, arguments = fragment.get("index"), fragment.get("arguments") or ""
        if index is not None and (isinstance(index, bool) or not isinstance(index, int) or index < 0):
            raise ValueError(f"a tool call's index must be a whole number >= 0: {fragment!r}")
        if not isinstance(arguments, str):
            raise ValueError(f"a tool call's arguments must be a string: {fragment!r}")
        ours = self._place(index, fragment.get("id"))
        call = self._calls[ours]
        streamed: dict[str, Any] = {"index": ours, "id": None, "name": None, "arguments": arguments}
        for name in ("id", "name"):
            if call[name] is None and fragment.get(name) is not None:
                call[name] = streamed[name] = str(fragment[name])
        call["arguments"] += arguments
        return streamed

    def _place(self, index: int | None, call_id: Any) -> int:
        """The index (ours) of the call a fragment belongs to; opens a new call when needed."""
        if index is None:
            ours = self._last if self._last is not None else self._open(0)
        elif index not in self._by_index:
            ours = self._open(index)
        else:
            ours = self._by_index[index]
            if call_id is not None and self._calls[ours]["id"] not in (None, call_id):
                ours = self._open(index)  # another call at the same index
        self._last = ours
        return ours

    def _open(self, index: int) -> int:
        ours = index if index not in self._calls else max(self._calls) + 1
        self._calls[ours] = {"id": None, "name": None, "arguments": ""}
        self._by_index[index] = ours
        return ours

    def finished(self) -> list[dict[str, str]]:
        """The calls in ``index`` order: ``[{"id": str, "name": str, "arguments":
        str}, …]`` (``""`` for an ``id`` or ``name`` no fragment brought)."""
        return [{"id": call["id"] or "", "name": call["name"] or "", "arguments": call["arguments"]}
                for _, call in sorted(self._calls.items())]


def error_data(error_type: str, message: str) -> dict[str, Any]:
    """``{"error": {"type": error_type, "message": message}}``: an ``error`` event's
    data, and the body of every JSON error answer."""
    return {"error": {"type": error_type, "message": message}}


def event_frame(event_type: EventType, stream_id: str, seq: int, data: dict[str, Any]) -> bytes:
    """The frame of event ``seq`` of stream ``stream_id`` with JSON ``data``: byte
    for byte ``Event(EventId(stream_id, seq), event_type, data).encode()``, without
    the checks a value from outside needs (a producer's own ids and types hold no
    line break, and compact JSON none either: 9.2.5, 9.2.6)."""
    return encode_line_event(event_type._value_, f"{stream_id}:{seq}", compact_json(data))


def content_frame(event_type: EventType, stream_id: str, seq: int, text: str) -> bytes:
    """The frame of event ``seq`` of stream ``stream_id``, a ``token`` or
    ``reasoning`` event ``{"content": text}``: byte for byte
    ``Event(EventId(stream_id, seq), event_type, {"content": text}).encode()``,
    built without a dict, an event or an id object (the producer's hot path, once
    per token: those objects cost twice the rest)."""
    # encode_line_event's fields in one f-string, without its call; ``_value_``: the
    # member's value as a plain attribute (``.value`` goes through a descriptor)
    return (f'id: {stream_id}:{seq}\nevent: {event_type._value_}\ndata: {{"content":{json_string(text)}}}'
            "\n\n").encode()


def stream_lost_frame(event_id: EventId, message: str) -> bytes:
    """The terminal ``error`` event ``stream_lost``: the stream cannot go on (its
    producer died, or it expired while being read)."""
    return Event(event_id, EventType.ERROR.value, error_data("stream_lost", message)).encode()


def read_frame(frame: bytes) -> Event:
    """Read back one frame this service encoded (``id``, ``event`` and one ``data``
    line of JSON, LF line ends), e.g. to translate it into another shape. Frames
    from elsewhere go through :class:`.decoding.EventStreamDecoder`.

    Raises:
        ValueError: the frame is not of that form.
    """
    fields = dict(line.split(": ", 1) for line in frame.decode("utf-8").rstrip("\n").split("\n"))
    event_id = EventId.parse(fields.get("id", ""))
    if event_id is None or "event" not in fields or "data" not in fields:
        raise ValueError(f"not a frame of this service: {frame[:80]!r}")
    return Event(event_id, fields["event"], json.loads(fields["data"]))

"""Encoding of ``text/event-stream`` frames, as the WHATWG HTML Standard defines them.

Pure functions and values: no Flask, no I/O. Section numbers refer to the HTML
Standard's "Server-sent events" chapter (9.2):

* 9.2.5 "Parsing an event stream": the stream is UTF-8, lines end with CRLF, LF or
  CR, a line starting with ``:`` is a comment, a field is ``name: value``.
* 9.2.6 "Interpreting an event stream": a blank line dispatches the event; ``id``
  must not contain NULL; ``retry`` is ASCII digits (milliseconds).

https://html.spec.whatwg.org/multipage/server-sent-events.html
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from json.encoder import encode_basestring as _encode_json_string
from typing import Any

#: The ``Content-Type`` of every event stream this service sends (9.2.5: always UTF-8).
EVENT_STREAM_CONTENT_TYPE = "text/event-stream; charset=utf-8"

def _has_line_break(value: str) -> bool:
    return "\r" in value or "\n" in value


def _data_lines(data: str) -> list[str]:
    """Split ``data`` on CRLF, CR and LF, the three line ends of 9.2.5."""
    return data.replace("\r\n", "\n").replace("\r", "\n").split("\n")


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One event of an event stream.

    Attributes:
        data: the event's data (characters). Each line of it becomes one ``data:``
            field, so a receiver rebuilds it exactly, joined by LF (9.2.6 step
            "data"); CR and CRLF inside ``data`` arrive as LF.
        event: the event type (``event:`` field); ``None`` sends no field, which a
            receiver reads as ``message``.
        id: the event's id (``id:`` field), which becomes the receiver's last event
            ID; must not contain CR, LF or NULL (9.2.6 ignores an id with NULL).
        retry: the reconnection time in milliseconds (``retry:`` field), an int >= 0.

    Raises:
        ValueError: on construction, for an ``event`` or ``id`` holding a line break,
            an ``id`` holding NULL, or a negative ``retry``.
    """

    data: str = ""
    event: str | None = None
    id: str | None = None
    retry: int | None = None

    def __post_init__(self) -> None:
        if self.event is not None and _has_line_break(self.event):
            raise ValueError("an SSE event type cannot contain CR or LF")
        if self.id is not None and (_has_line_break(self.id) or "\0" in self.id):
            raise ValueError("an SSE id cannot contain CR, LF or NULL")
        if self.retry is not None and (not isinstance(self.retry, int) or self.retry < 0):
            raise ValueError("an SSE retry must be a whole number of milliseconds >= 0")

    def encode(self) -> bytes:
        """Return the event as UTF-8 bytes, fields in the order retry, id, event, data,
        ended by a blank line (LF line ends), e.g.
        ``b"id: s:1\\nevent: token\\ndata: {}\\n\\n"``."""
        lines = []
        if self.retry is not None:
            lines.append(f"retry: {self.retry}")
        if self.id is not None:
            lines.append(f"id: {self.id}")
        if self.event is not None:
            lines.append(f"event: {self.event}")
        lines.extend(f"data: {line}" for line in _data_lines(self.data))
        lines.append("\n")
        return "\n".join(lines).encode("utf-8")


def encode_comment(text: str = "") -> bytes:
    """Return a comment line and a blank line, e.g. ``b": ping\\n\\n"`` (9.2.5: a line
    starting with a colon is ignored by receivers; used as a heartbeat).

    Raises:
        ValueError: if ``text`` holds a line break.
    """
    if _has_line_break(text):
        raise ValueError("an SSE comment cannot contain CR or LF")
    return f": {text}\n\n".encode() if text else b":\n\n"


def encode_retry(milliseconds: int) -> bytes:
    """Return a lone ``retry:`` field line (no blank line): it sets the receiver's
    reconnection time (9.2.6) and can open the first frame of a response.

    Raises:
        ValueError: if ``milliseconds`` is negative.
    """
    if milliseconds < 0:
        raise ValueError("an SSE retry must be >= 0 milliseconds")
    return f"retry: {milliseconds}\n".encode("ascii")


#: One encoder for every call: ``json.dumps`` with options builds a new one each time.
_COMPACT_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def compact_json(value: Any) -> str:
    """Serialise ``value`` as one line of compact JSON, non-ASCII kept as UTF-8.

    JSON escapes every control character, so the result never holds CR or LF and
    fits one ``data:`` field whatever the text inside it.
    """
    return _COMPACT_JSON.encode(value)


#: ``json_string(text)``: ``text`` as a JSON string literal, quotes included,
#: non-ASCII kept: the same characters :func:`compact_json` writes for it. CPython's
#: C string encoder itself, not a function around it: a producer calls it once per token.
json_string: Callable[[str], str] = _encode_json_string


def encode_line_event(event_type: str, event_id: str, data: str) -> bytes:
    """The bytes of ``ServerSentEvent(data, event=event_type, id=event_id).encode()``
    for values already known to be single lines (no CR or LF; ``event_id`` without
    NULL), built without checking them: the hot path of a producer whose ids,
    types and compact JSON data are its own (9.2.5, 9.2.6).

    Raises:
        nothing; passing a value with a line break breaks the stream: use
        :class:`ServerSentEvent` for values from outside.
    """
    return f"id: {event_id}\nevent: {event_type}\ndata: {data}\n\n".encode()

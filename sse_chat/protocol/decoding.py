"""Client-side parser for ``text/event-stream`` responses.

Implements WHATWG HTML §9.2.6 "Interpreting an event stream"
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation)
on top of ``sseclient-py``, which assembles the events.

``sseclient.SSEClient`` departs from the spec in several ways, so this module
puts an input adapter in front of it and a small post-processing step behind it:

* the byte stream is decoded with the WHATWG "UTF-8 decode" algorithm: one
  leading BOM is stripped and invalid bytes become U+FFFD (incrementally, so a
  character split across chunks survives);
* CRLF, lone LF and lone CR all end a line, also when CR and LF arrive in
  different chunks (they are then still one line end);
* ``id`` and ``retry`` fields are interpreted here, not by sseclient: an ``id``
  value containing U+0000 is ignored, a ``retry`` value that is not all ASCII
  digits is ignored, the last event ID persists across events, and both fields
  take effect in blocks that carry no ``data`` (which dispatch nothing);
* an unfinished event at the end of the stream is discarded.

Each complete block that has a ``data`` field is re-encoded as UTF-8 with
``\\n`` line ends and a ``\\n\\n`` terminator and fed to ONE ``SSEClient``, which
assembles its data and event type (comments, field/value splitting, the single
leading space, multi-line data, unknown fields, empty type -> "message").

The module is pure: no I/O, the caller supplies the byte chunks.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import sseclient

__all__ = ["DispatchedEvent", "EventStreamDecoder"]

_BOM = "\ufeff"
# §9.2.6: "Lines must be separated by either a U+000D CARRIAGE RETURN U+000A
# LINE FEED (CRLF) character pair, a single U+000A LINE FEED (LF) character,
# or a single U+000D CARRIAGE RETURN (CR) character."
_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class DispatchedEvent:
    """An event the spec's "dispatch the event" step would fire."""

    type: str  # the event type; "message" when none was given
    data: str  # the data buffer with its final LF removed
    last_event_id: str  # the last event ID string after this event ("" when none / reset)


def _field(line: str) -> tuple[str, str] | None:
    """Split a non-empty line into (name, value); None for a comment line.

    §9.2.6: a line starting with ":" is ignored; if it contains ":", the name is
    the part before the first colon and the value the part after it, minus one
    leading U+0020 SPACE; otherwise the whole line is the name and the value is
    the empty string.
    """
    if line.startswith(":"):
        return None
    name, colon, value = line.partition(":")
    if colon and value.startswith(" "):
        value = value[1:]
    return name, value


def _feed(blocks: list[bytes]) -> Iterator[bytes]:
    """The byte source given to SSEClient: hands over the block just queued."""
    while True:
        if not blocks:  # pragma: no cover - guards the one-block/one-event invariant
            raise AssertionError("sseclient asked for a block that was not queued")
        yield blocks.pop()


class EventStreamDecoder:
    """One decoder per connection, fed the bytes as they arrive: by
    :meth:`iter_events` from an iterable of chunks (blocking clients), or chunk by
    chunk with :meth:`feed` (asyncio clients, which read with ``await``).

    ``last_event_id`` is the event source's "last event ID string": it is set
    from the stream's last event ID buffer whenever a block is complete (the
    first step of "dispatch the event"), including blocks without data. Seed
    it with the ID of the previous connection when reconnecting; the buffer
    starts from that value, so events without an ``id`` field keep it.

    ``reconnection_time_ms`` is the last valid ``retry`` value, or None; as in
    the spec it takes effect as soon as its line is complete.
    """

    def __init__(self, last_event_id: str = "") -> None:
        self.last_event_id: str = last_event_id
        self.reconnection_time_ms: int | None = None
        # The WHATWG Encoding "UTF-8 decode" algorithm (§9.2.6: "Streams must be
        # decoded using the UTF-8 decode algorithm"): one leading BOM stripped,
        # invalid sequences replaced with U+FFFD, incrementally, so a character
        # split across chunks is decoded once its last byte arrives.
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._at_start = True
        self._partial: list[str] = []  # the unfinished line
        self._skip_lf = False  # the last text ended with CR: an LF next belongs to it
        self._id_buffer = last_event_id
        self._block: list[str] = []  # lines handed to sseclient
        self._has_data = False
        self._queued: list[bytes] = []
        self._assembled: Iterator[sseclient.Event] | None = None

    def iter_events(self, chunks: Iterable[bytes]) -> Iterator[DispatchedEvent]:
        """Yield dispatched events as the byte chunks arrive; an unfinished event
        at the end is discarded (§9.2.6: "Once the end of the file is reached, any
        pending data must be discarded"): it is never dispatched.

        An event is yielded as soon as the line end of its terminating blank
        line has arrived, without reading further chunks.
        """
        for chunk in chunks:
            yield from self.feed(chunk)

    def feed(self, chunk: bytes) -> Iterator[DispatchedEvent]:
        """The events that ``chunk``, the next bytes of the stream, completes, one
        at a time (iterate it to the end before feeding the next chunk). What
        remains unfinished waits for the next chunk; a stream that ends there
        dispatches nothing more."""
        text = self._utf8.decode(chunk)
        if self._at_start and text:
            self._at_start = False
            if text[0] == _BOM:
                text = text[1:]
        for line in self._lines(text):
            event = self._interpret(line)
            if event is not None:
                yield event

    def _lines(self, text: str) -> Iterator[str]:
        """Each line that ``text`` completes (without its line end), as soon as it
        ends. A CR ends a line at once; an LF that directly follows it, possibly
        at the start of the next chunk, belongs to the same line end and is
        skipped. Text after the last line end waits in ``_partial``."""
        if self._skip_lf and text:
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
        if not text:
            return
        pos = 0
        for match in _LINE_END.finditer(text):
            self._partial.append(text[pos : match.start()])
            line = "".join(self._partial)
            self._partial.clear()
            pos = match.end()
            yield line
        self._partial.append(text[pos:])
        self._skip_lf = text[-1] == "\r"

    def _interpret(self, line: str) -> DispatchedEvent | None:
        """Process one line; the event it dispatches, if any."""
        if line:
            field = _field(line)
            if field is None:
                return None  # comment
            name, value = field
            if name == "id":
                # "If the field value does not contain U+0000 NULL, then
                # set the last event ID buffer to the field value.
                # Otherwise, ignore the field."
                if "\0" not in value:
                    self._id_buffer = value
            elif name == "retry":
                # "If the field value consists of only ASCII digits, then
                # interpret the field value as an integer in base ten, and
                # set the event stream's reconnection time to that
                # integer. Otherwise, ignore the field."
                if value.isascii() and value.isdigit():
                    self.reconnection_time_ms = int(value)
            else:
                # "event", "data" and unknown fields: sseclient's job.
                self._has_data = self._has_data or name == "data"
                self._block.append(line)
            return None

        # Blank line: "dispatch the event".
        # Step 1: "Set the last event ID string of the event source to
        # the value of the last event ID buffer."
        self.last_event_id = self._id_buffer
        # Step 2: "If the data buffer is an empty string, set the data
        # buffer and the event type buffer to the empty string and
        # return." (The data buffer is empty iff no data field was seen.)
        dispatched = None
        if self._has_data:
            # Steps 3-6 (strip the final LF, event type or "message"):
            # sseclient assembles the block into exactly one event.
            if self._assembled is None:
                self._assembled = sseclient.SSEClient(_feed(self._queued), char_enc="utf-8").events()
            self._queued.append(("\n".join(self._block) + "\n\n").encode("utf-8"))
            event = next(self._assembled)
            dispatched = DispatchedEvent(type=event.event, data=event.data, last_event_id=self.last_event_id)
        self._block.clear()
        self._has_data = False
        return dispatched

"""The protocol between this service and its clients, in one place.

* :mod:`.encoding`: SSE encoding as the WHATWG HTML Standard defines it (9.2.5).
* :mod:`.decoding`: the spec's "interpreting an event stream" (9.2.6) on top of
  sseclient-py, for clients.
* :mod:`.events`: this service's events: types, ids, data, frames.

Pure: no Flask, no I/O, nothing heavy to import, so the CLI and the Python client
use it without loading the server.
"""

from .decoding import DispatchedEvent, EventStreamDecoder
from .encoding import (
    EVENT_STREAM_CONTENT_TYPE,
    ServerSentEvent,
    compact_json,
    encode_comment,
    encode_line_event,
    encode_retry,
    json_string,
)
from .events import (
    EVENT_TYPES,
    STREAM_ID_BYTES,
    TERMINAL_TYPES,
    Event,
    EventId,
    EventKind,
    EventType,
    ToolCalls,
    content_frame,
    error_data,
    event_frame,
    event_types_module,
    new_stream_id,
    read_frame,
    stream_lost_frame,
)

__all__ = [
    "EVENT_STREAM_CONTENT_TYPE", "EVENT_TYPES", "STREAM_ID_BYTES", "TERMINAL_TYPES", "DispatchedEvent", "Event",
    "EventId", "EventKind", "EventStreamDecoder", "EventType", "ServerSentEvent", "ToolCalls", "compact_json",
    "content_frame", "encode_comment", "encode_line_event", "encode_retry", "error_data", "event_frame",
    "event_types_module", "json_string", "new_stream_id", "read_frame", "stream_lost_frame",
]

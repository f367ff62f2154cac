"""Reading event streams in tests, with the protocol's spec-conformant decoder."""

from __future__ import annotations

import json
from collections.abc import Iterable

from sse_chat.protocol import TERMINAL_TYPES, DispatchedEvent, EventId, EventStreamDecoder


def events_of(chunks: Iterable[bytes]) -> list[DispatchedEvent]:
    return list(EventStreamDecoder().iter_events(chunks))


def answer_text(events: list[DispatchedEvent]) -> str:
    return "".join(json.loads(e.data)["content"] for e in events if e.type == "token")


def stream_of(event_id: str) -> str:
    """The stream id of an event id (the test fails on a malformed one)."""
    parsed = EventId.parse(event_id)
    assert parsed is not None, event_id
    return parsed.stream_id


def seq_of(event_id: str) -> int:
    """The seq of an event id (the test fails on a malformed one)."""
    parsed = EventId.parse(event_id)
    assert parsed is not None, event_id
    return parsed.seq


def seqs(events: list[DispatchedEvent]) -> list[int]:
    return [seq_of(e.last_event_id) for e in events]


def assert_well_formed(events: list[DispatchedEvent], first_seq: int = 0) -> None:
    """ids ``{stream_id}:{seq}`` without gaps, one terminal event, at the end."""
    stream_ids = {stream_of(e.last_event_id) for e in events}
    assert len(stream_ids) == 1, stream_ids
    assert seqs(events) == list(range(first_seq, first_seq + len(events)))
    terminals = [e for e in events if e.type in TERMINAL_TYPES]
    assert terminals == [events[-1]], [e.type for e in events]
    if first_seq == 0:
        assert events[0].type == "start"

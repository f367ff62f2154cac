"""Reading event streams in tests, with the CLI's own spec-conformant decoder."""

from __future__ import annotations

import json
from collections.abc import Iterable

from cli.eventstream import DispatchedEvent, EventStreamDecoder


def events_of(chunks: Iterable[bytes]) -> list[DispatchedEvent]:
    return list(EventStreamDecoder().iter_events(chunks))


def answer_text(events: list[DispatchedEvent]) -> str:
    return "".join(json.loads(e.data)["content"] for e in events if e.type == "token")


def seqs(events: list[DispatchedEvent]) -> list[int]:
    return [int(e.last_event_id.rpartition(":")[2]) for e in events]


def assert_well_formed(events: list[DispatchedEvent], first_seq: int = 0) -> None:
    """ids ``{stream_id}:{seq}`` without gaps, one terminal event, at the end."""
    stream_ids = {e.last_event_id.rpartition(":")[0] for e in events}
    assert len(stream_ids) == 1, stream_ids
    assert seqs(events) == list(range(first_seq, first_seq + len(events)))
    terminals = [e for e in events if e.type in ("done", "error")]
    assert terminals == [events[-1]], [e.type for e in events]
    if first_seq == 0:
        assert events[0].type == "start"

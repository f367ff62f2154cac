"""Tests for sse_chat.protocol.decoding against WHATWG HTML §9.2.6 "Interpreting an event stream".

Every case is checked with the stream fed whole, split at every position into
two and three chunks, one byte per chunk, and with empty chunks interleaved;
the result must always be the expected one.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import NamedTuple

import pytest
import sseclient

from sse_chat.protocol.decoding import DispatchedEvent, EventStreamDecoder

M = "message"


class Case(NamedTuple):
    stream: bytes
    events: list[tuple[str, str, str]]  # (type, data, last_event_id)
    last_event_id: str  # decoder.last_event_id at the end
    retry: int | None = None  # decoder.reconnection_time_ms at the end
    seed: str = ""  # EventStreamDecoder(last_event_id=seed)


CASES = {
    # --- The spec's own examples -------------------------------------------
    "spec_stock_ticker_YHOO_multiline_data": Case(
        b"data: YHOO\ndata: +2\ndata: 10\n\n",
        [(M, "YHOO\n+2\n10", "")],
        "",
    ),
    "spec_test_stream_comment_then_id_then_id_reset": Case(
        b": test stream\n\n"
        b"data: first event\nid: 1\n\n"
        b"data:second event\nid\n\n"
        b"data:  third event\n\n",
        [(M, "first event", "1"), (M, "second event", ""), (M, " third event", "")],
        "",
    ),
    "spec_test_stream_last_block_without_blank_line_not_dispatched": Case(
        b": test stream\n\n"
        b"data: first event\nid: 1\n\n"
        b"data:second event\nid\n\n"
        b"data:  third event\n",
        [(M, "first event", "1"), (M, "second event", "")],
        "",
    ),
    "spec_data_without_colon_gives_empty_and_newline": Case(
        b"data\n\ndata\ndata\n\ndata:\n",
        [(M, "", ""), (M, "\n", "")],
        "",
    ),
    "spec_data_colon_test_equals_data_colon_space_test": Case(
        b"data:test\n\ndata: test\n\n",
        [(M, "test", ""), (M, "test", "")],
        "",
    ),
    "spec_event_types_add_remove": Case(
        b"event: add\ndata: 73857293\n\n"
        b"event: remove\ndata: 2153\n\n"
        b"event: add\ndata: 113411\n\n",
        [("add", "73857293", ""), ("remove", "2153", ""), ("add", "113411", "")],
        "",
    ),
    "spec_comment_lines_keepalive_ignored": Case(
        b":\n\n: keep-alive\n\ndata: first\n: a comment inside a block\ndata: second\n\n",
        [(M, "first\nsecond", "")],
        "",
    ),
    "spec_last_event_id_persists_across_events": Case(
        b"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\nid\ndata: d\n\ndata: e\n\n",
        [(M, "a", "1"), (M, "b", "1"), (M, "c", "2"), (M, "d", ""), (M, "e", "")],
        "",
    ),
    # --- Field parsing ------------------------------------------------------
    "field_without_colon_has_empty_value": Case(
        b"event\ndata: x\n\n",
        [(M, "x", "")],
        "",
    ),
    "only_one_leading_space_stripped": Case(
        b"data:  two\n\ndata:\tx\n\ndata: x \n\n",
        [(M, " two", ""), (M, "\tx", ""), (M, "x ", "")],
        "",
    ),
    "value_split_at_first_colon_only": Case(
        b"data: a:b: c\n\n",
        [(M, "a:b: c", "")],
        "",
    ),
    "unknown_fields_ignored_names_case_sensitive": Case(
        b"foo: bar\ndata: x\nData: y\ndata : z\n data: w\nDATA\n\nfoo: bar\n\n",
        [(M, "x", "")],
        "",
    ),
    "empty_event_type_is_message": Case(
        b"event:\ndata: x\n\nevent: \ndata: y\n\n",
        [(M, "x", ""), (M, "y", "")],
        "",
    ),
    "event_type_reset_after_dispatch": Case(
        b"event: foo\ndata: 1\n\ndata: 2\n\nevent: bar\n\ndata: 3\n\n",
        [("foo", "1", ""), (M, "2", ""), (M, "3", "")],
        "",
    ),
    "last_event_type_line_wins": Case(
        b"event: a\nevent: b\ndata: x\n\n",
        [("b", "x", "")],
        "",
    ),
    "extra_blank_lines_dispatch_nothing": Case(
        b"\n\n\r\n\rdata: a\n\n\n\n",
        [(M, "a", "")],
        "",
    ),
    "nul_and_unicode_separators_are_data_not_line_ends": Case(
        "data: a\x00b\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029c\n\n".encode(),
        [(M, "a\x00b\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029c", "")],
        "",
    ),
    "empty_stream": Case(b"", [], ""),
    # --- BOM ------------------------------------------------------------------
    "bom_stripped_at_start": Case(
        b"\xef\xbb\xbfdata: a\n\n",
        [(M, "a", "")],
        "",
    ),
    "bom_stripped_only_once": Case(
        # The second BOM becomes part of the field name "\ufeffdata": unknown.
        b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\ndata: b\n\n",
        [(M, "b", "")],
        "",
    ),
    "bom_not_at_start_is_kept": Case(
        b"data: \xef\xbb\xbfa\n\n",
        [(M, "\ufeffa", "")],
        "",
    ),
    # --- UTF-8 decoding -------------------------------------------------------
    "multibyte_utf8_nihao_e_acute_emoji": Case(
        "data: 你好\n\nevent: é\ndata: é\nid: 你\n\ndata: 😀\n\n".encode(),
        [(M, "你好", ""), ("é", "é", "你"), (M, "😀", "你")],
        "你",
    ),
    "invalid_utf8_replaced_with_fffd": Case(
        b"data: a\xffb\xc3(\xe4\xbd\n\ndata: \xed\xa0\x80|\xc0\xaf\n\n",
        [(M, "a\ufffdb\ufffd(\ufffd", ""), (M, "\ufffd\ufffd\ufffd|\ufffd\ufffd", "")],
        "",
    ),
    "invalid_utf8_in_field_name_and_id": Case(
        b"id: \xff\n\nd\xffata: x\n\ndata: y\n\n",
        [(M, "y", "\ufffd")],
        "\ufffd",
    ),
    "truncated_utf8_at_end_of_stream_discarded": Case(
        b"data: a\n\ndata: \xe4\xbd",
        [(M, "a", "")],
        "",
    ),
    # --- Line ends ------------------------------------------------------------
    "crlf_line_ends": Case(
        b"data: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n",
        [(M, "a\nb", ""), (M, "c", "")],
        "",
    ),
    "lone_cr_line_ends": Case(
        b"data: a\rdata: b\r\rdata: c\r\r",
        [(M, "a\nb", ""), (M, "c", "")],
        "",
    ),
    "mixed_line_ends_lf_crlf_cr": Case(
        # "\n\r\n" = LF + CRLF (blank line); "\r\r\n" = CR + CRLF; "\n\r" = LF + CR.
        b"data: a\n\r\ndata: b\r\n\ndata: c\r\r\ndata: d\n\r",
        [(M, "a", ""), (M, "b", ""), (M, "c", ""), (M, "d", "")],
        "",
    ),
    "crlf_is_one_line_end_not_two": Case(
        b"data: a\r\ndata: b\r\nid: 1\r\ndata: c\r\n\r\n",
        [(M, "a\nb\nc", "1")],
        "1",
    ),
    "crlf_then_lone_cr_blank_line": Case(
        b"data: a\r\n\rdata: b\r\n\n",
        [(M, "a", ""), (M, "b", "")],
        "",
    ),
    "cr_cr_at_end_of_stream_dispatches": Case(
        b"data: a\r\r",
        [(M, "a", "")],
        "",
    ),
    "lf_cr_at_end_of_stream_dispatches": Case(
        b"data: a\n\r",
        [(M, "a", "")],
        "",
    ),
    "single_cr_at_end_of_stream_does_not_dispatch": Case(
        b"data: a\r\n\r\ndata: b\r",
        [(M, "a", "")],
        "",
    ),
    # --- id -------------------------------------------------------------------
    "id_with_nul_ignored": Case(
        b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\nid: \x00\n\ndata: c\n\n",
        [(M, "a", "1"), (M, "b", "1"), (M, "c", "1")],
        "1",
    ),
    "id_in_block_without_data_takes_effect": Case(
        b"id: 5\n\ndata: a\n\nid: 6\nevent: x\n: comment\n\n",
        [(M, "a", "5")],
        "6",
    ),
    "id_empty_value_resets_last_event_id": Case(
        b"id: 5\ndata: a\n\nid:\n\ndata: b\n\nid: 6\n\nid\n\ndata: c\n\n",
        [(M, "a", "5"), (M, "b", ""), (M, "c", "")],
        "",
    ),
    "id_last_line_in_block_wins_and_keeps_spaces": Case(
        b"id: 1\nid:  2 \ndata: a\n\n",
        [(M, "a", " 2 ")],
        " 2 ",
    ),
    "id_in_unfinished_block_at_end_does_not_take_effect": Case(
        b"id: 1\ndata: a\n\nid: 2\ndata: b\n",
        [(M, "a", "1")],
        "1",
    ),
    "seeded_last_event_id_persists_until_new_id": Case(
        b"data: a\n\nid: 42\ndata: b\n\ndata: c\n\n",
        [(M, "a", "41"), (M, "b", "42"), (M, "c", "42")],
        "42",
        seed="41",
    ),
    "seeded_last_event_id_reset_by_empty_id": Case(
        b"id\n\ndata: a\n\n",
        [(M, "a", "")],
        "",
        seed="41",
    ),
    "seeded_last_event_id_kept_on_empty_stream": Case(b"", [], "7", seed="7"),
    # --- retry ----------------------------------------------------------------
    "retry_in_block_without_data_takes_effect": Case(
        b"retry: 1000\n\ndata: a\n\n",
        [(M, "a", "")],
        "",
        1000,
    ),
    "retry_not_all_ascii_digits_ignored": Case(
        b"retry: 1000\n\n"
        b"data: a\nretry: 2x\n\n"
        b"retry: -5\n\nretry: 1.5\n\nretry: +5\n\nretry:  300\n\nretry: 3 \n\n"
        b"retry: \xd9\xa3\n\nretry: \xc2\xb2\n\nretry\n\nretry:\n\n",
        [(M, "a", "")],
        "",
        1000,
    ),
    "retry_leading_zeros_last_valid_wins": Case(
        b"retry: 1000\n\nretry: 0042\ndata: a\n\n",
        [(M, "a", "")],
        "",
        42,
    ),
    "retry_line_in_unfinished_block_takes_effect": Case(
        # The retry line itself is complete, so it is processed (§9.2.6 acts on
        # each line); only the event dispatch is lost.
        b"data: a\n\nretry: 7\ndata: b\n",
        [(M, "a", "")],
        "",
        7,
    ),
    "retry_unfinished_line_at_end_ignored": Case(
        b"retry: 7\n\nretry: 8",
        [],
        "",
        7,
    ),
    # --- End of stream --------------------------------------------------------
    "incomplete_event_at_end_discarded": Case(
        b"data: a\n\ndata: b\n",
        [(M, "a", "")],
        "",
    ),
    "incomplete_line_at_end_discarded": Case(
        b"data: a\n\ndata: b",
        [(M, "a", "")],
        "",
    ),
}

PARAMS = [pytest.param(case, id=name) for name, case in CASES.items()]


def run(chunks, seed: str = ""):
    decoder = EventStreamDecoder(seed) if seed else EventStreamDecoder()
    events = [(e.type, e.data, e.last_event_id) for e in decoder.iter_events(chunks)]
    return events, decoder.last_event_id, decoder.reconnection_time_ms


def expected(case: Case):
    return case.events, case.last_event_id, case.retry


@pytest.mark.parametrize("case", PARAMS)
def test_whole_stream(case: Case):
    assert run([case.stream], case.seed) == expected(case)


@pytest.mark.parametrize("case", PARAMS)
def test_every_two_chunk_split(case: Case):
    s = case.stream
    for i in range(len(s) + 1):
        assert run([s[:i], s[i:]], case.seed) == expected(case), f"split at {i}: {s[:i]!r} | {s[i:]!r}"


@pytest.mark.parametrize("case", PARAMS)
def test_every_three_chunk_split(case: Case):
    s = case.stream
    for i, j in itertools.combinations_with_replacement(range(len(s) + 1), 2):
        chunks = [s[:i], s[i:j], s[j:]]
        assert run(chunks, case.seed) == expected(case), f"split at {i}, {j}: {chunks!r}"


@pytest.mark.parametrize("case", PARAMS)
def test_one_byte_per_chunk(case: Case):
    chunks = [case.stream[i : i + 1] for i in range(len(case.stream))]
    assert run(chunks, case.seed) == expected(case)


@pytest.mark.parametrize("case", PARAMS)
def test_one_byte_per_chunk_with_empty_chunks_interleaved(case: Case):
    chunks = [b""]
    for i in range(len(case.stream)):
        chunks += [case.stream[i : i + 1], b""]
    assert run(iter(chunks), case.seed) == expected(case)


class CountingChunks:
    """A chunk iterator that records how many chunks have been consumed."""

    def __init__(self, chunks):
        self.chunks = list(chunks)
        self.consumed = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.consumed += 1
            yield chunk


@pytest.mark.parametrize("case", PARAMS)
def test_each_event_yielded_as_soon_as_its_blank_line_ends(case: Case):
    """Fed one byte per chunk, event i is yielded after exactly the shortest
    prefix of the stream that dispatches it -- no further byte is read."""
    s = case.stream
    source = CountingChunks(s[i : i + 1] for i in range(len(s)))
    decoder = EventStreamDecoder(case.seed) if case.seed else EventStreamDecoder()
    consumed_at_yield = [source.consumed for _ in decoder.iter_events(source)]
    assert len(consumed_at_yield) == len(case.events)
    for n, k in enumerate(consumed_at_yield, start=1):
        assert len(run([s[:k]], case.seed)[0]) >= n
        assert len(run([s[: k - 1]], case.seed)[0]) < n


@pytest.mark.parametrize(
    "chunks, consumed",
    [
        pytest.param([b"data: a\n", b"\n", b"data: b\n\n", b"never"], [2, 3], id="lf_lf"),
        pytest.param([b"data: a\r\r", b"\ndata: b\r\n\r", b"\n", b"never"], [1, 2], id="cr_cr_at_chunk_end"),
        pytest.param([b"data: a\r\n\r", b"\n", b"data: b\n", b"\r", b"never"], [1, 4], id="crlf_cr_at_chunk_end"),
        pytest.param([b"data: \xe4\xbd", b"\xa0\n\n", b"never"], [2], id="multibyte_split"),
    ],
)
def test_event_yielded_before_next_chunk_is_requested(chunks, consumed):
    source = CountingChunks(chunks)
    it = EventStreamDecoder().iter_events(source)
    for expected_consumed in consumed:
        next(it)
        assert source.consumed == expected_consumed


def test_incremental_with_blocking_source():
    """An event is available while the source has not produced its next chunk."""
    pulled = []

    def source():
        yield b"id: 1\ndata: hello\r\n\r"
        pulled.append("second")
        raise AssertionError("the decoder read past a complete event")

    decoder = EventStreamDecoder()
    it = decoder.iter_events(source())
    assert next(it) == DispatchedEvent(type="message", data="hello", last_event_id="1")
    assert decoder.last_event_id == "1"
    assert pulled == []


def test_last_event_id_attribute_updated_while_iterating():
    decoder = EventStreamDecoder()
    it = decoder.iter_events([b"id: 1\ndata: a\n\n", b"id: 2\n\n", b"data: b\n\n"])
    assert decoder.last_event_id == ""
    assert next(it).last_event_id == "1"
    assert decoder.last_event_id == "1"
    assert next(it).last_event_id == "2"
    assert decoder.last_event_id == "2"


def test_initial_state():
    decoder = EventStreamDecoder()
    assert decoder.last_event_id == ""
    assert decoder.reconnection_time_ms is None
    assert EventStreamDecoder(last_event_id="9").last_event_id == "9"


def test_dispatched_event_is_frozen():
    event = DispatchedEvent(type="message", data="x", last_event_id="")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.data = "y"  # type: ignore[misc]


def test_events_are_assembled_by_one_sseclient(monkeypatch):
    created = []

    class RecordingSSEClient(sseclient.SSEClient):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            created.append(self)

    monkeypatch.setattr(sseclient, "SSEClient", RecordingSSEClient)
    events, _last_id, _ = run([b"data: a\n\nid: 1\n\nevent: e\ndata: b\n", b"\n"])
    assert events == [(M, "a", ""), ("e", "b", "1")]
    assert len(created) == 1

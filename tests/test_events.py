"""This service's events (sse_chat.protocol.events): ids, the stream_lost frame, and
reading back the frames it encodes."""

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sse_chat.protocol import (
    STREAM_ID_BYTES,
    Event,
    EventId,
    EventStreamDecoder,
    EventType,
    content_frame,
    event_frame,
    new_stream_id,
    read_frame,
    stream_lost_frame,
)


def test_a_stream_id_is_22_url_safe_characters_from_128_random_bits():
    ids = {new_stream_id() for _ in range(100)}
    assert len(ids) == 100 and STREAM_ID_BYTES == 16
    assert all(len(stream_id) == 22 and re.fullmatch(r"[A-Za-z0-9_-]+", stream_id) for stream_id in ids)


def test_an_event_id_is_stream_id_colon_seq_and_reads_back():
    event_id = EventId("Xq3-_abc", 12)
    assert str(event_id) == "Xq3-_abc:12"
    assert EventId.parse(str(event_id)) == event_id
    assert EventId.parse("s:007") == EventId("s", 7)


@pytest.mark.parametrize("value", [
    "",  # nothing
    "abc",  # no colon
    ":3",  # an empty stream id
    "a:b:3",  # a stream id holding ":" (token_urlsafe never makes one)
    "s:",  # no seq
    "s:-1", "s:+1", "s:1.5", "s: 1",  # not ASCII digits
    "s:\u0663",  # ARABIC-INDIC DIGIT THREE: a digit, but not ASCII
])
def test_malformed_event_ids_read_as_none(value):
    assert EventId.parse(value) is None


def test_stream_lost_is_a_terminal_error_event_with_its_message():
    frame = stream_lost_frame(EventId("s", 3), "the worker died")
    [event] = EventStreamDecoder().iter_events([frame])
    assert (event.type, event.last_event_id) == ("error", "s:3")
    assert json.loads(event.data) == {"error": {"type": "stream_lost", "message": "the worker died"}}
    assert read_frame(frame).terminal


@pytest.mark.parametrize("event", [
    Event(EventId("s", 0), "start", {"stream_id": "s", "model": "fake", "created": 1}),
    # ": " inside the data: only the first one on a line separates the field's name.
    Event(EventId("s", 5), "token", {"content": "key: value: more\u2028你好"}),
    Event(EventId("s", 9), "done", {"finish_reason": "stop", "usage": None}),
])
def test_read_frame_gives_back_the_event_that_was_encoded(event):
    assert read_frame(event.encode()) == event


def test_read_frame_reads_the_producers_fast_frames():
    frame = content_frame(EventType.REASONING, "s", 4, "a: b")
    assert read_frame(frame) == Event(EventId("s", 4), "reasoning", {"content": "a: b"})


@pytest.mark.parametrize("frame", [
    b"event: token\ndata: {}\n\n",  # no id
    b"id: nonsense\nevent: token\ndata: {}\n\n",  # an id that is not {stream_id}:{seq}
    b"id: s:1\ndata: {}\n\n",  # no event
    b"id: s:1\nevent: token\n\n",  # no data
])
def test_read_frame_refuses_what_is_not_a_frame_of_this_service(frame):
    with pytest.raises(ValueError, match="not a frame of this service"):
        read_frame(frame)


# Stream ids without lone surrogates (category Cs): no UTF-8 text holds one, and
# the characters() strategy offers them unless told not to.
@given(st.sampled_from([EventType.TOKEN, EventType.REASONING]), st.text(alphabet=st.characters(
    exclude_categories=("Cs",), exclude_characters=":\r\n\0"), min_size=1), st.integers(min_value=0, max_value=10**9),
    st.text())
def test_content_frames_are_byte_for_byte_the_events_encoding(event_type, stream_id, seq, text):
    expected = Event(EventId(stream_id, seq), event_type.value, {"content": text}).encode()
    assert content_frame(event_type, stream_id, seq, text) == expected


@given(st.sampled_from(list(EventType)), st.text(alphabet=st.characters(
    exclude_categories=("Cs",), exclude_characters=":\r\n\0"), min_size=1), st.integers(min_value=0, max_value=10**9),
    st.dictionaries(st.text(alphabet=st.characters(exclude_categories=("Cs",))),
                    st.text(alphabet=st.characters(exclude_categories=("Cs",))) | st.integers() | st.none()))
def test_event_frames_are_byte_for_byte_the_events_encoding(event_type, stream_id, seq, data):
    expected = Event(EventId(stream_id, seq), event_type.value, data).encode()
    assert event_frame(event_type, stream_id, seq, data) == expected

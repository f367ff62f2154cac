"""The encoder, against exact bytes (WHATWG HTML §9.2.5–9.2.6)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sse_chat.protocol.decoding import EventStreamDecoder
from sse_chat.protocol.encoding import (
    ServerSentEvent,
    compact_json,
    encode_comment,
    encode_line_event,
    encode_retry,
    json_string,
)

ENCODINGS = [
    (ServerSentEvent("hello"), b"data: hello\n\n"),
    (ServerSentEvent(""), b"data: \n\n"),
    (ServerSentEvent("a", event="token", id="s:1"), b"id: s:1\nevent: token\ndata: a\n\n"),
    (ServerSentEvent("a", retry=1000), b"retry: 1000\ndata: a\n\n"),
    (ServerSentEvent("YHOO\n+2\n10"), b"data: YHOO\ndata: +2\ndata: 10\n\n"),
    (ServerSentEvent("a\r\nb\rc"), b"data: a\ndata: b\ndata: c\n\n"),
    (ServerSentEvent("line\n"), b"data: line\ndata: \n\n"),
    (ServerSentEvent(" lead"), b"data:  lead\n\n"),
    (ServerSentEvent("你好 é"), "data: 你好 é\n\n".encode()),
    (ServerSentEvent("x", event="", id=""), b"id: \nevent: \ndata: x\n\n"),
]


@pytest.mark.parametrize("event,expected", ENCODINGS, ids=[repr(e) for e, _ in ENCODINGS])
def test_encode_exact_bytes(event, expected):
    assert event.encode() == expected


@pytest.mark.parametrize("event", [e for e, _ in ENCODINGS])
def test_decoder_reads_back_what_encoder_wrote(event):
    [decoded] = EventStreamDecoder().iter_events([event.encode()])
    expected_data = event.data.replace("\r\n", "\n").replace("\r", "\n")
    assert ((decoded.type, decoded.data, decoded.last_event_id)
            == (event.event or "message", expected_data, event.id or ""))


def test_retry_takes_any_whole_number_of_milliseconds_from_0():
    # Built here, not at import: the checks run when an event is made.
    assert ServerSentEvent("a", retry=0).encode() == b"retry: 0\ndata: a\n\n"
    assert ServerSentEvent("a", event="e", id="i", retry=1000).encode() == \
        b"retry: 1000\nid: i\nevent: e\ndata: a\n\n"


@pytest.mark.parametrize("kwargs", [{"event": "a\nb"}, {"event": "a\rb"}, {"id": "1\n"}, {"id": "a\0b"}, {"retry": -1}])
def test_fields_that_would_break_the_stream_are_refused(kwargs):
    with pytest.raises(ValueError):
        ServerSentEvent("x", **kwargs)


def test_comment_and_retry_frames():
    assert encode_comment("ping") == b": ping\n\n"
    assert encode_comment() == b":\n\n"
    assert encode_retry(1000) == b"retry: 1000\n"
    assert encode_retry(0) == b"retry: 0\n"  # 0 is a valid reconnection time: reconnect at once
    with pytest.raises(ValueError):
        encode_retry(-1)
    with pytest.raises(ValueError):
        encode_comment("a\nb")


def test_compact_json_is_one_line_and_keeps_utf8():
    text = compact_json({"content": "a\nb\r\u2028你好", "n": 1})
    assert text == '{"content":"a\\nb\\r\u2028你好","n":1}'
    assert "\n" not in text and "\r" not in text


@given(content=st.text(), seq=st.integers(min_value=0, max_value=10**9),
       event_type=st.sampled_from(["token", "reasoning", "done", "error"]))
def test_the_producers_fast_encoding_is_byte_identical_to_the_checked_one(content, seq, event_type):
    event_id = f"Xq3-_abc:{seq}"
    data = '{"content":' + json_string(content) + "}"
    assert data == compact_json({"content": content})
    assert encode_line_event(event_type, event_id, data) == \
        ServerSentEvent(compact_json({"content": content}), event=event_type, id=event_id).encode()

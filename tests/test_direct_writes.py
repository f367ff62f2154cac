"""sse_chat/streaming/reader.py's direct writes under gevent: an event appended
for a reader that waits caught up is written to its client by the appending
greenlet, through the response's client writer, exactly once and in order, the
terminal event too, at once, after which the reader only ends the response;
what the writer refuses, what comes too close together (but the terminal
event), an event that must carry ``retry:`` and a response bounded to events
per response go through the reader instead."""

import json
import socket
import time

import gevent
import pytest

from sse_chat.eventlog import MemoryEventLog
from sse_chat.eventlog.wakeups import Wakeups
from sse_chat.protocol import EventType, content_frame, encode_retry
from sse_chat.streaming import reader as reader_module
from sse_chat.streaming.reader import OPENING_COMMENT, ReaderSettings, ReadFrom, read_stream

from .event_reading import events_of, stream_of

pytestmark = pytest.mark.timeout(20)

STREAM = "s"
RETRY = encode_retry(1000)
NO_HEARTBEAT_S = 3600.0


def frame(seq):
    return content_frame(EventType.TOKEN, STREAM, seq, f"t{seq}")


def _read(log, after_seq=-1, **options):
    readers = ReaderSettings(log, retry_ms=1000, heartbeat_s=NO_HEARTBEAT_S)
    return read_stream(readers, ReadFrom(STREAM, after_seq), **options)


class Writer:
    """A client writer that puts what it writes on ``wire`` (never ready when
    ``takes`` is false; a connection that failed when ``connected`` is false)."""

    def __init__(self, wire, *, takes=True, connected=True):
        self.wire, self.takes, self.connected = wire, takes, connected
        self.holds = []  # for each hold_next_write: how many writes were on the wire then

    def hold_next_write(self):
        self.holds.append(len(self.wire))

    def ready(self):
        return self.takes

    def write(self, data):
        if not self.takes:
            return False
        if self.connected:
            self.wire.append(("producer", data))
        return self.connected


def _cooperative_log():
    log = MemoryEventLog(ttl_s=60, max_events=10_000, wakeups=Wakeups(cooperative=True, tick_s=60))
    log.create(STREAM, None, frame(0))
    return log


def _serve(body, wire):
    """Write ``body`` as a WSGI server would, in a greenlet of its own, onto ``wire``."""
    def serve():
        for item in body:
            wire.append(("reader", item))
        body.close()
    served = gevent.spawn(serve)
    gevent.sleep(0)  # the first write has gone out; the reader waits
    return served


@pytest.fixture
def at_once(monkeypatch):
    """Direct writes whatever the time since the last write."""
    monkeypatch.setattr(reader_module, "DIRECT_MIN_GAP_S", 0.0)


def test_an_event_for_a_caught_up_reader_is_written_by_the_appending_greenlet_and_once(at_once):
    log, wire = _cooperative_log(), []
    body = _read(log)
    body.write_directly(Writer(wire))
    served = _serve(body, wire)
    for seq in range(1, 4):
        log.append(STREAM, seq, frame(seq))
        assert wire[-1] == ("producer", frame(seq))  # written before the append returned
    log.append(STREAM, 4, frame(4), terminal=True)
    assert wire[-1] == ("producer", frame(4))  # the end too, at once; the reader only ends the response
    gevent.sleep(0)  # the bells are rung at once: the reader ran before this greenlet's turn came back
    assert served.dead
    served.join(timeout=5)
    assert wire == [("reader", RETRY + frame(0)), *[("producer", frame(seq)) for seq in range(1, 5)]]
    assert not log._wakeups.following(STREAM)  # detached


def test_the_terminal_event_right_after_another_is_written_at_once_by_the_appending_greenlet(monkeypatch):
    monkeypatch.setattr(reader_module, "DIRECT_MIN_GAP_S", 3600.0)  # no event but the last goes directly
    log, wire = _cooperative_log(), []
    body = _read(log)
    writer = Writer(wire)
    body.write_directly(writer)
    served = _serve(body, wire)
    log.append(STREAM, 1, frame(1), terminal=True)
    assert wire == [("reader", RETRY + frame(0)), ("producer", frame(1))]
    served.join(timeout=5)
    assert len(wire) == 2  # the reader, woken, wrote nothing more
    assert writer.holds == []  # and held nothing: its last write of events went out long ago


def test_the_last_write_of_the_reader_is_held_for_the_end_of_the_body_and_no_other(at_once):
    log, wire = _cooperative_log(), []
    body = _read(log)
    writer = Writer(wire, takes=False)  # the reader writes every event
    body.write_directly(writer)
    served = _serve(body, wire)
    log.append(STREAM, 1, frame(1))
    gevent.sleep(0.01)  # the reader's turn
    log.append(STREAM, 2, frame(2), terminal=True)
    served.join(timeout=5)
    assert [item for _, item in wire] == [RETRY + frame(0), frame(1), frame(2)]
    assert writer.holds == [2]  # right before the write of the terminal event, the last


def test_a_stream_that_ended_before_the_reader_attached_holds_its_one_write():
    log, wire = _cooperative_log(), []
    log.append(STREAM, 1, frame(1), terminal=True)
    body = _read(log)
    writer = Writer(wire)
    body.write_directly(writer)
    _serve(body, wire).join(timeout=5)
    assert wire == [("reader", RETRY + frame(0) + frame(1))]
    assert writer.holds == [0]


def test_events_closer_together_than_the_least_gap_wait_for_the_reader_and_go_in_one_write(monkeypatch):
    monkeypatch.setattr(reader_module, "DIRECT_MIN_GAP_S", 3600.0)
    log, wire = _cooperative_log(), []
    body = _read(log)
    body.write_directly(Writer(wire))
    served = _serve(body, wire)
    for seq in range(1, 4):
        log.append(STREAM, seq, frame(seq), terminal=seq == 3)  # the terminal one too: the others wait before it
    served.join(timeout=5)
    assert wire == [("reader", RETRY + frame(0)), ("reader", frame(1) + frame(2) + frame(3))]


def test_while_the_writer_is_not_ready_the_reader_writes_in_order(at_once):
    log, wire = _cooperative_log(), []
    body = _read(log)
    body.write_directly(Writer(wire, takes=False))
    served = _serve(body, wire)
    for seq in range(1, 4):
        log.append(STREAM, seq, frame(seq), terminal=seq == 3)
    served.join(timeout=5)
    assert b"".join(data for _, data in wire) == RETRY + b"".join(frame(seq) for seq in range(4))
    assert {source for source, _ in wire} == {"reader"}


def test_a_surfaces_transform_sees_every_frame_once_whoever_writes_it(at_once):
    log, wire, seen = _cooperative_log(), [], []
    writer = Writer(wire)

    def transform(frames):  # keeps state, as the Responses API's numbering does
        seen.extend(frames)
        return b"".join(b"<" + frame + b">" for frame in frames)

    body = _read(log, transform=transform)
    body.write_directly(writer)
    served = _serve(body, wire)
    for seq in range(1, 7):
        writer.takes = seq % 3 != 0  # not ready for every third event
        log.append(STREAM, seq, frame(seq), terminal=seq == 6)
        gevent.sleep(0.01)  # the reader's turn, when it was woken
    served.join(timeout=5)
    assert seen == [frame(seq) for seq in range(7)]
    assert b"".join(data for _, data in wire) == RETRY + b"".join(b"<" + frame(seq) + b">" for seq in range(7))
    assert {source for source, _ in wire} == {"reader", "producer"}


def test_the_first_event_that_must_carry_retry_goes_through_the_reader(at_once):
    log, wire = _cooperative_log(), []
    body = _read(log, after_seq=0, retry_alone=False)  # nothing after the position yet
    body.write_directly(Writer(wire))
    served = _serve(body, wire)
    log.append(STREAM, 1, frame(1))
    gevent.sleep(0.01)  # the reader's turn
    log.append(STREAM, 2, frame(2))  # retry: has gone out: the producer writes again
    log.append(STREAM, 3, frame(3), terminal=True)
    served.join(timeout=5)
    assert wire == [("reader", OPENING_COMMENT), ("reader", RETRY + frame(1)), ("producer", frame(2)),
                    ("producer", frame(3))]


def test_a_write_that_meets_a_failed_connection_wakes_the_reader_to_meet_it(at_once):
    log, wire = _cooperative_log(), []
    body = _read(log)
    body.write_directly(Writer(wire, connected=False))
    served = _serve(body, wire)
    log.append(STREAM, 1, frame(1))
    gevent.sleep(0.01)  # the reader's turn: woken, it writes the event itself (and would meet the failure)
    assert wire == [("reader", RETRY + frame(0)), ("reader", frame(1))]
    log.append(STREAM, 2, frame(2), terminal=True)
    served.join(timeout=5)


def test_a_response_bounded_to_events_per_response_counts_every_event_itself(at_once):
    log, wire = _cooperative_log(), []
    readers = ReaderSettings(log, retry_ms=1000, heartbeat_s=NO_HEARTBEAT_S)
    body = read_stream(readers, ReadFrom(STREAM, -1, events_per_response=3))
    body.write_directly(Writer(wire))
    served = _serve(body, wire)
    for seq in range(1, 4):
        log.append(STREAM, seq, frame(seq))
        gevent.sleep(0.01)
    served.join(timeout=5)
    assert wire == [("reader", RETRY + frame(0)), ("reader", frame(1)), ("reader", frame(2))]


def test_a_client_that_reads_late_gets_every_byte_of_large_direct_writes_in_order(gunicorn):
    """Through gunicorn: events of 40 KB, 10 ms apart (written by the producer),
    to a client with a small receive buffer that reads nothing for a second: the
    socket takes them in part, the event loop sends the rest as it drains, and
    the stream arrives whole and in order."""
    server = gunicorn(SSE_CHAT_FAKE_DELAY_MS="10", SSE_CHAT_MAX_BODY_BYTES=str(8 * 1024 * 1024))
    words = [" " + chr(ord("a") + n % 26) * 40_000 for n in range(100)]  # the fake model echoes them
    body = json.dumps({"prompt": "".join(words)}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        client.connect((host, int(port)))
        client.sendall(b"POST /v1/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Connection: close\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
        time.sleep(1.0)  # not reading: the server's writes meet a full socket
        client.settimeout(30)
        received = b"".join(iter(lambda: client.recv(1 << 16), b""))
    head, _, chunked = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    events = events_of([_unchunk(chunked)])
    tokens = [json.loads(event.data)["content"] for event in events if event.type == "token"]
    assert words == [token for token in tokens if len(token) > 1000]
    stream = stream_of(events[0].last_event_id)
    assert [event.last_event_id for event in events] == [f"{stream}:{seq}" for seq in range(len(events))]
    assert events[-1].type == "done"


def _unchunk(body: bytes) -> bytes:
    """An HTTP/1.1 chunked body's data (it fails on a malformed one)."""
    data, rest = [], body
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return b"".join(data)
        data.append(rest[:size])
        assert rest[size:size + 2] == b"\r\n"
        rest = rest[size + 2:]

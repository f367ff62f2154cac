"""Readers (``sse_chat/streaming/reader.py``) against the in-memory log, with threads (bells
rung at once, no event loop): replay from a position, following live, heartbeats,
writes of a bounded size, the end on a graceful stop, an expired stream, detaching
on ``close()``, responses of at most ``events_per_response`` events. No sleeps:
every wait either has its event already rung or a deadline that has passed.
(Direct writes, under gevent: tests/test_direct_writes.py.)"""

import json
import threading

import pytest

from sse_chat.eventlog import MemoryEventLog
from sse_chat.protocol import EventType, content_frame, encode_retry
from sse_chat.streaming.reader import (
    HEARTBEAT,
    OPENING_COMMENT,
    WRITE_EVENTS,
    ReaderSettings,
    ReadFrom,
    follow,
    read_stream,
)

from .event_reading import events_of

#: A reader that is never woken fails here instead of waiting for its heartbeat.
pytestmark = pytest.mark.timeout(20)

STREAM = "s"
RETRY = encode_retry(1000)
#: Long enough that no heartbeat comes unless a test asks for one.
NO_HEARTBEAT_S = 3600.0


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def frame(seq):
    return content_frame(EventType.TOKEN, STREAM, seq, f"t{seq}")


def _log(events, *, finished, clock=None):
    """A log on ``clock`` (a new :class:`Clock` by default) holding ``STREAM`` with
    events ``0 .. events - 1``, the last one terminal when ``finished``."""
    log = MemoryEventLog(ttl_s=60, max_events=10_000, clock=clock or Clock())
    log.create(STREAM, None, frame(0))
    for seq in range(1, events):
        log.append(STREAM, seq, frame(seq), terminal=finished and seq == events - 1)
    return log


def _read(log, after_seq=-1, *, heartbeat_s=NO_HEARTBEAT_S, draining=None, **options):
    readers = ReaderSettings(log, retry_ms=1000, heartbeat_s=heartbeat_s, draining=draining)
    return read_stream(readers, ReadFrom(STREAM, after_seq), **options)


def _readers(log):
    """Whether a reader is attached: the log counts a stream unattended only
    without one (its clock moved on a second since the log was made)."""
    log._clock.now += 1.0
    return log.control(STREAM).unattended_s == 0.0


# -- replay ---------------------------------------------------------------------

@pytest.mark.parametrize("after_seq", [-1, 0, 3, 5])
def test_a_finished_stream_is_replayed_after_the_position_in_one_write_then_the_response_ends(after_seq):
    body = _read(_log(7, finished=True), after_seq)
    assert list(body) == [RETRY + b"".join(frame(seq) for seq in range(after_seq + 1, 7))]


def test_a_reader_at_the_last_event_of_a_finished_stream_gets_only_the_reconnection_time():
    assert list(_read(_log(3, finished=True), 2)) == [RETRY + b"\n"]


def test_a_long_backlog_goes_out_in_writes_of_at_most_write_events_events():
    events = 2 * WRITE_EVENTS + 44
    writes = list(_read(_log(events, finished=True)))
    assert [len(events_of([w])) for w in writes] == [WRITE_EVENTS, WRITE_EVENTS, 44]
    assert b"".join(writes) == RETRY + b"".join(frame(seq) for seq in range(events))


# -- live -------------------------------------------------------------------------

def test_a_live_reader_writes_the_events_that_gathered_since_its_last_write_and_ends_after_the_terminal_one():
    log = _log(2, finished=False)
    body = _read(log)
    assert next(body) == RETRY + frame(0) + frame(1)
    log.append(STREAM, 2, frame(2))
    log.append(STREAM, 3, frame(3))
    assert next(body) == frame(2) + frame(3)       # both in one write
    log.append(STREAM, 4, frame(4), terminal=True)
    assert next(body) == frame(4)
    with pytest.raises(StopIteration):
        next(body)


def test_a_reader_waiting_for_events_is_woken_by_another_threads_appends():
    log = _log(1, finished=False)
    body = _read(log)
    assert next(body) == RETRY + frame(0)

    def produce():
        for seq in range(1, 50):
            log.append(STREAM, seq, frame(seq), terminal=seq == 49)

    producer = threading.Thread(target=produce)
    producer.start()
    rest = b"".join(body)          # returns after the terminal event; no heartbeat within an hour
    producer.join(timeout=10)
    assert rest == b"".join(frame(seq) for seq in range(1, 50))


def test_a_reader_with_nothing_logged_after_its_position_opens_with_the_reconnection_time_alone():
    log = _log(3, finished=False)
    assert next(_read(log, 2)) == RETRY + b"\n"
    # the openai SDK cannot take a block without data: a comment opens the
    # response, and retry: waits for the first event
    body = _read(log, 2, retry_alone=False)
    assert next(body) == OPENING_COMMENT
    log.append(STREAM, 3, frame(3), terminal=True)
    assert list(body) == [RETRY + frame(3)]


# -- heartbeats -------------------------------------------------------------------

def test_a_reader_writes_a_heartbeat_when_its_deadline_passes_without_an_event():
    log = _log(1, finished=False)
    body = _read(log, heartbeat_s=0.0)     # every deadline has passed already
    assert next(body) == RETRY + frame(0)
    assert next(body) == HEARTBEAT
    assert next(body) == HEARTBEAT
    log.append(STREAM, 1, frame(1), terminal=True)
    assert list(body) == [frame(1)]         # an event, not a heartbeat, once there is one


def test_no_heartbeat_before_its_deadline_when_events_arrive():
    log = _log(1, finished=False)
    body = _read(log)
    next(body)
    for seq in range(1, 5):
        log.append(STREAM, seq, frame(seq), terminal=seq == 4)
        assert next(body) == frame(seq)


# -- graceful stop ----------------------------------------------------------------

def test_a_draining_process_ends_the_response_with_the_reconnection_time_and_the_client_resumes():
    log = _log(2, finished=False)
    draining = threading.Event()
    body = _read(log, draining=draining)
    assert next(body) == RETRY + frame(0) + frame(1)
    log.append(STREAM, 2, frame(2))
    draining.set()
    log.wake_readers()
    assert list(body) == [RETRY + b"\n"]    # what gathered stays for the resume, from event 1
    assert not _readers(log)                # detached: the stream goes on without this reader

    resumed = _read(log, 1)
    log.append(STREAM, 3, frame(3), terminal=True)
    assert b"".join(resumed) == RETRY + frame(2) + frame(3)


def test_a_draining_process_sends_no_last_retry_when_retry_must_not_come_alone():
    log = _log(1, finished=False)
    draining = threading.Event()
    body = _read(log, draining=draining, retry_alone=False)
    assert next(body) == RETRY + frame(0)
    draining.set()
    assert list(body) == []


def test_a_stream_that_ends_while_draining_still_ends_with_its_terminal_event():
    log = _log(2, finished=True)
    draining = threading.Event()
    draining.set()
    events = events_of(list(_read(log, draining=draining)))
    assert [e.last_event_id for e in events] == [f"{STREAM}:0", f"{STREAM}:1"]


# -- expiry and detaching -----------------------------------------------------------

def test_a_stream_that_expires_while_read_ends_with_stream_lost_after_the_last_event_sent():
    clock = Clock()
    log = _log(3, finished=False, clock=clock)
    body = _read(log)
    assert next(body) == RETRY + frame(0) + frame(1) + frame(2)
    log.append(STREAM, 3, frame(3), terminal=True)
    clock.now += 61.0   # past ttl_s after the terminal event, before the reader looked
    (write,) = list(body)
    (event,) = events_of([write])
    assert (event.type, event.last_event_id) == ("error", f"{STREAM}:3")
    assert json.loads(event.data)["error"]["type"] == "stream_lost"


def test_a_reader_of_a_stream_that_is_gone_gets_stream_lost_instead_of_an_error():
    body = read_stream(ReaderSettings(_log(1, finished=False), retry_ms=1000, heartbeat_s=NO_HEARTBEAT_S),
                       ReadFrom("gone", 4))
    (event,) = events_of(list(body))   # after the retry: block
    assert (event.type, event.last_event_id) == ("error", "gone:5")
    assert json.loads(event.data)["error"]["type"] == "stream_lost"


def test_closing_a_body_detaches_its_reader_whether_or_not_it_was_iterated():
    log = _log(1, finished=False)
    body = _read(log)
    assert _readers(log)                    # attached before the response begins
    body.close()
    assert not _readers(log)

    started = _read(log)
    next(started)
    started.close()
    assert not _readers(log)


# --- events per response (the fake model's drop_every) -------------------------------------


def _memory_stream(events: int, events_per_response: int | None, finished: bool = True):
    log = MemoryEventLog(ttl_s=60, max_events=1000)
    log.create("s", None, b"id: s:0\nevent: start\ndata: {}\n\n", events_per_response=events_per_response)
    for seq in range(1, events):
        kind = "done" if finished and seq == events - 1 else "token"
        log.append("s", seq, f"id: s:{seq}\nevent: {kind}\ndata: {{}}\n\n".encode(), terminal=kind == "done")
    return log


def _frames_of_one_response(log, after_seq, events_per_response):
    body = follow(log, "s", after_seq, heartbeat_s=5, events_per_response=events_per_response)
    try:
        return [frame for frames in body for frame in frames]
    finally:
        body.close()


def test_each_response_of_a_finished_stream_carries_events_per_response_events():
    log = _memory_stream(52, 7)
    assert log.info("s").events_per_response == 7
    after, sizes = -1, []
    while after < 51:
        frames = _frames_of_one_response(log, after, log.info("s").events_per_response)
        sizes.append(len(frames))
        after += len(frames)
    assert sizes == [7] * 7 + [3]


def test_a_terminal_event_within_the_allowance_is_sent():
    log = _memory_stream(7, 7)
    frames = _frames_of_one_response(log, -1, 7)
    assert len(frames) == 7 and frames[-1].startswith(b"id: s:6\nevent: done")


def test_without_events_per_response_one_response_carries_everything():
    assert len(_frames_of_one_response(_memory_stream(52, None), -1, None)) == 52


def test_read_stream_takes_the_position_whole_its_events_per_response_too():
    """The seam between a route and a reader: one :class:`ReadFrom` (stream, after
    which event, events per response) and the app's :class:`ReaderSettings`."""
    log = _log(10, finished=True)
    writes = list(read_stream(ReaderSettings(log, retry_ms=1000, heartbeat_s=NO_HEARTBEAT_S), ReadFrom(STREAM, 2, 3)))
    assert writes == [RETRY + frame(3) + frame(4) + frame(5)]

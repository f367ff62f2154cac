"""The producer against the in-memory log, with a controlled clock."""

import json
import logging

from sse_chat.eventlog import MemoryEventLog
from sse_chat.models import ChatRequest, Delta, Message, UpstreamError
from sse_chat.streaming.producer import Producer, ProducerLimits

from .event_reading import assert_well_formed, events_of


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class EndlessModel:
    """Yields a token per step and advances the clock one second per token."""

    def __init__(self, clock):
        self.clock = clock
        self.closed = False

    def stream(self, request):
        try:
            while True:
                self.clock.now += 1.0
                yield Delta(content="x")
        finally:
            self.closed = True


class FailingModel:
    def stream(self, request):
        yield Delta(content="partial")
        raise UpstreamError("upstream_rate_limited", "the upstream answered HTTP 429: slow down")


REQUEST = ChatRequest((Message("user", "q"),), "fake")


def _run(model, clock, abandon_s=5.0, attach=False):
    log = MemoryEventLog(ttl_s=60, max_events=1000, clock=clock)
    producer = Producer(log, "s", model, REQUEST, ProducerLimits(abandon_s=abandon_s), clock=clock)
    producer.create_stream(owner=None)
    if attach:
        log.open("s", 0)
    producer.run()
    return events_of([b"".join(log.open("s", -1).take().frames)])


def test_unattended_producer_stops_after_abandon_s_and_closes_the_upstream():
    clock = Clock()
    model = EndlessModel(clock)
    events = _run(model, clock, abandon_s=5.0)
    assert_well_formed(events)
    assert json.loads(events[-1].data)["error"]["type"] == "stream_abandoned"
    assert 5 <= len(events) - 2 <= 7
    assert model.closed


def test_attached_reader_keeps_it_going_until_the_event_bound():
    clock = Clock()
    events = _run(EndlessModel(clock), clock, abandon_s=5.0, attach=True)
    assert_well_formed(events)
    assert len(events) == 1001
    assert json.loads(events[-1].data)["error"]["type"] == "stream_too_long"


def test_upstream_error_becomes_one_error_event_after_the_partial_answer():
    events = _run(FailingModel(), Clock())
    assert_well_formed(events)
    assert [e.type for e in events] == ["start", "token", "error"]
    assert json.loads(events[-1].data) == {"error": {"type": "upstream_rate_limited",
                                                     "message": "the upstream answered HTTP 429: slow down"}}


class DeletingModel:
    """Deletes its stream from the log after its first token (a DELETE of a running
    response whose model was silent: the producer learns of it afterwards)."""

    def __init__(self, log):
        self.log = log

    def stream(self, request):
        yield Delta(content="first")
        self.log.delete("s")
        yield Delta(content="second")


def test_a_producer_whose_stream_was_deleted_stops_quietly(caplog):
    caplog.set_level(logging.INFO, logger="sse_chat.streaming.producer")
    clock = Clock()
    log = MemoryEventLog(ttl_s=60, max_events=1000, clock=clock)
    ended = []
    producer = Producer(log, "s", DeletingModel(log), REQUEST, ProducerLimits(abandon_s=5.0), clock=clock,
                        on_end=lambda: ended.append(True))
    producer.create_stream(owner=None)
    producer.run()
    assert ended == [True] and log.info("s") is None
    assert "was deleted while its producer ran" in caplog.text
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")]

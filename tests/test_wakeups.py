"""Waking readers: once per event-loop turn under gevent, at once with threads;
deadlines kept by one ticker instead of a timer per wait."""

import threading
import time

import gevent
import gevent.event
import pytest

from sse_chat.eventlog import MemoryEventLog
from sse_chat.eventlog.wakeups import Wakeups
from sse_chat.streaming.reader import follow

#: Bound on every wait below: a test that hangs fails instead.
TEST_TIMEOUT_S = 5.0


def _waiter(wakeups, bell, deadline, wakes):
    def wait_until_done():
        while True:
            bell.wait(deadline)
            wakes.append(time.monotonic())
            if time.monotonic() >= deadline or len(wakes) > 1000:
                return
    return gevent.spawn(wait_until_done)


def test_many_changes_in_one_loop_turn_wake_a_reader_once():
    wakeups = Wakeups(cooperative=True, tick_s=60)
    bell = wakeups.subscribe("s")
    wakes = []
    waiter = _waiter(wakeups, bell, time.monotonic() + 0.3, wakes)
    gevent.sleep(0)  # the waiter is now waiting

    def producer():
        for _ in range(100):
            wakeups.changed("s")
            gevent.sleep(0)  # lets the waiter run, were it rung at once; still the same loop turn

    gevent.spawn(producer).join()
    gevent.sleep(0.1)
    assert 1 <= len(wakes) <= 2  # 2: the turn may end (gevent's switch interval) midway
    waiter.kill()


def test_a_lone_change_wakes_its_reader_long_before_any_deadline():
    wakeups = Wakeups(cooperative=True, tick_s=60)  # the ticker cannot be what wakes it
    bell = wakeups.subscribe("s")
    woke = gevent.event.Event()

    def wait():
        bell.wait(time.monotonic() + 30)
        woke.set()

    gevent.spawn(wait)
    gevent.sleep(0)
    wakeups.changed("s")
    assert woke.wait(TEST_TIMEOUT_S)


def test_changes_to_other_streams_do_not_wake_a_reader():
    wakeups = Wakeups(cooperative=True, tick_s=60)
    bell = wakeups.subscribe("s")
    wakeups.subscribe("other")
    woke = gevent.event.Event()
    gevent.spawn(lambda: (bell.wait(time.monotonic() + 30), woke.set()))
    gevent.sleep(0)
    wakeups.changed("other")
    assert not woke.wait(0.2)


def test_the_ticker_wakes_a_reader_whose_deadline_passed():
    wakeups = Wakeups(cooperative=True, tick_s=0.01)
    bell = wakeups.subscribe("s")
    started = time.monotonic()
    with gevent.Timeout(TEST_TIMEOUT_S):
        bell.wait(started + 0.05)
    assert time.monotonic() - started >= 0.05


def test_the_ticker_keeps_deadlines_while_other_readers_are_not_waiting():
    wakeups = Wakeups(cooperative=True, tick_s=0.01)
    wakeups.subscribe("s")  # a reader that never waits
    first, second = wakeups.subscribe("s"), wakeups.subscribe("s")
    with gevent.Timeout(TEST_TIMEOUT_S):
        first.wait(time.monotonic() + 0.05)
        second.wait(time.monotonic() + 0.05)  # first is done waiting now


def test_a_stream_whose_readers_left_within_the_loop_turn_does_not_stop_the_others_wake_up():
    wakeups = Wakeups(cooperative=True, tick_s=60)
    bell = wakeups.subscribe("s")
    woke = gevent.event.Event()
    gevent.spawn(lambda: (bell.wait(time.monotonic() + 30), woke.set()))
    gevent.sleep(0)
    for i in range(20):  # changed, then left before the loop turned
        gone = wakeups.subscribe(f"gone{i}")
        wakeups.changed(f"gone{i}")
        wakeups.unsubscribe(f"gone{i}", gone)
    wakeups.changed("s")
    assert woke.wait(TEST_TIMEOUT_S)


def test_under_gevent_deadlines_are_kept_by_the_ticker_on_the_wakeups_clock():
    clock = Clock()  # stands at 100.0 until moved
    wakeups = Wakeups(cooperative=True, tick_s=0.01, clock=clock)
    bell = wakeups.subscribe("s")
    woke = gevent.event.Event()
    gevent.spawn(lambda: (bell.wait(110.0), woke.set()))
    gevent.sleep(0.05)
    assert not woke.is_set()  # 10 s to go on the clock that counts
    clock.now = 110.0
    assert woke.wait(1.0)  # the ticker's next look, not a timer of 10 real seconds


def test_the_ticker_wakes_a_reader_whose_deadline_is_now_exactly():
    wakeups = Wakeups(cooperative=True, tick_s=0.01, clock=lambda: 500.0)  # a clock that stands still
    bell = wakeups.subscribe("s")
    with gevent.Timeout(TEST_TIMEOUT_S):
        bell.wait(500.0)  # due when the clock reads 500.0: it will never read more


def test_a_ring_while_the_reader_is_busy_is_kept():
    wakeups = Wakeups(cooperative=True, tick_s=60)
    bell = wakeups.subscribe("s")
    wakeups.changed("s")
    gevent.sleep(0.01)  # rung now, nobody waiting
    with gevent.Timeout(TEST_TIMEOUT_S):
        bell.wait(time.monotonic() + 30)


def test_ring_all_wakes_every_reader_now():
    wakeups = Wakeups(cooperative=True, tick_s=60)
    bells = [wakeups.subscribe(f"s{i}") for i in range(3)]
    waiters = [gevent.spawn(bell.wait, time.monotonic() + 30) for bell in bells]
    gevent.sleep(0)
    wakeups.ring_all()
    assert len(gevent.joinall(waiters, timeout=TEST_TIMEOUT_S)) == 3


def test_with_threads_a_change_rings_at_once_and_waits_time_out_by_themselves():
    wakeups = Wakeups(cooperative=False)
    bell = wakeups.subscribe("s")
    started = time.monotonic()
    bell.wait(started + 0.05)
    assert time.monotonic() - started >= 0.05
    done = threading.Event()
    reader = threading.Thread(target=lambda: (bell.wait(time.monotonic() + 30), done.set()))
    reader.start()
    wakeups.changed("s")
    assert done.wait(TEST_TIMEOUT_S)
    reader.join()


def test_unsubscribed_bells_are_forgotten():
    wakeups = Wakeups(cooperative=False)
    bell = wakeups.subscribe("s")
    assert wakeups.following("s")
    wakeups.unsubscribe("s", bell)
    assert not wakeups.following("s")


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize("iterate", [False, True])
def test_a_response_body_detaches_its_reader_when_closed_even_if_never_iterated(iterate):
    clock = Clock()
    log = MemoryEventLog(ttl_s=60, max_events=10, clock=clock)
    log.create("s", None, b"id: s:0\nevent: start\ndata: {}\n\n")
    body = follow(log, "s", -1, heartbeat_s=15)
    if iterate:
        assert next(body) == [b"id: s:0\nevent: start\ndata: {}\n\n"]
    clock.now += 5
    assert log.control("s").unattended_s == 0.0  # attached
    body.close()
    clock.now += 5
    assert log.control("s").unattended_s == pytest.approx(5.0)


def test_readers_are_woken_in_the_order_their_streams_changed():
    wakeups = Wakeups(cooperative=True, tick_s=60)
    names = [f"stream-{i}" for i in (7, 3, 19, 0, 12, 5, 16, 1, 9, 14, 2, 18, 6, 11, 4, 17, 8, 13, 10, 15)]
    woken = []

    def wait(name, bell):
        bell.wait(time.monotonic() + 30)
        woken.append(name)

    waiters = [gevent.spawn(wait, name, wakeups.subscribe(name)) for name in sorted(names)]
    gevent.sleep(0)  # every reader is waiting
    for name in names:
        wakeups.changed(name)
    assert gevent.joinall(waiters, timeout=TEST_TIMEOUT_S) and len(woken) == len(names)
    assert woken == names

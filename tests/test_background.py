"""sse_chat.background under gevent: a stream's producer starts on the loop's next
turn at the latest, not behind every callback queued before it (``spawn``), and
in the very turn of the request that starts it (``Runners.spawn``); ``Runners``
keeps greenlets between works, each work in a context of its own."""

from __future__ import annotations

import contextvars
import gc
import itertools
import threading
import time
import weakref
from collections.abc import Callable, Iterator

import gevent
import pytest
from gevent.event import Event

from sse_chat import background

BACKLOG = 200  # callbacks queued before the spawn: a burst of accepted connections' handlers
HANDLER_S = 0.001  # CPU each of them takes


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.fixture
def under_gevent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(background, "running_under_gevent", lambda: True)


def _waiting_runner(runners: background.Runners) -> gevent.Greenlet:
    """The greenlet of the one runner that waits in ``runners``."""
    seen: list[gevent.Greenlet] = []
    _run(runners.spawn, lambda: seen.append(gevent.getcurrent()))
    assert runners.waiting == 1
    return seen[0]


@pytest.fixture(params=["spawn", "new runner", "waiting runner"])
def start(request: pytest.FixtureRequest, under_gevent: None) -> Callable[[Callable[[], None], str], None]:
    """Each way the service starts a producer."""
    if request.param == "spawn":
        return background.spawn
    if request.param == "new runner":
        return background.Runners().spawn
    runners = background.Runners()
    _waiting_runner(runners)
    return runners.spawn


def _run(start: Callable[[Callable[[], None], str], None], target: Callable[[], object]) -> None:
    """``start`` ``target`` and wait until it has returned."""
    done = Event()
    start(lambda: (target(), done.set()), "test")
    assert done.wait(timeout=30)
    gevent.sleep(0)


def test_spawned_work_starts_before_a_backlog_of_queued_callbacks_has_run(
        start: Callable[[Callable[[], None], str], None]) -> None:
    ran: list[object] = []
    all_ran = Event()

    def note(item: object) -> None:
        ran.append(item)
        if len(ran) == BACKLOG + 1:
            all_ran.set()

    def handler(number: int) -> None:
        _busy(HANDLER_S)
        note(number)

    loop = gevent.get_hub().loop
    for number in range(BACKLOG):
        loop.run_callback(handler, number)
    start(lambda: note("spawned"), "test")
    assert all_ran.wait(timeout=30)
    # gevent.spawn would queue it behind all 200; a timer runs once a turn's slice of callbacks is done
    assert ran.index("spawned") < BACKLOG


def test_spawned_work_runs_once_and_spawn_returns_before_it(start: Callable[[Callable[[], None], str], None]) -> None:
    ran: list[str] = []
    finished = Event()

    def target() -> None:
        ran.append("ran")
        finished.set()

    start(target, "test")
    assert ran == []
    assert finished.wait(timeout=30)
    gevent.sleep(0)
    assert ran == ["ran"]


def test_a_runner_runs_the_next_work_in_the_greenlet_of_the_last(under_gevent: None) -> None:
    runners = background.Runners()
    greenlets: list[object] = []
    _run(runners.spawn, lambda: greenlets.append(gevent.getcurrent()))
    _run(runners.spawn, lambda: greenlets.append(gevent.getcurrent()))
    assert greenlets[0] is greenlets[1]
    assert runners.waiting == 1


def test_each_work_runs_in_a_context_of_its_own(under_gevent: None) -> None:
    runners = background.Runners()
    variable: contextvars.ContextVar[str] = contextvars.ContextVar("variable", default="unset")
    seen: list[str] = []
    _run(runners.spawn, lambda: variable.set("the first work's"))
    _run(runners.spawn, lambda: seen.append(variable.get()))
    assert seen == ["unset"]


def test_a_failing_work_is_reported_and_its_runner_goes_on(under_gevent: None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    reported: list[type] = []
    monkeypatch.setattr(gevent.get_hub(), "handle_error", lambda context, kind, value, tb: reported.append(kind))
    runners = background.Runners()
    failed = Event()

    def fail() -> None:
        failed.set()
        raise ValueError("a bug in a work")

    runners.spawn(fail, "failing")
    assert failed.wait(timeout=30)
    gevent.sleep(0)
    assert reported == [ValueError]
    assert runners.waiting == 1
    ran: list[str] = []
    _run(runners.spawn, lambda: ran.append("next"))
    assert ran == ["next"]


def test_at_most_keep_runners_wait(under_gevent: None) -> None:
    runners = background.Runners(keep=2)
    release, all_started, all_finished = Event(), Event(), Event()
    started: list[int] = []
    finished: list[int] = []

    def held() -> None:
        started.append(1)
        if len(started) == 5:
            all_started.set()
        release.wait()
        finished.append(1)
        if len(finished) == 5:
            all_finished.set()

    for _ in range(5):  # five at once: five runners
        runners.spawn(held, "held")
    assert all_started.wait(timeout=30)
    assert runners.waiting == 0
    release.set()
    assert all_finished.wait(timeout=30)
    gevent.sleep(0)  # each runner either waits for work or ends
    assert runners.waiting == 2


def test_without_gevent_a_work_runs_in_a_named_daemon_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(background, "running_under_gevent", lambda: False)
    seen: list[tuple[str, bool]] = []
    done = threading.Event()

    def target() -> None:
        seen.append((threading.current_thread().name, threading.current_thread().daemon))
        done.set()

    background.Runners().spawn(target, "producer-abc")
    assert done.wait(timeout=30)
    assert seen == [("producer-abc", True)]


def test_a_runner_killed_while_waiting_is_handed_nothing(under_gevent: None) -> None:
    runners = background.Runners()
    _waiting_runner(runners).kill(block=True)
    assert runners.waiting == 0
    ran: list[str] = []
    _run(runners.spawn, lambda: ran.append("next"))
    assert ran == ["next"]


def test_a_work_handed_over_while_the_waiting_runner_is_killed_runs_once(under_gevent: None) -> None:
    runners = background.Runners()
    runner = _waiting_runner(runners)
    ran: list[object] = []
    done = Event()
    runners.spawn(lambda: (ran.append(gevent.getcurrent()), done.set()), "handed")
    runner.kill(block=True)
    assert done.wait(timeout=30)
    gevent.sleep(0)
    assert len(ran) == 1
    assert runner.dead


@pytest.fixture
def turns() -> Iterator[list[int]]:
    """The event loop's turns so far (``turns[0]``), counted by a prepare watcher,
    which libev runs once a turn, before it polls."""
    count = [0]
    prepare = gevent.get_hub().loop.prepare()
    prepare.start(lambda: count.__setitem__(0, count[0] + 1))
    yield count
    prepare.stop()


@pytest.mark.parametrize("runner", ["new runner", "waiting runner"])
def test_a_runners_work_starts_in_the_turn_that_handed_it_over_once_the_handing_greenlet_waits(
        under_gevent: None, turns: list[int], runner: str) -> None:
    runners = background.Runners()
    if runner == "waiting runner":
        _waiting_runner(runners)
    seen: list[tuple[str, int]] = []
    done = Event()

    def request() -> None:  # a request's greenlet, started on a timer as the worker starts them
        runners.spawn(lambda: (seen.append(("producer", turns[0])), done.set()), "test")
        seen.append(("request waits", turns[0]))
        done.wait()

    gevent.Greenlet(request).start_later(0)
    assert done.wait(timeout=30)
    (first, handed_in), (second, started_in) = seen
    assert (first, second) == ("request waits", "producer")
    assert started_in == handed_in  # a zero-second timer would start it in the next turn


class _Work:
    """A work whose lifetime a test can follow (a weak reference)."""

    def __call__(self) -> None:
        pass


def test_a_runner_keeps_no_reference_to_the_works_it_ran(under_gevent: None) -> None:
    runners = background.Runners()
    first, second = _Work(), _Work()
    references = [weakref.ref(first), weakref.ref(second)]
    _run(runners.spawn, first)  # a new runner's first work: an argument of its greenlet
    _run(runners.spawn, second)  # the next: handed over while it waited
    del first, second
    gc.collect()
    assert runners.waiting == 1
    assert [reference() for reference in references] == [None, None]


def test_every_calls_again_and_again_and_goes_on_after_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[float] = []
    third = threading.Event()

    def callback() -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("the first call fails")
        if len(calls) == 3:
            third.set()

    background.every(0.01, callback, "test-every")
    assert third.wait(timeout=30)
    assert "test-every failed" in caplog.text and "the first call fails" in caplog.text
    assert all(later - earlier >= 0.009 for earlier, later in itertools.pairwise(calls))


def test_works_handed_over_in_one_turn_start_in_the_order_they_were_handed(under_gevent: None) -> None:
    runners = background.Runners()
    _waiting_runner(runners)  # one waiting runner, the others new
    started: list[int] = []
    all_started = Event()

    def handler() -> None:  # a turn that starts several streams, as FairStartPool's does
        for work in range(5):
            runners.spawn(lambda work=work: (started.append(work), len(started) == 5 and all_started.set()), "test")

    gevent.get_hub().loop.timer(0).start(lambda: gevent.Greenlet(handler).switch())
    assert all_started.wait(timeout=30)
    assert started == [0, 1, 2, 3, 4]  # libev would run one fed watcher per work last first


def test_what_a_work_queues_runs_at_once_when_a_greenlet_woken_by_a_callback_handed_it_over(under_gevent: None) -> None:
    # gevent runs queued callbacks (an Event.set queues one) in its prepare watcher, before it polls; a
    # greenlet a callback woke hands its work over after that watcher ran in the turn
    runners = background.Runners()
    woken = Event()
    gevent.get_hub().loop.run_callback(woken.set)
    woken.wait()  # this greenlet now runs in gevent's callbacks
    finished = Event()
    runners.spawn(finished.set, "test")
    # with no I/O and no timer due, the loop's poll would block for the whole timeout
    assert finished.wait(timeout=5)

"""sse_chat.background.spawn under gevent: a stream's producer starts on the loop's
next turn, not behind every callback queued before it."""

from __future__ import annotations

import time

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


def test_spawned_work_starts_before_a_backlog_of_queued_callbacks_has_run(under_gevent: None) -> None:
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
    background.spawn(lambda: note("spawned"), "test")
    assert all_ran.wait(timeout=30)
    # gevent.spawn would queue it behind all 200; a timer runs once a turn's slice of callbacks is done
    assert ran.index("spawned") < BACKLOG


def test_spawned_work_runs_once_and_spawn_returns_before_it(under_gevent: None) -> None:
    ran: list[str] = []
    finished = Event()

    def target() -> None:
        ran.append("ran")
        finished.set()

    background.spawn(target, "test")
    assert ran == []
    assert finished.wait(timeout=30)
    gevent.sleep(0)
    assert ran == ["ran"]

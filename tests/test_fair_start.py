"""sse_chat/gunicorn_worker.py's FairStartPool: a new connection's handler starts
among the event loop's timers, so a backlog of callbacks does not hold it back,
and a burst of them starts over several turns, in order, so that it does not
stretch one turn for the streams already running."""

from __future__ import annotations

import sys
import time
from typing import Any, ClassVar

import gevent
import pytest
from gevent.pool import Pool, PoolFull
from gunicorn.config import Config
from gunicorn.workers import ggevent

from sse_chat.gunicorn_worker import STARTS_PER_TURN, FairStartPool, Worker, fair_connection_starts

#: Callbacks queued ahead of the new handler, and how long each keeps the loop
#: (seconds): together far longer than the callbacks a loop turn runs before its
#: timers (until SWITCH_INTERVAL_S has passed, checked every 50 callbacks).
BACKLOG = 200
CALLBACK_S = 0.0002
SWITCH_INTERVAL_S = 0.005  # Python's default, pinned: gevent reads it each turn


@pytest.fixture(autouse=True)
def default_switch_interval():
    before = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    yield
    sys.setswitchinterval(before)


def _callbacks_run_before_the_handler(pool: Pool) -> int:
    """Queue BACKLOG busy callbacks, then start a handler through ``pool``; how many
    of the callbacks ran before the handler did."""
    loop = gevent.get_hub().loop
    ran: list[int] = []
    handler_saw: list[int] = []

    def busy(index: int) -> None:
        until = time.perf_counter() + CALLBACK_S
        while time.perf_counter() < until:
            pass
        ran.append(index)

    for index in range(BACKLOG):
        loop.run_callback(busy, index)
    pool.spawn(lambda: handler_saw.append(len(ran)))
    pool.join()
    while len(ran) < BACKLOG:
        gevent.sleep(0)
    return handler_saw[0]


def test_gevents_own_pool_starts_a_handler_behind_every_queued_callback():
    assert _callbacks_run_before_the_handler(Pool(10)) == BACKLOG  # why FairStartPool exists


def test_a_fair_start_pools_handler_starts_within_the_next_loop_turn():
    assert _callbacks_run_before_the_handler(FairStartPool(10)) < BACKLOG // 2


def test_a_burst_of_handlers_starts_at_most_starts_per_turn_a_loop_turn_in_the_order_accepted():
    turns = [0]
    prepare = gevent.get_hub().loop.prepare()  # libev runs it once a turn, before it polls
    prepare.start(lambda: turns.__setitem__(0, turns[0] + 1))
    pool = FairStartPool(1000)
    started: list[tuple[int, int]] = []  # (handler, turn)
    burst = 2 * STARTS_PER_TURN + 7
    try:
        for handler in range(burst):
            pool.spawn(lambda handler=handler: started.append((handler, turns[0])))
        pool.join()
    finally:
        prepare.stop()
    assert [handler for handler, _ in started] == list(range(burst))
    per_turn = [[turn for _, turn in started].count(turn) for turn in sorted({turn for _, turn in started})]
    assert per_turn == [STARTS_PER_TURN, STARTS_PER_TURN, 7]


def test_a_fair_start_pool_still_bounds_its_connections():
    pool = FairStartPool(1)
    pool.spawn(gevent.sleep, 0.01)
    assert pool.full()
    with pytest.raises(PoolFull):  # gevent's Pool: waits for room, here 1 ms
        pool.start(gevent.Greenlet(lambda: None), timeout=0.001)
    pool.join()
    assert pool.free_count() == 1


def test_a_handler_killed_before_its_turn_never_runs_and_frees_its_place():
    pool = FairStartPool(2)
    ran: list[bool] = []
    greenlet = gevent.Greenlet(lambda: ran.append(True))
    pool.start(greenlet)
    assert pool.free_count() == 1  # counted before it runs
    greenlet.kill()
    pool.join(timeout=1)
    assert ran == []
    assert pool.free_count() == 2


class _RecordingServer:
    """Stands in for gevent's StreamServer in gunicorn's loop: keeps the pool
    gunicorn gives it (``spawn=``) and serves nothing."""

    made: ClassVar[list[_RecordingServer]] = []

    def __init__(self, listener: Any, handle: Any = None, spawn: Any = None, **kwargs: Any) -> None:
        self.pool = spawn
        self.made.append(self)

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Listener:
    def setblocking(self, flag: int) -> None:
        pass


def test_gunicorns_loop_in_the_worker_serves_with_fair_start_pools(monkeypatch):
    monkeypatch.setattr(ggevent, "StreamServer", _RecordingServer)
    monkeypatch.setattr(_RecordingServer, "made", [])
    worker = object.__new__(Worker)  # gunicorn's arbiter builds it; run comes after the fork
    worker.cfg = Config()
    worker.sockets = [_Listener(), _Listener()]
    worker.worker_connections = 7
    worker.alive = False  # gunicorn's loop: start the servers, then stop at once
    worker.run()  # GeventWorker.run, unpatched
    assert [type(server.pool) for server in _RecordingServer.made] == [FairStartPool, FairStartPool]
    assert [server.pool.size for server in _RecordingServer.made] == [7, 7]
    assert ggevent.Pool is Pool  # only for gunicorn's loop


def test_fair_connection_starts_puts_gevents_pool_back_after_a_failure():
    with pytest.raises(RuntimeError), fair_connection_starts():
        assert ggevent.Pool is FairStartPool
        raise RuntimeError("gunicorn's loop failed")
    assert ggevent.Pool is Pool

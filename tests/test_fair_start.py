"""sse_chat/gunicorn_worker.py's FairStartPool: a new connection's handler starts
among the event loop's timers, so a backlog of callbacks does not hold it back."""

from __future__ import annotations

import time

import gevent
import pytest
from gevent.pool import Pool, PoolFull
from gunicorn.config import Config
from gunicorn.workers import ggevent
from gunicorn.workers.ggevent import GeventWorker

from sse_chat.gunicorn_worker import FairStartPool, Worker, fair_connection_starts

#: Callbacks queued ahead of the new handler, and how long each keeps the loop
#: (seconds): together far longer than the callbacks a loop turn runs before its
#: timers (sys.getswitchinterval(), 5 ms, checked every 50 callbacks).
BACKLOG = 200
CALLBACK_S = 0.0002


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


def test_a_fair_start_pool_still_bounds_its_connections():
    pool = FairStartPool(1)
    pool.spawn(gevent.sleep, 0.01)
    assert pool.full()
    with pytest.raises(PoolFull):  # gevent's Pool: waits for room, here 1 ms
        pool.start(gevent.Greenlet(lambda: None), timeout=0.001)
    pool.join()
    assert pool.free_count() == 1


def test_the_worker_runs_gunicorns_loop_with_fair_start_pools(monkeypatch):
    pools_made = []
    monkeypatch.setattr(GeventWorker, "run", lambda self: pools_made.append(ggevent.Pool))
    worker = object.__new__(Worker)  # gunicorn's arbiter builds it; run comes after the fork
    worker.cfg = Config()
    worker.run()
    assert pools_made == [FairStartPool]
    assert ggevent.Pool is Pool  # only for gunicorn's loop


def test_fair_connection_starts_puts_gevents_pool_back_after_a_failure():
    with pytest.raises(RuntimeError), fair_connection_starts():
        assert ggevent.Pool is FairStartPool
        raise RuntimeError("gunicorn's loop failed")
    assert ggevent.Pool is Pool

"""Running work in the background: a greenlet under gevent, else a daemon thread;
and blocking work in a real thread (:func:`run_blocking`).

gunicorn's gevent worker patches :mod:`threading`, so a ``threading.Thread`` is a
greenlet there too, but ``Thread.start()`` then waits until the new greenlet has
run once (its "started" event): under load that holds the request that started a
stream for a whole turn of the event loop. ``gevent.spawn`` returns at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import gevent
from gevent import monkey

T = TypeVar("T")


def running_under_gevent() -> bool:
    """True when gevent has patched :mod:`threading` (gunicorn's gevent worker)."""
    return bool(monkey.is_module_patched("threading"))


def spawn(target: Callable[[], None], name: str) -> None:
    """Run ``target()`` in the background and return at once, without waiting for
    it to begin: a greenlet under gevent, else a daemon thread named ``name``.

    Under gevent the greenlet starts on a zero-second timer, among the timers of
    the loop's next turn, not at the back of its callback queue as
    ``gevent.spawn`` would: an accepted connection's handler is such a callback,
    and a loop turn runs at least 50 of them (``CALLBACK_CHECK_COUNT``) before its
    timers, so under a burst of new connections a stream's producer started that
    way waited behind every handler accepted before it (with 3,000 streams
    arriving in a second on one core, 680 ms at the median between a stream's
    ``start`` event and its first token), while running streams' tokens, on
    timers, went on.
    """
    if running_under_gevent():
        gevent.spawn_later(0, target)
    else:
        threading.Thread(target=target, name=name, daemon=True).start()


def run_blocking(function: Callable[[], T], timeout_s: float) -> T:
    """Run ``function()`` in a real OS thread and return what it returns, waiting
    at most ``timeout_s`` seconds: gevent's threadpool under gevent (the event
    loop and every other greenlet go on meanwhile), else a daemon thread.

    Raises:
        TimeoutError: ``function`` did not return in time; it goes on running in
            its thread (Python cannot stop a thread), and its result is dropped.
        Exception: what ``function`` raised.
    """
    if running_under_gevent():
        return _result_within(gevent.get_hub().threadpool.spawn(function), timeout_s)
    return _in_thread(function, timeout_s)


def call_within(function: Callable[[], T], timeout_s: float) -> T:
    """Run ``function()`` in the background (a greenlet under gevent, else a
    daemon thread) and return what it returns, waiting at most ``timeout_s``
    seconds; unlike :func:`run_blocking` it may use gevent's sockets (a Redis
    client).

    Raises:
        TimeoutError: ``function`` did not return in time; it goes on, and its
            result is dropped.
        Exception: what ``function`` raised.
    """
    if running_under_gevent():
        return _result_within(gevent.spawn(function), timeout_s)
    return _in_thread(function, timeout_s)


def _result_within(result: Any, timeout_s: float) -> Any:
    """What gevent's ``result`` (a greenlet, or a threadpool's result) gives
    within ``timeout_s`` seconds.

    Raises:
        TimeoutError: it gave nothing in time.
        Exception: what its function raised.
    """
    try:
        return result.get(timeout=timeout_s)
    except gevent.Timeout:
        raise TimeoutError(f"no result within {timeout_s:g} s") from None


def _in_thread(function: Callable[[], T], timeout_s: float) -> T:
    outcome: list[tuple[bool, object]] = []

    def target() -> None:
        try:
            outcome.append((True, function()))
        except BaseException as exc:  # handed to the caller below
            outcome.append((False, exc))

    thread = threading.Thread(target=target, name="blocking-call", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        raise TimeoutError(f"no result within {timeout_s:g} s")
    returned, value = outcome[0]
    if not returned:
        raise value  # type: ignore[misc]
    return value  # type: ignore[return-value]

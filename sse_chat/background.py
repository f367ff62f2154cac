"""Running work in the background: a greenlet under gevent, else a daemon thread;
and blocking work in a real thread (:func:`run_blocking`).

gunicorn's gevent worker patches :mod:`threading`, so a ``threading.Thread`` is a
greenlet there too, but ``Thread.start()`` then waits until the new greenlet has
run once (its "started" event): under load that holds the request that started a
stream for a whole turn of the event loop. ``gevent.spawn`` returns at once.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import gevent
from gevent import getcurrent, monkey
from gevent.hub import Waiter, get_hub

T = TypeVar("T")

log = logging.getLogger(__name__)


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


def every(interval_s: float, callback: Callable[[], None], name: str) -> None:
    """Call ``callback()`` every ``interval_s`` seconds for the rest of the
    process's life, in the background (:func:`spawn`: a greenlet under gevent,
    else a daemon thread named ``name``). A call that fails is logged; the next
    one comes all the same."""

    def repeat() -> None:
        while True:
            time.sleep(interval_s)  # gevent's sleep under gevent (it patches time)
            try:
                callback()
            except Exception:
                log.exception("%s failed; it runs again in %g s", name, interval_s)

    spawn(repeat, name)


class Runners:
    """Greenlets that, their work done, wait to run the next work handed to
    :meth:`spawn`: :func:`spawn` without a new greenlet each time.

    A new greenlet costs a gevent worker about 14 us of CPU, a greenlet kept
    waiting 0.5 us to start again (measured by a loop of 20,000 starts):
    CPython 3.11 gives each greenlet a frame stack of its own, mapped (``mmap``,
    16 KiB) when it first runs and unmapped when it dies, with the page faults
    between, and gevent's ``Greenlet`` adds its own bookkeeping. Starting a
    stream's producer paid it once a stream.

    Each work runs in a new :class:`contextvars.Context`, as in a new greenlet;
    what is local to the greenlet itself (``gevent.local``, and ``threading.local``
    under gevent's patching) is the runner's, and seen by the work it runs next:
    work handed here keeps nothing there. A runner keeps no reference to a work
    it has run. An :class:`Exception` a work raises is reported as gevent reports
    a greenlet's (``hub.handle_error``: printed to stderr) and the runner goes on;
    any other exception ends the runner, as it would end a greenlet. At most
    ``keep`` runners wait; one finding that many waiting ends with its work. A
    work handed to a runner that ended before it could take it (killed) runs in
    a new one. Call :meth:`spawn` from the event loop's thread. Without gevent,
    :meth:`spawn` is :func:`spawn`. Made once by the app factory
    (``Services.runners``).
    """

    def __init__(self, keep: int = 256) -> None:
        self._keep = keep
        self._waiting: list[Waiter] = []

    @property
    def waiting(self) -> int:
        """How many runners wait for work."""
        return len(self._waiting)

    def spawn(self, target: Callable[[], None], name: str) -> None:
        """Run ``target()`` in the background and return at once, as :func:`spawn`
        does (on the loop's next turn, on a zero-second timer), in a waiting runner
        when there is one, else in a new one."""
        if not running_under_gevent():
            spawn(target, name)
        elif self._waiting:
            get_hub().loop.timer(0).start(self._hand, self._waiting.pop(), target)
        else:
            gevent.spawn_later(0, self._run, [target])

    def _hand(self, waiter: Waiter, target: Callable[[], None]) -> None:
        """In the hub: give ``target`` to the runner waiting on ``waiter``, or to a
        new runner if that one has ended meanwhile."""
        if waiter.greenlet is None:
            gevent.spawn(self._run, [target])
        else:
            waiter.switch(target)

    def _run(self, first: list[Callable[[], None]]) -> None:
        """Run the work in ``first`` (a list, emptied at once: gevent keeps a
        greenlet's arguments until it ends), then each work handed to it next."""
        target: Callable[[], None] | None = first.pop()
        while target is not None:
            try:
                contextvars.Context().run(target)
            except Exception:  # reported as gevent reports a greenlet's failure; the runner goes on
                get_hub().handle_error(getcurrent(), *sys.exc_info())
            target = None  # not kept alive while waiting
            target = self._next_work()

    def _next_work(self) -> Callable[[], None] | None:
        """The next work handed to this runner (it waits for it), or ``None``
        when ``keep`` runners wait already."""
        if len(self._waiting) >= self._keep:
            return None
        waiter = Waiter()
        self._waiting.append(waiter)
        try:
            work: Callable[[], None] = waiter.get()
        except BaseException:  # killed while waiting: hand it nothing more (unless _hand has it already)
            with contextlib.suppress(ValueError):
                self._waiting.remove(waiter)
            raise
        return work


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

"""Running work in the background: a greenlet under gevent, else a daemon thread;
and blocking work in a real thread (:func:`run_blocking`).

gunicorn's gevent worker patches :mod:`threading`, so a ``threading.Thread`` is a
greenlet there too, but ``Thread.start()`` then waits until the new greenlet has
run once (its "started" event): under load that holds the request that started a
stream for a whole turn of the event loop. ``gevent.spawn`` returns at once.
"""

from __future__ import annotations

import collections
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
#: libev's ``EV_TIMER`` (ev.h): the event a timer fed to the loop reports.
_EV_TIMER = 0x100

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


def call_in_this_turn(callback: Callable[..., None], *args: Any) -> None:
    """Have gevent's hub call ``callback(*args)`` in the event loop's current turn,
    once the calling greenlet waits and the hub is done with the watcher it was
    running (call it from the loop's thread): before the timers and I/O that came
    due in this turn and still wait for theirs, where a zero-second timer would
    wait for the loop's next turn, after a poll.

    libev invokes the watchers pending in a turn last-in, first-out, and a watcher
    fed to it (``ev_feed_event``, gevent's ``watcher.feed``) is pending at once
    (libev's manual: "ev_feed_event"). Only gevent's default loop, its compiled
    libev one (``gevent.libev.corecext``), feeds a watcher with its callback;
    the CFFI one (PyPy, ``GEVENT_LOOP=libev-cffi``) would drop it and the libuv
    one cannot, and with them ``callback`` waits for the next turn on a
    zero-second timer. ``callback`` runs in the hub: it must not block. Two calls
    in one pass of the hub run last first: hand work over in order through one
    call (:meth:`Runners.spawn` queues it).
    """
    loop = get_hub().loop
    if type(loop).__module__ == "gevent.libev.corecext":
        loop.timer(0).feed(_EV_TIMER, _call_then_poll_without_blocking, loop, callback, args)
    else:
        loop.timer(0).start(callback, *args)


def _call_then_poll_without_blocking(loop: Any, callback: Callable[..., None], args: tuple[Any, ...]) -> None:
    """``callback(*args)``, then a zero-second timer, so that the loop's next poll
    does not block: gevent runs the callbacks queued meanwhile (``run_callback``,
    as an ``Event.set`` queues one) before it polls, in its prepare watcher,
    which may have run already in this turn (a greenlet woken by a callback fed
    this watcher); they would then wait until some I/O or timer came."""
    try:
        callback(*args)
    finally:
        loop.timer(0).start(_nothing)


def _nothing() -> None:
    """A timer's callback that does nothing: the timer only ends a poll."""


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
    ``keep`` runners wait; one finding that many waiting ends with its work (a
    runner killed while it waits leaves the waiting ones; one whose kill is still
    on its way may be handed a work first, which then meets the kill at its first
    wait: nothing in the service kills runners).

    Under gevent a work starts in the turn of the event loop that handed it over,
    as soon as the handing greenlet waits (:func:`call_in_this_turn`): a request
    that starts a stream writes its ``start`` event and waits, and the stream's
    producer begins right after it, not on the loop's next turn. On a busy core a
    turn takes 100 ms or more, and the model's first pause (the fake model's, or
    an upstream's time to the first token) then began a turn late. Call
    :meth:`spawn` from the event loop's thread. Without gevent, :meth:`spawn` is
    :func:`spawn`. Made once by the app factory (``Services.runners``).
    """

    def __init__(self, keep: int = 256) -> None:
        self._keep = keep
        self._waiting: list[Waiter] = []
        self._handed: collections.deque[Callable[[], None]] = collections.deque()  # not yet started, in order
        self._starting = False  # a call_in_this_turn of _start_handed is pending or running

    @property
    def waiting(self) -> int:
        """How many runners wait for work."""
        return len(self._waiting)

    def spawn(self, target: Callable[[], None], name: str) -> None:
        """Run ``target()`` in the background and return at once, in a waiting
        runner when there is one, else in a new one: under gevent, in this turn of
        the event loop, as soon as the calling greenlet waits
        (:func:`call_in_this_turn`); else as :func:`spawn` does."""
        if not running_under_gevent():
            spawn(target, name)
            return
        self._handed.append(target)
        if not self._starting:
            self._starting = True
            call_in_this_turn(self._start_handed)

    def _start_handed(self) -> None:
        """In the hub: start the works handed over, in the order they were
        (``call_in_this_turn`` would run one call per work last first), those
        handed over meanwhile too."""
        try:
            while self._handed:
                self._start(self._handed.popleft())
        finally:
            self._starting = False

    def _start(self, target: Callable[[], None]) -> None:
        """In the hub: give ``target`` to a waiting runner, or to a new one, which
        runs it now (gevent's ``Greenlet.start`` schedules that same ``switch``)."""
        if self._waiting:
            self._waiting.pop().switch(target)
        else:
            gevent.Greenlet(self._run, [target]).switch()

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
        except BaseException:  # killed while waiting: hand it nothing more
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

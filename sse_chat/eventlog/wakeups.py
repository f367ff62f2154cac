"""Waking readers when their stream changes, without a timer per wait.

A reader holds a :class:`Bell` and sleeps on it; the event log rings the bells of a
stream when it changes (:meth:`Wakeups.changed`). Two ways of ringing:

* **Cooperative** (gevent, as under gunicorn's gevent worker): a change only marks
  the stream; one zero-second timer per worker rings every marked stream's bells
  at the next turn of the event loop. Producers that write many events within one
  turn thus wake their readers once, and each reader sends what gathered in one
  write: the coalescing comes from the loop's own rhythm, not from a delay, so a
  lone token is sent within the same turn or the next. Deadlines (heartbeats) are
  kept by one ticker per worker instead of a timeout per wait.
* **Threads** (the CLI's in-process server, tests): bells are
  :class:`threading.Event` objects, rung at once, and waits time out by themselves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event

from ..background import running_under_gevent

_NEVER = float("inf")


class Bell:
    """One reader's wake-up call: :meth:`ring` from anywhere, :meth:`wait` by its reader.

    A ring that comes while the reader is not waiting is kept, so a change made
    between the reader's last look and its wait is never missed.
    """

    __slots__ = ("_event", "_cooperative", "_clock", "due", "deliver", "expects")

    def __init__(self, event: Any, cooperative: bool, clock: Callable[[], float]) -> None:
        self._event = event
        self._cooperative = cooperative
        self._clock = clock
        #: Monotonic seconds at which a waiting reader wants to wake anyway
        #: (``inf``: never); kept by the ticker under gevent.
        self.due = _NEVER
        #: Under gevent, while its reader waits, what takes a new event off the
        #: reader's hands (:meth:`Wakeups.changed`), the event numbered
        #: :attr:`expects` only: ``deliver(frame, last)`` returns True when the
        #: event reached the reader's client (:attr:`expects` then moves past
        #: it), False to wake the reader; ``last``: the stream's terminal event.
        self.deliver: Callable[[bytes, bool], bool] | None = None
        #: The number (seq) of the next event the waiting reader has not had.
        self.expects = 0

    @property
    def cooperative(self) -> bool:
        """True under gevent: the bell is rung from the same thread as its reader."""
        return self._cooperative

    def ring(self) -> None:
        self._event.set()

    def wait(self, deadline: float) -> None:
        """Block until the bell rings or the monotonic clock reaches ``deadline``
        (seconds); consumes the ring. Under gevent the ticker keeps the deadline
        (no timer per wait); with threads the wait times out by itself."""
        if self._cooperative:
            self.due = deadline
            try:
                self._event.wait()
            finally:
                self.due = _NEVER
        else:
            self._event.wait(max(0.0, deadline - self._clock()))
        self._event.clear()


class Wakeups:
    """The bells of the readers of one process, by stream.

    Args:
        cooperative: ring at the next event-loop turn with one ticker (gevent);
            ``None`` picks it when gevent has patched :mod:`threading`.
        tick_s: under gevent, how often (seconds) the ticker rings the bells whose
            deadline passed: a deadline is met at most this late.
        clock: monotonic clock, seconds.
    """

    def __init__(self, *, cooperative: bool | None = None, tick_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._cooperative = running_under_gevent() if cooperative is None else cooperative
        self._tick_s = tick_s
        self._clock = clock
        # Each stream's bells as a tuple, replaced (never changed) when a reader comes
        # or goes: iterated once per event, and safe to iterate while threads subscribe.
        self._bells: dict[str, tuple[Bell, ...]] = {}
        self._changed: dict[str, None] = {}  # in the order they changed: readers are served first come, first served
        self._flush_timer: Any = None
        self._ticker: Any = None
        self._subscriptions_lock = threading.Lock()

    def subscribe(self, stream_id: str) -> Bell:
        """A new bell, rung whenever ``stream_id`` changes, until :meth:`unsubscribe`."""
        event = gevent.event.Event() if self._cooperative else threading.Event()
        bell = Bell(event, self._cooperative, self._clock)
        if self._cooperative:
            self._start_ticker()
        with self._subscriptions_lock:
            self._bells[stream_id] = (*self._bells.get(stream_id, ()), bell)
        return bell

    def unsubscribe(self, stream_id: str, bell: Bell) -> None:
        with self._subscriptions_lock:
            bells = self._bells.get(stream_id)
            if bells is not None and bell in bells:
                others = tuple(other for other in bells if other is not bell)
                if others:
                    self._bells[stream_id] = others
                else:
                    del self._bells[stream_id]

    def following(self, stream_id: str) -> bool:
        """True while a reader of this process holds a bell for ``stream_id``."""
        return stream_id in self._bells

    def changed(self, stream_id: str, seq: int = -1, frame: bytes | None = None, *, last: bool = False) -> None:
        """``stream_id`` has new events (or ended): ring its readers' bells, at the
        next turn of the event loop under gevent, at once with threads.

        With ``frame`` (the new event ``seq``, the only one since the last call)
        each waiting reader's :attr:`Bell.deliver` is offered it first, when it is
        the event that reader :attr:`~Bell.expects`; the bells are rung only when
        one of them does not take it. After the stream's
        ``last`` event (its terminal one) the bells are rung at once, taken or
        not: nothing can follow it to share the wake-up, and each reader must
        end its response."""
        bells = self._bells.get(stream_id)
        if bells is None:
            return
        if frame is not None:
            for bell in bells:
                deliver = bell.deliver
                if deliver is None or seq != bell.expects or not deliver(frame, last):
                    break
                bell.expects = seq + 1
            else:
                if not last:
                    return  # every reader's client has it
        if last or not self._cooperative:
            self._ring(stream_id)
            return
        if not self._changed:
            if self._flush_timer is None:
                self._flush_timer = gevent.get_hub().loop.timer(0.0)
            self._flush_timer.start(self._flush)
        self._changed[stream_id] = None

    def ring_all(self) -> None:
        """Wake every reader now (a graceful stop began: they must look)."""
        for bells in list(self._bells.values()):
            for bell in bells:
                bell.ring()

    def _flush(self) -> None:
        changed, self._changed = self._changed, {}
        for stream_id in changed:
            self._ring(stream_id)

    def _ring(self, stream_id: str) -> None:
        for bell in self._bells.get(stream_id, ()):
            bell.ring()

    def _start_ticker(self) -> None:
        if self._ticker is None or self._ticker.dead:
            self._ticker = gevent.spawn(self._tick_forever)

    def _tick_forever(self) -> None:
        while True:
            gevent.sleep(self._tick_s)
            now = self._clock()
            for bells in list(self._bells.values()):
                for bell in bells:
                    if bell.due <= now:
                        bell.ring()

"""Running work in the background: a greenlet under gevent, else a daemon thread.

gunicorn's gevent worker patches :mod:`threading`, so a ``threading.Thread`` is a
greenlet there too, but ``Thread.start()`` then waits until the new greenlet has
run once (its "started" event): under load that holds the request that started a
stream for a whole turn of the event loop. ``gevent.spawn`` returns at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import gevent
from gevent import monkey


def running_under_gevent() -> bool:
    """True when gevent has patched :mod:`threading` (gunicorn's gevent worker)."""
    return bool(monkey.is_module_patched("threading"))


def spawn(target: Callable[[], None], name: str) -> None:
    """Run ``target()`` in the background and return at once, without waiting for
    it to begin: a greenlet under gevent, else a daemon thread named ``name``."""
    if running_under_gevent():
        gevent.spawn(target)
    else:
        threading.Thread(target=target, name=name, daemon=True).start()

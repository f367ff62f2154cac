"""The objects one application instance shares between requests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from ..access.limits import StreamLimiter
from ..access.sessions import SessionKeys
from ..background import Runners
from ..config import Settings
from ..eventlog import EventLog
from ..metrics import Metrics
from ..models import ModelRegistry
from ..tools.registry import ToolRegistry
from .reader import ReaderSettings


@dataclass(frozen=True)
class Services:
    """Built once by :func:`sse_chat.app.create_app`, stored in
    ``app.extensions["sse_chat"]``."""

    settings: Settings
    event_log: EventLog
    models: ModelRegistry
    limiter: StreamLimiter
    metrics: Metrics
    sessions: SessionKeys
    #: The tools the service runs itself (``SSE_CHAT_TOOLS`` and entry points).
    tools: ToolRegistry = field(default_factory=ToolRegistry)
    #: The greenlets that run producers, kept between streams.
    runners: Runners = field(default_factory=Runners)
    #: Set when the process begins a graceful stop: readers end their responses
    #: (clients reconnect elsewhere) while producers finish.
    draining: threading.Event = field(default_factory=threading.Event)
    @cached_property
    def readers(self) -> ReaderSettings:
        """What every reader shares, handed to :func:`~.reader.read_stream` with
        each response's :class:`~.reader.ReadFrom`: made once from the fields
        above (the event log, ``retry:``, heartbeats, metrics, ``draining``), so
        that it cannot differ from them (``dataclasses.replace`` makes a new
        ``Services``, which makes it again)."""
        return ReaderSettings(self.event_log, self.settings.retry_ms, self.settings.heartbeat_s, self.metrics,
                              self.draining)

    def drain(self, timeout_s: float, notify: Callable[[], None] = lambda: None) -> int:
        """Wait up to ``timeout_s`` seconds for running producers to finish, calling
        ``notify`` (gunicorn's liveness ping) every half second; returns how many
        were still running."""
        self.draining.set()
        deadline = time.monotonic() + timeout_s
        while self.limiter.running and time.monotonic() < deadline:
            notify()
            time.sleep(0.5)
        return self.limiter.running

"""The objects one application instance shares between requests."""

from __future__ import annotations

from dataclasses import dataclass

from .config import Settings
from .eventlog import EventLog
from .limits import StreamLimiter
from .metrics import Metrics
from .models import ModelRegistry


@dataclass(frozen=True)
class Services:
    """Built once by :func:`sse_chat.app.create_app`, stored in
    ``app.extensions["sse_chat"]``."""

    settings: Settings
    event_log: EventLog
    models: ModelRegistry
    limiter: StreamLimiter
    metrics: Metrics

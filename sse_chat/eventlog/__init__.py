"""Event logs: in-memory (default) and Redis Streams (``SSE_CHAT_REDIS_URL``)."""

from .base import (
                   Batch,
                   Claim,
                   Control,
                   Cursor,
                   EventLog,
                   EventLogUnavailable,
                   StreamFull,
                   StreamInfo,
                   StreamLost,
                   StreamNotFound,
)
from .memory import MemoryEventLog

__all__ = [
    "Batch", "Claim", "Control", "Cursor", "EventLog", "EventLogUnavailable", "MemoryEventLog", "StreamFull",
    "StreamInfo", "StreamLost", "StreamNotFound",
]

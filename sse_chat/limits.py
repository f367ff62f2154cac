"""Admission of new streams: bounded in total and per API key."""

from __future__ import annotations

import threading
from collections import Counter

from .errors import ApiError

#: Seconds a refused client is asked to wait (``Retry-After``).
RETRY_AFTER_S = 5


class StreamLimiter:
    """Counts this process's running producers.

    Under gunicorn each worker counts its own, so the service-wide bounds are the
    settings times ``WEB_CONCURRENCY``.

    Args:
        max_total: most running streams.
        max_per_owner: most running streams per API key (an open service, whose
            callers are not told apart, has only the total bound).
    """

    def __init__(self, max_total: int, max_per_owner: int) -> None:
        self._max_total = max_total
        self._max_per_owner = max_per_owner
        self._owners: dict[str, str | None] = {}
        self._counts: Counter[str | None] = Counter()
        self._lock = threading.Lock()

    def admit(self, stream_id: str, owner: str | None) -> None:
        """Count a new stream.

        Raises:
            ApiError: 429 ``too_many_streams`` with ``Retry-After`` past a bound.
        """
        with self._lock:
            if len(self._owners) >= self._max_total:
                raise _too_many(f"the server runs its maximum of {self._max_total} streams (SSE_CHAT_MAX_STREAMS)")
            if owner is not None and self._counts[owner] >= self._max_per_owner:
                raise _too_many(f"this key already runs {self._max_per_owner} streams (SSE_CHAT_MAX_STREAMS_PER_KEY)")
            self._owners[stream_id] = owner
            self._counts[owner] += 1

    def release(self, stream_id: str) -> None:
        """The stream's producer ended."""
        with self._lock:
            if stream_id in self._owners:
                owner = self._owners.pop(stream_id)
                self._counts[owner] -= 1
                if not self._counts[owner]:
                    del self._counts[owner]

    @property
    def running(self) -> int:
        """Streams counted now."""
        return len(self._owners)


def _too_many(reason: str) -> ApiError:
    return ApiError(429, "too_many_streams", f"{reason}; try again in {RETRY_AFTER_S} s",
                    headers=(("Retry-After", str(RETRY_AFTER_S)),))

"""An example server tool shipped with sse-chat (docs/tools.md): offer it with
``SSE_CHAT_TOOLS=sse_chat.tools.example:current_time``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field


def current_time(
    timezone: Annotated[str, Field(description="an IANA time zone, such as Europe/Paris or UTC")] = "UTC",
) -> str:
    """The current date and time in a time zone, as ISO 8601 (e.g.
    2026-12-06T01:30:00+01:00).

    Raises:
        ValueError: ``timezone`` is not a time zone the system knows; the model
            reads the message and may try another.
    """
    try:
        zone = ZoneInfo(timezone.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {timezone!r}; use an IANA name such as Europe/Paris or UTC") from None
    return datetime.now(zone).isoformat(timespec="seconds")

"""Bearer-token access (``SSE_CHAT_API_KEYS``) and stream ownership."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from werkzeug.datastructures import Headers

from .errors import ApiError


def owner_of(key: str) -> str:
    """The stored owner of a stream created with ``key``: a SHA-256 fingerprint
    (16 hex characters), so that the key itself is never stored or logged."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def authenticate(api_keys: frozenset[str], headers: Mapping[str, str] | Headers) -> str | None:
    """Check ``Authorization: Bearer KEY`` against ``api_keys``; returns the caller's
    owner fingerprint, or ``None`` when the service is open (no keys set).

    Raises:
        ApiError: 401 ``unauthorized`` (with ``WWW-Authenticate: Bearer``) when the
            header is missing, malformed or names an unknown key.
    """
    if not api_keys:
        return None
    scheme, _, key = headers.get("Authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() == "bearer" and key and any(hmac.compare_digest(key, known) for known in api_keys):
        return owner_of(key)
    raise ApiError(401, "unauthorized", "send a valid API key as Authorization: Bearer KEY (one of SSE_CHAT_API_KEYS)",
                   headers=(("WWW-Authenticate", 'Bearer realm="sse-chat"'),))

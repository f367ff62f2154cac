"""Bearer-token access (``SSE_CHAT_API_KEYS``) and stream ownership."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from werkzeug.datastructures import Headers

from ..errors import ApiError

#: Sent with every 401 (RFC 6750, 3: the Bearer scheme's challenge).
BEARER_CHALLENGE = ("WWW-Authenticate", 'Bearer realm="sse-chat"')


def owner_of(key: str) -> str:
    """The stored owner of a stream created with ``key``: a SHA-256 fingerprint
    (16 hex characters), so that the key itself is never stored or logged."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def unauthorized(message: str, *headers: tuple[str, str]) -> ApiError:
    """401 ``unauthorized`` with ``WWW-Authenticate: Bearer`` and any extra ``headers``."""
    return ApiError(401, "unauthorized", message, headers=(BEARER_CHALLENGE, *headers))


def bearer_key(api_keys: frozenset[str], headers: Mapping[str, str] | Headers) -> str:
    """The configured key that ``Authorization: Bearer KEY`` names (compared in
    constant time).

    Raises:
        ApiError: 401 ``unauthorized`` (with ``WWW-Authenticate: Bearer``) when the
            header is missing, malformed or names a key not in ``api_keys``.
    """
    scheme, _, key = headers.get("Authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() == "bearer" and key:
        for known in api_keys:
            # bytes: compare_digest refuses str with non-ASCII characters
            if hmac.compare_digest(key.encode("utf-8", "surrogateescape"), known.encode("utf-8", "surrogateescape")):
                return known
    raise unauthorized("send a valid API key as Authorization: Bearer KEY (one of SSE_CHAT_API_KEYS)")


def authenticate(api_keys: frozenset[str], headers: Mapping[str, str] | Headers) -> str | None:
    """Check ``Authorization: Bearer KEY`` against ``api_keys``; returns the caller's
    owner fingerprint, or ``None`` when the service is open (no keys set).

    Raises:
        ApiError: 401 as :func:`bearer_key`.
    """
    if not api_keys:
        return None
    return owner_of(bearer_key(api_keys, headers))

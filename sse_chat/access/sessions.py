"""Browser sessions: a signed cookie that stands for one API key, so that an
``EventSource`` (which cannot send ``Authorization``) can use a keyed service.

Pure functions of their arguments: no Flask globals, no shared state. A cookie's
value is ``FINGERPRINT.TIMESTAMP.SIGNATURE`` (itsdangerous' ``TimestampSigner``):
the key's fingerprint (:func:`sse_chat.access.auth.owner_of`, never the key), the time it
was issued, and an HMAC-SHA256 over both whose signing key is derived from the API
key itself (HMAC of the key over a fixed salt). So any worker on any host that
has the same ``SSE_CHAT_API_KEYS`` can check a cookie, and removing a key from
them ends its sessions: nothing left can verify their signatures.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from itsdangerous import BadSignature, TimestampSigner
from werkzeug.http import dump_cookie

from .auth import owner_of

#: The cookie's name.
SESSION_COOKIE = "sse_chat_session"
#: Seconds a cookie may seem to come from the future: hosts' clocks differ a little,
#: and a cookie issued on one host must pass on another whose clock is behind.
MAX_CLOCK_SKEW_S = 60
#: The salt of the signing key's derivation: a session signature can be checked
#: only as one, never mistaken for another use of the same API key.
_SALT = b"sse-chat.session-cookie.v1"


class _ClockedSigner(TimestampSigner):
    """A ``TimestampSigner`` that reads the time (whole seconds) from ``clock``."""

    def __init__(self, key: str, clock: Callable[[], float]) -> None:
        super().__init__(key, salt=_SALT, key_derivation="hmac", digest_method=hashlib.sha256)
        self._clock = clock

    def get_timestamp(self) -> int:
        return int(self._clock())


class SessionKeys:
    """Issues and checks session cookie values for the keys of ``SSE_CHAT_API_KEYS``.

    Args:
        api_keys: the configured keys.
        ttl_s: how long a session lasts, in whole seconds (``SSE_CHAT_SESSION_TTL_S``).
        clock: the current time, seconds since the epoch (tests pass their own).
    """

    def __init__(self, api_keys: frozenset[str], ttl_s: int, clock: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self._signers = {owner_of(key): _ClockedSigner(key, clock) for key in api_keys}

    def issue(self, key: str) -> str:
        """A cookie value standing for ``key``, valid for ``ttl_s`` seconds from now.

        Raises:
            KeyError: when ``key`` is not one of the configured keys.
        """
        return self._signers[owner_of(key)].sign(owner_of(key)).decode("ascii")

    def verify(self, value: str) -> str | None:
        """The owner fingerprint (as :func:`owner_of` gives it) that the cookie
        ``value`` stands for; ``None`` when it is malformed, tampered with, issued
        more than ``ttl_s`` seconds ago (or more than :data:`MAX_CLOCK_SKEW_S`
        seconds in the future: another host's clock may be ahead), or signed for a
        key that is no longer configured."""
        owner = value.split(".", 1)[0]
        signer = self._signers.get(owner)
        if signer is None:
            return None
        try:
            # signed is everything before the time; only issue() signs, and only a fingerprint
            _, signed_at = signer.unsign(value, return_timestamp=True)
        except BadSignature:
            return None
        age_s = signer.get_timestamp() - int(signed_at.timestamp())
        if not -MAX_CLOCK_SKEW_S <= age_s <= self.ttl_s:
            return None
        return owner


def set_cookie_header(value: str, max_age_s: int, secure: bool) -> str:
    """The ``Set-Cookie`` header value that stores the session ``value`` for
    ``max_age_s`` seconds (``Max-Age`` and the matching ``Expires``).

    Attributes, after RFC 6265bis (draft-ietf-httpbis-rfc6265bis): ``Path=/``;
    ``HttpOnly`` (no script reads it); ``SameSite=Strict`` (browsers send it only
    on same-site requests); ``Secure`` when ``secure`` (the request came over
    HTTPS), so the browser sends it back over HTTPS only. No ``Domain``: the
    cookie goes back to this host only.
    """
    return dump_cookie(SESSION_COOKIE, value, max_age=max_age_s, path="/", secure=secure, httponly=True,
                       samesite="Strict")


def clear_cookie_header(secure: bool) -> str:
    """The ``Set-Cookie`` header value that removes the session cookie: empty, with
    ``Max-Age=0`` and an ``Expires`` in the past (RFC 6265bis, 5.6), and otherwise
    the attributes of :func:`set_cookie_header`."""
    return dump_cookie(SESSION_COOKIE, "", max_age=0, expires=0, path="/", secure=secure, httponly=True,
                       samesite="Strict")

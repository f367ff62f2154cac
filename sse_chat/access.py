"""Who is asking: a bearer key, or a browser's session cookie held to the Origin
rule (docs/auth.md). Takes the request as an argument; reads no Flask globals."""

from __future__ import annotations

from collections.abc import Iterable

from werkzeug.wrappers import Request

from .auth import authenticate, unauthorized
from .errors import ApiError
from .sessions import SESSION_COOKIE, SessionKeys, clear_cookie_header


def identify(request: Request, api_keys: frozenset[str], sessions: SessionKeys,
             allowed_origins: Iterable[str]) -> str | None:
    """The caller's owner fingerprint, or ``None`` on an open service (no keys).

    A request with an ``Authorization`` header is checked as a bearer request
    (:func:`sse_chat.auth.authenticate`), whatever cookie it carries. Otherwise
    the session cookie decides (:meth:`SessionKeys.verify`), for requests from
    this service's own origin or one of ``allowed_origins`` only
    (:func:`check_origin`).

    Raises:
        ApiError: 403 ``forbidden_origin`` for a cookie-only request from another
            origin; 401 ``unauthorized`` without credentials, for a bad bearer
            key, or for a cookie that is expired, tampered with or of a removed
            key (that answer also clears the cookie).
    """
    if not api_keys:
        return None
    if "Authorization" in request.headers:
        return authenticate(api_keys, request.headers)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie is None:
        raise unauthorized("send a valid API key as Authorization: Bearer KEY (one of SSE_CHAT_API_KEYS); "
                           "a browser's EventSource can use the session cookie that POST /v1/session sets")
    check_origin(request.headers.get("Origin"), own_origin(request), allowed_origins)
    owner = sessions.verify(cookie)
    if owner is None:
        raise unauthorized("the session has expired or is no longer valid (its key may have been removed); "
                           "POST /v1/session with Authorization: Bearer KEY for a new one",
                           ("Set-Cookie", clear_cookie_header(request.is_secure)))
    return owner


def own_origin(request: Request) -> str:
    """This service's origin as the request reached it, ``scheme://host[:port]``
    (the ``Host`` header; ``https`` when gunicorn trusts the proxy's
    ``X-Forwarded-Proto``)."""
    return f"{request.scheme}://{request.host}"


def check_origin(origin: str | None, own: str, allowed_origins: Iterable[str]) -> None:
    """Let a cookie-authenticated request through when it has no ``Origin`` header
    (a same-origin ``GET``, an ``EventSource`` of the page's origin), or when its
    ``Origin`` (Fetch standard, "origin header"; ``null`` for an opaque origin) is
    ``own`` or one of ``allowed_origins``. Compared without regard to case.

    Raises:
        ApiError: 403 ``forbidden_origin`` otherwise.
    """
    if origin is None:
        return
    allowed = {own.lower(), *(o.lower() for o in allowed_origins)}
    if origin.strip().lower() not in allowed:
        raise ApiError(403, "forbidden_origin",
                       f"a request from origin {origin!r} cannot use the session cookie: only this service's own "
                       "origin and those of SSE_CHAT_CORS_ORIGINS can; send Authorization: Bearer KEY instead")

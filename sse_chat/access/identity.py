"""Who is asking: a bearer key, or a browser's session cookie held to the Origin
rule (docs/auth.md). Takes the request as an argument; reads no Flask globals."""

from __future__ import annotations

from collections.abc import Iterable

from werkzeug.wrappers import Request

from ..errors import ApiError
from .auth import authenticate, unauthorized
from .sessions import SESSION_COOKIE, SessionKeys, clear_cookie_header


def identify(request: Request, api_keys: frozenset[str], sessions: SessionKeys,
             allowed_origins: Iterable[str]) -> str | None:
    """The caller's owner fingerprint, or ``None`` on an open service (no keys).

    A request with an ``Authorization`` header is checked as a bearer request
    (:func:`sse_chat.access.auth.authenticate`), whatever cookie it carries. Otherwise
    the session cookie decides (:meth:`SessionKeys.verify`), for requests from
    this service's own origin or one of ``allowed_origins`` only
    (:func:`check_origin`, checked first, so that another origin learns nothing
    about the cookie).

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
    check_origin(request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site"), own_origin(request),
                 allowed_origins)
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


def check_origin(origin: str | None, fetch_site: str | None, own: str, allowed_origins: Iterable[str]) -> None:
    """Let a cookie-authenticated request through only from this service's own
    origin ``own`` or one of ``allowed_origins``.

    ``origin`` is the ``Origin`` header (Fetch standard, "Origin header"; ``null``
    for an opaque origin), which browsers send on every CORS-mode request
    (``fetch``, a cross-origin ``EventSource``) and every ``POST`` or ``DELETE``;
    when present it decides, compared without regard to case. Without it (a
    ``GET`` of the page's own origin, an ``EventSource`` included, or a
    non-browser client) ``fetch_site``, the ``Sec-Fetch-Site`` header (W3C Fetch
    Metadata), decides when a browser sent one: ``same-origin`` and ``none`` (the
    person typed the URL) pass, while ``same-site`` and ``cross-site`` (an
    ``<img>`` or link on another page, which send no ``Origin``) do not.

    Raises:
        ApiError: 403 ``forbidden_origin`` otherwise.
    """
    if origin is None:
        if fetch_site is None or fetch_site.strip().lower() in ("same-origin", "none"):
            return
        source = f"another origin (Sec-Fetch-Site: {fetch_site})"
    elif origin.strip().lower() in {own.lower(), *(o.lower() for o in allowed_origins)}:
        return
    else:
        source = f"origin {origin}"
    raise ApiError(403, "forbidden_origin",
                   f"a request from {source} cannot use the session cookie: only this service's own origin and "
                   "those of SSE_CHAT_CORS_ORIGINS can; send Authorization: Bearer KEY instead")

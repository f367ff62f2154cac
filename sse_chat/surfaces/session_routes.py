"""``POST /v1/session`` and ``DELETE /v1/session``: trade a bearer key for a
session cookie, and give it back (docs/auth.md, "Browser sessions")."""

from __future__ import annotations

from flask import Blueprint, Response, request

from ..access.auth import bearer_key
from ..access.sessions import clear_cookie_header, set_cookie_header
from .web import no_content, services

bp = Blueprint("sessions", __name__)


@bp.post("/v1/session")
def start_session() -> Response:
    """204 with a session cookie for the key of ``Authorization: Bearer KEY``
    (a cookie cannot start a session, so a session cannot outlive its TTL by
    renewing itself). On an open service, 204 and no cookie.

    Raises:
        ApiError: 401 ``unauthorized`` without a valid bearer key.
    """
    settings = services().settings
    response = _no_content()
    if settings.api_keys:
        key = bearer_key(settings.api_keys, request.headers)
        response.headers["Set-Cookie"] = set_cookie_header(services().sessions.issue(key), settings.session_ttl_s,
                                                           secure=request.is_secure)
    return response


@bp.delete("/v1/session")
def end_session() -> Response:
    """204, clearing the session cookie in the browser that sends this."""
    response = _no_content()
    response.headers["Set-Cookie"] = clear_cookie_header(secure=request.is_secure)
    return response


def _no_content() -> Response:
    response = no_content()
    response.headers["Cache-Control"] = "no-store"  # never cache an answer that sets a cookie
    return response

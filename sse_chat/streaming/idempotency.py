"""Idempotent starts: a request's ``Idempotency-Key`` header names its question, so
that a retry of a ``POST`` whose answer was cut before ``start`` gets the stream
the first attempt started instead of a second generation.

Follows the IETF httpapi draft "The Idempotency-Key HTTP Header Field"
(draft-ietf-httpapi-idempotency-key-header-06): the client makes a unique key per
request and sends it again on every retry; the server fingerprints the request and
answers 422 when a key comes back with another request. Where the draft answers
409 to a retry that arrives while the first request is still being processed,
this service answers with the same stream, which is made to be read by many.

Pure: no Flask. The keys are held in the event log (:meth:`EventLog.claim`), per
caller, so that every worker sees them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ApiError, invalid_request
from ..eventlog import EventLog, EventLogUnavailable

log = logging.getLogger(__name__)

#: Longest key accepted, in characters (a UUID has 36).
MAX_KEY_LENGTH = 255
#: Seconds a claim is kept while its stream runs, on top of the stream TTL. Nothing
#: bounds how long a stream runs, and a claim is one key in a slot of its own, so
#: no write of the stream can renew it; instead the end of the stream sets the
#: claim's expiry to the stream's own (the TTL from the end, :func:`keep_after_end`).
#: This bound is thus what a claim whose producer died is kept for, and the
#: generation time a key covers: a repeat sent after a stream has run longer than
#: ``stream_ttl_s + RUNNING_S`` starts a second one. Clients repeat a start within
#: seconds of sending it.
RUNNING_S = 3600.0
#: Seconds a repeat waits for the stream of a key whose first request is still
#: creating it. Past this, the claim is taken for stale (its stream expired first,
#: or its worker died between the claim and the stream) and taken over once.
PENDING_S = 10.0
#: First and longest pause (seconds) between looks at a stream still being created.
FIRST_POLL_S, MAX_POLL_S = 0.01, 0.2


@dataclass(frozen=True, slots=True)
class KeyedStart:
    """A start with an ``Idempotency-Key``: ``key``, the SHA-256 hex digest of the
    header's key (the raw key is never stored), and ``fingerprint``, the SHA-256 hex
    digest of the request (:func:`request_fingerprint`)."""

    key: str
    fingerprint: str


def keyed_start(header: str, surface: str, body: Any) -> KeyedStart:
    """The :class:`KeyedStart` of a request to ``surface`` (its path) with the JSON
    ``body`` (parsed) and the ``Idempotency-Key`` header value ``header``.

    Raises:
        ApiError: 400 ``invalid_request`` for a malformed key (see :func:`parse_key`).
    """
    key = parse_key(header)
    return KeyedStart(hashlib.sha256(key.encode()).hexdigest(), request_fingerprint(surface, body))


def parse_key(header: str) -> str:
    """The key in an ``Idempotency-Key`` header value: the draft's Structured Field
    String (``"…"``, RFC 8941 3.3.3, with ``\\"`` and ``\\\\`` escapes), or the bare
    value as many clients send it; 1 to :data:`MAX_KEY_LENGTH` printable ASCII
    characters.

    Raises:
        ApiError: 400 ``invalid_request`` for an empty, too long, badly quoted or
            non-ASCII key.
    """
    value = header.strip(" \t")
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = _unquote(value[1:-1])
    if not value:
        raise invalid_request("the Idempotency-Key header is empty; send a unique key per question, e.g. a UUID")
    if len(value) > MAX_KEY_LENGTH:
        raise invalid_request(f"the Idempotency-Key header is longer than {MAX_KEY_LENGTH} characters")
    if not all(" " <= char <= "~" for char in value):
        raise invalid_request("the Idempotency-Key header must be printable ASCII, e.g. a UUID")
    return value


def _unquote(quoted: str) -> str:
    r"""The content of a Structured Field String without its quotes (RFC 8941,
    4.2.5): ``\"`` and ``\\`` are the only escapes.

    Raises:
        ApiError: 400 ``invalid_request`` for another escape or a bare ``"``.
    """
    chars, escaped = [], False
    for char in quoted:
        if escaped:
            if char not in '"\\':
                raise invalid_request("the quoted Idempotency-Key has an escape other than \\\" or \\\\")
            chars.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            raise invalid_request("the quoted Idempotency-Key has an unescaped '\"' inside")
        else:
            chars.append(char)
    if escaped:
        raise invalid_request("the quoted Idempotency-Key ends with a lone backslash")
    return "".join(chars)


def request_fingerprint(surface: str, body: Any) -> str:
    """SHA-256 (hex) of ``surface`` and the canonical JSON of the parsed ``body``
    (keys sorted, no spaces): the same question sent again, in any key order or
    spacing, has the same fingerprint; another body or another path has another."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{surface}\n{canonical}".encode()).hexdigest()


def key_reused() -> ApiError:
    """422 ``idempotency_key_reused``: the key came with another request."""
    return ApiError(422, "idempotency_key_reused",
                    "this Idempotency-Key was sent with a different request; send a new key for a new question")


def key_in_use() -> ApiError:
    """409 ``idempotency_key_in_use`` with ``Retry-After: 1`` (seconds): the key's
    first request still has not created its stream (the draft's 409)."""
    return ApiError(409, "idempotency_key_in_use",
                    "a request with this Idempotency-Key is still starting its stream; retry in a moment",
                    (("Retry-After", "1"),))


@dataclass(frozen=True, slots=True)
class Started:
    """The outcome of :func:`start_once`: the ``stream_id`` to read from its first
    event, and ``repeated``: true when an earlier request with the key started it."""

    stream_id: str
    repeated: bool


def start_once(event_log: EventLog, owner: str | None, keyed: KeyedStart, stream_id: str,
               start: Callable[[str], None], *, stream_ttl_s: float,
               clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Started:
    """Start stream ``stream_id`` with ``start(stream_id)`` (which creates it and its
    producer), unless ``owner`` already started one with ``keyed.key``; then the
    earlier stream, once it exists.

    The key is claimed in the event log for ``stream_ttl_s + RUNNING_S`` seconds
    before ``start`` runs; ``start`` failing releases it, so that a retry can start.
    Call :func:`keep_after_end` when the stream ends. A repeat that finds the claim
    but not its stream yet waits up to :data:`PENDING_S` seconds for it, looking
    again with growing pauses (``sleep``, seconds; ``clock``, monotonic seconds).

    Raises:
        ApiError: 422 ``idempotency_key_reused`` when the key came with another
            fingerprint; 409 ``idempotency_key_in_use`` when no stream appeared even
            after taking a stale claim over; whatever ``start`` raises.
        EventLogUnavailable: the event log's store cannot be reached.
    """
    deadline, pause, took_over = clock() + PENDING_S, FIRST_POLL_S, False
    while True:
        held = event_log.claim(owner, keyed.key, keyed.fingerprint, stream_id, stream_ttl_s + RUNNING_S)
        if held is None:
            _start_or_release(event_log, owner, keyed.key, stream_id, start)
            return Started(stream_id, repeated=False)
        if held.fingerprint != keyed.fingerprint:
            raise key_reused()
        if event_log.info(held.stream_id) is not None:
            return Started(held.stream_id, repeated=True)
        if clock() >= deadline:
            if took_over:
                raise key_in_use()
            log.warning("idempotency key of stream %s: no stream after %g s; taking the claim over",
                        held.stream_id, PENDING_S)
            event_log.release(owner, keyed.key, held.stream_id)
            deadline, pause, took_over = clock() + PENDING_S, FIRST_POLL_S, True
            continue
        sleep(pause)
        pause = min(pause * 2, MAX_POLL_S)


def _start_or_release(event_log: EventLog, owner: str | None, key: str, stream_id: str,
                      start: Callable[[str], None]) -> None:
    try:
        start(stream_id)
    except BaseException:
        try:
            event_log.release(owner, key, stream_id)
        except EventLogUnavailable:
            log.warning("stream %s did not start, and its idempotency key could not be released: "
                        "repeats wait %g s before taking it over", stream_id, PENDING_S)
        raise


def keep_after_end(event_log: EventLog, owner: str | None, keyed: KeyedStart, stream_id: str,
                   stream_ttl_s: float) -> None:
    """The stream ended: keep its key exactly as long as the stream
    (``stream_ttl_s`` seconds from now). Never raises: a key that cannot be renewed
    keeps the expiry :func:`start_once` gave it."""
    try:
        event_log.claim(owner, keyed.key, keyed.fingerprint, stream_id, stream_ttl_s)
    except Exception:
        log.warning("stream %s: could not renew its idempotency key", stream_id, exc_info=True)

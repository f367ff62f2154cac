"""The Responses API surface (docs/responses.md): ``POST /v1/responses``, ``GET``,
``DELETE`` and ``POST …/cancel`` of ``/v1/responses/{id}``, over the same
generation, event log, auth, ownership, limits and idempotency as ``/v1/chat``.

A response is a stream (:mod:`.responses_format` derives every object and event
from the stream's event log); a background response's producer never gives up
for want of a reader; ``GET /v1/responses/{id}?stream=true&starting_after=N``
resumes after sequence number N on any worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property

from flask import Blueprint, Response, jsonify, request

from ..bodies.chat import check_streamed
from ..bodies.responses import chat_request, parse_responses_body
from ..errors import ApiError, invalid_request
from ..eventlog import EventLogUnavailable, StreamNotFound
from ..formats.responses import (
    RECORD_KEY,
    ResponseEvents,
    deleted_response,
    event_frame,
    responses_error,
    stream_id_of,
)
from ..protocol import Event, read_frame
from ..streaming.generation import StartOptions, known_stream, start_generation
from ..streaming.reader import ReadFrom, follow, read_stream
from ..streaming.services import Services
from .web import caller, event_stream_response, json_body, requested_idempotency, services, unavailable_error

bp = Blueprint("responses", __name__)

#: Seconds a cancel or a delete waits for the producer to end the response (it
#: notices at its next token; a model that has gone silent may take longer).
STOP_WAIT_S = 3.0


@bp.errorhandler(ApiError)
def api_error(error: ApiError):
    """Errors in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``."""
    return jsonify(responses_error(error.type, error.message)), error.status, dict(error.headers)


@bp.errorhandler(EventLogUnavailable)
def event_log_down(error: EventLogUnavailable):
    """503 ``event_log_unavailable`` with ``Retry-After`` (the SDK retries it)."""
    return api_error(unavailable_error(error))


@bp.post("/v1/responses")
def create_response():
    """Start a response: answer its streaming events (``stream``), the response
    object at once (``background``), or the response object once it has ended."""
    svc, owner = services(), caller()
    body = json_body()
    parsed = parse_responses_body(body)
    record = parsed.record(_earlier_conversation(svc, parsed.previous_response_id, owner))
    chat = chat_request(parsed, record, svc.settings.model)
    check_streamed(chat, parsed.stream)
    stream_id = start_generation(svc, chat, owner, requested_idempotency(body),
                                 StartOptions({RECORD_KEY: record}, background=parsed.background))
    if parsed.stream:
        return _event_stream(svc, stream_id, -1, chat.events_per_response, [])
    if parsed.background:
        return jsonify(_logged(svc, stream_id).snapshot())
    return jsonify(_whole(svc, stream_id).snapshot())


def _earlier_conversation(svc: Services, previous_response_id: str | None, owner: str | None) -> list[dict]:
    """The input and output items of ``previous_response_id`` (``[]`` for none).

    Raises:
        ApiError: 404 when it cannot be found; 400 while it is still generating.
    """
    if previous_response_id is None:
        return []
    previous = _stored(svc, previous_response_id, owner).response
    if not previous.finished:
        raise invalid_request(f"response {previous_response_id!r} is still {previous.status}; continue from it "
                              "once it has ended")
    return previous.conversation()


@bp.get("/v1/responses/<rid>")
def retrieve_response(rid: str):
    """The response object, or with ``?stream=true`` its events after
    ``starting_after`` (a sequence number), then the live ones."""
    svc = services()
    stored = _stored(svc, rid, caller())
    if request.args.get("stream", "false").lower() not in ("true", "1"):
        return jsonify(stored.response.snapshot())
    return _event_stream(svc, stored.stream_id, _starting_after(), stored.events_per_response, stored.logged)


@bp.post("/v1/responses/<rid>/cancel")
def cancel_response(rid: str):
    """Stop the response's generation and answer it once it has ended (status
    ``cancelled``, or how it ended if it had ended already), or as it stands after
    :data:`STOP_WAIT_S` (``in_progress``: the model has not answered since)."""
    svc = services()
    stored = _stored(svc, rid, caller())
    if stored.response.finished:
        return jsonify(stored.response.snapshot())
    _cancel(svc, stored.stream_id)
    return jsonify(_ended_within(svc, stored.stream_id, STOP_WAIT_S).snapshot())


@bp.delete("/v1/responses/<rid>")
def delete_response(rid: str):
    """Stop the response if it is still generating (waiting up to
    :data:`STOP_WAIT_S` for it to end; a producer that finds its stream deleted
    stops), then forget it: later reads answer 404."""
    svc = services()
    stored = _stored(svc, rid, caller())
    if not stored.response.finished:
        _cancel(svc, stored.stream_id)
        _ended_within(svc, stored.stream_id, STOP_WAIT_S)
    svc.event_log.delete(stored.stream_id)
    return jsonify(deleted_response(rid))


@dataclass
class _Stored:
    """A stored response as read from its stream's event log: the stream's events
    logged so far and its ``events_per_response`` (``None``: no bound)."""

    stream_id: str
    logged: list[Event]
    events_per_response: int | None

    @cached_property
    def response(self) -> ResponseEvents:
        """The response as the events read describe it (made when first asked:
        a resume only needs the events)."""
        return _described(self.stream_id, self.logged)


def _described(stream_id: str, events: list[Event]) -> ResponseEvents:
    response = ResponseEvents(stream_id)
    for event in events:
        response.take(event)
    return response


def _stored(svc: Services, rid: str, owner: str | None) -> _Stored:
    """The response ``rid`` as logged so far, if ``owner`` may see it and it was stored.

    Raises:
        ApiError: 404 ``response_not_found`` otherwise (unknown, expired, deleted,
            another caller's, or created with ``"store": false``).
    """
    stream_id = stream_id_of(rid)
    missing = ApiError(404, "response_not_found", f"no response {rid!r}: it never existed, expired, was deleted, "
                                                  "or was created with \"store\": false")
    if stream_id is None:
        raise missing
    try:
        info = known_stream(svc, stream_id, owner)
        logged = [read_frame(frame) for frame in _logged_frames(svc, stream_id)]
    except ApiError:
        raise missing from None
    record = logged[0].data.get(RECORD_KEY) if logged else None
    if not record or not record.get("store", True):
        raise missing  # a /v1/chat stream, or a response not to be kept
    return _Stored(stream_id, logged, info.events_per_response)


def _logged(svc: Services, stream_id: str) -> ResponseEvents:
    """The response as the events logged by now describe it.

    Raises:
        ApiError: 404 ``response_not_found`` when the stream expired meanwhile.
    """
    return _described(stream_id, [read_frame(frame) for frame in _logged_frames(svc, stream_id)])


def _logged_frames(svc: Services, stream_id: str) -> list[bytes]:
    """The stream's events logged by now, without waiting for more.

    Raises:
        ApiError: 404 ``response_not_found`` when the stream expired meanwhile.
    """
    try:
        cursor = svc.event_log.open(stream_id, -1)
    except StreamNotFound:
        raise ApiError(404, "response_not_found", "the response expired") from None
    try:
        return cursor.take().frames
    except StreamNotFound:
        return []
    finally:
        cursor.close()


def _whole(svc: Services, stream_id: str) -> ResponseEvents:
    """The response once its stream has ended (waits for the terminal event)."""
    stored = ResponseEvents(stream_id)
    batches = follow(svc.event_log, stream_id, -1, heartbeat_s=svc.settings.heartbeat_s)
    try:
        for frames in batches:
            for frame in frames:
                stored.take(read_frame(frame))
    finally:
        batches.close()
    return stored


def _ended_within(svc: Services, stream_id: str, wait_s: float) -> ResponseEvents:
    """The response once its stream has ended, or as it stands after ``wait_s`` seconds.

    Raises:
        ApiError: 404 ``response_not_found`` when the stream expired meanwhile.
    """
    response = ResponseEvents(stream_id)
    deadline = time.monotonic() + wait_s
    try:
        cursor = svc.event_log.open(stream_id, -1)
    except StreamNotFound:
        raise ApiError(404, "response_not_found", "the response expired") from None
    try:
        while True:
            batch = cursor.take()
            for frame in batch.frames:
                response.take(read_frame(frame))
            if batch.finished or time.monotonic() >= deadline:
                return response
            cursor.wait(deadline)
    except StreamNotFound:
        return response
    finally:
        cursor.close()


def _cancel(svc: Services, stream_id: str) -> None:
    try:
        svc.event_log.request_cancel(stream_id)
    except StreamNotFound:
        raise ApiError(404, "response_not_found", "the response expired") from None


def _starting_after() -> int:
    """``?starting_after=N``: the last sequence number the client has, -1 for none.

    Raises:
        ApiError: 400 when it is not a whole number.
    """
    raw = request.args.get("starting_after")
    if raw is None or raw == "":
        return -1
    if not (raw.isascii() and raw.isdigit()):
        raise invalid_request(f"\"starting_after\" must be a sequence number (a whole number >= 0); got {raw!r}")
    return int(raw)


def _event_stream(svc: Services, stream_id: str, starting_after: int, events_per_response: int | None,
                  logged: list[Event]) -> Response:
    """The response's Responses events after sequence number ``starting_after``,
    then the live ones, as ``text/event-stream``; ``logged`` are the stream's
    events read before (any number of its first ones).

    The reader starts at the first logged event that gives an event after
    ``starting_after`` (so that ``events_per_response`` counts from there), with the state
    of the events before it rebuilt from the log (:class:`ResponseEvents` numbers
    them alike every time).
    """
    first = _first_unsent(stream_id, logged, starting_after)
    events = ResponseEvents(stream_id)
    for event in logged[:first]:
        events.take(event)

    def to_frames(frames: list[bytes]) -> bytes:
        return b"".join(event_frame(event) for frame in frames for event in events.take(read_frame(frame))
                        if event["sequence_number"] > starting_after)

    position = ReadFrom(stream_id, first - 1, events_per_response)
    return event_stream_response(read_stream(svc.readers, position, transform=to_frames, retry_alone=False))


def _first_unsent(stream_id: str, logged: list[Event], starting_after: int) -> int:
    """The seq of the first of the ``logged`` events that gives a Responses event
    numbered after ``starting_after`` (``len(logged)`` when none does yet)."""
    events = ResponseEvents(stream_id)
    for seq, event in enumerate(logged):
        if events.take(event) and events.sequence_number - 1 > starting_after:
            return seq
    return len(logged)

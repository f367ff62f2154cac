"""A bare baseline for the benchmarks: Flask and one gevent generator per response.

No event log, no producer greenlet, no limits, metrics or resume: the request's
own greenlet sleeps, encodes and yields each event. ``POST /v1/chat`` with JSON
``{"prompt": str, "max_tokens": int}`` answers ``text/event-stream`` (chunked)
with the same wire format as sse-chat (docs/event-stream.md, sse_chat/sse.py):

* the first frame ``retry: 1000``, ``id: {stream_id}:0``, ``event: start``;
* ``max_tokens`` frames ``event: token`` (ids ``:1`` … ``:N``), each after
  ``time.sleep(delay_s)``, with ``delay_s`` = ``SSE_CHAT_FAKE_DELAY_MS`` / 1000
  (default 20 ms; 0 still yields to other greenlets under gevent);
* a last frame ``event: done``;

one ``yield`` (one HTTP chunk) per frame, one line of compact JSON data each. The
tokens are the fake model's (:func:`sse_chat.models.fake.fake_tokens`), so both
servers send the same bytes and JSON-encode the same text per token.

Served by gunicorn with the gevent worker and sse-chat's ``worker_connections``
(4000), configured by bench/baseline_gunicorn_conf.py; from the repository root::

    SSE_CHAT_FAKE_DELAY_MS=0 gunicorn -c bench/baseline_gunicorn_conf.py \\
        --bind 127.0.0.1:8001 --workers 1 bench.baseline_app:app
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, jsonify, request

from sse_chat.models import ChatRequest, Message
from sse_chat.models.fake import fake_tokens

RETRY_MS = 1000
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
CONTENT_TYPE = "text/event-stream; charset=utf-8"

app = Flask(__name__)
delay_s = int(os.environ.get("SSE_CHAT_FAKE_DELAY_MS", "20")) / 1000


def frame(stream_id: str, seq: int, event: str, data: Any, retry_ms: int | None = None) -> bytes:
    """One event as UTF-8 bytes, fields in sse-chat's order (retry, id, event, data)."""
    head = f"retry: {retry_ms}\n" if retry_ms is not None else ""
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"{head}id: {stream_id}:{seq}\nevent: {event}\ndata: {body}\n\n".encode()


def events(stream_id: str, prompt: str, tokens: list[str]) -> Iterator[bytes]:
    """``start``, one ``token`` per token ``delay_s`` seconds apart, then ``done``."""
    yield frame(stream_id, 0, "start", {"stream_id": stream_id, "model": "fake", "created": int(time.time())},
                retry_ms=RETRY_MS)
    for seq, token in enumerate(tokens, start=1):
        time.sleep(delay_s)
        yield frame(stream_id, seq, "token", {"content": token})
    usage = {"prompt_tokens": len(prompt.split()) + 1, "completion_tokens": len(tokens)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    yield frame(stream_id, len(tokens) + 1, "done", {"finish_reason": "length", "usage": usage})


@app.post("/v1/chat")
def chat() -> Response:
    """Stream ``max_tokens`` fake tokens for ``prompt`` (400 without both)."""
    body = request.get_json(silent=True) or {}
    prompt, max_tokens = body.get("prompt"), body.get("max_tokens")
    if not isinstance(prompt, str) or not isinstance(max_tokens, int) or max_tokens < 0:
        return Response('{"error":{"type":"invalid_request"}}', status=400, content_type="application/json")
    tokens = fake_tokens(ChatRequest(messages=(Message("user", prompt),), model="fake", max_tokens=max_tokens))
    stream_id = secrets.token_urlsafe(16)
    return Response(events(stream_id, prompt, tokens), status=200, content_type=CONTENT_TYPE,
                    headers=HEADERS, direct_passthrough=True)


@app.get("/healthz")
def healthz() -> Response:
    """``{"status": "ok"}``, for readiness polls."""
    return jsonify(status="ok")

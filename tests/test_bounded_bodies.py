"""sse_chat/bodies/bounded.py: a request body read within its deadline lets other
greenlets run after every READ_CHUNK_BYTES bytes, and not after each small read."""

import io

import pytest

from sse_chat.bodies import bounded
from sse_chat.bodies.bounded import READ_CHUNK_BYTES, BoundedBodies


@pytest.fixture
def yields(monkeypatch):
    """The times a body read let other greenlets run (``time.sleep(0)``)."""
    count = []
    monkeypatch.setattr(bounded.time, "sleep", lambda seconds: count.append(seconds))
    return count


def _read_body(body: bytes) -> bytes:
    seen = []

    def app(environ, start_response):
        seen.append(environ["wsgi.input"].read())
        return []

    environ = {"CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
    BoundedBodies(app, body_timeout_s=10)(environ, lambda *args: None)
    return seen[0]


def test_a_small_body_is_read_without_waiting_for_other_greenlets(yields):
    assert _read_body(b'{"prompt": "hi"}') == b'{"prompt": "hi"}'
    assert yields == []


def test_a_large_body_lets_other_greenlets_run_after_every_chunk(yields):
    body = bytes(range(256)) * (READ_CHUNK_BYTES // 16)  # 16 chunks
    assert _read_body(body) == body
    assert len(yields) == len(body) // READ_CHUNK_BYTES
    assert set(yields) == {0}


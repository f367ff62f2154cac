"""The reader's short path (sse_chat.reader.DirectWrites): a producer writes a
caught-up reader's events itself, only while the client's socket takes them at
once, and keeps the error of a write that failed for the reader."""

import socket

import pytest

from sse_chat import reader
from sse_chat.reader import DirectWrites


@pytest.fixture
def sockets(monkeypatch):
    monkeypatch.setattr(reader, "running_under_gevent", lambda: True)  # attach() insists on gevent
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    yield ours, theirs
    ours.close()
    theirs.close()


def _fill(sock):
    """Write until the kernel takes no more."""
    sock.setblocking(False)
    try:
        while True:
            sock.send(b"x" * 4096)
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)


def _writes(ours):
    direct = DirectWrites(lambda frames: b"<" + b"".join(frames) + b">")
    direct.attach(ours.sendall, ours)
    direct.enabled = True
    return direct


def test_frames_go_out_transformed_and_counted(sockets):
    ours, theirs = sockets
    direct = _writes(ours)
    assert direct.usable
    assert direct(b"a") and direct(b"b")
    assert theirs.recv(100) == b"<a><b>"
    assert direct.sent == 2 and direct.sent_at > 0


def test_a_socket_that_would_block_is_refused_without_waiting(sockets):
    ours, theirs = sockets
    direct = _writes(ours)
    _fill(ours)
    assert direct(b"x" * 3000) is False  # a blocking sendall would hang the test here
    assert direct.sent == 0 and direct.error is None


def test_a_failed_write_is_kept_for_the_reader(sockets):
    ours, _ = sockets

    def broken(data):
        raise BrokenPipeError("the client went away")

    direct = DirectWrites(b"".join)
    direct.attach(broken, ours)
    direct.enabled = True
    assert direct(b"a") is False
    assert isinstance(direct.error, BrokenPipeError) and not direct.usable


def test_without_a_socket_or_before_the_opening_it_is_not_usable(sockets):
    ours, _ = sockets
    direct = DirectWrites(b"".join)
    direct.attach(ours.sendall, None)
    direct.enabled = True
    assert not direct.usable and direct(b"a") is False
    waiting = DirectWrites(b"".join)
    waiting.attach(ours.sendall, ours)
    assert not waiting.usable

"""sse_chat/gunicorn_worker.py's ClientSocket: the cheaper ``sendall`` of a
client's gevent socket, against a real socket pair."""

from __future__ import annotations

import socket
import ssl

import gevent
import gevent.socket
import pytest
from gevent._socketcommon import SocketMixin
from gunicorn.workers.ggevent import GeventWorker

from sse_chat.gunicorn_worker import ClientSocket, Worker

FRAME = b'7B\r\nid: abc:12\nevent: token\ndata: {"content":" blue"}\n\n\r\n'


@pytest.fixture
def pair():
    server, client = gevent.socket.socketpair()
    yield server, client
    server.close()
    client.close()


def _receive(sock: gevent.socket.socket, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = sock.recv(size - got)
        assert chunk, "closed early"
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def test_a_small_write_goes_out_whole_without_asking_the_kernel_for_the_buffer_size(pair, monkeypatch):
    server, client = pair
    asked = []
    original = SocketMixin.getsockopt
    monkeypatch.setattr(SocketMixin, "getsockopt", lambda self, *args: asked.append(args) or original(self, *args))
    ClientSocket(server).sendall(FRAME)
    assert _receive(client, len(FRAME)) == FRAME
    assert asked == []  # gevent's own sendall asks for SO_SNDBUF on every call
    server.sendall(FRAME)
    assert _receive(client, len(FRAME)) == FRAME
    assert asked  # (so the count above can fail)


def test_a_write_larger_than_the_send_buffer_waits_and_arrives_whole_in_order(pair):
    server, client = pair
    data = bytes(range(256)) * 40_000  # 10 MB: far more than a socket buffer
    reader = gevent.spawn(_receive, client, len(data))  # reads while the write waits for room
    ClientSocket(server).sendall(data)
    assert reader.get(timeout=30) == data


def test_a_client_that_does_not_read_still_times_out(pair):
    server, _client = pair
    server.settimeout(0.2)
    with pytest.raises(TimeoutError):
        ClientSocket(server).sendall(b"x" * 20_000_000)


def test_other_calls_are_the_gevent_sockets_own(pair):
    server, _client = pair
    wrapped = ClientSocket(server)
    wrapped.settimeout(3.5)
    assert wrapped.gettimeout() == 3.5 == server.gettimeout()
    assert wrapped.fileno() == server.fileno()


def test_the_worker_hands_gunicorn_each_connection_as_a_client_socket(pair, monkeypatch):
    handed = []
    monkeypatch.setattr(GeventWorker, "handle", lambda self, listener, client, addr: handed.append(client))
    Worker.handle(object.__new__(Worker), None, pair[0], ("127.0.0.1", 1))
    assert isinstance(handed[0], ClientSocket)


def test_a_tls_connection_is_left_as_it_is(monkeypatch):
    handed = []
    monkeypatch.setattr(GeventWorker, "handle", lambda self, listener, client, addr: handed.append(client))
    with socket.socket() as plain:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls = context.wrap_socket(plain, server_side=True, do_handshake_on_connect=False)
        Worker.handle(object.__new__(Worker), None, tls, ("127.0.0.1", 1))
        assert handed == [tls]  # a send on the socket under it would skip TLS
        tls.close()


def test_after_a_refused_body_the_worker_closes_the_connection_instead_of_reading_on(pair, monkeypatch):
    served = []
    monkeypatch.setattr(GeventWorker, "handle_request", lambda self, *args: served.append(args))
    worker = object.__new__(Worker)
    sock = ClientSocket(pair[0])
    worker.handle_request("listener", "request", sock, ("127.0.0.1", 1))  # kept alive: the next request is read
    sock.close_after_response()
    with pytest.raises(StopIteration):  # gunicorn's keep-alive loop then closes the connection
        worker.handle_request("listener", "request", sock, ("127.0.0.1", 1))
    assert len(served) == 2

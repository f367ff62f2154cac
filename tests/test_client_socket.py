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

from sse_chat.client_writer import ENVIRON_KEY
from sse_chat.gunicorn_worker import ClientSocket, OfferingWriters, ResponseWriter, Worker

pytestmark = pytest.mark.timeout(30)

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


def _fill(sock: ClientSocket, piece: bytes) -> list[bytes]:
    """send_soon ``piece`` while the socket is ready for it; returns the pieces sent."""
    sent = []
    while sock.ready_to_send():
        sock.send_soon(piece)
        sent.append(piece)
    return sent


def test_send_soon_sends_a_small_write_at_once(pair):
    server, client = pair
    sock = ClientSocket(server)
    assert sock.ready_to_send()
    sock.send_soon(FRAME)
    assert _receive(client, len(FRAME)) == FRAME
    assert sock.ready_to_send()


def test_once_the_client_stops_reading_the_socket_is_not_ready_and_what_it_took_arrives_whole_in_order(pair):
    server, client = pair
    sock = ClientSocket(server)
    pieces = [bytes([n]) * 100_000 for n in range(64)]  # far more than the socket buffers hold
    sent = []
    for piece in pieces:
        if not sock.ready_to_send():
            break
        sock.send_soon(piece)
        sent.append(piece)
    assert 0 < len(sent) < len(pieces)  # not ready, without waiting
    expected = b"".join(sent)
    # the event loop sent what the socket did not take at once, and with its last bytes was done
    assert _receive(client, len(expected)) == expected
    assert sock.ready_to_send()


def test_sendall_after_a_send_soon_the_socket_took_in_part_sends_the_rest_first(pair):
    server, client = pair
    sock = ClientSocket(server)
    sent = _fill(sock, b"a" * 100_000)  # the last one taken only in part
    expected = b"".join(sent) + b"the end"
    received = _read_what_is_there(client)  # room again, before the event loop sends the rest
    reader = gevent.spawn(_receive, client, len(expected) - len(received))
    sock.sendall(b"the end")
    assert received + reader.get(timeout=30) == expected


def test_send_if_ready_refuses_a_write_while_what_send_soon_left_waits_and_sends_it_once_drained(pair):
    server, client = pair
    sock = ClientSocket(server)
    sent = _fill(sock, b"a" * 100_000)  # the last one taken only in part
    assert sock.send_if_ready(FRAME) is False  # refused, not queued behind the rest
    expected = b"".join(sent)
    assert _receive(client, len(expected)) == expected  # the event loop sent the rest, and was done with it
    assert sock.send_if_ready(FRAME) is True
    assert _receive(client, len(FRAME)) == FRAME


def _read_what_is_there(sock: gevent.socket.socket) -> bytes:
    """What ``sock`` has received so far, read without letting other greenlets run."""
    chunks = []
    while True:
        try:
            chunks.append(sock._sock.recv(1 << 20))
        except BlockingIOError:
            return b"".join(chunks)


def test_once_a_send_to_a_client_that_left_failed_the_socket_says_so_and_every_later_send_fails(pair):
    server, client = pair
    client.close()
    sock = ClientSocket(server)
    outcomes = [sock.send_soon(FRAME) for _ in range(3)]  # the kernel may take the first send still
    assert outcomes[-1] is False and not sock.ready_to_send()
    with pytest.raises(BrokenPipeError):
        sock.sendall(FRAME)


def test_closing_sends_what_send_soon_left_first(pair):
    server, client = pair
    sock = ClientSocket(server)
    sent = _fill(sock, b"a" * 100_000)  # the last one taken only in part
    expected = b"".join(sent)
    reader = gevent.spawn(lambda: b"".join(iter(lambda: client.recv(1 << 20), b"")))  # to the end
    sock.close()
    assert reader.get(timeout=30) == expected


class _Response:
    """What ResponseWriter reads of gunicorn's Response."""

    def __init__(self, sock: ClientSocket, *, chunked: bool = True) -> None:
        self.sock, self.chunked = sock, chunked
        self.headers_sent, self.response_length, self.sent = True, None, 0

    def start_response(self, status, headers, exc_info=None):
        return None


def test_the_response_writer_frames_each_write_as_an_http_chunk_and_counts_its_bytes(pair):
    server, client = pair
    response = _Response(ClientSocket(server))
    writer = ResponseWriter(response)
    assert writer.ready()
    writer.write(b"id: a:1\n\n")
    expected = b"9\r\nid: a:1\n\n\r\n"
    assert _receive(client, len(expected)) == expected
    assert response.sent == 9


def test_the_response_writer_writes_an_http_1_0_body_as_it_is(pair):
    server, client = pair
    ResponseWriter(_Response(ClientSocket(server), chunked=False)).write(b"id: a:1\n\n")
    assert _receive(client, 9) == b"id: a:1\n\n"


def test_the_response_writer_is_not_ready_before_the_headers(pair):
    server, _client = pair
    response = _Response(ClientSocket(server))
    response.headers_sent = False
    assert not ResponseWriter(response).ready()


def test_the_response_writer_writes_nothing_before_the_headers_and_says_so(pair):
    server, client = pair
    response = _Response(ClientSocket(server))
    response.headers_sent = False
    writer = ResponseWriter(response)
    assert writer.write(b"id: a:1\n\n") is False
    assert _read_what_is_there(client) == b"" and response.sent == 0
    response.headers_sent = True
    assert writer.write(b"id: a:1\n\n") is True
    assert _receive(client, 14) == b"9\r\nid: a:1\n\n\r\n"


def test_the_response_writer_is_not_ready_in_answer_to_head(pair):
    server, _client = pair
    response = _Response(ClientSocket(server))
    response._omits_body = True  # gunicorn's flag for HEAD (and 204, 304)
    assert not ResponseWriter(response).ready()


def test_the_worker_offers_each_http_1_response_on_a_plain_connection_a_writer(pair):
    seen = []
    app = OfferingWriters(lambda environ, start_response: seen.append(environ) or [])
    response = _Response(ClientSocket(pair[0]))
    app({"gunicorn.socket": response.sock, "SERVER_PROTOCOL": "HTTP/1.1"}, response.start_response)
    assert isinstance(seen[0][ENVIRON_KEY], ResponseWriter)
    app({"gunicorn.socket": pair[0], "SERVER_PROTOCOL": "HTTP/1.1"}, response.start_response)  # a TLS one, say
    assert ENVIRON_KEY not in seen[1]
    app({"gunicorn.socket": response.sock, "SERVER_PROTOCOL": "HTTP/2"}, response.start_response)  # h2c
    assert ENVIRON_KEY not in seen[2]  # HTTP/2 frames its writes itself


def test_the_response_writer_says_when_the_connection_failed(pair):
    server, client = pair
    client.close()
    writer = ResponseWriter(_Response(ClientSocket(server)))
    outcomes = [writer.write(b"id: a:1\n\n") for _ in range(3)]
    assert outcomes[-1] is False and not writer.ready()


@pytest.fixture
def sends(monkeypatch):
    """The data of each ``send`` a ClientSocket makes, in order."""
    made = []
    original = ClientSocket._send_now
    monkeypatch.setattr(ClientSocket, "_send_now",
                        lambda self, data, flags=0: made.append(bytes(data)) or original(self, data, flags))
    return made


def test_a_held_write_goes_out_with_the_next_in_one_send(pair, sends):
    server, client = pair
    sock = ClientSocket(server)
    sock.hold_next_send()
    sock.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
    assert _read_what_is_there(client) == b"" and sends == []
    sock.sendall(FRAME)
    assert sends == [b"HTTP/1.1 200 OK\r\n\r\n" + FRAME]
    assert _receive(client, len(sends[0])) == sends[0]


def test_each_hold_keeps_back_one_more_write(pair, sends):
    server, client = pair
    sock = ClientSocket(server)
    sock.hold_next_send()
    sock.hold_next_send()
    sock.sendall(b"head")
    assert sock.send_soon(b"body")  # a direct write is held alike
    sock.sendall(b"0\r\n\r\n")
    assert sends == [b"headbody0\r\n\r\n"]
    assert _receive(client, 13) == b"headbody0\r\n\r\n"


def test_a_held_write_that_nothing_follows_goes_out_at_the_event_loops_next_turn(pair, sends):
    server, client = pair
    sock = ClientSocket(server)
    sock.hold_next_send()
    sock.sendall(b"head")
    assert _read_what_is_there(client) == b""
    gevent.sleep(0)
    assert _receive(client, 4) == b"head"


def test_a_hold_ends_at_the_event_loops_next_turn_even_unused(pair, sends):
    server, client = pair
    sock = ClientSocket(server)
    sock.hold_next_send()
    gevent.sleep(0)
    sock.sendall(b"body")
    assert sends == [b"body"]
    assert _receive(client, 4) == b"body"


def test_a_large_write_after_a_held_one_is_not_copied_but_comes_after_it(pair, sends):
    server, client = pair
    sock = ClientSocket(server)
    data = bytes(range(256)) * 1_000  # larger than HELD_JOIN_MAX_BYTES
    reader = gevent.spawn(_receive, client, 4 + len(data))
    sock.hold_next_send()
    sock.sendall(b"head")
    sock.sendall(data)
    assert reader.get(timeout=30) == b"head" + data
    assert sends[0] == b"head"


@pytest.mark.parametrize("bypass", ["close", "shutdown", "send", "sendfile"])
def test_a_write_that_bypasses_sendall_sends_what_is_held_first(pair, bypass, tmp_path):
    server, client = pair
    sock = ClientSocket(server)
    sock.hold_next_send()
    sock.sendall(b"head")
    body = tmp_path / "body"
    body.write_bytes(b"file")
    if bypass == "close":
        sock.close()
        expected = b"head"
    elif bypass == "shutdown":
        sock.shutdown(socket.SHUT_WR)
        expected = b"head"
    elif bypass == "send":
        sock.send(b"more")
        expected = b"headmore"
    else:
        with body.open("rb") as file:
            sock.sendfile(file, 0, 4)
        expected = b"headfile"
    assert _receive(client, len(expected)) == expected


def test_the_worker_holds_each_http_1_responses_head_for_its_first_body_write(pair, sends):
    server, _client = pair
    sock = ClientSocket(server)
    response = _Response(sock)
    OfferingWriters(lambda environ, start_response: [])(
        {"gunicorn.socket": sock, "SERVER_PROTOCOL": "HTTP/1.1"}, response.start_response)
    sock.sendall(b"HTTP/1.1 200 OK\r\n\r\n")  # gunicorn's send_headers
    sock.sendall(FRAME)  # its first write of the body
    assert sends == [b"HTTP/1.1 200 OK\r\n\r\n" + FRAME]


def test_the_response_writer_holds_the_next_write_of_its_response(pair, sends):
    server, _client = pair
    response = _Response(ClientSocket(server))
    ResponseWriter(response).hold_next_write()
    response.sock.sendall(FRAME)  # the body's last write
    response.sock.sendall(b"0\r\n\r\n")  # gunicorn's end of the chunked body
    assert sends == [FRAME + b"0\r\n\r\n"]


def test_every_attribute_of_the_gevent_socket_is_the_client_sockets_without_a_getattr_hook(pair):
    sock = ClientSocket(pair[0])
    # gevent's socket answers the standard library's names it lacks from the socket under it
    names = sorted({name for klass in (gevent.socket.socket, socket.socket) for name in dir(klass)
                    if not name.startswith("__") and hasattr(pair[0], name)})
    assert len(names) > 40 and "_sock" in names and "sendfile" in names and "sendmsg_afalg" in names
    for name in names:
        if name in vars(ClientSocket) and not isinstance(vars(ClientSocket)[name], property):
            continue  # its own (sendall, close, ...) or one bound in __init__ (recv, ...)
        ours, theirs = getattr(sock, name), getattr(pair[0], name)
        assert ours is theirs or ours == theirs, name  # a method: bound to the same socket
    # A __getattr__ would be asked only after a raised and formatted AttributeError,
    # and would cost every read of the socket's own slots the interpreter's fast path.
    assert not hasattr(ClientSocket, "__getattr__")
    with pytest.raises(AttributeError):
        sock.no_such_attribute  # noqa: B018
    sock.settimeout(2.0)
    assert sock.gettimeout() == 2.0 and sock.timeout == 2.0


def test_a_write_that_must_not_wait_is_not_held(pair, sends):
    server, _client = pair
    sock = ClientSocket(server)
    sock.hold_next_send()
    sock.setblocking(False)  # gunicorn's error page (util.write_nonblock): tried once, never waited for
    sock.sendall(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
    assert sends == [b"HTTP/1.1 500 Internal Server Error\r\n\r\n"]


def test_a_write_that_bypasses_sendall_sends_what_send_soon_left_first(pair):
    server, client = pair
    sock = ClientSocket(server)
    sent = _fill(sock, b"a" * 100_000)  # the last one taken only in part
    expected = b"".join(sent) + b"HTTP/1.1 100 Continue\r\n\r\n"
    reader = gevent.spawn(_receive, client, len(expected))
    sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert reader.get(timeout=30) == expected

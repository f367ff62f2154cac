"""sse-chat's gunicorn worker (``worker_class = "sse_chat.gunicorn_worker.Worker"``):
gunicorn's gevent worker, varied the way gunicorn varies its own workers, by
overriding its hooks (``GeventWorker`` itself overrides ``init_process`` and
``handle_quit``), not by patching a worker from a server hook.

What it adds: a graceful stop that drains (``SIGTERM``, which a reload sends the
old workers: readers end their responses with ``retry:`` so that clients
reconnect elsewhere with ``Last-Event-ID``, producers finish within
``graceful_timeout``), the app's log lines on stderr beside gunicorn's, and a
garbage collector tuned for many long streams.

gunicorn's master imports this module to set the worker class up, as it imports
``gunicorn.workers.ggevent`` for ``worker_class = "gevent"``: it imports only the
standard library and gunicorn, never the app (the worker patches the standard
library with gevent before it loads the app; see :mod:`sse_chat.gunicorn_config`).
"""

from __future__ import annotations

import collections
import contextlib
import gc
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import gevent
import gevent.socket
from gevent.pool import Pool
from gunicorn.glogging import Logger
from gunicorn.workers import ggevent
from gunicorn.workers.ggevent import GeventWorker

from .client_writer import ENVIRON_KEY

#: The worker's garbage-collector thresholds (:func:`gc.set_threshold`; Python's
#: default is 700, 10, 10). Every open stream keeps a producer and a reader greenlet,
#: their generators and cursors alive; each collection of the older generations
#: walks all of them, and at 3,000 streams the default made those walks about a
#: fifth of the worker's CPU. Here the second generation is collected once a
#: million objects more were kept (5,000 x 200), 140 times less often than by
#: default, and the oldest in turn. The first is collected every 5,000: each of
#: its collections walks the objects kept since the last, and halts every
#: stream of the worker meanwhile; at 50,000, 1,000 streams starting made pauses
#: of 7-13 ms, which set the p99 of the gaps between events (`steady`), where
#: at 5,000 they take about 1 ms, for the same work in all. (The generational
#: collector of Python 3.10-3.13: ``gc.callbacks`` timed each collection.)
GC_THRESHOLDS = (5_000, 200, 10)
#: Bytes of a write up to which what :meth:`ClientSocket.hold_next_send` kept back
#: is joined to it for one ``send``; a larger write is not copied for it.
HELD_JOIN_MAX_BYTES = 64 * 1024
#: The most new connections' handlers a worker starts in one turn of its event
#: loop (:class:`FairStartPool`); the others wait for the next turns, in order.
STARTS_PER_TURN = 100
#: The app's log lines: time, the worker's pid (to trace a stream to its
#: producer), level, logger, message.
LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"


def tune_garbage_collector() -> None:
    """Move everything the process loaded (modules, the app, the openai SDK's
    models) into the collector's permanent generation with :func:`gc.freeze`, so
    that no collection walks it again, and raise the thresholds to
    :data:`GC_THRESHOLDS`. Cyclic garbage is still collected, in larger batches.

    (Python's documentation of :func:`gc.freeze` describes freezing in a server's
    parent before it forks, to spare copy-on-write; with ``preload_app`` off
    each worker freezes what it loaded itself, for the CPU the collections no
    longer spend.) bench/compare.py ``--scenario crowd`` shows the effect
    (docs/deployment.md).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def settle_config(cfg: Any) -> None:
    """Store each of gunicorn's settings on the worker's ``Config`` as a plain
    attribute holding its value, so that reading one is a dict lookup.

    gunicorn's ``Config`` keeps its settings in ``cfg.settings`` and answers
    ``cfg.keepalive`` and the like from ``Config.__getattr__``, which Python calls
    only after its ordinary lookup has raised, formatted and caught an
    ``AttributeError``; gunicorn reads about 30 settings so for every request. A
    worker's settings do not change once it has forked (a reload forks new
    workers with a new ``Config``), so their values are read once here. Settings
    that share their name with a property of ``Config`` (``sendfile``,
    ``reuse_port``, …) are left to the property, which Python asks first anyway.
    Call it in the worker, after the fork (the master's ``Config`` must keep
    changing with reloads) and after gunicorn's ``post_worker_init`` hook: a
    ``cfg.set`` after it would change ``cfg.settings`` but not what is read.
    """
    properties = {name for klass in type(cfg).__mro__ for name, value in vars(klass).items()
                  if isinstance(value, property)}
    for name, setting in cfg.settings.items():
        if name not in properties:
            object.__setattr__(cfg, name, setting.get())  # Config.__setattr__ refuses settings' names


class SecondCachingFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose ``asctime`` is the default's
    (``2026-12-06 08:37:11,123``: local time, milliseconds after a comma), with the
    date and time of day formatted once per second instead of once per line
    (:meth:`logging.Formatter.formatTime` is the documented hook; ``datefmt`` is
    not supported)."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        return f"{self._stamp},{int(record.msecs):03d}"  # logging's default_msec_format, "%s,%03d"


def log_app_lines_to_stderr(level: int = logging.INFO) -> None:
    """Send the ``sse_chat.*`` loggers' lines, ``level`` and up, to stderr in
    :data:`LOG_FORMAT`, and skip what a record gathers that the format does not
    print, as the logging HOWTO's "Optimization" section says: the caller's file
    and line (``logging._srcfile = None``: a stack walk per record), the thread
    (under gevent a dummy ``Thread`` object for each new greenlet: 5% of a
    worker's CPU at 3,000 new streams a second, py-spy) and the multiprocessing
    process name. Process-wide: for a worker process, which owns its logging."""
    logging._srcfile = None  # the HOWTO's documented switch
    logging.logThreads = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    handler.setFormatter(SecondCachingFormatter(LOG_FORMAT))
    app_logger = logging.getLogger("sse_chat")
    app_logger.addHandler(handler)
    app_logger.setLevel(level)


class ClientSocket:
    """A client's gevent socket, as gunicorn's gevent worker hands it over, with a
    cheaper ``sendall`` for the small writes of an event stream (one HTTP chunk
    per write, mostly one event of a hundred bytes or so); everything else is
    the gevent socket's own.

    gevent's ``sendall`` asks the kernel for the send buffer's size
    (``getsockopt(SO_SNDBUF)``) on every call, to cut large writes into chunks
    (``gevent._socketcommon._sendall``), then sends through several layers: about
    2.5 us of a worker's CPU per write, more than half of what the write costs.
    Here one ``send`` on the non-blocking socket underneath tries first; what it
    does not take (a full send buffer: a slow client) goes through gevent's
    ``sendall``, which waits for the socket as before and keeps its timeout
    (``SSE_CHAT_SEND_TIMEOUT_S``). :meth:`send_soon` is the same without the
    wait (for :class:`ResponseWriter`): what the socket does not take, the event
    loop sends as it drains.

    :meth:`hold_next_send` keeps a write back for the one that follows it, so that
    the two go out in one ``send``: gunicorn writes a response's head, and the end
    of a chunked body, each in a ``send`` of its own, right before or after a
    write of the body; each ``send`` costs a system call, a TCP segment and a
    wake-up of the client (on loopback, the kernel's receiving work too).
    """

    __slots__ = ("_socket", "_raw", "closing", "_unsent", "_drain", "_failed", "_held", "_holds", "_hold_end",
                 "recv", "settimeout", "gettimeout", "setblocking")

    def __init__(self, gevent_socket: Any) -> None:
        self._socket = gevent_socket
        self._raw = gevent_socket._sock  # the non-blocking socket.socket under gevent's
        # The gevent socket's own, bound once: gunicorn and the app call them for
        # every request (the rest of the gevent socket's attributes are properties,
        # _delegate_the_rest).
        self.recv = gevent_socket.recv
        self.settimeout = gevent_socket.settimeout
        self.gettimeout = gevent_socket.gettimeout
        self.setblocking = gevent_socket.setblocking
        #: Set by :meth:`close_after_response`: the worker closes the connection
        #: once the response is sent, instead of reading the next request.
        self.closing = False
        self._unsent: memoryview | None = None  # what send_soon left for the socket to take
        self._drain: Any = None  # the event loop's watcher that sends it as the socket drains
        self._failed = False  # a send_soon met a failed connection
        self._held: bytes | None = None  # writes kept back by hold_next_send, for the send after them
        self._holds = 0  # how many of the next writes to keep back
        self._hold_end: Any = None  # the event loop's callback that ends the holds at its next turn

    def close_after_response(self) -> None:
        """Close the connection once this response is sent, whatever the request
        asked: what is left of its body is never read (the app refused it;
        :mod:`sse_chat.bodies.bounded`)."""
        self.closing = True

    def sendall(self, data: bytes, flags: int = 0) -> None:
        """Send all of ``data``, as :meth:`socket.socket.sendall`.

        Raises:
            OSError: as gevent's ``sendall`` (``BrokenPipeError`` and
                ``ConnectionResetError`` for a client that left; ``TimeoutError``
                after the socket's timeout); ``BrokenPipeError`` at once after a
                :meth:`send_soon` met a failed connection.
        """
        if self._failed:
            raise BrokenPipeError("an earlier send to this client failed")
        if self._holds and self._socket.gettimeout() != 0.0:  # (gunicorn's error page: tried once, not waited for)
            self._hold(data)
            return
        if self._held is not None:  # first what a hold kept back
            data = self._release_held(data)
        if self._unsent is not None:  # first of all what an earlier send_soon left
            data = bytes(self._unsent) + data
            self._stop_draining()
        sent = self._send_now(data, flags)
        if sent < len(data):
            self._socket.sendall(memoryview(data)[sent:], flags)

    def hold_next_send(self) -> None:
        """Keep the next write (:meth:`sendall` or :meth:`send_soon`) back, to go
        out with the write after it in one ``send``, or at the event loop's next
        turn when none comes first: a hold never outlasts the greenlet's run.
        Meant for a write that another follows at once (a response's head, its
        body's last write before the end of a chunked body). Each call holds one
        more write; writes that bypass :meth:`sendall` (``send``, ``sendfile``,
        ``shutdown``, :meth:`close`) send what is held first."""
        self._holds += 1
        if self._hold_end is None:
            self._hold_end = gevent.get_hub().loop.run_callback(self._end_holds)

    def _hold(self, data: bytes) -> None:
        self._holds -= 1
        self._held = data if self._held is None else self._held + data

    def _release_held(self, data: bytes) -> bytes:
        """``data`` after what is held, joined when it is small; a large ``data``
        is not copied: what is held is sent first, on its own."""
        held, self._held = self._held, None
        assert held is not None
        if len(data) <= HELD_JOIN_MAX_BYTES:
            return held + data
        self.sendall(held)
        return data

    def _end_holds(self) -> None:
        """The event loop's next turn: what is still held goes out now, without waiting."""
        self._hold_end = None
        self._holds = 0
        if self._held is not None:
            held, self._held = self._held, None
            self.send_soon(held)

    def _send_held(self) -> None:
        """Before a write that bypasses :meth:`sendall`: send what is held and what
        :meth:`send_soon` left, and hold nothing more."""
        self._holds = 0
        if (self._held is not None or self._unsent is not None) and not self._failed:
            self.sendall(b"")

    def ready_to_send(self) -> bool:
        """True when :meth:`send_soon` would send at once or as the socket drains:
        nothing an earlier ``send_soon`` left is still waiting, and no send failed."""
        return self._unsent is None and not self._failed

    def send_soon(self, data: bytes) -> bool:
        """Send ``data`` without waiting: what the socket takes now, the rest as it
        drains (the event loop sends it), before any later send; meant for when
        :meth:`ready_to_send` (else ``data`` waits behind what is left). Returns
        False when the connection failed: ``data`` is dropped, and every later
        send raises."""
        if self._failed:
            return False
        if self._holds:
            self._hold(data)
            return True
        if self._held is not None:  # (a small write: direct writes carry one event)
            data, self._held = self._held + data, None
        if self._unsent is not None:
            self._unsent = memoryview(bytes(self._unsent) + data)
            return True
        return self.send_if_ready(data)  # ready now: nothing failed, held or left

    def send_if_ready(self, data: bytes) -> bool:
        """:meth:`send_soon` when :meth:`ready_to_send`, in one call: True when
        ``data`` was sent (or is held, or its rest is left for the event loop to
        send as the socket drains); False when it was not, because what an earlier
        ``send_soon`` left still waits or a send failed. Made for the small writes
        of events to caught-up clients (:class:`ResponseWriter`), once per event."""
        if self._unsent is not None or self._failed:
            return False
        if self._holds or self._held is not None:
            return self.send_soon(data)
        try:
            sent = self._send_now(data)
        except OSError:  # the client left
            self._failed = True
            return False
        if sent < len(data):  # the rest as the socket drains
            self._unsent = memoryview(data)[sent:]
            self._drain = gevent.get_hub().loop.io(self._raw.fileno(), 2)  # 2: libev's EV_WRITE
            self._drain.start(self._send_unsent)
        return True

    def close(self) -> None:
        """Close the connection, once what a hold kept back and what :meth:`send_soon`
        left are sent (within the socket's timeout; gunicorn's last write of a
        chunked response has sent them already)."""
        self._holds = 0
        if (self._unsent is not None or self._held is not None) and not self._failed:
            with contextlib.suppress(OSError):  # the client left
                self.sendall(b"")
        self._stop_draining()
        if self._hold_end is not None:
            self._hold_end.stop()
            self._hold_end = None
        self._socket.close()

    def send(self, data: bytes, flags: int = 0) -> int:
        """The gevent socket's ``send`` (gunicorn's ``100 Continue``), after what is
        held or left unsent."""
        self._send_held()
        return int(self._socket.send(data, flags))

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        """The gevent socket's ``sendfile`` (gunicorn's ``wsgi.file_wrapper``
        bodies), after what is held or left unsent."""
        self._send_held()
        return int(self._socket.sendfile(file, offset, count))

    def shutdown(self, how: int) -> None:
        """The gevent socket's ``shutdown``, after what is held or left unsent (within
        the socket's timeout)."""
        with contextlib.suppress(OSError):  # the client left: shutting down may still be asked for
            self._send_held()
        self._socket.shutdown(how)

    def _send_unsent(self) -> None:
        """The event loop's callback when the socket can take more of what
        :meth:`send_soon` left."""
        if self._unsent is None:  # stopped meanwhile
            return
        try:
            sent = self._send_now(self._unsent)
        except OSError:  # the client left: the response's next write raises
            self._stop_draining()
            self._failed = True
            return
        self._unsent = self._unsent[sent:]
        if not self._unsent:
            self._stop_draining()

    def _send_now(self, data: bytes | memoryview, flags: int = 0) -> int:
        """One ``send`` on the non-blocking socket: the bytes it took (0 when its
        buffer is full).

        Raises:
            OSError: the connection failed.
        """
        try:
            return self._raw.send(data, flags)
        except BlockingIOError:
            return 0

    def _stop_draining(self) -> None:
        if self._drain is not None:
            self._drain.stop()
            self._drain.close()
            self._drain = None
        self._unsent = None


def _delegated(name: str) -> property:
    """A read-only attribute of :class:`ClientSocket` that is its gevent socket's ``name``."""
    return property(lambda self: getattr(self._socket, name), doc=f"The gevent socket's ``{name}``.")


def _delegate_the_rest(cls: type, *wrapped: type) -> None:
    """Give ``cls`` each public and private attribute of the ``wrapped`` classes
    (their methods, properties and slots; not dunders) that ``cls`` does not
    define, as :func:`_delegated`. (gevent's socket answers the names of the
    standard library's socket it does not define itself from the socket under
    it, through its own ``__getattr__``: ``sendmsg_afalg``, …)

    Explicit attributes instead of a ``__getattr__``: CPython calls a class's
    ``__getattr__`` only after its ordinary lookup has raised and formatted an
    ``AttributeError``, and a class that has one loses the interpreter's
    specialised attribute reads for *all* its attributes, its own slots
    included; a socket's are read several times for every event a stream sends.
    """
    for name in sorted({name for klass in wrapped for name in dir(klass)}):
        if not name.startswith("__") and not hasattr(cls, name):
            setattr(cls, name, _delegated(name))


_delegate_the_rest(ClientSocket, gevent.socket.socket, socket.socket)


class ResponseWriter:
    """The :class:`~sse_chat.client_writer.ClientWriter` of one gunicorn response
    on a :class:`ClientSocket`: writes body bytes beside the body iterator, framed
    as gunicorn frames them (:meth:`gunicorn.http.wsgi.Response.write`: an HTTP/1.1
    chunk, ``{size in hex}\\r\\n{data}\\r\\n``, or the bytes as they are for
    HTTP/1.0), counted in the response's ``sent`` bytes (the access log's ``%(b)s``)."""

    __slots__ = ("_response", "_body_open")

    def __init__(self, response: Any) -> None:
        self._response = response
        self._body_open = False  # the headers went out, and they let a body of unset length follow

    def ready(self) -> bool:
        return (self._body_open or self._opens_body()) and self._response.sock.ready_to_send()

    def write(self, data: bytes) -> bool:
        if not data:
            return True
        if not self._body_open and not self._opens_body():
            return False
        response = self._response
        if not response.sock.send_if_ready(b"%X\r\n%b\r\n" % (len(data), data) if response.chunked else data):
            return False
        response.sent += len(data)
        return True

    def _opens_body(self) -> bool:
        """Whether the headers went out and let a body of unset length follow;
        once True, kept as :attr:`_body_open`."""
        response = self._response
        self._body_open = (response.headers_sent and response.response_length is None  # a set length: not a stream
                           and not getattr(response, "_omits_body", False))  # HEAD
        return self._body_open

    def hold_next_write(self) -> None:
        self._response.sock.hold_next_send()


class OfferingWriters:
    """The app as sse-chat's worker calls it: the response's :class:`ResponseWriter`
    goes in ``environ`` (under :data:`~sse_chat.client_writer.ENVIRON_KEY`) for an
    HTTP/1.x request on a plain connection (a :class:`ClientSocket`; gunicorn's
    HTTP/2 frames its writes itself), and the response's head is held for its
    first body write (:meth:`ClientSocket.hold_next_send`: gunicorn sends the head
    on its own right before it); gunicorn's ``start_response`` is its response's
    bound method. Any other attribute is the app's."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        sock = environ.get("gunicorn.socket")
        if isinstance(sock, ClientSocket) and \
                str(environ.get("SERVER_PROTOCOL", "")).startswith("HTTP/1"):  # HTTP/2 frames its own writes
            environ[ENVIRON_KEY] = ResponseWriter(start_response.__self__)  # type: ignore[attr-defined]
            sock.hold_next_send()  # the head
        return self.app(environ, start_response)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)


class FairStartPool(Pool):
    """gevent's pool of a listener's connections, whose handlers start among the
    event loop's timers (on a zero-second timer: in the loop's next turn) instead
    of at the back of its callback queue (``Greenlet.start``), at most
    :data:`STARTS_PER_TURN` a turn, in the order they were accepted.

    A turn of gevent's default (libev) loop runs queued callbacks until
    ``sys.getswitchinterval()`` (5 ms) has passed, checking the time every 50
    callbacks, and then every timer that came due; running streams' tokens come
    on timers (the model's pauses, a gevent sleep). With the worker's core busy,
    a crowd of new connections started as callbacks got those 5 ms a turn while
    the running streams took the rest: 3,000 streams starting within a second on
    one core, a handler waited p50 330 ms, p99 1.2 s between the accept and its
    start, and the first events were that late. Started on a zero-second timer,
    a handler waited for the next turn (p50 40 ms, p99 87 ms there), or, behind
    more than :data:`STARTS_PER_TURN`, for as many turns as it takes.
    (gevent's libuv loop runs a zero-second timer as a check watcher, once a
    turn after polling: the same next turn.)

    The bound per turn keeps a burst from stretching the turns in which the
    running streams' tokens are due, and is what a turn accepts at most (gevent's
    ``max_accept``, 100): a turn starts as many handlers as a turn can bring in,
    so the queue grows only while connections come faster than the core can start
    them. Starting a stream costs the worker up to about 1 ms, so such a turn
    can spend up to about 100 ms on new handlers: the bound trades the running
    streams' gaps for the new streams' first events. In ``bench/compare.py
    --scenario crowd`` (3,000 streams starting within a second on one core, 19
    rounds), 100 a turn against 50 brought the first events' p99 from
    0.89–1.13 s to 0.66–1.02 s, and the gaps' p99 from 114–122 ms to
    138–178 ms, still at or below the bare Flask + gevent generator's in every
    round (144–235 ms; docs/deployment.md).

    Source: ``gevent/pool.py`` (``Pool.start``, ``Pool.add``),
    ``gevent/_ffi/loop.py`` (``AbstractLoop._run_callbacks``).
    """

    def __init__(self, size: int | None = None, greenlet_class: Any = None) -> None:
        super().__init__(size, greenlet_class)
        self._not_started: collections.deque[Any] = collections.deque()
        self._starter: Any = None  # the zero-second timer that starts the next of them

    def start(self, greenlet: Any, blocking: bool = True, timeout: float | None = None) -> None:
        """As :meth:`gevent.pool.Pool.start`, but the greenlet starts on the loop's
        timers: it is counted in the pool (``free_count()``, ``join()``) from
        now, and runs in the loop's next turn, or a later one behind the
        :data:`STARTS_PER_TURN` accepted before it, unless killed first.

        Args:
            greenlet: a ``gevent.Greenlet`` not yet started.
            blocking: wait for room in a full pool (as gevent's ``Pool.add``).
            timeout: the longest wait for room, in seconds (None: no limit).

        Raises:
            gevent.pool.PoolFull: no room came within ``timeout`` seconds, or the
                pool is full and ``blocking`` is false.
        """
        self.add(greenlet, blocking, timeout)
        self._not_started.append(greenlet)
        if len(self._not_started) == 1:
            self._start_next_turn()

    def _start_next_turn(self) -> None:
        if self._starter is None:
            self._starter = gevent.get_hub().loop.timer(0)
        self._starter.start(self._start_some)

    def _start_some(self) -> None:
        """In the hub: start the next :data:`STARTS_PER_TURN` handlers (each runs
        until it first waits, as gevent's ``Greenlet.start`` has it run, by a
        ``switch`` from the hub), skipping those killed meanwhile."""
        not_started = self._not_started
        try:
            for _ in range(min(STARTS_PER_TURN, len(not_started))):
                greenlet = not_started.popleft()
                if not greenlet.dead:
                    greenlet.switch()
        finally:  # the others' turn comes, whatever happened to these
            if not_started:
                self._start_next_turn()


@contextlib.contextmanager
def fair_connection_starts() -> Iterator[None]:
    """While in the block, gunicorn's gevent worker makes its listeners' connection
    pools :class:`FairStartPool` ones: ``GeventWorker.run`` makes each as
    ``gunicorn.workers.ggevent.Pool(worker_connections)``, that module's name for
    gevent's ``Pool``, and has no hook for it."""
    original = ggevent.Pool
    ggevent.Pool = FairStartPool
    try:
        yield
    finally:
        ggevent.Pool = original


class Worker(GeventWorker):
    """gunicorn's gevent worker for sse-chat's app (``sse_chat.app:create_app()``).

    - ``handle``: each plain connection's socket as :class:`ClientSocket`, whose
      ``sendall`` costs less for an event stream's small writes (a TLS socket,
      when gunicorn itself terminates TLS, is left as it is).
    - ``handle_request``: a connection whose request body the app refused
      unread (:meth:`ClientSocket.close_after_response`) is closed after the
      response, not read on for a next request (which would read the body).
    - ``load_wsgi``: the app's log lines go to stderr before the app loads
      (:func:`log_app_lines_to_stderr`, at gunicorn's ``--log-level``); once it
      has loaded, the app is called through :class:`OfferingWriters`, and
      :func:`tune_garbage_collector`.
      gunicorn calls it after the gevent worker has patched the standard library.
    - ``handle_exit`` (``SIGTERM``): sets the app's ``draining`` and wakes its
      readers, which end their responses with ``retry:``; then gunicorn's own
      graceful stop (no new connections, open ones finish).
    - ``run``: first gunicorn's settings as plain attributes
      (:func:`settle_config`); gunicorn's loop, its connections' handlers
      started among the event loop's timers (:class:`FairStartPool`); after
      that loop has ended, when draining, waits up to ``graceful_timeout``
      seconds for the producers still running, telling the master it lives
      meanwhile (gunicorn's ``notify``). Answers longer than that
      are cut and end with ``stream_lost``. Then, however the worker stops
      (but ``SIGKILL``), writes the app's deferred metrics
      (:meth:`sse_chat.metrics.Metrics.flush`).
    """

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        if isinstance(client, ssl.SSLSocket):  # gunicorn's own TLS: writes must go through the TLS layer
            super().handle(listener, client, addr)
        else:
            super().handle(listener, ClientSocket(client), addr)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> None:
        super().handle_request(listener_name, req, sock, addr)
        if getattr(sock, "closing", False):
            raise StopIteration  # how gunicorn's keep-alive loop is told to close the connection

    def load_wsgi(self) -> None:
        log_app_lines_to_stderr(Logger.LOG_LEVELS.get(self.cfg.loglevel.lower(), logging.INFO))  # as gunicorn reads it
        super().load_wsgi()
        self.wsgi = OfferingWriters(getattr(self, "wsgi"))  # noqa: B009 (gunicorn sets it, untyped)
        tune_garbage_collector()

    def handle_exit(self, sig: int, frame: Any) -> None:
        services = self._services()
        if services is not None:
            services.draining.set()
            services.event_log.wake_readers()  # they see `draining` and end their responses
        super().handle_exit(sig, frame)

    def run(self) -> None:
        # in the worker, after the fork and gunicorn's post_worker_init hook (which may
        # still change a setting), before it accepts a connection
        settle_config(self.cfg)
        try:
            with fair_connection_starts():
                super().run()
            services = self._services()
            if services is not None and services.draining.is_set():  # else not a graceful stop (max_requests, …)
                left = services.drain(self.cfg.graceful_timeout, notify=self.notify)
                if left:
                    self.log.warning("%d streams were still generating at the end of graceful_timeout", left)
        finally:  # also on a quick stop (SIGQUIT, SIGINT) or a timeout (SIGABRT): gunicorn exits by SystemExit
            self._flush_metrics()

    def _flush_metrics(self) -> None:
        """Write what the app's metrics gathered in their last second: the metrics
        files outlive the worker."""
        services = self._services()
        if services is None:
            return
        try:
            services.metrics.flush()
        except Exception:
            self.log.exception("could not write the metrics of the last second")

    def _services(self) -> Any:
        """The app's ``Services`` (:mod:`sse_chat.streaming.services`), or None before the
        app has loaded (a signal that comes first) or for another app."""
        return getattr(getattr(self, "wsgi", None), "extensions", {}).get("sse_chat")

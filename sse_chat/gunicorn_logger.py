"""sse-chat's gunicorn logger (``logger_class = "sse_chat.gunicorn_logger.Logger"``):
gunicorn's own, with access lines that cost a third as much.

gunicorn's :meth:`gunicorn.glogging.Logger.access` gathers every atom
``access_log_format`` could name before it formats the line: about 20 fixed ones
(among them the time, formatted by ``time.strftime``, and the user, parsed from
``Authorization``), one per request header (``{name}i``), one per response header
(``{name}o``) and one per WSGI environ key (``{name}e``, some 30), then copies
them all to escape their quotes (:class:`gunicorn.glogging.SafeAtoms`). sse-chat's
format (``%(h)s "%(r)s" %(s)s %(b)s %(D)sus``) names five. That gathering cost a
worker 30 us a request, the tenth of what a whole chat stream of a few tokens
costs it (``bench/request_cost.py``); this logger's lines cost 11 us, nearly all
of it :mod:`logging`'s own record and write.

The line is the same: :class:`AccessAtoms` computes an atom when the format asks
for it, with gunicorn's rules (a missing atom is ``-``, ``"`` is escaped, the
``{name}i``/``o``/``e`` atoms are case-insensitive), and falls back to gunicorn's
own atoms for any name but the common fixed ones, so that any
``access_log_format`` an operator sets prints what gunicorn would print.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from typing import Any

from gunicorn.glogging import Logger as GunicornLogger
from gunicorn.glogging import SafeAtoms


def _status(resp: Any, environ: dict[str, Any], request_time: timedelta) -> Any:
    status = resp.status
    return status.split(None, 1)[0] if isinstance(status, str) else status


def _sent(resp: Any, environ: dict[str, Any], request_time: timedelta) -> str:
    sent = getattr(resp, "sent", None)
    return str(sent) if sent is not None else "-"


def _microseconds(request_time: timedelta) -> int:
    return request_time.seconds * 1_000_000 + request_time.microseconds


#: The fixed atoms computed on their own, as gunicorn's ``Logger.atoms`` computes
#: them (gunicorn 22-27): each ``(resp, environ, request_time) -> value``.
_FIXED: dict[str, Callable[[Any, dict[str, Any], timedelta], Any]] = {
    "h": lambda resp, environ, rt: environ.get("REMOTE_ADDR", "-"),
    "l": lambda resp, environ, rt: "-",
    "r": lambda resp, environ, rt: f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}",
    "s": _status,
    "m": lambda resp, environ, rt: environ.get("REQUEST_METHOD"),
    "U": lambda resp, environ, rt: environ.get("PATH_INFO"),
    "q": lambda resp, environ, rt: environ.get("QUERY_STRING"),
    "H": lambda resp, environ, rt: environ.get("SERVER_PROTOCOL"),
    "b": _sent,
    "B": lambda resp, environ, rt: getattr(resp, "sent", None),
    "T": lambda resp, environ, rt: rt.seconds,
    "D": lambda resp, environ, rt: _microseconds(rt),
    "M": lambda resp, environ, rt: _microseconds(rt) // 1000,
    "L": lambda resp, environ, rt: f"{rt.seconds}.{rt.microseconds:06d}",
}


class AccessAtoms(Mapping[str, Any]):
    """The atoms of one access line, each computed when the format asks for it.

    ``atoms[name]`` is what :class:`gunicorn.glogging.SafeAtoms` over
    ``logger.atoms(resp, req, environ, request_time)`` gives for ``name``: the
    fixed atoms in :data:`_FIXED` computed alone, any other name (``t``, ``u``,
    ``f``, ``a``, ``p``, ``{name}i``/``o``/``e``, unknown ones) from gunicorn's
    whole set, gathered once, the first time one is asked for; so is iterating.
    ``resp`` and ``req`` are gunicorn's response and request, ``request_time`` a
    :class:`datetime.timedelta`.
    """

    __slots__ = ("_logger", "_resp", "_req", "_environ", "_request_time", "_all")

    def __init__(self, logger: GunicornLogger, resp: Any, req: Any, environ: dict[str, Any],
                 request_time: timedelta) -> None:
        self._logger = logger
        self._resp = resp
        self._req = req
        self._environ = environ
        self._request_time = request_time
        self._all: SafeAtoms | None = None

    def __getitem__(self, name: str) -> Any:
        compute = _FIXED.get(name)
        if compute is None:
            return self._gunicorn_atoms()[name]
        value = compute(self._resp, self._environ, self._request_time)
        return value.replace('"', '\\"') if isinstance(value, str) else value

    def __bool__(self) -> bool:
        return True  # logging formats with a mapping only when it is truthy; no need to gather for that

    def __len__(self) -> int:
        return len(self._gunicorn_atoms())

    def __iter__(self) -> Iterator[str]:
        return iter(self._gunicorn_atoms())

    def _gunicorn_atoms(self) -> SafeAtoms:
        if self._all is None:
            self._all = SafeAtoms(self._logger.atoms(self._resp, self._req, self._environ, self._request_time))
        return self._all


class Logger(GunicornLogger):
    """gunicorn's logger, whose access lines take their atoms from
    :class:`AccessAtoms`: the same lines, gathering only what the format names.
    Error logs, statsd-less setup, reopening and ``logconfig`` are gunicorn's."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        """Log one request's access line in ``access_log_format`` (as
        :meth:`gunicorn.glogging.Logger.access`; a failure to log is logged as an
        error, not raised)."""
        if not self.access_log_enabled:
            return
        try:
            self.access_log.info(self.cfg.access_log_format, AccessAtoms(self, resp, req, environ, request_time))
        except Exception:
            self.error(traceback.format_exc())

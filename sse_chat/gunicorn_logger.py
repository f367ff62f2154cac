"""sse-chat's gunicorn logger (``logger_class = "sse_chat.gunicorn_logger.Logger"``):
gunicorn's own, with access lines that cost half as much.

gunicorn's :meth:`gunicorn.glogging.Logger.access` gathers every atom
``access_log_format`` could name before it formats the line: about 20 fixed ones
(among them the time, formatted by ``time.strftime``, and the user, parsed from
``Authorization``), one per request header (``{name}i``), one per response header
(``{name}o``) and one per WSGI environ key (``{name}e``, some 30), then copies
them all to escape their quotes (:class:`gunicorn.glogging.SafeAtoms`). sse-chat's
format (``%(h)s "%(r)s" %(s)s %(b)s %(D)sus``) names five. That gathering cost a
worker 30 us a request, the tenth of what a whole chat stream of a few tokens
costs it; this logger's lines cost 14 us, nearly all of it :mod:`logging`'s own
record and write.

When the format names only atoms of :data:`FIXED_ATOMS` and gunicorn's own
handlers write the lines, this logger computes those atoms alone, as gunicorn
computes them, into gunicorn's :class:`~gunicorn.glogging.SafeAtoms` (so ``"`` is
escaped and a missing atom is ``-``): the same line, and the same kind of
``record.args``, holding the format's atoms only. Otherwise (another atom, such as
``t``, ``u``, ``a`` or a ``{name}i`` header; or a ``logconfig``, whose handlers
and filters may read any atom) it is gunicorn's ``access``.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from gunicorn.glogging import Logger as GunicornLogger


def _status(resp: Any, environ: dict[str, Any], request_time: timedelta) -> Any:
    status = resp.status
    return status.split(None, 1)[0] if isinstance(status, str) else status


def _sent(resp: Any, environ: dict[str, Any], request_time: timedelta) -> str:
    sent = getattr(resp, "sent", None)
    return str(sent) if sent is not None else "-"


def _microseconds(request_time: timedelta) -> int:
    return request_time.seconds * 1_000_000 + request_time.microseconds


#: The atoms computed on their own, each as gunicorn's ``Logger.atoms`` computes it
#: (gunicorn 26-27): ``(resp, environ, request_time) -> value``, with ``resp``
#: gunicorn's response, ``environ`` the request's WSGI environ and ``request_time``
#: a :class:`datetime.timedelta`.
FIXED_ATOMS: dict[str, Callable[[Any, dict[str, Any], timedelta], Any]] = {
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

#: A ``%(name)s``-style reference in a format string, as ``%`` formatting reads it.
_ATOM_REFERENCE = re.compile(r"%\(([^)]*)\)")


def fixed_atoms_named(access_format: str) -> tuple[str, ...] | None:
    """The atoms ``access_format`` names, in order, when all of them are in
    :data:`FIXED_ATOMS`; ``None`` when it names any other."""
    names = tuple(dict.fromkeys(_ATOM_REFERENCE.findall(access_format)))
    return names if all(name in FIXED_ATOMS for name in names) else None


class Logger(GunicornLogger):
    """gunicorn's logger, whose access lines compute only the atoms the format
    names, when those are fixed ones (module docstring). Error logs, reopening and
    ``logconfig`` are gunicorn's. It sends no statsd metrics: with ``statsd_host``
    set it says so in the error log (gunicorn sends them only from its own
    ``gunicorn.instrument.statsd.Statsd`` logger class)."""

    def setup(self, cfg: Any) -> None:
        """gunicorn's setup (at start and on every reload), then which atoms the
        access format names (``None``: gunicorn's ``access`` writes each line).
        (In sse-chat's worker, ``cfg`` is the worker's own, its settings plain
        attributes: :func:`sse_chat.gunicorn_worker.settle_config`.)"""
        super().setup(cfg)
        custom_logging = cfg.logconfig or cfg.logconfig_dict or cfg.logconfig_json
        self._fixed_atoms = None if custom_logging else fixed_atoms_named(cfg.access_log_format)
        if cfg.statsd_host:
            self.error_log.warning("statsd_host is set, but logger_class is sse_chat.gunicorn_logger.Logger, "
                                   "which sends no statsd metrics: set logger_class = "
                                   "\"gunicorn.instrument.statsd.Statsd\" to send them")

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        """Log one request's access line in ``access_log_format``, as
        :meth:`gunicorn.glogging.Logger.access` does (a failure to log is logged as
        an error, not raised); ``request_time`` is a :class:`datetime.timedelta`."""
        if self._fixed_atoms is None:
            super().access(resp, req, environ, request_time)
            return
        if not self.access_log_enabled:
            return
        try:
            atoms = {name: FIXED_ATOMS[name](resp, environ, request_time) for name in self._fixed_atoms}
            self.access_log.info(self.cfg.access_log_format, self.atoms_wrapper_class(atoms))
        except Exception:
            self.error(traceback.format_exc())

"""sse-chat's gunicorn logger (sse_chat/gunicorn_logger.py): the same access
lines as gunicorn's own Logger for any ``access_log_format``, gathering gunicorn's
whole set of atoms only when the format names one outside the common fixed ones."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, ClassVar

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger as GunicornLogger

from sse_chat import gunicorn_config
from sse_chat.gunicorn_logger import AccessAtoms, Logger

SSE_CHAT_FORMAT = gunicorn_config.access_log_format
GUNICORN_DEFAULT_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
EVERY_FIXED_ATOM = " ".join(f"%({name})s" for name in "hlrsmUqHbBTDML")
FORMATS = (
    SSE_CHAT_FORMAT,
    GUNICORN_DEFAULT_FORMAT,
    EVERY_FIXED_ATOM,
    "%(p)s %({User-Agent}i)s %({content-type}o)s %({remote_port}e)s %({X-Missing}i)s %(zz)s",
)


class _Response:
    def __init__(self, status: Any, sent: int | None) -> None:
        self.status = status
        self.sent = sent
        self.headers = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache")]


class _Request:
    headers: ClassVar[list[tuple[str, str]]] = [("HOST", "127.0.0.1:8000"), ("USER-AGENT", 'curl/8 "quoted"'), ("AUTHORIZATION", "Bearer k")]


ENVIRON = {
    "REQUEST_METHOD": "POST", "RAW_URI": '/v1/chat?q="x"', "SERVER_PROTOCOL": "HTTP/1.1", "PATH_INFO": "/v1/chat",
    "QUERY_STRING": 'q="x"', "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "50123", "HTTP_USER_AGENT": 'curl/8 "quoted"',
    "HTTP_REFERER": "http://example.test/", "HTTP_AUTHORIZATION": "Bearer k",
}
REQUEST_TIME = timedelta(seconds=3, microseconds=4567)


def _lines(logger_class: type[GunicornLogger], access_format: str, response: _Response,
           monkeypatch: pytest.MonkeyPatch) -> list[str]:
    config = Config()
    config.set("accesslog", "-")
    config.set("access_log_format", access_format)
    logger = logger_class(config)
    monkeypatch.setattr(logger, "now", lambda: "[06/Dec/2026:10:00:00 +0000]")  # the only atom read from the clock
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger.access_log.handlers = [Collect()]
    logger.access(response, _Request(), ENVIRON, REQUEST_TIME)
    return lines


@pytest.mark.parametrize("access_format", FORMATS)
@pytest.mark.parametrize("response", [_Response("200 OK", 621), _Response(404, 0), _Response("500 X", None)],
                         ids=["streamed", "int-status-0-bytes", "nothing-sent"])
def test_each_line_is_gunicorns(access_format: str, response: _Response, monkeypatch: pytest.MonkeyPatch) -> None:
    ours = _lines(Logger, access_format, response, monkeypatch)
    assert ours == _lines(GunicornLogger, access_format, response, monkeypatch)
    assert len(ours) == 1


def _gathers(access_format: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """How many times the access line of ``access_format`` gathered gunicorn's atoms."""
    calls = []
    original = GunicornLogger.atoms

    def counting(self: GunicornLogger, *args: Any) -> dict[str, Any]:
        calls.append(args)
        return original(self, *args)

    monkeypatch.setattr(GunicornLogger, "atoms", counting)
    _lines(Logger, access_format, _Response("200 OK", 621), monkeypatch)
    return len(calls)


def test_sse_chats_format_gathers_nothing_beyond_its_atoms(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _gathers(SSE_CHAT_FORMAT, monkeypatch) == 0
    assert _gathers(EVERY_FIXED_ATOM, monkeypatch) == 0


def test_a_header_atom_gathers_gunicorns_atoms_once(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _gathers("%({user-agent}i)s %({host}i)s %(a)s", monkeypatch) == 1


def test_the_atoms_iterate_as_gunicorns(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = Logger(Config())
    monkeypatch.setattr(logger, "now", lambda: "[06/Dec/2026:10:00:00 +0000]")
    atoms = AccessAtoms(logger, _Response("200 OK", 621), _Request(), ENVIRON, REQUEST_TIME)
    assert dict(atoms) == dict(GunicornLogger.atoms_wrapper_class(
        GunicornLogger.atoms(logger, _Response("200 OK", 621), _Request(), ENVIRON, REQUEST_TIME)))


def test_the_deployed_configuration_uses_it() -> None:
    config = Config()
    config.set("logger_class", gunicorn_config.logger_class)
    assert config.logger_class is Logger

"""sse-chat's gunicorn logger (sse_chat/gunicorn_logger.py): the same access
lines as gunicorn's own Logger for any ``access_log_format``, gathering gunicorn's
whole set of atoms only when the format names one outside the fixed ones, or when
a ``logconfig`` may read any of them."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, ClassVar

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger as GunicornLogger
from gunicorn.glogging import SafeAtoms

from sse_chat import gunicorn_config
from sse_chat.gunicorn_logger import FIXED_ATOMS, Logger, fixed_atoms_named

SSE_CHAT_FORMAT = gunicorn_config.access_log_format
GUNICORN_DEFAULT_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
EVERY_FIXED_ATOM = " ".join(f"%({name})s" for name in FIXED_ATOMS) + " %(D)d again"
FORMATS = (
    SSE_CHAT_FORMAT,
    GUNICORN_DEFAULT_FORMAT,
    EVERY_FIXED_ATOM,
    "%(p)s %({User-Agent}i)s %({content-type}o)s %({remote_port}e)s %({X-Missing}i)s %(zz)s",
)
NOW = "[06/Dec/2026:10:00:00 +0000]"


class _Response:
    def __init__(self, status: Any, sent: int | None) -> None:
        self.status = status
        self.sent = sent
        self.headers = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache")]


class _Request:
    headers: ClassVar[list[tuple[str, str]]] = [
        ("HOST", "127.0.0.1:8000"), ("USER-AGENT", 'curl/8 "quoted"'), ("AUTHORIZATION", "Bearer k")]


ENVIRON = {
    "REQUEST_METHOD": "POST", "RAW_URI": '/v1/chat?q="x"', "SERVER_PROTOCOL": "HTTP/1.1", "PATH_INFO": "/v1/chat",
    "QUERY_STRING": 'q="x"', "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "50123", "HTTP_USER_AGENT": 'curl/8 "quoted"',
    "HTTP_REFERER": "http://example.test/", "HTTP_AUTHORIZATION": "Bearer k",
}
REQUEST_TIME = timedelta(seconds=3, microseconds=4567)
RESPONSES = [_Response("200 OK", 621), _Response(404, 0), _Response("500 X", None)]


def _records(logger_class: type[GunicornLogger], access_format: str, response: _Response,
             monkeypatch: pytest.MonkeyPatch, **settings: Any) -> list[logging.LogRecord]:
    """The records one access line of ``response`` makes with ``logger_class``."""
    config = Config()
    config.set("accesslog", "-")
    config.set("access_log_format", access_format)
    for name, value in settings.items():
        config.set(name, value)
    logger = logger_class(config)
    monkeypatch.setattr(logger, "now", lambda: NOW)  # the only atom read from the clock
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    monkeypatch.setattr(logger.access_log, "handlers", [Collect()])
    logger.access(response, _Request(), ENVIRON, REQUEST_TIME)
    return records


def _lines(logger_class: type[GunicornLogger], access_format: str, response: _Response,
           monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return [record.getMessage() for record in _records(logger_class, access_format, response, monkeypatch)]


@pytest.mark.parametrize("access_format", FORMATS)
@pytest.mark.parametrize("response", RESPONSES, ids=["streamed", "int-status-0-bytes", "nothing-sent"])
def test_each_line_is_gunicorns(access_format: str, response: _Response, monkeypatch: pytest.MonkeyPatch) -> None:
    ours = _lines(Logger, access_format, response, monkeypatch)
    assert ours == _lines(GunicornLogger, access_format, response, monkeypatch)
    assert len(ours) == 1


def _gathers(access_format: str, monkeypatch: pytest.MonkeyPatch, **settings: Any) -> int:
    """How many times an access line of ``access_format`` gathered gunicorn's atoms."""
    calls = []
    original = GunicornLogger.atoms

    def counting(self: GunicornLogger, *args: Any) -> dict[str, Any]:
        calls.append(args)
        return original(self, *args)

    monkeypatch.setattr(GunicornLogger, "atoms", counting)
    assert len(_records(Logger, access_format, RESPONSES[0], monkeypatch, **settings)) == 1
    return len(calls)


def test_sse_chats_format_gathers_nothing_beyond_its_atoms(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _gathers(SSE_CHAT_FORMAT, monkeypatch) == 0
    assert _gathers(EVERY_FIXED_ATOM, monkeypatch) == 0


def test_any_other_atom_gathers_gunicorns_atoms(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _gathers("%(h)s %({user-agent}i)s", monkeypatch) == 1
    assert _gathers("%(h)s %(t)s", monkeypatch) == 1


def test_a_logconfig_gets_gunicorns_atoms(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its handlers and filters may read any atom of ``record.args``."""
    logconfig = {"version": 1, "disable_existing_loggers": False,
                 "loggers": {"gunicorn.access": {"level": "INFO", "handlers": []}}}
    assert _gathers(SSE_CHAT_FORMAT, monkeypatch, logconfig_dict=logconfig) == 1


def test_the_records_args_are_gunicorns_safe_atoms_of_the_named_atoms(monkeypatch: pytest.MonkeyPatch) -> None:
    [record] = _records(Logger, SSE_CHAT_FORMAT, RESPONSES[0], monkeypatch)
    assert isinstance(record.args, SafeAtoms)
    assert dict(record.args) == {"h": "127.0.0.1", "r": 'POST /v1/chat?q=\\"x\\" HTTP/1.1', "s": "200", "b": "621",
                                 "D": 3_004_567}


def test_which_atoms_a_format_names() -> None:
    assert fixed_atoms_named(SSE_CHAT_FORMAT) == ("h", "r", "s", "b", "D")
    assert fixed_atoms_named("%(D)s %(D)d") == ("D",)
    assert fixed_atoms_named("no atoms") == ()
    assert fixed_atoms_named(GUNICORN_DEFAULT_FORMAT) is None


def test_statsd_is_said_to_be_off(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    config = Config()
    config.set("statsd_host", "127.0.0.1:8125")
    logger = Logger(config)
    monkeypatch.setattr(logger.error_log, "propagate", True)
    caplog.set_level(logging.WARNING, logger="gunicorn.error")
    logger.setup(config)
    assert "sends no statsd metrics" in caplog.text


def test_the_deployed_configuration_uses_it() -> None:
    config = Config()
    config.set("logger_class", gunicorn_config.logger_class)
    assert config.logger_class is Logger

"""The worker's log lines (sse_chat/gunicorn_worker.py): SecondCachingFormatter
formats ``asctime`` as logging's own Formatter does, whatever the order of the
seconds its records come from."""

from __future__ import annotations

import logging

import pytest

from sse_chat.gunicorn_worker import LOG_FORMAT, SecondCachingFormatter

# seconds since the epoch: within one second, across a boundary, back to an earlier one
TIMES = (1_765_000_000.0, 1_765_000_000.999, 1_765_000_001.0004, 1_765_000_001.5, 1_764_999_999.25, 1_765_086_400.0)


def _record(created: float) -> logging.LogRecord:
    record = logging.LogRecord("sse_chat.test", logging.INFO, __file__, 1, "stream %s ended", ("abc",), None)
    record.created = created
    record.msecs = int((created - int(created)) * 1000) + 0.0  # as LogRecord.__init__ computes it
    return record


@pytest.mark.parametrize("created", TIMES)
def test_each_line_is_the_standard_formatters(created: float) -> None:
    assert SecondCachingFormatter(LOG_FORMAT).format(_record(created)) == \
        logging.Formatter(LOG_FORMAT).format(_record(created))


def test_one_formatter_follows_the_clock_across_seconds_in_any_order() -> None:
    cached, standard = SecondCachingFormatter(LOG_FORMAT), logging.Formatter(LOG_FORMAT)
    assert [cached.format(_record(t)) for t in TIMES] == [standard.format(_record(t)) for t in TIMES]

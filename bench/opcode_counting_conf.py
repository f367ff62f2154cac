"""gunicorn settings for bench/opcodes.py: the settings of the file named by
``SSE_CHAT_BENCH_BASE_CONF`` (the project's gunicorn.conf.py or the baseline's),
plus two worker hooks. From ``SIGUSR2`` on, the worker counts the bytecode
instructions each Python function executes (``sys.settrace``'s ``opcode``
events, in every greenlet); when it exits, it writes the counts as JSON to
``SSE_CHAT_BENCH_OPCODES_OUT``.{pid}: ``{"file:line(name)": count}``, the file
relative to site-packages, the standard library or the checkout.

gunicorn's workers leave ``SIGUSR2`` to its default action (the end of the
process) until ``post_worker_init`` sets this handler. Not for production: the
worker runs about 50 times slower while it counts.
"""

import collections
import json
import os
import signal
import sys

with open(os.environ["SSE_CHAT_BENCH_BASE_CONF"]) as _base:
    exec(compile(_base.read(), _base.name, "exec"))

_counts: collections.Counter = collections.Counter()


def _trace_calls(frame, event, arg):
    frame.f_trace_opcodes = True
    code = frame.f_code

    def trace_opcodes(frame, event, arg):
        if event == "opcode":
            _counts[code] += 1
        return trace_opcodes

    return trace_opcodes


def _start_counting(signum, frame):
    import greenlet

    greenlet.settrace(lambda event, args: sys.settrace(_trace_calls))
    sys.settrace(_trace_calls)


def _short_path(filename):
    version = f"python{sys.version_info.major}.{sys.version_info.minor}/"
    for marker in ("site-packages/", version, os.getcwd() + "/"):
        filename = filename.split(marker)[-1]
    return filename


def post_worker_init(worker):
    signal.signal(signal.SIGUSR2, _start_counting)


def worker_exit(server, worker):
    sys.settrace(None)
    by_function = collections.Counter()
    for code, count in _counts.items():
        by_function[f"{_short_path(code.co_filename)}:{code.co_firstlineno}({code.co_name})"] += count
    with open(f"{os.environ['SSE_CHAT_BENCH_OPCODES_OUT']}.{os.getpid()}", "w") as out:
        json.dump(by_function, out)

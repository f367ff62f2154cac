"""gunicorn settings for bench/opcodes.py: the settings of the file named by
``SSE_CHAT_BENCH_BASE_CONF`` (the project's gunicorn.conf.py or the baseline's),
plus worker hooks that count the bytecode instructions each Python function
executes (``sys.settrace``'s ``opcode`` events, in every greenlet).

The first ``SIGUSR2`` a worker gets starts the count; the second stops it and
writes it as JSON to ``SSE_CHAT_BENCH_OPCODES_OUT``.{pid}: ``{"file:qualname":
count}``, the file relative to site-packages, the standard library or the
checkout. (gunicorn's workers leave ``SIGUSR2`` to its default action, the end
of the process, until ``post_worker_init`` sets this handler.) A function keeps
its name when lines move, so that two versions of the code compare function by
function.

What is counted: every Python frame that begins while the count runs, and the
frames begun before it (the worker's main loop, background loops) from their
next call on. Compiled code counts nothing of its own: the event loop, greenlet
switches, and gevent's Cython-compiled parts (``Greenlet``, ``Event``,
``Waiter``, the hub's primitives). Not for production: the worker runs about
50 times slower while it counts.
"""

import collections
import json
import os
import signal
import sys

with open(os.environ["SSE_CHAT_BENCH_BASE_CONF"]) as _base:
    exec(compile(_base.read(), _base.name, "exec"))

_base_post_worker_init = globals().get("post_worker_init")
_counts: collections.Counter = collections.Counter()
_counting = False


def _trace_calls(frame, event, arg):
    frame.f_trace_opcodes = True
    code = frame.f_code

    def trace_opcodes(frame, event, arg):
        if event == "opcode":
            _counts[code] += 1
        return trace_opcodes

    return trace_opcodes


def _short_path(filename):
    version = f"python{sys.version_info.major}.{sys.version_info.minor}/"
    this_checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + "/"
    for marker in ("site-packages/", version, os.getcwd() + "/", this_checkout):
        filename = filename.split(marker)[-1]
    return filename


def _start():
    import greenlet

    greenlet.settrace(lambda event, args: sys.settrace(_trace_calls))
    sys.settrace(_trace_calls)


def _stop_and_write():
    import greenlet

    greenlet.settrace(None)  # first: a switch would set the tracer again
    sys.settrace(None)
    by_function = collections.Counter()
    for code, count in _counts.items():
        by_function[f"{_short_path(code.co_filename)}:{getattr(code, 'co_qualname', code.co_name)}"] += count
    with open(f"{os.environ['SSE_CHAT_BENCH_OPCODES_OUT']}.{os.getpid()}", "w") as out:
        json.dump(by_function, out)


def _toggle(signum, frame):
    global _counting
    _counting = not _counting
    if _counting:
        _start()
    else:
        _stop_and_write()


def post_worker_init(worker):
    if _base_post_worker_init is not None:
        _base_post_worker_init(worker)
    signal.signal(signal.SIGUSR2, _toggle)

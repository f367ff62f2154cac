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

What is counted: see bench/opcode_counting.py's ``OpcodeCounter``. Not for
production: the worker runs about 50 times slower while it counts.
"""

import importlib.util
import json
import os
import signal

with open(os.environ["SSE_CHAT_BENCH_BASE_CONF"]) as _base:
    exec(compile(_base.read(), _base.name, "exec"))


def _load_opcode_counting():
    """bench/opcode_counting.py of this config's checkout, loaded by its path: the
    worker may run another checkout's code, whose ``sse_chat`` a ``sys.path`` entry
    for this one would shadow."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "opcode_counting.py")
    spec = importlib.util.spec_from_file_location("opcode_counting", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_base_post_worker_init = globals().get("post_worker_init")
_counter = _load_opcode_counting().OpcodeCounter()
_counting = False


def _toggle(signum, frame):
    global _counting
    _counting = not _counting
    if _counting:
        _counter.start()
        return
    _counter.stop()
    this_checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(f"{os.environ['SSE_CHAT_BENCH_OPCODES_OUT']}.{os.getpid()}", "w") as out:
        json.dump(_counter.by_function([os.getcwd(), this_checkout]), out)


def post_worker_init(worker):
    if _base_post_worker_init is not None:
        _base_post_worker_init(worker)
    signal.signal(signal.SIGUSR2, _toggle)

"""gunicorn settings for long-lived event streams (``gunicorn -c gunicorn.conf.py``).

Imported by gunicorn's master, before any worker forks: it imports only the
standard library and :mod:`sse_chat.config`, never the app, Flask or the openai SDK.
gunicorn's gevent worker monkey-patches in each worker *before* it loads the app
(``GeventWorker.init_process``), so ``ssl``-using modules (httpx, openai) are first
imported already patched: no ``MonkeyPatchWarning``, no ``RecursionError``. Keep
``preload_app`` off for that reason.
"""

import os
import sys
import tempfile

from sse_chat.config import ConfigError, Settings

try:
    _settings = Settings.from_env()
    _settings.check_deployment()
except ConfigError as _error:
    sys.exit(f"sse-chat: cannot start: {_error}")

# prometheus-client's multiprocess mode: workers write their metrics to files in
# this directory and /metrics adds them up. A fresh directory per master.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="sse-chat-metrics-"))


def _raise_open_files_limit(needed):
    """Raise this process's soft limit on open files (``RLIMIT_NOFILE``, inherited
    by the workers) to ``needed``, or to the hard limit when that is lower: each
    connection is a file descriptor, and the soft limit is often 1024."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


wsgi_app = "sse_chat.app:create_app()"
bind = [_settings.bind]
workers = _settings.workers

# One greenlet per connection: an idle stream costs a few KiB, not a thread.
# gunicorn's gevent worker, with sse-chat's graceful stop (drain on SIGTERM), log
# lines and garbage-collector tuning (sse_chat/gunicorn_worker.py).
worker_class = "sse_chat.gunicorn_worker.Worker"
# Concurrent connections per worker (open streams, other requests, and connections
# that are still sending their request head: gunicorn waits up to `keepalive`
# seconds for a head). gunicorn's default, 1000, is the ceiling the benchmark
# reaches; thousands of slow or idle connections must not fill the rest, so that
# health checks and new streams are still accepted. Each waiting connection costs
# the worker a greenlet and a socket (docs/deployment.md gives the figures).
worker_connections = 10_000
# Connections the kernel queues before the workers accept them (gunicorn's default
# is 2048). A burst of new streams larger than this overflows the queue, and each
# dropped SYN costs that client a 1 s retransmission before its first event. The
# kernel caps it at net.core.somaxconn.
backlog = 4096
# Descriptors a worker may need: its connections, their upstream and Redis
# connections, files.
_raise_open_files_limit(2 * worker_connections + 1024)

# For async workers ``timeout`` is not a request deadline: the worker must only
# notify the arbiter within it. Streams may last minutes; a stuck event loop
# (CPU-bound code) gets the worker restarted after this many seconds.
timeout = 30
# On a graceful stop or reload (SIGTERM to a worker; SIGHUP to the master replaces
# workers that way) a worker stops accepting, ends its readers' responses with a
# retry: so that clients reconnect with Last-Event-ID to the new workers (through
# Redis), and keeps its producers running for up to this many seconds so that no
# answer is cut (sse_chat.gunicorn_worker.Worker.run). Answers longer than this are cut and end
# with stream_lost.
graceful_timeout = 120
# Seconds an idle keep-alive connection stays open; longer than nginx's
# upstream keepalive_timeout (60 s) so that nginx, not gunicorn, closes first.
keepalive = 75

# Loading the app in the master would import ssl before the worker patches it.
preload_app = False
# Log to stderr, where the operator's process manager collects it.
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(D)sus'
# gunicorn's logger, whose access lines compute only the atoms the format names
# when all are fixed ones (h, r, s, b, D here), else gunicorn's own.
logger_class = "sse_chat.gunicorn_logger.Logger"
# Request heads parsed by gunicorn's C parser when the gunicorn_h1c package is
# installed (sse-chat's `fast` extra), else by its Python one (gunicorn's default,
# named here): with the C parser a stream's start costs the worker about 600
# fewer bytecode instructions (bench/opcodes.py; docs/deployment.md).
http_parser = "auto"
# gunicorn >= 25 opens a control socket in the home directory by default; sse-chat
# does not use it, and several servers on one host would fight over its path.
control_socket_disable = True


def on_starting(server):
    """Check the worker count gunicorn will really use (``-w`` and
    ``GUNICORN_CMD_ARGS`` override this file's ``workers``)."""
    try:
        _settings.with_overrides(workers=server.cfg.workers).check_deployment()
    except ConfigError as error:
        sys.exit(f"sse-chat: cannot start: {error}")


def child_exit(server, worker):
    """Drop a dead worker's live gauges (prometheus-client multiprocess mode)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)

"""gunicorn settings of the baseline (bench/baseline_app.py), matching sse-chat's
gunicorn.conf.py wherever they bear on throughput; bind and workers come from the
command line::

    SSE_CHAT_FAKE_DELAY_MS=0 gunicorn -c bench/baseline_gunicorn_conf.py \\
        --bind 127.0.0.1:8001 --workers 1 bench.baseline_app:app
"""

# One greenlet per connection, as many connections per worker as sse-chat allows.
worker_class = "gevent"
worker_connections = 10_000
# Seconds: the worker's liveness deadline and idle keep-alive, as sse-chat's.
timeout = 30
keepalive = 75
# An access log line per request to stderr, in sse-chat's format.
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(D)sus'
# gunicorn >= 25 opens a control socket by default; older versions ignore this.
control_socket_disable = True
http_parser = "auto"  # gunicorn's C parser of request heads when installed, as sse-chat's

"""Support for testing and benchmarking sse-chat for real: free loopback ports, a
gunicorn server with gevent workers, a redis-server, the CLI as a subprocess, and a
load generator of many concurrent event streams. Used by this project's tests and
bench/; nothing here runs at import time."""

"""gunicorn's configuration for sse-chat: ``gunicorn -c gunicorn.conf.py``.

The settings live in :mod:`sse_chat.gunicorn_config` (so that ``sse-chat serve``
uses the same ones); bind and workers come from ``SSE_CHAT_BIND`` and
``WEB_CONCURRENCY``.
"""

from sse_chat.gunicorn_config import *  # noqa: F403

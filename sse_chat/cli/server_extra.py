"""Whether the service's packages (the ``server`` extra) are installed.

``pip install sse-chat`` brings the client and the command line only; ``sse-chat
serve`` and ``sse-chat ask --fake`` without ``--url`` run the service, which needs
``pip install 'sse-chat[server]'`` (Flask, gunicorn, gevent, Redis, the openai SDK).
"""

from __future__ import annotations

import importlib.util

#: The import names of the ``server`` extra's packages that the service needs.
SERVER_MODULES = ("flask", "gunicorn", "gevent", "openai", "redis", "flask_cors", "prometheus_client")

INSTALL_HINT = "pip install 'sse-chat[server]'"


def missing_server_modules() -> list[str]:
    """The import names of :data:`SERVER_MODULES` that cannot be found (empty when
    the ``server`` extra is installed). Imports nothing."""
    return [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]


def server_missing_message(what: str) -> str | None:
    """A message saying that ``what`` (e.g. ``"sse-chat serve"``) needs the
    ``server`` extra and how to install it, or None when it is installed."""
    missing = missing_server_modules()
    if not missing:
        return None
    return f"{what} runs the service, whose packages are not installed ({', '.join(missing)}): {INSTALL_HINT}"

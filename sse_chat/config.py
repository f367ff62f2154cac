"""Settings, read once from the environment and validated at start-up.

Only the standard library is imported here: ``gunicorn.conf.py`` reads these
settings in the gunicorn master, before gevent patches anything.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any


class ConfigError(ValueError):
    """A setting is missing or malformed; the message says which and how to fix it."""



#: The longest session a cookie may stand for, in seconds: 400 days, the cap
#: browsers put on a cookie's Max-Age (RFC 6265bis, 5.6.2).
MAX_SESSION_TTL_S = 400 * 86400

@dataclass(frozen=True)
class Settings:
    """Every setting of the service. Durations carry their unit in their name.

    Build one with :meth:`from_env`; tests use :meth:`with_overrides`.
    """

    model: str = "fake"
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    redis_url: str | None = None
    retry_ms: int = 1000
    heartbeat_s: float = 15.0
    abandon_s: float = 30.0
    stream_ttl_s: float = 600.0
    fake_delay_ms: int = 20
    api_keys: frozenset[str] = frozenset()
    max_body_bytes: int = 1024 * 1024
    upstream_timeout_s: float = 60.0
    upstream_max_retries: int = 2
    max_events_per_stream: int = 100_000
    cors_origins: tuple[str, ...] = ()
    session_ttl_s: int = 86400
    max_streams: int = 2000
    max_streams_per_key: int = 100
    max_tokens: int = 1_000_000
    max_events_per_key: int = 1_000_000
    max_readers_per_key: int = 500
    send_timeout_s: float = 30.0
    body_timeout_s: float = 30.0
    bind: str = "127.0.0.1:8000"
    workers: int = 1
    tools: tuple[str, ...] = ()
    tool_timeout_s: float = 30.0
    max_tool_steps: int = 8

    @property
    def bound_beyond_loopback(self) -> bool:
        """True when ``bind`` is not a loopback address (or a Unix socket)."""
        host = self.bind.rsplit(":", 1)[0].strip("[]") if ":" in self.bind else self.bind
        return not (self.bind.startswith("unix:") or host in ("localhost", "::1") or host.startswith("127."))

    @property
    def upstream_configured(self) -> bool:
        """True when an OpenAI-compatible upstream was named (a key or a base URL)."""
        return bool(self.openai_api_key or self.openai_base_url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``SSE_CHAT_*``, ``OPENAI_*`` and ``WEB_CONCURRENCY`` from ``environ``
        (default ``os.environ``); unset or empty variables keep their defaults.

        Raises:
            ConfigError: naming the variable, what it holds and what it accepts.
        """
        env = os.environ if environ is None else environ
        read = _Reader(env)
        defaults = cls()
        return cls(
            model=read.text("SSE_CHAT_MODEL", defaults.model),
            openai_api_key=read.optional("OPENAI_API_KEY"),
            openai_base_url=read.url("OPENAI_BASE_URL", ("http://", "https://")),
            redis_url=read.redis_url("SSE_CHAT_REDIS_URL"),
            retry_ms=read.integer("SSE_CHAT_RETRY_MS", defaults.retry_ms, minimum=0, unit="milliseconds"),
            heartbeat_s=read.seconds("SSE_CHAT_HEARTBEAT_S", defaults.heartbeat_s),
            abandon_s=read.seconds("SSE_CHAT_ABANDON_S", defaults.abandon_s),
            stream_ttl_s=read.seconds("SSE_CHAT_STREAM_TTL_S", defaults.stream_ttl_s),
            fake_delay_ms=read.integer("SSE_CHAT_FAKE_DELAY_MS", defaults.fake_delay_ms, minimum=0,
                                       unit="milliseconds"),
            api_keys=read.key_list("SSE_CHAT_API_KEYS"),
            max_body_bytes=read.integer("SSE_CHAT_MAX_BODY_BYTES", defaults.max_body_bytes, minimum=1, unit="bytes"),
            upstream_timeout_s=read.seconds("SSE_CHAT_UPSTREAM_TIMEOUT_S", defaults.upstream_timeout_s),
            upstream_max_retries=read.integer("SSE_CHAT_UPSTREAM_MAX_RETRIES", defaults.upstream_max_retries,
                                              minimum=0, unit="retries"),
            cors_origins=tuple(sorted(read.key_list("SSE_CHAT_CORS_ORIGINS"))),
            # whole seconds: a cookie's Max-Age is a whole number (RFC 6265bis, 5.6.2)
            session_ttl_s=read.integer("SSE_CHAT_SESSION_TTL_S", defaults.session_ttl_s, minimum=1,
                                       maximum=MAX_SESSION_TTL_S, unit="seconds"),
            max_streams=read.integer("SSE_CHAT_MAX_STREAMS", defaults.max_streams, minimum=1, unit="streams"),
            max_streams_per_key=read.integer("SSE_CHAT_MAX_STREAMS_PER_KEY", defaults.max_streams_per_key,
                                             minimum=1, unit="streams"),
            max_tokens=read.integer("SSE_CHAT_MAX_TOKENS", defaults.max_tokens, minimum=1, maximum=1_000_000,
                                    unit="tokens"),
            max_events_per_key=read.integer("SSE_CHAT_MAX_EVENTS_PER_KEY", defaults.max_events_per_key, minimum=1,
                                            unit="events"),
            max_readers_per_key=read.integer("SSE_CHAT_MAX_READERS_PER_KEY", defaults.max_readers_per_key,
                                             minimum=1, unit="event streams"),
            send_timeout_s=read.seconds("SSE_CHAT_SEND_TIMEOUT_S", defaults.send_timeout_s),
            body_timeout_s=read.seconds("SSE_CHAT_BODY_TIMEOUT_S", defaults.body_timeout_s),
            bind=read.text("SSE_CHAT_BIND", defaults.bind),
            workers=read.integer("WEB_CONCURRENCY", defaults.workers, minimum=1, unit="worker processes"),
            tools=read.import_paths("SSE_CHAT_TOOLS"),
            tool_timeout_s=read.seconds("SSE_CHAT_TOOL_TIMEOUT_S", defaults.tool_timeout_s),
            max_tool_steps=read.integer("SSE_CHAT_MAX_TOOL_STEPS", defaults.max_tool_steps, minimum=1,
                                        unit="model calls with tool results"),
        )

    def with_overrides(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied (field names as keywords)."""
        return replace(self, **changes)

    def check_deployment(self) -> None:
        """Refuse set-ups that would lose streams.

        Raises:
            ConfigError: for more than one worker without ``SSE_CHAT_REDIS_URL``:
                each worker would keep its own in-memory event log, so a reconnect
                landing on another worker could not resume its stream.
        """
        if self.workers > 1 and not self.redis_url:
            raise ConfigError(
                f"WEB_CONCURRENCY={self.workers} asks for {self.workers} gunicorn workers, but "
                "SSE_CHAT_REDIS_URL is not set: each worker would keep its own in-memory event "
                "log, so a client reconnecting with Last-Event-ID to another worker could not "
                "resume its stream. Set SSE_CHAT_REDIS_URL=redis://HOST:PORT/0 to share streams "
                "through Redis, or run one worker (WEB_CONCURRENCY=1)."
            )


class _Reader:
    """Reads and validates single variables; every error names the variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def optional(self, name: str) -> str | None:
        value = self._env.get(name, "").strip()
        return value or None

    def text(self, name: str, default: str) -> str:
        return self.optional(name) or default

    def url(self, name: str, schemes: tuple[str, ...]) -> str | None:
        value = self.optional(name)
        if value is not None and not value.startswith(schemes):
            raise ConfigError(
                f"{name}={value!r} is not a URL starting with {' or '.join(schemes)}; "
                f"set it to e.g. {schemes[0]}127.0.0.1:PORT or unset it"
            )
        return value

    def redis_url(self, name: str) -> str | None:
        """A Redis URL, whose query may say ``cluster=yes`` or ``cluster=no``."""
        value = self.url(name, ("redis://", "rediss://", "unix://"))
        if value is not None:
            cluster = [v for k, v in urllib.parse.parse_qsl(urllib.parse.urlsplit(value).query) if k == "cluster"]
            if cluster and cluster[-1] not in ("yes", "no"):
                raise ConfigError(f"{name}={value!r} says cluster={cluster[-1]!r}; use cluster=yes (a Redis Cluster), "
                                  "cluster=no (one Redis), or leave it out (told by the server)")
        return value

    def integer(self, name: str, default: int, *, minimum: int, unit: str, maximum: int | None = None) -> int:
        raw = self.optional(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            bounds = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
            raise ConfigError(
                f"{name}={raw!r} is not a whole number of {unit} {bounds}; "
                f"set it to one, or unset it for the default {default}"
            )
        return value

    def seconds(self, name: str, default: float) -> float:
        raw = self.optional(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not value > 0 or value == float("inf"):
            raise ConfigError(
                f"{name}={raw!r} is not a number of seconds > 0; "
                f"set it to one (e.g. {default:g}), or unset it for the default {default:g}"
            )
        return value

    def import_paths(self, name: str) -> tuple[str, ...]:
        """Comma-separated ``module:function`` paths, in order (they are imported
        later, by the app: see :mod:`sse_chat.tools`)."""
        paths = tuple(path.strip() for path in (self.optional(name) or "").split(",") if path.strip())
        for path in paths:
            module, colon, function = path.partition(":")
            if not (colon and module and function) or " " in path:
                raise ConfigError(
                    f"{name} holds {path!r}, which is not an import path of the form module:function; "
                    f"set it to e.g. sse_chat.tools.example:current_time (comma-separated for several)"
                )
        return paths

    def key_list(self, name: str) -> frozenset[str]:
        raw = self.optional(name) or ""
        return frozenset(key.strip() for key in raw.split(",") if key.strip())

"""Choosing the backend for a request's ``model``: one table of backends.

:data:`BACKENDS` maps a backend's name to how it is built, the label its streams
carry in metrics and the prefix of its error types, as gunicorn's
``SUPPORTED_WORKERS`` maps a worker's name to its class. A request's ``model``
that names a backend in the table (``fake``) gets that backend; any other model
name goes to :data:`DEFAULT_BACKEND`, the OpenAI-compatible upstream, which
serves the models it knows. Nothing outside this module compares model names
with backend names.

To add a backend: write a :class:`~.base.ChatModel` (``models/<name>.py``; its
failures raise :class:`~.base.UpstreamError`), add a :class:`Backend` row here,
and document its model name (docs/http-api.md) and its metrics label
(docs/deployment.md).

Options a request gives one backend alone (the fake model's faults: a body's
``"fake": {…}`` object, or ``GET /v1/chat``'s query parameters of the same
names) are parsed by that backend's row (:attr:`Backend.parse_options`) into a
:class:`~.base.BackendOptions`, of which the service reads only the neutral
part (``events_per_response``); the options of a backend other than the one
that serves the request's ``model`` are a 400 (:func:`backend_options`).

Error types (the ``error`` event's ``error.type``): a backend's failures are
typed ``upstream_…`` (:data:`UPSTREAM_ERROR_PREFIX`: ``upstream_timeout``,
``upstream_rate_limited``, …), the service's own errors are not
(``stream_lost``, ``tool_…``, ``internal_error``). Two places rely on the
prefix, through :func:`is_backend_error`: the producer counts such errors in
``sse_chat_upstream_errors`` (by type), and the OpenAI surface answers a
non-streaming completion that ended with one 502 Bad Gateway (500 otherwise).
The fake model's injected faults default to ``upstream_error``, so that they
are seen as the upstream's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import Settings
from ..errors import backend_unavailable, invalid_request
from .base import BackendOptions, ChatModel
from .fake import FAKE_OPTIONS, FakeModel, parse_faults

#: The prefix of every error type a backend's failures carry.
UPSTREAM_ERROR_PREFIX = "upstream_"


@dataclass(frozen=True)
class Backend:
    """One row of :data:`BACKENDS`.

    Attributes:
        build: makes the backend from the settings, once per app (on its first
            request).
        missing: what the settings lack for the backend, as the end of a sentence
            that begins with the model's name (``None`` when nothing is missing);
            its requests then get 503 ``backend_unavailable``.
        metrics_label: the ``backend`` label of ``sse_chat_streams_started``: a
            fixed name, since model names come from callers and would make metric
            series without bound.
        error_prefix: the prefix of the error types of the backend's failures.
        option_names: the options a request may give this backend alone, in a
            body's object named after the backend or as query parameters.
        parse_options: validates those options (given as a mapping, and how the
            request spelled each one, for messages) into the request's
            ``backend_options``; raises ``ApiError`` 400. ``None``: the backend
            takes no options.
    """

    build: Callable[[Settings], ChatModel]
    metrics_label: str
    missing: Callable[[Settings], str | None] = lambda settings: None
    error_prefix: str = UPSTREAM_ERROR_PREFIX
    option_names: tuple[str, ...] = ()
    parse_options: Callable[[Mapping[str, Any], Callable[[str], str]], BackendOptions] | None = None


def _fake(settings: Settings) -> ChatModel:
    return FakeModel(delay_s=settings.fake_delay_ms / 1000, upstream_timeout_s=settings.upstream_timeout_s)


def _openai_missing(settings: Settings) -> str | None:
    if settings.upstream_configured:
        return None
    return ("needs an OpenAI-compatible upstream, and none is configured: "
            "set OPENAI_BASE_URL (e.g. http://127.0.0.1:8080/v1) and/or OPENAI_API_KEY on the "
            "server, or ask for model \"fake\"")


def _openai(settings: Settings) -> ChatModel:
    from .openai_compat import OpenAIChatModel, make_openai_client  # the SDK only where it is used

    client = make_openai_client(settings.openai_api_key, settings.openai_base_url,
                                settings.upstream_timeout_s, settings.upstream_max_retries)
    return OpenAIChatModel(client, secret=settings.openai_api_key)


#: The model name of the fake backend (tests, demos, the CLI's ``--fake``).
FAKE_MODEL = "fake"
#: The backend of every model name that is not a key of :data:`BACKENDS`.
DEFAULT_BACKEND = "openai"
#: The backends by name. A request's ``model`` equal to a name here selects that
#: backend; every other model name selects :data:`DEFAULT_BACKEND`.
BACKENDS: dict[str, Backend] = {
    FAKE_MODEL: Backend(_fake, metrics_label="fake", option_names=FAKE_OPTIONS, parse_options=parse_faults),
    DEFAULT_BACKEND: Backend(_openai, metrics_label="upstream", missing=_openai_missing),
}


def backend_name(model: str) -> str:
    """The name (a key of :data:`BACKENDS`) of the backend that serves ``model``."""
    return model if model in BACKENDS else DEFAULT_BACKEND


def option_names() -> dict[str, tuple[str, ...]]:
    """The backends that take options of their own, by name, with the names of
    their options: ``{"fake": ("delay_ms", "drop_every", …)}``."""
    return {name: backend.option_names for name, backend in BACKENDS.items() if backend.parse_options is not None}


def backend_options(model: str, backend: str, given: Mapping[str, Any],
                    spelled: Callable[[str], str]) -> BackendOptions:
    """Parse the options ``given`` for ``backend`` (a key of :func:`option_names`)
    in a request for ``model``; ``spelled(option)`` is how the request spelled
    an option, for messages.

    Raises:
        ApiError: 400 ``invalid_request`` when ``model`` is served by another
            backend (the options would be ignored), or as the backend's
            ``parse_options`` (a value out of range, …).
    """
    parse = BACKENDS[backend].parse_options
    if backend_name(model) != backend or parse is None:
        names = ", ".join(spelled(option) for option in given)
        raise invalid_request(f"{names}: these options are honoured by the {backend} model only, and this request "
                              f"is for model {model!r}; remove them, or ask for model \"{backend}\"")
    return parse(given, spelled)


def metrics_label(model: str) -> str:
    """The metrics label of the backend that serves ``model`` (``fake`` or ``upstream``)."""
    return BACKENDS[backend_name(model)].metrics_label


def is_backend_error(error_type: str) -> bool:
    """Whether ``error_type`` is a backend's failure (it begins with a backend's
    error prefix, ``upstream_``), not the service's own error."""
    return any(error_type.startswith(backend.error_prefix) for backend in BACKENDS.values())


class ModelRegistry:
    """The backends of one app, built from :data:`BACKENDS` on first use (a
    fake-only service never imports the openai SDK)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._built: dict[str, ChatModel] = {}

    def resolve(self, model: str) -> ChatModel:
        """Return the backend that serves ``model``.

        Raises:
            ApiError: 503 ``backend_unavailable`` when that backend cannot be built
                from the settings (the upstream's for a model other than ``fake``
                when none is configured), saying what to set.
        """
        name = backend_name(model)
        built = self._built.get(name)
        if built is None:
            backend = BACKENDS[name]
            missing = backend.missing(self._settings)
            if missing is not None:
                raise backend_unavailable(f"model {model!r} {missing}")
            built = self._built[name] = backend.build(self._settings)
        return built

    def model_names(self) -> list[str]:
        """The model names this service can name without asking the upstream: the
        table's own, and the configured default model when an upstream serves it."""
        names = [name for name in BACKENDS if name != DEFAULT_BACKEND]
        if self._settings.upstream_configured and self._settings.model not in names:
            names.append(self._settings.model)
        return names

"""Choosing the backend for a request's ``model``."""

from __future__ import annotations

from ..config import Settings
from ..errors import backend_unavailable
from .base import ChatModel
from .fake import FakeModel

FAKE_MODEL = "fake"


class ModelRegistry:
    """``fake`` → :class:`FakeModel`; any other name → the OpenAI-compatible upstream.

    The SDK client is built on first use, so a fake-only service never imports more
    of the SDK than it must.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._fake = FakeModel(delay_s=settings.fake_delay_ms / 1000, upstream_timeout_s=settings.upstream_timeout_s)
        self._upstream: ChatModel | None = None

    def resolve(self, model: str) -> ChatModel:
        """Return the backend that serves ``model``.

        Raises:
            ApiError: 503 ``backend_unavailable`` when ``model`` is not ``fake`` and no
                upstream is configured, saying what to set.
        """
        if model == FAKE_MODEL:
            return self._fake
        if not self._settings.upstream_configured:
            raise backend_unavailable(
                f"model {model!r} needs an OpenAI-compatible upstream, and none is configured: "
                "set OPENAI_BASE_URL (e.g. http://127.0.0.1:8080/v1) and/or OPENAI_API_KEY on the "
                "server, or ask for model \"fake\""
            )
        if self._upstream is None:
            self._upstream = self._build_upstream()
        return self._upstream

    def model_names(self) -> list[str]:
        """The model names this service can name without asking the upstream."""
        names = [FAKE_MODEL]
        if self._settings.upstream_configured and self._settings.model != FAKE_MODEL:
            names.append(self._settings.model)
        return names

    def _build_upstream(self) -> ChatModel:
        from .openai_compat import OpenAIChatModel, make_openai_client

        settings = self._settings
        client = make_openai_client(
            settings.openai_api_key, settings.openai_base_url,
            settings.upstream_timeout_s, settings.upstream_max_retries,
        )
        return OpenAIChatModel(client, secret=settings.openai_api_key)

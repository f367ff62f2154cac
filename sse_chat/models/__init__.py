"""Model backends: one small interface (:class:`ChatModel`), ``fake`` and ``openai``."""

from .base import ChatModel, Delta, UpstreamError, Usage
from .registry import FAKE_MODEL, ModelRegistry

__all__ = ["ChatModel", "Delta", "FAKE_MODEL", "ModelRegistry", "UpstreamError", "Usage"]

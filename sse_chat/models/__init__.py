"""Model backends: one small interface (:class:`ChatModel`), ``fake`` and ``openai``."""

from .base import ChatModel, ChatRequest, Delta, Message, UpstreamError, Usage
from .registry import FAKE_MODEL, ModelRegistry

__all__ = ["FAKE_MODEL", "ChatModel", "ChatRequest", "Delta", "Message", "ModelRegistry", "UpstreamError", "Usage"]

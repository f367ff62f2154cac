"""Model backends: one small interface (:class:`ChatModel`), ``fake`` and ``openai``."""

from .base import (
    BackendOptions,
    ChatModel,
    ChatRequest,
    Delta,
    Message,
    ToolCall,
    ToolCallDelta,
    UpstreamError,
    Usage,
)
from .registry import FAKE_MODEL, ModelRegistry

__all__ = ["FAKE_MODEL", "BackendOptions", "ChatModel", "ChatRequest", "Delta", "Message", "ModelRegistry",
           "ToolCall", "ToolCallDelta", "UpstreamError", "Usage"]

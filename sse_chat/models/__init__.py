"""Model backends: one small interface (:class:`ChatModel`), ``fake`` and ``openai``."""

from .base import (
    ChatModel,
    ChatRequest,
    Delta,
    FakeFaults,
    InjectedFault,
    Message,
    ToolCall,
    ToolCallDelta,
    UpstreamError,
    Usage,
)
from .registry import FAKE_MODEL, ModelRegistry

__all__ = ["FAKE_MODEL", "ChatModel", "ChatRequest", "Delta", "FakeFaults", "InjectedFault", "Message", "ModelRegistry",
           "ToolCall", "ToolCallDelta", "UpstreamError", "Usage"]

"""The backend interface: a chat model takes a :class:`ChatRequest` and streams
:class:`Delta` values."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message, as in OpenAI's Chat Completions API."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What a backend needs to answer: ``messages`` (system first when given),
    the ``model`` name, and optional ``max_tokens`` (completion tokens) and
    ``temperature`` (0 to 2)."""

    messages: tuple[Message, ...]
    model: str
    max_tokens: int | None = None
    temperature: float | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one completion, as OpenAI's ``usage`` object."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict:
        """``{"prompt_tokens": int, "completion_tokens": int, "total_tokens": int}``."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class Delta:
    """One step of a streamed answer, named after OpenAI's ``choices[0].delta``.

    ``content`` is answer text and ``reasoning`` a reasoning model's thinking (both
    characters, possibly empty); the last delta of an answer carries its
    ``finish_reason`` (``"stop"``, ``"length"``, …) and, when known, its ``usage``.
    """

    content: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None


class UpstreamError(Exception):
    """The model backend failed. ``type`` is a snake_case name for the failure (e.g.
    ``upstream_rate_limited``) and ``message`` says what the upstream did, never
    holding a credential."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.type = error_type
        self.message = message


class ChatModel(Protocol):
    """A backend. ``stream`` returns a generator of deltas; closing the generator
    (``.close()``) stops the work and releases the upstream connection.

    Raises (from iteration):
        UpstreamError: when the backend fails; nothing follows it.
    """

    def stream(self, request: ChatRequest) -> Iterator[Delta]: ...

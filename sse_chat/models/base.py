"""The backend interface: a chat model takes a :class:`ChatRequest` and streams
:class:`Delta` values."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple, Protocol


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message, as in OpenAI's Chat Completions API."""

    role: str
    content: str


#: The ``error`` event type of an ``error_after`` fault when the request names none.
DEFAULT_FAKE_ERROR_TYPE = "upstream_error"


@dataclass(frozen=True, slots=True)
class FakeFaults:
    """Faults a request asks the ``fake`` model to inject into its stream
    (docs/testing-clients.md); ``None`` means not asked.

    * ``delay_ms``: pause before each token, milliseconds (instead of
      ``SSE_CHAT_FAKE_DELAY_MS``);
    * ``drop_every``: every response of the stream ends after this many events
      (>= 1), without its terminal event unless that is among them; the reader
      applies it, and the event log keeps it with the stream for resumes;
    * ``error_after``: after this many tokens the stream ends with an ``error``
      event of type ``error_type``;
    * ``stall_after``: after this many tokens the model sends nothing until the
      upstream timeout (``SSE_CHAT_UPSTREAM_TIMEOUT_S``), then the stream ends
      with ``error`` ``upstream_timeout``.

    A count beyond the answer's tokens applies after its last token, in place of
    ``done``.
    """

    delay_ms: int | None = None
    drop_every: int | None = None
    error_after: int | None = None
    error_type: str = DEFAULT_FAKE_ERROR_TYPE
    stall_after: int | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What a backend needs to answer: ``messages`` (system first when given),
    the ``model`` name, optional ``max_tokens`` (completion tokens) and
    ``temperature`` (0 to 2), and ``fake``: faults for the ``fake`` model to
    inject (only ever set for it)."""

    messages: tuple[Message, ...]
    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    fake: FakeFaults | None = None

    @property
    def drop_every(self) -> int | None:
        """Events per response before the server drops it (``fake.drop_every``), or
        ``None``."""
        return self.fake.drop_every if self.fake is not None else None


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


class Delta(NamedTuple):
    """One step of a streamed answer, named after OpenAI's ``choices[0].delta``.

    ``content`` is answer text and ``reasoning`` a reasoning model's thinking (both
    characters, possibly empty); the last delta of an answer carries its
    ``finish_reason`` (``"stop"``, ``"length"``, …) and, when known, its ``usage``.
    A named tuple: one is made per token, and a frozen dataclass costs several
    times as much to build.
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


class InjectedFault(UpstreamError):
    """A failure the request asked the ``fake`` model for (``error_after``,
    ``stall_after``): reported like an upstream's, but counted apart in metrics,
    since its type is the caller's choice."""


class ChatModel(Protocol):
    """A backend. ``stream`` returns a generator of deltas; closing the generator
    (``.close()``) stops the work and releases the upstream connection.

    Raises (from iteration):
        UpstreamError: when the backend fails; nothing follows it.
    """

    def stream(self, request: ChatRequest) -> Iterator[Delta]: ...

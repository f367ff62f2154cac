"""The backend interface: a chat model takes a :class:`ChatRequest` and streams
:class:`Delta` values."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Protocol


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A whole call of a function tool, as OpenAI's ``tool_calls[]`` items carry it:
    the call's ``id`` (the upstream's, e.g. ``"call_…"``), the function's ``name``
    and its ``arguments``, a string of JSON as the model wrote it (not parsed:
    a model may write invalid JSON, and the client decides what to do with it)."""

    id: str
    name: str
    arguments: str

    def as_openai(self) -> dict[str, Any]:
        """``{"id", "type": "function", "function": {"name", "arguments"}}``."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message, as in OpenAI's Chat Completions API: ``role`` is
    ``system``, ``user``, ``assistant`` or ``tool``; ``content`` is text, or
    ``None`` for an assistant turn that only calls tools. An assistant turn's
    ``tool_calls`` are the calls it made; a ``tool`` turn answers the call whose
    id is ``tool_call_id`` with its result as ``content``. ``images`` are the
    URLs (``https://…`` or ``data:image/…;base64,…``) of images a user message
    shows the model after its text."""

    role: str
    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    images: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """``content``, or ``""`` when it is ``None``."""
        return self.content or ""

    def as_openai(self) -> dict[str, Any]:
        """The message in OpenAI's request shape: ``{"role", "content"}``, plus
        ``tool_calls`` (assistant) or ``tool_call_id`` (tool) when set; with
        ``images``, ``content`` is a list of ``text`` and ``image_url`` parts."""
        content: Any = self.content
        if self.images:
            content = [{"type": "text", "text": self.text},
                       *({"type": "image_url", "image_url": {"url": url}} for url in self.images)]
        message: dict[str, Any] = {"role": self.role, "content": content}
        if self.tool_calls:
            message["tool_calls"] = [call.as_openai() for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


class BackendOptions(Protocol):
    """What a request asks of its backend alone, parsed by that backend's row of
    the backend table (:mod:`.registry`): the fake model's faults
    (:class:`~.fake.FakeFaults`). The service itself reads only what this
    interface names; the backend reads the rest."""

    @property
    def events_per_response(self) -> int | None:
        """The most events (>= 1) each HTTP response of the stream carries: the
        response then ends, without the terminal event unless that is among
        them, as a dropped connection would, and the client resumes. ``None``:
        no bound."""


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What a backend needs to answer: ``messages`` (system first when given),
    the ``model`` name, optional ``max_tokens`` (completion tokens) and
    ``temperature`` (0 to 2), ``tools`` and ``tool_choice`` in OpenAI's shapes
    (JSON values, passed to the upstream as the caller gave them; ``None`` when
    not given), ``sampling``: OpenAI's other sampling options as ``(name, value)``
    pairs (``top_p``, ``seed``, ``stop`` (a string or a tuple of them),
    ``presence_penalty``, ``frequency_penalty``; passed to the upstream), and
    ``backend_options``: what the request asks of its backend alone (the fake
    model's faults), parsed by that backend; ``None`` when none was given."""

    messages: tuple[Message, ...]
    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    backend_options: BackendOptions | None = None
    tools: tuple[dict[str, Any], ...] | None = None
    tool_choice: str | dict[str, Any] | None = None
    sampling: tuple[tuple[str, Any], ...] = ()

    @property
    def events_per_response(self) -> int | None:
        """The most events each HTTP response of the stream carries
        (:attr:`BackendOptions.events_per_response`), or ``None``: no bound."""
        return self.backend_options.events_per_response if self.backend_options is not None else None


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
class ToolCallDelta:
    """A fragment of a tool call, as OpenAI streams ``delta.tool_calls[]``: the call
    is number ``index`` (0, 1, … in the answer; ``None`` when the upstream sent
    none); its first fragment carries the
    call's ``id`` and the function's ``name`` (``None`` on later fragments); the
    ``arguments`` fragments of one index, joined, are the call's JSON arguments."""

    index: int | None
    id: str | None
    name: str | None
    arguments: str

    def as_event_data(self) -> dict[str, Any]:
        """``{"index", "id", "name", "arguments"}``: a ``tool_call`` event's data."""
        return {"index": self.index, "id": self.id, "name": self.name, "arguments": self.arguments}


class Delta(NamedTuple):
    """One step of a streamed answer, named after OpenAI's ``choices[0].delta``.

    ``content`` is answer text and ``reasoning`` a reasoning model's thinking (both
    characters, possibly empty); ``tool_calls`` are fragments of tool calls; the
    last delta of an answer carries its ``finish_reason`` (``"stop"``,
    ``"length"``, ``"tool_calls"``, …) and, when known, its ``usage``. A named
    tuple: one is made per token, and a frozen dataclass costs several times as
    much to build. The producer unpacks it by position, once per token: a new
    field goes last.
    """

    content: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()


class UpstreamError(Exception):
    """The model backend failed. ``type`` is a snake_case name for the failure (e.g.
    ``upstream_rate_limited``) and ``message`` says what the upstream did, never
    holding a credential."""

    #: True for a failure the request itself asked for (the fake model's
    #: ``error_after``): reported like the backend's own, but counted apart in
    #: metrics, since its ``type`` is the caller's choice.
    injected: ClassVar[bool] = False

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

"""The ``fake`` model: deterministic, offline, for tests and demos, and the faults a
request may ask it for (docs/testing-clients.md): the options, their validation
and the failures they inject. The rest of the service knows only what
:class:`~.base.BackendOptions` names, through the backend table."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import invalid_request
from .base import ChatRequest, Delta, Message, ToolCallDelta, UpstreamError, Usage

#: Tokens of mixed length, with non-ASCII text and line breaks, so encoding bugs show.
VOCABULARY = (
    " the", " sky", " is", " blue", " because", " air", " scatters", " short",
    " wavelengths", " of", " sunlight", " more", " than", " long", " ones", ",",
    ".", " Rayleigh", " scattering", " 你好", " café", " é", " naïve", " 世界",
    " —", " light", " and", " so", " on", "\n", " λ", " über", " déjà", " vu",
    " streaming", " tokens", " 🙂", " résumé", " Straße", "\n\n", " data:", " id",
)

#: One delta per word of :data:`VOCABULARY`, in its order: a long answer hands
#: these out (deltas are immutable) instead of building one per token.
_VOCABULARY_DELTAS = tuple(Delta(content=token) for token in VOCABULARY)

#: Tokens of a long answer drawn at once (:func:`_drawn`): a list this long is the
#: most a long answer holds, however many tokens it has.
DRAWS_AT_ONCE = 256

_WORDS = re.compile(r"\s*\S+")

T = TypeVar("T")


def split_tokens(text: str) -> list[str]:
    """Split ``text`` into word tokens, each carrying the whitespace before it."""
    return _WORDS.findall(text)


def _seed(request: ChatRequest) -> int:
    text = "\x1e".join(f"{m.role}\x1f{m.text}" for m in request.messages)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def fake_tokens(request: ChatRequest) -> list[str]:
    """The answer's tokens: exactly ``max_tokens`` tokens of deterministic text when
    it is set (:func:`long_answer`), otherwise a short Markdown reply that echoes
    the last user message."""
    if request.max_tokens is not None:
        return list(long_answer(request))
    rng = random.Random(_seed(request))
    echo = split_tokens(_last_prompt(request)) or [" …"]
    closing = [rng.choice(VOCABULARY) for _ in range(12)]
    return ["You", " asked", ":", " «", *echo, " ».", "\n\n", "**Fake", " answer**", ":", " 你好", " é", *closing, ".",
            "\n\n", "-", " one", "\n", "-", " `two`", "\n"]


def long_answer(request: ChatRequest) -> Iterator[str]:
    """The ``max_tokens`` tokens of a request that sets it, one at a time (a
    million of them must not be held at once)."""
    return _drawn(request, VOCABULARY)


def _drawn(request: ChatRequest, words: Sequence[T]) -> Iterator[T]:
    """``max_tokens`` draws from ``words``, seeded by the request: the same
    positions for any sequence of :data:`VOCABULARY`'s length (its words, or
    :data:`_VOCABULARY_DELTAS` for the fake model's stream). Drawn
    :data:`DRAWS_AT_ONCE` at a time and handed out one at a time by
    :func:`itertools.chain` (C): taking the next costs no resumption of a Python
    generator, where the fake model takes one per token."""
    return itertools.chain.from_iterable(_draws(request, words))


def _draws(request: ChatRequest, words: Sequence[T]) -> Iterator[list[T]]:
    """:func:`_drawn`'s draws, in lists of up to :data:`DRAWS_AT_ONCE`."""
    choice = random.Random(_seed(request)).choice
    left = request.max_tokens or 0
    while left > 0:
        count = min(DRAWS_AT_ONCE, left)
        yield [choice(words) for _ in range(count)]
        left -= count


def _last_prompt(request: ChatRequest) -> str:
    return next((m.text for m in reversed(request.messages) if m.role == "user"), "")


#: Characters of a tool call's JSON arguments per fragment.
ARGUMENT_FRAGMENT_CHARS = 8


def fake_tool_call(request: ChatRequest) -> list[ToolCallDelta] | None:
    """The fragments of the fake model's one tool call, or ``None`` when it answers
    in text: it calls the function ``tool_choice`` names, else the first function
    tool of ``request.tools``, unless the last message is a ``tool`` result or
    ``tool_choice`` is ``"none"``. The arguments are a JSON object holding the
    last user prompt under the function's first required parameter (else its
    first parameter, else ``"input"``), sent :data:`ARGUMENT_FRAGMENT_CHARS`
    characters per fragment after a first fragment with the call's ``id`` and
    ``name`` and no arguments, as OpenAI streams them."""
    if not request.tools or request.messages[-1].role == "tool" or request.tool_choice == "none":
        return None
    functions = [tool["function"] for tool in request.tools if tool.get("type") == "function"]
    chosen = request.tool_choice.get("function") if isinstance(request.tool_choice, dict) else None
    name = chosen.get("name") if isinstance(chosen, dict) else None
    function = next((f for f in functions if f["name"] == name), functions[0] if functions else None)
    if function is None:
        return None
    arguments = json.dumps({_first_parameter(function.get("parameters")): _last_prompt(request)},
                           ensure_ascii=False)
    call_id = f"call_{_seed(request):016x}"
    pieces = [arguments[i:i + ARGUMENT_FRAGMENT_CHARS] for i in range(0, len(arguments), ARGUMENT_FRAGMENT_CHARS)]
    return [ToolCallDelta(0, call_id, function["name"], ""), *(ToolCallDelta(0, None, None, p) for p in pieces)]


def _first_parameter(schema: Any) -> str:
    if isinstance(schema, dict):
        required = schema.get("required")
        if isinstance(required, list) and required and isinstance(required[0], str):
            return required[0]
        properties = schema.get("properties")
        if isinstance(properties, dict) and properties:
            return str(next(iter(properties)))
    return "input"


def tool_result_tokens(messages: tuple[Message, ...]) -> list[str]:
    """The answer to tool results (the ``tool`` messages that end ``messages``):
    one sentence per result, quoting it, naming the function that the assistant's
    call with that ``tool_call_id`` named."""
    names = {call.id: call.name for m in messages for call in m.tool_calls}
    results = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        results.append(message)
    sentences = [f"The tool {names.get(m.tool_call_id or '', 'tool')} answered: «{m.text}»." for m in reversed(results)]
    return split_tokens("\n".join(sentences))


#: The ``error`` event type of an ``error_after`` fault when the request names none.
DEFAULT_FAKE_ERROR_TYPE = "upstream_error"
#: The largest ``delay_ms``: a minute per token.
MAX_FAKE_DELAY_MS = 60_000
#: The largest count of the other options (events or tokens).
MAX_FAKE_COUNT = 1_000_000
#: The fault options (docs/testing-clients.md): keys of a body's ``"fake"``
#: object and query parameters of ``GET /v1/chat``. The counts are whole numbers
#: in the ranges given here (``delay_ms``: milliseconds; ``drop_every``: events;
#: the others: tokens); ``error_type`` is a snake_case name.
FAKE_COUNTS = {"delay_ms": (0, MAX_FAKE_DELAY_MS), "drop_every": (1, MAX_FAKE_COUNT),
               "error_after": (0, MAX_FAKE_COUNT), "stall_after": (0, MAX_FAKE_COUNT)}
FAKE_OPTIONS = (*FAKE_COUNTS, "error_type")
ERROR_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclass(frozen=True, slots=True)
class FakeFaults:
    """Faults a request asks the ``fake`` model to inject into its stream
    (docs/testing-clients.md), the request's
    :attr:`~.base.ChatRequest.backend_options`; ``None`` means not asked.

    * ``delay_ms``: pause before each token, milliseconds (instead of
      ``SSE_CHAT_FAKE_DELAY_MS``);
    * ``drop_every``: every response of the stream ends after this many events
      (>= 1), without its terminal event unless that is among them: the
      service's :attr:`events_per_response`, which the reader applies and the
      event log keeps with the stream for resumes;
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

    @property
    def events_per_response(self) -> int | None:
        """``drop_every``, as :class:`~.base.BackendOptions` names it."""
        return self.drop_every


#: A request that asks for no faults.
NO_FAULTS = FakeFaults()


def parse_faults(options: Mapping[str, Any], spelled: Callable[[str], str]) -> FakeFaults:
    """Validate the fault ``options`` a request gives (keys of :data:`FAKE_OPTIONS`;
    ``spelled(option)`` is how the request spelled one, such as
    ``"fake.drop_every"`` or ``?drop_every=``, for messages).

    Raises:
        ApiError: 400 ``invalid_request`` for a count that is not a whole number
            in its range, ``error_type`` without ``error_after``, or an
            ``error_type`` that is not a snake_case name.
    """
    counts = {option: _count(options[option], spelled(option), *limits)
              for option, limits in FAKE_COUNTS.items() if option in options}
    error_type = options.get("error_type", DEFAULT_FAKE_ERROR_TYPE)
    if "error_type" in options and "error_after" not in options:
        raise invalid_request(f"{spelled('error_type')} needs {spelled('error_after')}: after how many tokens to fail")
    if not isinstance(error_type, str) or not ERROR_TYPE.fullmatch(error_type):
        raise invalid_request(f"{spelled('error_type')} must be a snake_case name (a-z, 0-9, _; a letter first; "
                              f"at most 64 characters), such as \"upstream_error\"; got {error_type!r}")
    return FakeFaults(error_type=error_type, **counts)


def _count(value: Any, name: str, least: int, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
        raise invalid_request(f"{name} must be a whole number from {least} to {most:,}; got {value!r}")
    return value


class InjectedFault(UpstreamError):
    """A failure the request asked the ``fake`` model for (``error_after``,
    ``stall_after``): reported like an upstream's, but counted apart in metrics,
    since its type is the caller's choice."""

    injected = True


class FakeModel:
    """Streams :func:`fake_tokens` one per delta, ``delay_s`` seconds apart (0 still
    yields to other greenlets), then a final delta with ``finish_reason`` ``"length"``
    (``max_tokens`` given) or ``"stop"`` and the usage (prompt tokens counted as
    words of all messages). Given ``tools``, it calls one instead
    (:func:`fake_tool_call`, ``finish_reason`` ``"tool_calls"``); after tool
    results it quotes them (:func:`tool_result_tokens`).

    A request's ``fake`` faults apply here (docs/testing-clients.md): ``delay_ms``
    replaces ``delay_s``; ``error_after`` and ``stall_after`` fail the stream after
    that many tokens or tool-call fragments (after the last one when the answer is shorter), the stall
    after sleeping ``upstream_timeout_s`` seconds, as a silent upstream would;
    when both are due at once, the error wins. ``drop_every`` is the reader's
    (:attr:`FakeFaults.events_per_response`).
    """

    def __init__(self, delay_s: float, sleep: Callable[[float], None] = time.sleep,
                 upstream_timeout_s: float = 60.0) -> None:
        self._delay_s = delay_s
        self._sleep = sleep
        self._upstream_timeout_s = upstream_timeout_s

    def stream(self, request: ChatRequest) -> Iterator[Delta]:
        steps, total, finish_reason = self._steps(request)
        faults = request.backend_options if isinstance(request.backend_options, FakeFaults) else NO_FAULTS
        delay_s = self._delay_s if faults.delay_ms is None else faults.delay_ms / 1000
        if faults.error_after is None and faults.stall_after is None:
            sleep = self._sleep
            for step in steps:  # the usual case, once per token: nothing to count
                sleep(delay_s)
                yield step
        else:
            for position, step in enumerate(steps):
                self._inject(faults, position, total)
                self._sleep(delay_s)
                yield step
        self._inject(faults, total, total)
        prompt_tokens = sum(len(split_tokens(m.text)) + 1 for m in request.messages)
        yield Delta(finish_reason=finish_reason,
                    usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=total))

    @staticmethod
    def _steps(request: ChatRequest) -> tuple[Iterable[Delta], int, str]:
        """The deltas before the last, how many, and the ``finish_reason``: a tool
        call's fragments (``"tool_calls"``), an answer to tool results, or
        :func:`fake_tokens` (``"length"`` when ``max_tokens`` is given: then made
        one at a time)."""
        call = fake_tool_call(request)
        if call is not None:
            return [Delta(tool_calls=(fragment,)) for fragment in call], len(call), "tool_calls"
        if request.messages[-1].role == "tool":
            deltas = [Delta(content=token) for token in tool_result_tokens(request.messages)]
            return deltas, len(deltas), "stop"
        if request.max_tokens is not None:
            return _drawn(request, _VOCABULARY_DELTAS), request.max_tokens, "length"
        deltas = [Delta(content=token) for token in fake_tokens(request)]
        return deltas, len(deltas), "stop"

    def _inject(self, faults: FakeFaults, position: int, total: int) -> None:
        """Fail when a fault is due once ``position`` tokens (of ``total``) were sent.

        Raises:
            InjectedFault: ``error_after``'s ``error_type``, or ``upstream_timeout``
                after ``stall_after``'s silence of ``upstream_timeout_s`` seconds.
        """
        if _due(faults.error_after, position, total):
            raise InjectedFault(faults.error_type,
                                f"the fake model failed after {position} tokens, as asked by fake.error_after")
        if _due(faults.stall_after, position, total):
            self._sleep(self._upstream_timeout_s)
            raise InjectedFault("upstream_timeout",
                                f"the upstream sent nothing for longer than SSE_CHAT_UPSTREAM_TIMEOUT_S "
                                f"({self._upstream_timeout_s:g} s) allows, so the stream was stopped "
                                f"(the fake model stalled after {position} tokens, as asked by fake.stall_after)")


def _due(after: int | None, position: int, total: int) -> bool:
    """True when a fault set to fire ``after`` tokens fires at ``position``: there,
    or at the end (``position == total``) when the answer is shorter."""
    return after is not None and min(after, total) == position

"""The ``fake`` model: deterministic, offline, for tests and demos."""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections.abc import Callable, Iterator

from .base import ChatRequest, Delta, FakeFaults, InjectedFault, Usage

#: Tokens of mixed length, with non-ASCII text and line breaks, so encoding bugs show.
VOCABULARY = (
    " the", " sky", " is", " blue", " because", " air", " scatters", " short",
    " wavelengths", " of", " sunlight", " more", " than", " long", " ones", ",",
    ".", " Rayleigh", " scattering", " 你好", " café", " é", " naïve", " 世界",
    " —", " light", " and", " so", " on", "\n", " λ", " über", " déjà", " vu",
    " streaming", " tokens", " 🙂", " résumé", " Straße", "\n\n", " data:", " id",
)

_WORDS = re.compile(r"\s*\S+")


def split_tokens(text: str) -> list[str]:
    """Split ``text`` into word tokens, each carrying the whitespace before it."""
    return _WORDS.findall(text)


def _seed(request: ChatRequest) -> int:
    text = "\x1e".join(f"{m.role}\x1f{m.content}" for m in request.messages)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def fake_tokens(request: ChatRequest) -> list[str]:
    """The answer's tokens: exactly ``max_tokens`` tokens of deterministic text when
    it is set, otherwise a short Markdown reply that echoes the last user message."""
    rng = random.Random(_seed(request))
    if request.max_tokens is not None:
        return [rng.choice(VOCABULARY) for _ in range(request.max_tokens)]
    prompt = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
    echo = split_tokens(prompt) or [" …"]
    closing = [rng.choice(VOCABULARY) for _ in range(12)]
    return ["You", " asked", ":", " «", *echo, " ».", "\n\n", "**Fake", " answer**", ":", " 你好", " é", *closing, ".",
            "\n\n", "-", " one", "\n", "-", " `two`", "\n"]


#: A request that asks for no faults.
NO_FAULTS = FakeFaults()


class FakeModel:
    """Streams :func:`fake_tokens` one per delta, ``delay_s`` seconds apart (0 still
    yields to other greenlets), then a final delta with ``finish_reason`` ``"length"``
    (``max_tokens`` given) or ``"stop"`` and the usage (prompt tokens counted as
    words of all messages).

    A request's ``fake`` faults apply here (docs/testing-clients.md): ``delay_ms``
    replaces ``delay_s``; ``error_after`` and ``stall_after`` fail the stream after
    that many tokens (after the last one when the answer is shorter), the stall
    after sleeping ``upstream_timeout_s`` seconds, as a silent upstream would;
    when both are due at once, the error wins. ``drop_every`` is the reader's.
    """

    def __init__(self, delay_s: float, sleep: Callable[[float], None] = time.sleep,
                 upstream_timeout_s: float = 60.0) -> None:
        self._delay_s = delay_s
        self._sleep = sleep
        self._upstream_timeout_s = upstream_timeout_s

    def stream(self, request: ChatRequest) -> Iterator[Delta]:
        tokens = fake_tokens(request)
        faults = request.fake or NO_FAULTS
        delay_s = self._delay_s if faults.delay_ms is None else faults.delay_ms / 1000
        faulty = faults.error_after is not None or faults.stall_after is not None
        for position, token in enumerate(tokens):
            if faulty:
                self._inject(faults, position, len(tokens))
            self._sleep(delay_s)
            yield Delta(content=token)
        self._inject(faults, len(tokens), len(tokens))
        prompt_tokens = sum(len(split_tokens(m.content)) + 1 for m in request.messages)
        yield Delta(
            finish_reason="length" if request.max_tokens is not None else "stop",
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=len(tokens)),
        )

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

"""The ``fake`` model: deterministic, offline, for tests and demos."""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections.abc import Callable, Iterator

from .base import ChatRequest, Delta, Usage

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


class FakeModel:
    """Streams :func:`fake_tokens` one per delta, ``delay_s`` seconds apart (0 still
    yields to other greenlets), then a final delta with ``finish_reason`` ``"length"``
    (``max_tokens`` given) or ``"stop"`` and the usage (prompt tokens counted as
    words of all messages)."""

    def __init__(self, delay_s: float, sleep: Callable[[float], None] = time.sleep) -> None:
        self._delay_s = delay_s
        self._sleep = sleep

    def stream(self, request: ChatRequest) -> Iterator[Delta]:
        tokens = fake_tokens(request)
        for token in tokens:
            self._sleep(self._delay_s)
            yield Delta(content=token)
        prompt_tokens = sum(len(split_tokens(m.content)) + 1 for m in request.messages)
        yield Delta(
            finish_reason="length" if request.max_tokens is not None else "stop",
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=len(tokens)),
        )

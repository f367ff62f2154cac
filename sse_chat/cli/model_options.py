"""``-o/--option KEY VALUE``: model options for the request, as ``llm`` takes them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

#: Options that are fields the client names (the others go into the body as they are).
NAMED_FIELDS = ("temperature", "max_tokens", "system", "model")

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def model_options(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """``-o KEY VALUE`` pairs as request fields: a VALUE that reads as JSON (a
    number, ``true``/``false``/``null``, a list or an object) is sent as that value,
    any other as the string; a later KEY replaces an earlier one.

    Raises:
        ValueError: a KEY that is not a name (letters, digits, ``_``), or ``fake``,
            ``tools`` and ``messages``, which have options of their own.
    """
    options: dict[str, Any] = {}
    for key, value in pairs:
        if not _KEY.fullmatch(key):
            raise ValueError(f"{key!r} is not an option name (letters, digits and _)")
        if key in ("fake", "tools", "tool_choice", "messages", "prompt"):
            raise ValueError(f"{key!r} has an option of its own (see --help)")
        options[key] = _value(value)
    return options


def _value(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if not isinstance(value, str) else text

"""Reading a request's JSON body into values the rest of the service can trust:
UTF-8 JSON (RFC 8259), nested at most :data:`MAX_DEPTH` deep, whose strings (keys
too) are valid Unicode text. Pure: no Flask.

JSON's ``\\uXXXX`` escapes can spell a lone UTF-16 surrogate (``"\\ud800"``), which
RFC 8259 (section 8.2) leaves to the receiver; Python's :func:`json.loads` keeps
it in the string, and any later UTF-8 encoding (a model's prompt, the event log,
a hash) would fail. Such a body is refused here, naming the field, instead.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import invalid_request

#: The deepest nesting of arrays and objects a body may have. Chat requests need
#: about six (``messages[0].tool_calls[0].function``, tool schemas a few more);
#: Python's recursive encoders and hashing of the body must never meet its
#: recursion limit (about 1,000).
MAX_DEPTH = 64


def parse_json_body(raw: bytes) -> Any:
    """The JSON value of the body ``raw``.

    Raises:
        ApiError: 400 ``invalid_request`` when ``raw`` is not UTF-8, not JSON,
            nested more than :data:`MAX_DEPTH` deep, or holds a string with a lone
            surrogate (the message names the field, e.g. ``messages[0].content``).
    """
    try:
        text = raw.decode("utf-8-sig")  # strict (UTF-8 never encodes a surrogate); a BOM is ignored
    except UnicodeDecodeError:
        raise invalid_request("the body is not UTF-8 encoded JSON") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise invalid_request(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise invalid_request(f"the body's JSON is nested more than {MAX_DEPTH} deep") from None
    if "\\u" in text or text.count("[") + text.count("{") > MAX_DEPTH:
        check_json_value(value)
    # else nothing to walk for: strict UTF-8 holds no surrogate, so only a \u escape can
    # spell one, and a value cannot nest deeper than the brackets its text has
    return value


def check_json_value(value: Any) -> None:
    """Check a parsed JSON ``value`` (without recursion, so any depth is safe).

    Raises:
        ApiError: 400 ``invalid_request`` when it nests arrays and objects more
            than :data:`MAX_DEPTH` deep, or a string or key in it is not valid
            Unicode (holds a lone surrogate).
    """
    pending: list[tuple[Any, int, tuple[str | int, ...]]] = [(value, 0, ())]
    while pending:
        item, depth, path = pending.pop()
        if isinstance(item, str):
            _check_text(item, path)
        elif isinstance(item, (dict, list)):
            if depth >= MAX_DEPTH:
                raise invalid_request(f"{_field(path)} is nested more than {MAX_DEPTH} deep; "
                                      "send a flatter JSON body")
            if isinstance(item, dict):
                for key, member in item.items():
                    _check_text(key, (*path, key))
                    pending.append((member, depth + 1, (*path, key)))
            else:
                pending.extend((member, depth + 1, (*path, index)) for index, member in enumerate(item))


def _check_text(text: str, path: tuple[str | int, ...]) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raise invalid_request(f"{_field(path)} holds a lone surrogate (\\u{ord(bad):04x}), which is not text; "
                              "send valid Unicode (surrogates only in pairs)") from None


def _field(path: tuple[str | int, ...]) -> str:
    """``("messages", 0, "content")`` -> ``"messages[0].content"``; ``()`` -> the body."""
    if not path:
        return "the body"
    named = ""
    for part in path:
        if isinstance(part, str):  # a key, which may be the bad text itself
            part = part.encode("utf-8", "backslashreplace").decode("utf-8")
        named += f"[{part}]" if isinstance(part, int) else (f".{part}" if named else part)
    return f"\"{named}\""

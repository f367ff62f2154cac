"""``sse-chat ask --fake-option NAME=VALUE``: the request body's ``"fake"`` object,
faults for the fake model to inject (docs/testing-clients.md)."""

from __future__ import annotations

from collections.abc import Iterable


def fake_options(pairs: Iterable[str]) -> dict[str, int | str]:
    """``["drop_every=7", "error_type=quota"]`` → ``{"drop_every": 7, "error_type":
    "quota"}``: a value that is a whole number is sent as a number, any other as a
    string; the server checks names and values (400 ``invalid_request``). A name
    given twice keeps its last value.

    Raises:
        ValueError: a pair without ``=``, or with an empty name.
    """
    options: dict[str, int | str] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        name = name.strip()
        if not equals or not name:
            raise ValueError(f"expected NAME=VALUE, such as drop_every=5; got {pair!r}")
        options[name] = _number_or_text(value.strip())
    return options


def _number_or_text(value: str) -> int | str:
    try:
        return int(value)
    except ValueError:
        return value

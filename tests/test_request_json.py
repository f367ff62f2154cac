"""Reading JSON bodies within bounds (sse_chat/bodies/json_body.py): depth and text."""

import json

import pytest

from sse_chat.bodies import json_body
from sse_chat.bodies.json_body import MAX_DEPTH, parse_json_body
from sse_chat.errors import ApiError


def _refusal(raw: bytes) -> str:
    with pytest.raises(ApiError) as caught:
        parse_json_body(raw)
    assert caught.value.status == 400 and caught.value.type == "invalid_request"
    return caught.value.message


@pytest.mark.parametrize("body,field", [
    ({"prompt": "\ud800"}, '"prompt"'),
    ({"prompt": "a", "system": "x\udfff"}, '"system"'),
    ({"messages": [{"role": "user", "content": "ok"}, {"role": "user", "content": "b\udc00d"}]},
     '"messages[1].content"'),
    ({"tools": [{"function": {"name": "f", "parameters": {"\ud83d": 1}}}]}, '"tools[0].function.parameters.\\ud83d"'),
])
def test_a_lone_surrogate_anywhere_is_400_naming_the_field(body, field):
    message = _refusal(json.dumps(body).encode())  # ensure_ascii: the surrogate travels as a \u escape
    assert field in message and "surrogate" in message


def test_a_surrogate_in_raw_bytes_is_not_utf8():
    assert "not UTF-8" in _refusal(b'{"prompt": "\xed\xa0\x80"}')  # CESU-style bytes of U+D800


def test_pairs_and_other_text_pass():
    body = {"prompt": "\U0001f600 caf\u00e9 \u4f60\u597d", "messages": [{"k": ["\U0001f600"]}]}
    assert parse_json_body(json.dumps(body).encode()) == body  # the emoji as an escaped surrogate pair
    assert parse_json_body("\ufeff{\"a\": 1}".encode()) == {"a": 1}  # a BOM is ignored (RFC 8259, 8.1)


def test_nesting_is_bounded():
    at_limit = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert parse_json_body(at_limit.encode())
    for depth in (MAX_DEPTH + 1, 968, 200_000):
        assert f"more than {MAX_DEPTH} deep" in _refusal(("[" * depth + "]" * depth).encode())
    deep_object = '{"a":' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1)
    assert f"more than {MAX_DEPTH} deep" in _refusal(deep_object.encode())


def test_only_a_body_that_could_hide_a_surrogate_or_deep_nesting_is_walked(monkeypatch):
    walked = []
    monkeypatch.setattr(json_body, "check_json_value", walked.append)
    plain = {"prompt": "caf\u00e9 \U0001f600", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    assert parse_json_body(json.dumps(plain, ensure_ascii=False).encode()) == plain  # raw UTF-8, 2 brackets
    assert walked == []
    parse_json_body(json.dumps(plain).encode())  # the same text as \u escapes: one could be a lone surrogate
    parse_json_body(("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)).encode())
    assert len(walked) == 2

"""Validating a chat request from a JSON body or a query string into the plain
:class:`~sse_chat.models.base.ChatRequest` the backends take (HTTP-facing: errors
are 400 ``invalid_request`` naming the field)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import invalid_request
from .models.base import ChatRequest, Message

ROLES = ("system", "user", "assistant")
MAX_TOKENS_LIMIT = 1_000_000


def parse_chat_body(payload: Any, default_model: str) -> ChatRequest:
    """Validate the JSON body of ``POST /v1/chat``.

    ``{"prompt": X}`` means ``{"messages": [{"role": "user", "content": X}]}``;
    exactly one of ``prompt`` and ``messages`` is given; ``system`` is prepended as
    a system message. Unknown keys are ignored.

    Raises:
        ApiError: 400 ``invalid_request`` naming the field and what it must be.
    """
    if not isinstance(payload, Mapping):
        raise invalid_request("the JSON body must be an object such as {\"prompt\": \"Hello\"}")
    has_prompt, has_messages = "prompt" in payload, "messages" in payload
    if has_prompt == has_messages:
        which = "both were" if has_prompt else "neither was"
        raise invalid_request(
            f"give exactly one of \"prompt\" (a string) and \"messages\" (a list); {which} given"
        )
    if has_prompt:
        messages = [Message("user", _text(payload, "prompt"))]
    else:
        messages = _messages(payload["messages"])
    return _build(payload, messages, default_model, max_tokens=payload.get("max_tokens"),
                  temperature=payload.get("temperature"))


def parse_chat_query(args: Mapping[str, str], default_model: str) -> ChatRequest:
    """Validate the query of ``GET /v1/chat?prompt=…&system=…&model=…&max_tokens=…&temperature=…``.

    Raises:
        ApiError: 400 ``invalid_request`` naming the parameter and what it must be.
    """
    if "prompt" not in args:
        raise invalid_request("GET /v1/chat needs a ?prompt= query parameter")
    messages = [Message("user", _text(args, "prompt"))]
    return _build(args, messages, default_model,
                  max_tokens=_query_number(args, "max_tokens", int),
                  temperature=_query_number(args, "temperature", float))


def _build(fields: Mapping[str, Any], messages: list[Message], default_model: str,
           *, max_tokens: Any, temperature: Any) -> ChatRequest:
    if fields.get("system") is not None:
        messages.insert(0, Message("system", _text(fields, "system", allow_empty=True)))
    model = _text(fields, "model") if fields.get("model") is not None else default_model
    return ChatRequest(
        messages=tuple(messages),
        model=model,
        max_tokens=_max_tokens(max_tokens),
        temperature=_temperature(temperature),
    )


def _text(fields: Mapping[str, Any], name: str, *, allow_empty: bool = False) -> str:
    value = fields[name]
    if not isinstance(value, str):
        raise invalid_request(f"\"{name}\" must be a string, not {_json_type(value)}")
    if not value and not allow_empty:
        raise invalid_request(f"\"{name}\" must not be empty")
    return value


def _messages(value: Any) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise invalid_request("\"messages\" must be a non-empty list of {\"role\", \"content\"} objects")
    messages = []
    for index, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise invalid_request(f"messages[{index}] must be an object, not {_json_type(item)}")
        role, content = item.get("role"), item.get("content")
        if role not in ROLES:
            raise invalid_request(f"messages[{index}].role must be one of {', '.join(ROLES)}; got {role!r}")
        if not isinstance(content, str):
            raise invalid_request(f"messages[{index}].content must be a string, not {_json_type(content)}")
        messages.append(Message(role, content))
    return messages


def _max_tokens(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOKENS_LIMIT:
        raise invalid_request(f"\"max_tokens\" must be a whole number from 1 to {MAX_TOKENS_LIMIT}; got {value!r}")
    return value


def _temperature(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 2:
        raise invalid_request(f"\"temperature\" must be a number from 0 to 2; got {value!r}")
    return float(value)


def _query_number(args: Mapping[str, str], name: str, kind: type) -> Any:
    raw = args.get(name)
    if raw is None or raw == "":
        return None
    try:
        return kind(raw)
    except ValueError:
        expected = "whole number" if kind is int else "number"
        raise invalid_request(f"?{name}= must be a {expected}; got {raw!r}") from None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"

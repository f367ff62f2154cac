"""Validating a chat request from a JSON body or a query string into the plain
:class:`~sse_chat.models.base.ChatRequest` the backends take (HTTP-facing: errors
are 400 ``invalid_request`` naming the field)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import invalid_request
from ..models.base import DEFAULT_FAKE_ERROR_TYPE, ChatRequest, FakeFaults, Message, ToolCall
from ..models.registry import FAKE_MODEL

ROLES = ("system", "user", "assistant", "tool")
#: ``tool_choice`` as a string (OpenAI's); an object names one function instead.
TOOL_CHOICES = ("none", "auto", "required")
MAX_TOKENS_LIMIT = 1_000_000

#: The largest ``delay_ms`` of the fake model: a minute per token.
MAX_FAKE_DELAY_MS = 60_000
#: The fake model's fault options (docs/testing-clients.md): keys of the body's
#: ``"fake"`` object and query parameters of ``GET /v1/chat``. The counts are
#: whole numbers in the ranges given here (``delay_ms``: milliseconds;
#: ``drop_every``: events; the others: tokens); ``error_type`` is a snake_case name.
FAKE_COUNTS = {"delay_ms": (0, MAX_FAKE_DELAY_MS), "drop_every": (1, MAX_TOKENS_LIMIT),
               "error_after": (0, MAX_TOKENS_LIMIT), "stall_after": (0, MAX_TOKENS_LIMIT)}
FAKE_OPTIONS = (*FAKE_COUNTS, "error_type")
ERROR_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")


def parse_chat_body(payload: Any, default_model: str) -> ChatRequest:
    """Validate the JSON body of ``POST /v1/chat``.

    ``{"prompt": X}`` means ``{"messages": [{"role": "user", "content": X}]}``;
    exactly one of ``prompt`` and ``messages`` is given; ``system`` is prepended as
    a system message. ``"tools"`` and ``"tool_choice"`` are OpenAI's (checked
    for shape only, then passed on as given), and ``messages`` may hold its tool
    turns (an assistant's ``tool_calls``, ``tool`` results). ``"fake"``, an object
    of :data:`FAKE_OPTIONS`, asks the fake model for faults. Unknown keys are
    ignored, except inside ``"fake"``.

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
                  temperature=payload.get("temperature"), fake=_fake_object(payload.get("fake")),
                  fake_name=lambda name: f"\"fake.{name}\"", tools=_tools(payload.get("tools")),
                  tool_choice=_tool_choice(payload.get("tool_choice")), sampling=sampling_options(payload))


def build_chat_request(messages: list[Message], fields: Mapping[str, Any], default_model: str) -> ChatRequest:
    """Validate the request fields beside ready-made ``messages`` (a surface that
    reads messages in its own shape, such as the Responses API): ``model``,
    ``max_tokens``, ``temperature``, ``fake``, and ``tools`` and ``tool_choice``
    in Chat Completions' shapes, as :func:`parse_chat_body` does.

    Raises:
        ApiError: 400 ``invalid_request`` naming the field and what it must be.
    """
    if not messages:
        raise invalid_request("the request has no messages for the model: give some input")
    return _build(fields, list(messages), default_model, max_tokens=fields.get("max_tokens"),
                  temperature=fields.get("temperature"), fake=_fake_object(fields.get("fake")),
                  fake_name=lambda name: f"\"fake.{name}\"", tools=_tools(fields.get("tools")),
                  tool_choice=_tool_choice(fields.get("tool_choice")), sampling=sampling_options(fields))


def parse_chat_query(args: Mapping[str, str], default_model: str) -> ChatRequest:
    """Validate the query of ``GET /v1/chat?prompt=…&system=…&model=…&max_tokens=…&temperature=…``,
    and of the fake model's :data:`FAKE_OPTIONS` (``&drop_every=…``, …).

    Raises:
        ApiError: 400 ``invalid_request`` naming the parameter and what it must be.
    """
    if "prompt" not in args:
        raise invalid_request("GET /v1/chat needs a ?prompt= query parameter")
    messages = [Message("user", _text(args, "prompt"))]
    fake = {name: _query_number(args, name, int) if name in FAKE_COUNTS else args[name]
            for name in FAKE_OPTIONS if args.get(name)}
    return _build(args, messages, default_model,
                  max_tokens=_query_number(args, "max_tokens", int),
                  temperature=_query_number(args, "temperature", float),
                  fake=fake, fake_name=lambda name: f"?{name}=")


def _build(fields: Mapping[str, Any], messages: list[Message], default_model: str,
           *, max_tokens: Any, temperature: Any, fake: Mapping[str, Any],
           fake_name: Callable[[str], str], tools: tuple[dict[str, Any], ...] | None = None,
           tool_choice: str | dict[str, Any] | None = None,
           sampling: tuple[tuple[str, Any], ...] = ()) -> ChatRequest:
    if fields.get("system") is not None:
        messages.insert(0, Message("system", _text(fields, "system", allow_empty=True)))
    model = _text(fields, "model") if fields.get("model") is not None else default_model
    if tool_choice is not None and tools is None:
        raise invalid_request("\"tool_choice\" says how to use \"tools\", and none were given; "
                              "send \"tools\" too, or remove \"tool_choice\"")
    return ChatRequest(
        messages=tuple(messages),
        model=model,
        max_tokens=_max_tokens(max_tokens),
        temperature=_temperature(temperature),
        fake=_fake_faults(fake, model, fake_name),
        tools=tools,
        tool_choice=tool_choice,
        sampling=sampling,
    )


def _fake_object(value: Any) -> dict[str, Any]:
    """The options given in a body's ``"fake"`` (``null`` values dropped).

    Raises:
        ApiError: 400 when it is not an object, or has keys other than :data:`FAKE_OPTIONS`.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise invalid_request(f"\"fake\" must be an object such as {{\"drop_every\": 5}}, not {_json_type(value)}")
    unknown = [key for key in value if key not in FAKE_OPTIONS]
    if unknown:
        names = ", ".join(f"\"{key}\"" for key in unknown)
        raise invalid_request(f"unknown key(s) in \"fake\": {names}; it accepts {', '.join(FAKE_OPTIONS)}")
    return {key: item for key, item in value.items() if item is not None}


def _fake_faults(options: Mapping[str, Any], model: str, name: Callable[[str], str]) -> FakeFaults | None:
    """Validate the fake model's fault ``options`` (``name(option)`` is how the
    request spelled it, for messages); ``None`` when none was given.

    Raises:
        ApiError: 400 for a value out of range, ``error_type`` without
            ``error_after``, or any option for another ``model`` than ``fake``.
    """
    if not options:
        return None
    if model != FAKE_MODEL:
        given = ", ".join(name(option) for option in options)
        raise invalid_request(f"{given}: fault options are honoured by the fake model only, and this request is "
                              f"for model {model!r}; remove them, or ask for model \"fake\"")
    counts = {option: _fake_count(options[option], name(option), *limits)
              for option, limits in FAKE_COUNTS.items() if option in options}
    error_type = options.get("error_type", DEFAULT_FAKE_ERROR_TYPE)
    if "error_type" in options and "error_after" not in options:
        raise invalid_request(f"{name('error_type')} needs {name('error_after')}: after how many tokens to fail")
    if not isinstance(error_type, str) or not ERROR_TYPE.fullmatch(error_type):
        raise invalid_request(f"{name('error_type')} must be a snake_case name (a-z, 0-9, _; a letter first; "
                              f"at most 64 characters), such as \"upstream_error\"; got {error_type!r}")
    return FakeFaults(error_type=error_type, **counts)


def _fake_count(value: Any, name: str, least: int, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
        raise invalid_request(f"{name} must be a whole number from {least} to {most:,}; got {value!r}")
    return value


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
        messages.append(_message(item, f"messages[{index}]"))
    return messages


def _message(item: Mapping[str, Any], where: str) -> Message:
    """One message: ``{"role", "content"}``; an assistant's may have ``tool_calls``
    (then ``content`` may be null), a ``tool`` message needs ``tool_call_id``."""
    role, content = item.get("role"), item.get("content")
    if role not in ROLES:
        raise invalid_request(f"{where}.role must be one of {', '.join(ROLES)}; got {role!r}")
    tool_calls = _tool_calls(item.get("tool_calls"), where) if role == "assistant" else ()
    if not isinstance(content, str) and not (content is None and tool_calls):
        raise invalid_request(f"{where}.content must be a string, not {_json_type(content)} "
                              "(null only in an assistant message with \"tool_calls\")")
    tool_call_id = None
    if role == "tool":
        tool_call_id = item.get("tool_call_id")
        if not isinstance(tool_call_id, str) or not tool_call_id:
            raise invalid_request(f"{where}.tool_call_id must be the id of the tool call this message answers, "
                                  f"a string; got {tool_call_id!r}")
    return Message(role, content, tool_calls, tool_call_id)


def _tool_calls(value: Any, where: str) -> tuple[ToolCall, ...]:
    """An assistant message's ``tool_calls``: ``[{"id", "type": "function",
    "function": {"name", "arguments"}}, …]`` (absent or null: none)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise invalid_request(f"{where}.tool_calls must be a list, not {_json_type(value)}")
    calls = []
    for index, call in enumerate(value):
        at = f"{where}.tool_calls[{index}]"
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or call.get("type", "function") != "function":
            raise invalid_request(f"{at} must be {{\"id\", \"type\": \"function\", "
                                  "\"function\": {\"name\", \"arguments\"}}")
        fields = {"id": call.get("id"), "name": function.get("name"), "arguments": function.get("arguments")}
        for name, field in fields.items():
            if not isinstance(field, str):
                raise invalid_request(f"{at}: \"{name}\" must be a string, not {_json_type(field)}")
        calls.append(ToolCall(**fields))
    return tuple(calls)


def _tools(value: Any) -> tuple[dict[str, Any], ...] | None:
    """``tools``: a list of OpenAI tool objects, kept as given; a function tool
    (``"type": "function"``) must name its function. An empty list is no tools
    (OpenAI refuses ``[]``)."""
    if value is None or value == []:
        return None
    if not isinstance(value, list) or not all(isinstance(tool, Mapping) for tool in value):
        raise invalid_request("\"tools\" must be a list of tool objects such as "
                              "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", "
                              "\"parameters\": {…}}}")
    for index, tool in enumerate(value):
        if tool.get("type") == "function":
            function = tool.get("function")
            if not isinstance(function, Mapping) or not isinstance(function.get("name"), str) \
                    or not function["name"]:
                raise invalid_request(f"tools[{index}].function.name must be the function's name, a string")
    return tuple(dict(tool) for tool in value)


def _tool_choice(value: Any) -> str | dict[str, Any] | None:
    """``tool_choice``: ``"none"``, ``"auto"``, ``"required"`` or an object naming a tool."""
    if value is None or (isinstance(value, str) and value in TOOL_CHOICES):
        return value
    if isinstance(value, Mapping):
        return dict(value)
    raise invalid_request(f"\"tool_choice\" must be one of {', '.join(TOOL_CHOICES)} or an object such as "
                          f"{{\"type\": \"function\", \"function\": {{\"name\": …}}}}; got {value!r}")


#: OpenAI's sampling options this service takes besides ``temperature`` and passes to
#: an OpenAI-compatible upstream (the fake model is deterministic and ignores them).
SAMPLING_OPTIONS = ("top_p", "seed", "stop", "presence_penalty", "frequency_penalty")
_MAX_STOP_SEQUENCES = 4


def sampling_options(fields: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The :data:`SAMPLING_OPTIONS` of a JSON body, checked, as ``(name, value)``
    pairs in that order (``null`` ones left out): ``top_p`` a number from 0 to 1,
    ``seed`` a whole number, ``stop`` a string or a list of at most 4 (a tuple
    here), ``presence_penalty`` and ``frequency_penalty`` numbers from -2 to 2.

    Raises:
        ApiError: 400 ``invalid_request`` naming the field and what it must be.
    """
    options: list[tuple[str, Any]] = []
    for name in SAMPLING_OPTIONS:
        value = fields.get(name)
        if value is not None:
            options.append((name, _sampling_value(name, value)))
    return tuple(options)


def _sampling_value(name: str, value: Any) -> Any:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if name == "top_p" and not (number and 0 <= value <= 1):
        raise invalid_request(f"\"top_p\" must be a number from 0 to 1; got {value!r}")
    if name == "seed" and not (number and isinstance(value, int) and -2**63 <= value < 2**63):
        raise invalid_request(f"\"seed\" must be a whole number; got {value!r}")
    if name.endswith("_penalty") and not (number and -2 <= value <= 2):
        raise invalid_request(f"\"{name}\" must be a number from -2 to 2; got {value!r}")
    if name == "stop":
        stops = [value] if isinstance(value, str) else value
        if not (isinstance(stops, list) and 1 <= len(stops) <= _MAX_STOP_SEQUENCES
                and all(isinstance(stop, str) and stop for stop in stops)):
            raise invalid_request(f"\"stop\" must be a string or a list of 1 to {_MAX_STOP_SEQUENCES} strings; "
                                  f"got {value!r}")
        return value if isinstance(value, str) else tuple(value)
    return value


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

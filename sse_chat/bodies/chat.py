"""Validating a chat request from a JSON body or a query string into the plain
:class:`~sse_chat.models.base.ChatRequest` the backends take (HTTP-facing: errors
are 400 ``invalid_request`` naming the field)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import invalid_request
from ..models.base import BackendOptions, ChatRequest, Message, ToolCall
from ..models.registry import backend_options, option_names

ROLES = ("system", "user", "assistant", "tool")
#: ``tool_choice`` as a string (OpenAI's); an object names one function instead.
TOOL_CHOICES = ("none", "auto", "required")
MAX_TOKENS_LIMIT = 1_000_000
#: A query parameter's value that is given to a backend's options as a number.
WHOLE_NUMBER = re.compile(r"-?[0-9]+")
#: Options a request gives one backend alone, as ``(backend, {option: value})``.
GivenOptions = tuple[str, dict[str, Any]]


def parse_chat_body(payload: Any, default_model: str) -> ChatRequest:
    """Validate the JSON body of ``POST /v1/chat``.

    ``{"prompt": X}`` means ``{"messages": [{"role": "user", "content": X}]}``;
    exactly one of ``prompt`` and ``messages`` is given; ``system`` is prepended as
    a system message. ``"tools"`` and ``"tool_choice"`` are OpenAI's (checked
    for shape only, then passed on as given), and ``messages`` may hold its tool
    turns (an assistant's ``tool_calls``, ``tool`` results). An object named
    after a backend that takes options (``"fake"``: faults for the fake model)
    gives that backend its options (:func:`~sse_chat.models.registry.option_names`).
    Unknown keys are ignored, except inside such an object.

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
                  temperature=payload.get("temperature"), options=_body_options(payload),
                  spelled=_body_spelling, tools=_tools(payload.get("tools")),
                  tool_choice=_tool_choice(payload.get("tool_choice")), sampling=sampling_options(payload))


def build_chat_request(messages: list[Message], fields: Mapping[str, Any], default_model: str) -> ChatRequest:
    """Validate the request fields beside ready-made ``messages`` (a surface that
    reads messages in its own shape, such as the Responses API): ``model``,
    ``max_tokens``, ``temperature``, a backend's options, and ``tools`` and ``tool_choice``
    in Chat Completions' shapes, as :func:`parse_chat_body` does.

    Raises:
        ApiError: 400 ``invalid_request`` naming the field and what it must be.
    """
    if not messages:
        raise invalid_request("the request has no messages for the model: give some input")
    return _build(fields, list(messages), default_model, max_tokens=fields.get("max_tokens"),
                  temperature=fields.get("temperature"), options=_body_options(fields),
                  spelled=_body_spelling, tools=_tools(fields.get("tools")),
                  tool_choice=_tool_choice(fields.get("tool_choice")), sampling=sampling_options(fields))


def parse_chat_query(args: Mapping[str, str], default_model: str) -> ChatRequest:
    """Validate the query of ``GET /v1/chat?prompt=…&system=…&model=…&max_tokens=…&temperature=…``,
    and of the options of a backend that takes them (the fake model's faults,
    ``&error_after=…``, …; a whole number is given to the backend as a number).

    Raises:
        ApiError: 400 ``invalid_request`` naming the parameter and what it must be.
    """
    if "prompt" not in args:
        raise invalid_request("GET /v1/chat needs a ?prompt= query parameter")
    messages = [Message("user", _text(args, "prompt"))]
    return _build(args, messages, default_model,
                  max_tokens=_query_number(args, "max_tokens", int),
                  temperature=_query_number(args, "temperature", float),
                  options=_query_options(args), spelled=lambda backend, name: f"?{name}=")


def _build(fields: Mapping[str, Any], messages: list[Message], default_model: str,
           *, max_tokens: Any, temperature: Any, options: GivenOptions | None,
           spelled: Callable[[str, str], str], tools: tuple[dict[str, Any], ...] | None = None,
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
        backend_options=_backend_options(options, model, spelled),
        tools=tools,
        tool_choice=tool_choice,
        sampling=sampling,
    )


def check_streamed(chat: ChatRequest, stream: bool) -> None:
    """Refuse options that end each response after some events
    (:attr:`~sse_chat.models.base.ChatRequest.events_per_response`) for an
    answer that is not streamed: it is one response, which they would cut.

    Raises:
        ApiError: 400 ``invalid_request``.
    """
    if chat.events_per_response is not None and not stream:
        raise invalid_request(f"the \"{chat.model}\" options end each response after {chat.events_per_response} "
                              "events, which only a streamed answer has; set \"stream\": true, or remove that option")


def _body_spelling(backend: str, option: str) -> str:
    return f"\"{backend}.{option}\""


def _body_options(fields: Mapping[str, Any]) -> GivenOptions | None:
    """The options a body gives a backend alone, in the object named after it
    (``{"fake": {"delay_ms": 5}}`` gives ``("fake", {"delay_ms": 5})``;
    ``null`` values dropped), or ``None``.

    Raises:
        ApiError: 400 when such an object is not an object, or has keys the
            backend does not take.
    """
    for backend, names in option_names().items():
        value = fields.get(backend)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise invalid_request(f"\"{backend}\" must be an object of the {backend} model's options "
                                  f"({', '.join(names)}), not {_json_type(value)}")
        unknown = [key for key in value if key not in names]
        if unknown:
            listed = ", ".join(f"\"{key}\"" for key in unknown)
            raise invalid_request(f"unknown key(s) in \"{backend}\": {listed}; it accepts {', '.join(names)}")
        given = {key: item for key, item in value.items() if item is not None}
        if given:
            return backend, given
    return None


def _query_options(args: Mapping[str, str]) -> GivenOptions | None:
    """The options a query gives a backend alone (parameters named as its
    options; empty ones dropped; whole numbers as ``int``), or ``None``."""
    for backend, names in option_names().items():
        given = {name: int(args[name]) if WHOLE_NUMBER.fullmatch(args[name]) else args[name]
                 for name in names if args.get(name)}
        if given:
            return backend, given
    return None


def _backend_options(options: GivenOptions | None, model: str,
                     spelled: Callable[[str, str], str]) -> BackendOptions | None:
    """The backend's parse of the ``options`` given, or ``None`` when none were.

    Raises:
        ApiError: 400 as :func:`~sse_chat.models.registry.backend_options`.
    """
    if options is None:
        return None
    backend, given = options
    return backend_options(model, backend, given, lambda option: spelled(backend, option))


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

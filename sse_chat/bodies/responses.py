"""The Responses API's request: validating ``POST /v1/responses`` bodies, and
turning input items into the chat this service's backends take. Pure: no Flask.

Shapes follow the Open Responses specification (``CreateResponseBody`` and its
item params) and OpenAI's Responses API reference:
https://platform.openai.com/docs/api-reference/responses/create
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import invalid_request
from ..models import ChatRequest, Message, ToolCall
from .chat import MAX_TOKENS_LIMIT, build_chat_request

#: Message roles of input items; ``developer`` is the newer name of ``system``.
INPUT_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
#: Content parts that are text, in input and in earlier output.
TEXT_PARTS = ("input_text", "output_text", "text")
TOOL_CHOICES = ("none", "auto", "required")
#: OpenAI's bounds on ``metadata``: keys, key length, value length (characters).
METADATA_LIMITS = (16, 64, 512)


@dataclass(frozen=True)
class ResponsesRequest:
    """A validated ``POST /v1/responses`` body.

    ``record`` is what the response keeps beside its events, as JSON (the stream's
    ``start`` event holds it, so that every worker and host can read it): its
    ``input`` items (after those of ``previous_response_id``'s conversation),
    ``instructions``, ``tools`` (Responses shape), ``tool_choice``,
    ``temperature``, ``top_p``, ``max_output_tokens``, ``metadata``, ``store``,
    ``background`` and ``previous_response_id``. ``input_items`` is the
    request's own input; :func:`chat_request` builds the model's chat once the
    earlier conversation is known."""

    body: Mapping[str, Any]
    input_items: list[dict[str, Any]]
    stream: bool
    background: bool
    store: bool
    previous_response_id: str | None

    def record(self, earlier: list[dict[str, Any]]) -> dict[str, Any]:
        """The JSON kept with the response, whose ``input`` is ``earlier`` (the
        previous response's conversation and output, or ``[]``) and this input."""
        body = self.body
        return {
            "input": [*earlier, *self.input_items],
            "instructions": body.get("instructions"),
            "tools": [_responses_tool(tool) for tool in body.get("tools") or ()],
            "tool_choice": body.get("tool_choice") or "auto",
            "temperature": body.get("temperature"),
            "top_p": body.get("top_p"),
            "max_output_tokens": body.get("max_output_tokens"),
            "metadata": body.get("metadata") or {},
            "store": self.store,
            "background": self.background,
            "previous_response_id": self.previous_response_id,
        }


def parse_responses_body(payload: Any) -> ResponsesRequest:
    """Validate the body's shape: ``input`` (a string, or a list of ``message``,
    ``function_call`` and ``function_call_output`` items; ``message`` content a
    string or ``input_text``/``output_text``/``input_image`` parts),
    ``instructions``, ``tools`` (function tools only), ``tool_choice``,
    ``max_output_tokens``, ``temperature``, ``top_p``, ``metadata``, ``store``,
    ``stream``, ``background``, ``previous_response_id``; ``model`` and the fake
    model's ``fake`` faults are checked by :func:`chat_request`. Other fields are
    ignored.

    Raises:
        ApiError: 400 ``invalid_request`` naming the field.
    """
    if not isinstance(payload, Mapping):
        raise invalid_request("the JSON body must be an object such as {\"model\": \"fake\", \"input\": \"Hello\"}")
    if "input" not in payload and payload.get("previous_response_id") is None:
        raise invalid_request("\"input\" is required: a string, or a list of input items")
    flags = {name: _flag(payload, name, default) for name, default in
             (("stream", False), ("background", False), ("store", True))}
    if flags["background"] and not flags["store"]:
        raise invalid_request("\"background\": true needs \"store\": true (a background response is kept "
                              "so that it can be read later)")
    if payload.get("instructions") is not None and not isinstance(payload["instructions"], str):
        raise invalid_request("\"instructions\" must be a string")
    previous = payload.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise invalid_request("\"previous_response_id\" must be the id of an earlier response, a string")
    _check_tools(payload.get("tools"))
    _chat_tool_choice(payload.get("tool_choice"))  # checked here, with or without tools
    _check_metadata(payload.get("metadata"))
    _check_number(payload, "top_p", 0, 1)
    max_output_tokens = payload.get("max_output_tokens")
    if max_output_tokens is not None and (isinstance(max_output_tokens, bool) or not isinstance(max_output_tokens, int)
                                          or not 1 <= max_output_tokens <= MAX_TOKENS_LIMIT):
        raise invalid_request(f"\"max_output_tokens\" must be a whole number from 1 to {MAX_TOKENS_LIMIT}; "
                              f"got {max_output_tokens!r}")
    items = _input_items(payload.get("input", []))
    return ResponsesRequest(payload, items, flags["stream"], flags["background"], flags["store"], previous)


def chat_request(request: ResponsesRequest, record: Mapping[str, Any], default_model: str) -> ChatRequest:
    """The chat for the model: ``instructions`` as a system message, then the
    ``record``'s input items as messages (:func:`items_to_messages`).

    Raises:
        ApiError: 400 ``invalid_request`` naming the field.
    """
    messages = items_to_messages(record["input"])
    if record["instructions"] is not None:
        messages.insert(0, Message("system", record["instructions"]))
    body = request.body
    fields = {"model": body.get("model"), "max_tokens": body.get("max_output_tokens"),
              "temperature": body.get("temperature"), "fake": body.get("fake"),
              "tools": [_chat_tool(tool) for tool in record["tools"]] or None,
              "tool_choice": _chat_tool_choice(body.get("tool_choice")) if record["tools"] else None}
    return build_chat_request(messages, fields, default_model)


def items_to_messages(items: Sequence[Mapping[str, Any]]) -> list[Message]:
    """Input items (and earlier output items) as chat messages, in order:
    ``message`` items by role (``developer`` as ``system``; text parts joined,
    images kept as URLs), consecutive ``function_call`` items as one assistant
    message's ``tool_calls`` (joined to the assistant message before them), and
    ``function_call_output`` items as ``tool`` messages. Items of other types
    (``reasoning``) are left out."""
    messages: list[Message] = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            text, images = _content(item["content"])
            messages.append(Message(INPUT_ROLES[item["role"]], text, images=images))
        elif kind == "function_call":
            call = ToolCall(item["call_id"], item["name"], item["arguments"])
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant":
                messages[-1] = Message("assistant", last.content, (*last.tool_calls, call))
            else:
                messages.append(Message("assistant", None, (call,)))
        elif kind == "function_call_output":
            output = item["output"]
            text = output if isinstance(output, str) else _content(output)[0]
            messages.append(Message("tool", text, tool_call_id=item["call_id"]))
    return messages


def _content(content: str | Sequence[Mapping[str, Any]]) -> tuple[str, tuple[str, ...]]:
    """A message's text (parts joined) and image URLs."""
    if isinstance(content, str):
        return content, ()
    text = "".join(part["text"] for part in content if part["type"] in TEXT_PARTS)
    images = tuple(part["image_url"] for part in content if part["type"] == "input_image")
    return text, images


def _input_items(value: Any) -> list[dict[str, Any]]:
    """The input as a list of checked items (a string is one user message)."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list):
        raise invalid_request("\"input\" must be a string or a list of items such as "
                              "{\"type\": \"message\", \"role\": \"user\", \"content\": \"Hello\"}")
    return [_input_item(item, f"input[{index}]") for index, item in enumerate(value)]


def _input_item(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise invalid_request(f"{where} must be an object")
    kind = item.get("type", "message")
    if kind == "message":
        if item.get("role") not in INPUT_ROLES:
            raise invalid_request(f"{where}.role must be one of {', '.join(INPUT_ROLES)}; got {item.get('role')!r}")
        return {"type": "message", "role": item["role"], "content": _message_content(item.get("content"), where)}
    if kind == "function_call":
        fields = {name: _string(item, name, where) for name in ("call_id", "name", "arguments")}
        return {"type": "function_call", **fields}
    if kind == "function_call_output":
        output = item.get("output")
        if not isinstance(output, str):
            output = _message_content(output, where, field="output")
        return {"type": "function_call_output", "call_id": _string(item, "call_id", where), "output": output}
    if kind == "reasoning":
        return {"type": "reasoning", "summary": []}
    raise invalid_request(f"{where}.type {kind!r} is not supported here: use \"message\", \"function_call\" "
                          "or \"function_call_output\"")


def _message_content(content: Any, where: str, field: str = "content") -> str | list[dict[str, Any]]:
    """A string, or a list of text and image parts (kept in their input shape)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise invalid_request(f"{where}.{field} must be a string or a list of content parts")
    parts = []
    for index, part in enumerate(content):
        at = f"{where}.{field}[{index}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind in TEXT_PARTS:
            parts.append({"type": kind, "text": _string(part, "text", at)})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise invalid_request(f"{at}.image_url must be an image's URL or a data: URL (file ids are "
                                      "not supported)")
            parts.append({"type": "input_image", "image_url": url, "detail": part.get("detail") or "auto"})
        else:
            raise invalid_request(f"{at} must be an input_text, output_text or input_image part; got {kind!r}")
    return parts


def _string(item: Mapping[str, Any], name: str, where: str) -> str:
    value = item.get(name)
    if not isinstance(value, str):
        raise invalid_request(f"{where}.{name} must be a string")
    return value


def _flag(payload: Mapping[str, Any], name: str, default: bool) -> bool:
    value = payload.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid_request(f"\"{name}\" must be true or false")
    return value


def _check_tools(tools: Any) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise invalid_request("\"tools\" must be a list of function tools")
    for index, tool in enumerate(tools):
        if not isinstance(tool, Mapping) or tool.get("type") != "function":
            raise invalid_request(f"tools[{index}] must be a function tool {{\"type\": \"function\", \"name\", "
                                  "\"parameters\"}: this service offers no built-in tools")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise invalid_request(f"tools[{index}].name must be the function's name, a string")


def _check_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    most, key_chars, value_chars = METADATA_LIMITS
    if not isinstance(metadata, Mapping) or len(metadata) > most or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= key_chars and len(v) <= value_chars
            for k, v in metadata.items()):
        raise invalid_request(f"\"metadata\" must be an object of at most {most} string values (keys of at most "
                              f"{key_chars} characters, values of at most {value_chars})")


def _check_number(payload: Mapping[str, Any], name: str, least: float, most: float) -> None:
    value = payload.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not least <= value <= most):
        raise invalid_request(f"\"{name}\" must be a number from {least} to {most}; got {value!r}")


def _responses_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    """A function tool as a response lists it (``FunctionTool``: every field present)."""
    return {"type": "function", "name": tool["name"], "description": tool.get("description"),
            "parameters": tool.get("parameters"), "strict": tool.get("strict")}


def _chat_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    """A Responses function tool in Chat Completions' shape."""
    function = {key: tool[key] for key in ("name", "description", "parameters", "strict") if tool.get(key) is not None}
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: Any) -> Any:
    """``{"type": "function", "name"}`` in Chat Completions' shape; the strings as they are."""
    if isinstance(choice, Mapping) and choice.get("type") == "function" and "name" in choice:
        return {"type": "function", "function": {"name": choice["name"]}}
    if choice is not None and not (isinstance(choice, str) and choice in TOOL_CHOICES):
        raise invalid_request(f"\"tool_choice\" must be one of {', '.join(TOOL_CHOICES)} or "
                              f"{{\"type\": \"function\", \"name\": …}}; got {choice!r}")
    return choice


__all__ = ["ResponsesRequest", "chat_request", "items_to_messages", "parse_responses_body"]

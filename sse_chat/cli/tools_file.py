"""``sse-chat ask --tools FILE``: the request's OpenAI ``tools``, read from a JSON
file, and the line that reports each tool call the answer made."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class ToolsFileError(ValueError):
    """The file cannot be read, or is not a JSON list of tool objects; the message
    says which and how to fix it."""


def read_tools(path: str) -> list[dict[str, Any]]:
    """The tools in ``path``: a JSON list of OpenAI tool objects, ``[{"type":
    "function", "function": {"name", "description", "parameters"}}, …]``, or an
    object with such a list under ``"tools"`` (a request body). The server checks
    each tool further (400 ``invalid_request``).

    Raises:
        ToolsFileError: unreadable, not UTF-8 JSON, or not a non-empty list of objects.
    """
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ToolsFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ToolsFileError(f"{path} is not UTF-8 JSON: {exc}") from None
    if isinstance(value, dict) and "tools" in value:
        value = value["tools"]
    if not isinstance(value, list) or not value or not all(isinstance(tool, dict) for tool in value):
        raise ToolsFileError(f"{path} must hold a JSON list of tools, such as "
                             '[{"type": "function", "function": {"name": "get_weather", "parameters": {…}}}]')
    return value


def tool_call_line(call: dict[str, Any]) -> str:
    """``tool call NAME ARGUMENTS`` and a newline, for one item of ``done``'s
    ``tool_calls`` (``{"id", "name", "arguments"}``); the arguments are written as
    the model wrote them, but for raw line breaks, which become spaces so that a
    call stays on one line (outside a JSON string they are only whitespace, and a
    JSON string cannot hold one raw)."""
    return f"tool call {call.get('name', '')} {_one_line(str(call.get('arguments', '')))}\n"


def tool_result_line(result: dict[str, Any]) -> str:
    """``tool result NAME CONTENT`` and a newline, for a ``tool_result`` event's data
    (``{"tool_call_id", "name", "content"}``, a tool the service ran itself), or
    ``tool result NAME error TYPE: MESSAGE`` when the tool failed; line breaks in
    the content become spaces, so that a result stays on one line."""
    error = result.get("error")
    if isinstance(error, dict):
        text = f"error {error.get('type', '')}: {error.get('message', '')}"
    else:
        text = str(result.get("content", ""))
    return f"tool result {result.get('name', '')} {_one_line(text)}\n"


def _one_line(text: str) -> str:
    return text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")

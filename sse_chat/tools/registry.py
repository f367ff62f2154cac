"""Server tools: Python functions the service offers to the model and runs itself
(docs/tools.md).

A tool is a plain function. Its ``__name__`` is the tool's name, its docstring the
description, its annotated parameters the JSON Schema of its arguments (built by
pydantic, so ``Annotated[str, Field(description=…)]``, enums, literals, nested
models and defaults all work). It comes from ``SSE_CHAT_TOOLS``
(``module:function``, comma-separated) or from the ``sse_chat.tools`` entry-point
group of an installed package. Calls are validated against the same schema and
run by :func:`sse_chat.background.run_blocking`, off the event loop, within a
timeout; what they return (a ``str`` as is, anything else as JSON) is the result
the model reads.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, get_type_hints

from ..background import run_blocking
from ..config import ConfigError

if TYPE_CHECKING:
    import pydantic

log = logging.getLogger(__name__)

#: The entry-point group through which an installed package adds tools, as
#: ``[project.entry-points."sse_chat.tools"] name = "package.module:function"``.
ENTRY_POINT_GROUP = "sse_chat.tools"


@dataclass(frozen=True)
class ToolOutcome:
    """What a call gave: ``content`` (text for the model), or ``error_type`` and
    ``error_message`` (snake_case type; a message without a traceback)."""

    content: str | None = None
    error_type: str | None = None
    error_message: str | None = None

    def as_event_data(self, tool_call_id: str, name: str) -> dict[str, Any]:
        """A ``tool_result`` event's data: ``{"tool_call_id", "name", "content"}``,
        or with ``"error": {"type", "message"}`` instead of ``content``."""
        data: dict[str, Any] = {"tool_call_id": tool_call_id, "name": name}
        if self.error_type is not None:
            data["error"] = {"type": self.error_type, "message": self.error_message or ""}
        else:
            data["content"] = self.content or ""
        return data

    def as_message_content(self) -> str:
        """The ``tool`` message the model reads: the content, or ``error TYPE:
        MESSAGE`` when the call failed."""
        if self.error_type is not None:
            return f"error {self.error_type}: {self.error_message}"
        return self.content or ""


@dataclass(frozen=True)
class ServerTool:
    """One tool: its ``name``, the ``function``, the OpenAI tool object offered to
    the model (``definition``: ``{"type": "function", "function": {"name",
    "description", "parameters"}}``) and the pydantic model that validates its
    arguments. Build one with :meth:`from_function`."""

    name: str
    function: Callable[..., Any]
    definition: Mapping[str, Any]
    arguments: type[pydantic.BaseModel]

    @classmethod
    def from_function(cls, function: Callable[..., Any], origin: str) -> ServerTool:
        """The tool that ``function`` makes; ``origin`` (its import path or entry
        point) names it in errors.

        Raises:
            ConfigError: ``function`` is not a function, takes ``*args``/``**kwargs``,
                or its annotations cannot make a JSON Schema.
        """
        import pydantic  # only where tools are configured: a service without them never loads it

        if not callable(function) or not hasattr(function, "__name__"):
            raise ConfigError(f"{origin} is not a function; a tool is a function with annotated parameters")
        name = function.__name__
        try:
            arguments = _arguments_model(function)
            parameters = arguments.model_json_schema()
        except (TypeError, ValueError, NameError, pydantic.PydanticUserError) as exc:
            raise ConfigError(f"the tool {origin} cannot be offered: {exc}") from None
        parameters.pop("title", None)
        description = inspect.getdoc(function) or ""
        definition = {"type": "function", "function": {"name": name, "description": description,
                                                       "parameters": parameters}}
        return cls(name, function, definition, arguments)

    def call(self, arguments: str, timeout_s: float) -> ToolOutcome:
        """Validate ``arguments`` (the model's JSON) and run the function off the
        event loop for at most ``timeout_s`` seconds. Never raises: arguments that
        do not fit give ``invalid_arguments``, an exception ``tool_error``
        (its class and message), a call past the timeout ``tool_timeout`` (the
        function may then still be running; its result is thrown away)."""
        import pydantic
        import pydantic_core

        try:
            values = self.arguments.model_validate_json(arguments or "{}")
        except pydantic.ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors())
            return ToolOutcome(error_type="invalid_arguments",
                               error_message=f"the arguments do not fit {self.name}'s parameters: {problems}")
        kwargs = {field: getattr(values, field) for field in type(values).model_fields}
        try:
            result = run_blocking(lambda: self._run(kwargs), timeout_s)
        except TimeoutError:
            return ToolOutcome(error_type="tool_timeout",
                               error_message=f"{self.name} did not return within {timeout_s:g} s "
                                             "(SSE_CHAT_TOOL_TIMEOUT_S)")
        except Exception as exc:  # the tool's own failure: the model is told, the stream goes on
            log.warning("tool %s raised %s: %s", self.name, type(exc).__name__, exc)
            return ToolOutcome(error_type="tool_error", error_message=f"{type(exc).__name__}: {exc}")
        return ToolOutcome(content=result if isinstance(result, str) else pydantic_core.to_json(result).decode())

    def _run(self, kwargs: dict[str, Any]) -> Any:
        if inspect.iscoroutinefunction(self.function):
            return asyncio.run(self.function(**kwargs))
        return self.function(**kwargs)


def _arguments_model(function: Callable[..., Any]) -> type[pydantic.BaseModel]:
    """A pydantic model of ``function``'s parameters: each one's annotation (``Any``
    when none) and default (required when none)."""
    import pydantic

    hints = get_type_hints(function, include_extras=True)
    fields: dict[str, Any] = {}
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD, parameter.POSITIONAL_ONLY):
            raise TypeError(f"its parameter {parameter.name!r} cannot be passed by name from JSON arguments")
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (hints.get(parameter.name, Any), default)
    return pydantic.create_model(function.__name__, **fields)


class ToolRegistry:
    """The server tools by name, in the order they were named
    (``SSE_CHAT_TOOLS`` first, then entry points)."""

    def __init__(self, tools: Iterable[ServerTool] = ()) -> None:
        self._tools: dict[str, ServerTool] = {}
        for tool in tools:
            if tool.name in self._tools:
                raise ConfigError(f"two server tools are named {tool.name!r}; a tool's name is its "
                                  "function's name, so rename one of them")
            self._tools[tool.name] = tool

    def __bool__(self) -> bool:
        return bool(self._tools)

    def __len__(self) -> int:
        return len(self._tools)

    def get(self, name: str) -> ServerTool | None:
        """The tool named ``name``, or ``None``."""
        return self._tools.get(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._tools)

    @property
    def definitions(self) -> tuple[Mapping[str, Any], ...]:
        """The OpenAI tool objects, offered to the model beside the client's."""
        return tuple(tool.definition for tool in self._tools.values())

    @classmethod
    def load(cls, paths: Iterable[str], *, use_entry_points: bool = True) -> ToolRegistry:
        """Import every ``module:function`` of ``paths`` and, with
        ``use_entry_points``, every function of the ``sse_chat.tools`` group.

        Raises:
            ConfigError: a path or entry point that does not import or does not name
                a function (the message names it), or two tools with one name.
        """
        tools = [ServerTool.from_function(import_function(path), path) for path in paths]
        if use_entry_points:
            for point in entry_points(group=ENTRY_POINT_GROUP):
                origin = f"the entry point {point.name} = {point.value!r} (group {ENTRY_POINT_GROUP})"
                try:
                    function = point.load()
                except Exception as exc:
                    raise ConfigError(f"{origin} does not import: {type(exc).__name__}: {exc}") from None
                tools.append(ServerTool.from_function(function, origin))
        registry = cls(tools)
        if registry:
            log.info("server tools: %s", ", ".join(registry.names))
        return registry


def import_function(path: str) -> Callable[..., Any]:
    """The object ``module:attribute`` names (``attribute`` may be dotted).

    Raises:
        ConfigError: naming ``path`` and SSE_CHAT_TOOLS, when it is malformed,
            its module does not import, or it has no such attribute.
    """
    module_name, colon, attribute = path.partition(":")
    if not colon or not module_name or not attribute:
        raise ConfigError(f"SSE_CHAT_TOOLS names {path!r}, which is not of the form module:function")
    try:
        value: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(f"SSE_CHAT_TOOLS names {path!r}, whose module does not import: "
                          f"{type(exc).__name__}: {exc}") from None
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise ConfigError(f"SSE_CHAT_TOOLS names {path!r}, but {module_name} has no {attribute!r}")
        value = getattr(value, part)
    return value

"""Validating Responses API objects and streamed events against the Open Responses
specification's JSON Schemas (vendored in tests/specs/, origin and licence there)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SPEC = Path(__file__).parent / "specs" / "open-responses-openapi.json"


@cache
def _spec() -> dict[str, Any]:
    return json.loads(SPEC.read_text())


@cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    """A validator of ``components.schemas[name]`` whose ``$ref``s resolve inside
    the document (OpenAPI 3.1 schemas are JSON Schema 2020-12)."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": _spec()["components"]}
    return jsonschema.Draft202012Validator(schema)


@cache
def _event_schemas() -> dict[str, str]:
    """Streamed event ``type`` -> the name of its schema, from the spec's
    ``text/event-stream`` answer of ``POST /responses``."""
    answer = _spec()["paths"]["/responses"]["post"]["responses"]["200"]["content"]["text/event-stream"]
    names = [ref["$ref"].rsplit("/", 1)[1] for ref in answer["schema"]["oneOf"]]
    schemas = _spec()["components"]["schemas"]
    return {schemas[name]["properties"]["type"]["enum"][0]: name for name in names}


def assert_valid_response(body: Any) -> None:
    """Fail unless ``body`` is a valid ``ResponseResource``."""
    _validator("ResponseResource").validate(body)


def assert_valid_event(event: Any) -> None:
    """Fail unless ``event`` is one of the specification's streaming events, valid
    against the schema its ``type`` names."""
    name = _event_schemas().get(event.get("type"))
    assert name is not None, f"{event.get('type')!r} is not a streaming event of the specification"
    _validator(name).validate(event)

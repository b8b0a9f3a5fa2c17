"""The JSON schemas the tools publish. Every client sends `tools/list` into a model's context on every
connection, so a schema says what informs a caller and nothing a caller could work out for itself."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NULL = {"type": "null"}
SCHEMA_MAPS = ("properties", "$defs")  # their keys are names, not keywords


def lean(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` without what pydantic adds that tells a caller nothing (titles made from the field names,
    `additionalProperties: true`, `default: null`), and an optional value as `"type": [T, "null"]` rather than
    an `anyOf` beside null. It accepts exactly what `schema` accepts."""
    result: dict[str, Any] = {}
    for keyword, value in schema.items():
        if (keyword, value) in (("additionalProperties", True), ("default", None)) or keyword == "title":
            continue
        if keyword in SCHEMA_MAPS:
            result[keyword] = {name: lean(part) for name, part in value.items()}
        elif isinstance(value, dict):
            result[keyword] = lean(value)
        elif isinstance(value, list):
            result[keyword] = [lean(part) if isinstance(part, dict) else part for part in value]
        else:
            result[keyword] = value
    return _nullable(result)


def outline(schema: dict[str, Any], fields: Mapping[str, str]) -> dict[str, Any]:
    """`schema` with each of `fields` described in words instead of in full, for parts that another tool's
    output schema already spells out; the definitions no longer used are dropped."""
    properties = dict(schema["properties"])
    for name, description in fields.items():
        kinds = _types(properties[name])
        kind = "array" if "array" in kinds else "object"
        properties[name] = {"type": [kind, "null"] if "null" in kinds else kind, "description": description}
    result = {**schema, "properties": properties}
    definitions = schema.get("$defs", {})
    used = _used_definitions({k: v for k, v in result.items() if k != "$defs"}, definitions)
    result.pop("$defs", None)
    if used:
        result["$defs"] = {name: part for name, part in definitions.items() if name in used}
    return result


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    alternatives = schema.get("anyOf")
    if not (isinstance(alternatives, list) and len(alternatives) == 2 and NULL in alternatives):
        return schema
    (other,) = (part for part in alternatives if part != NULL)
    if not isinstance(other.get("type"), str):
        return schema  # a $ref or a union of its own: the anyOf is as short as it gets
    merged = {**other, "type": [other["type"], "null"]}
    if "enum" in merged:
        merged["enum"] = [*merged["enum"], None]
    rest = {keyword: value for keyword, value in schema.items() if keyword != "anyOf"}
    return {**merged, **rest}


def _types(schema: dict[str, Any]) -> set[str]:
    kinds = schema.get("type", [])
    alternatives = [_types(part) for part in schema.get("anyOf", [])]
    return set[str]().union({kinds} if isinstance(kinds, str) else kinds, *alternatives)


def _used_definitions(schema: dict[str, Any], definitions: dict[str, Any]) -> set[str]:
    """The names of the definitions `schema` refers to, directly or through other definitions."""
    used: set[str] = set()
    stack: list[Any] = [schema]
    while stack:
        part = stack.pop()
        if isinstance(part, list):
            stack.extend(part)
        elif isinstance(part, dict):
            reference = part.get("$ref", "")
            name = reference.removeprefix("#/$defs/")
            if reference.startswith("#/$defs/") and name not in used:
                used.add(name)
                stack.append(definitions[name])
            stack.extend(part.values())
    return used

"""The JSON schemas the tools publish. Every client sends `tools/list` into a model's context on every
connection, so a schema says what informs a caller and nothing a caller could work out for itself."""

from __future__ import annotations

from collections.abc import Mapping
from copy import deepcopy
from typing import Any

NULL = {"type": "null"}
SCHEMA_MAPS = ("properties", "$defs")  # their keys are names, not keywords
REFERENCE = "#/$defs/"
# What an output schema need not say: a result always carries every field (so no field is optional or has a
# default), and shows its dates as it sends them.
SAID_BY_THE_RESULT = ("required", "default", "format")


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
    output schema already spells out; the definitions no longer used are dropped. A field is a property's name,
    or a dotted path through properties (`ticket.delivery`), followed through definitions."""
    result = deepcopy(schema)
    definitions = result.get("$defs", {})
    for path, description in fields.items():
        *parents, name = path.split(".")
        properties = _properties_at(result, parents, definitions)
        kinds = _types(properties[name])
        kind = "array" if "array" in kinds else "object"
        properties[name] = {"type": [kind, "null"] if "null" in kinds else kind, "description": description}
    used = _used_definitions({k: v for k, v in result.items() if k != "$defs"}, definitions)
    result.pop("$defs", None)
    if used:
        result["$defs"] = {name: part for name, part in definitions.items() if name in used}
    return result


def for_output(schema: dict[str, Any]) -> dict[str, Any]:
    """An output schema without what the result itself says (which fields it has, defaults, formats), and with
    each definition that is used once written where it is used: a `$ref` and its `$defs` entry cost more than the
    part they name."""
    definitions = schema.get("$defs", {})
    uses: dict[str, int] = {}
    _count_references(schema, uses)
    shared = {name: part for name, part in definitions.items() if uses.get(name, 0) > 1}

    def rewrite(part: dict[str, Any]) -> dict[str, Any]:
        name = str(part.get("$ref", "")).removeprefix(REFERENCE)
        if name in definitions and name not in shared:
            return rewrite({**definitions[name], **{k: v for k, v in part.items() if k != "$ref"}})
        result: dict[str, Any] = {}
        for keyword, value in part.items():
            if keyword in SAID_BY_THE_RESULT or keyword == "$defs":
                continue
            if keyword in SCHEMA_MAPS:
                result[keyword] = {key: rewrite(item) for key, item in value.items()}
            elif isinstance(value, dict):
                result[keyword] = rewrite(value)
            elif isinstance(value, list):
                result[keyword] = [rewrite(item) if isinstance(item, dict) else item for item in value]
            else:
                result[keyword] = value
        return _nullable(result)

    result = rewrite(schema)
    if shared:
        result["$defs"] = {name: rewrite(part) for name, part in shared.items()}
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


def _properties_at(schema: dict[str, Any], path: list[str], definitions: dict[str, Any]) -> dict[str, Any]:
    """The `properties` of the object at `path` (names of nested properties) in `schema`, through `$ref`s."""
    part = schema
    for name in path:
        part = part["properties"][name]
        reference = next((p["$ref"] for p in [part, *part.get("anyOf", [])] if "$ref" in p), None)
        if reference is not None:
            part = definitions[str(reference).removeprefix(REFERENCE)]
    properties: dict[str, Any] = part["properties"]
    return properties


def _count_references(part: Any, uses: dict[str, int]) -> None:
    if isinstance(part, list):
        for item in part:
            _count_references(item, uses)
    elif isinstance(part, dict):
        reference = part.get("$ref")
        if isinstance(reference, str) and reference.startswith(REFERENCE):
            name = reference.removeprefix(REFERENCE)
            uses[name] = uses.get(name, 0) + 1
        for value in part.values():
            _count_references(value, uses)


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
            name = reference.removeprefix(REFERENCE)
            if reference.startswith(REFERENCE) and name not in used:
                used.add(name)
                stack.append(definitions[name])
            stack.extend(part.values())
    return used

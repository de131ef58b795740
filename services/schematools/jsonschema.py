"""JSON Schema for the JSON form of an Avro record, as the HTTP API answers it.

The scorer answers a prediction as the JSON object of its Avro record (the same field names,
a timestamp as epoch milliseconds, an enum as its symbol, a nullable union as null or the value
itself). This writes the JSON Schema (draft 2020-12, the dialect of OpenAPI 3.1) of that form,
so the OpenAPI document describes the answers from the ``.avsc`` files rather than a copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

JsonSchema = dict[str, Any]

_LONG = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
_INT = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
_PRIMITIVES: Mapping[str, JsonSchema] = {
    "null": {"type": "null"},
    "boolean": {"type": "boolean"},
    "int": _INT,
    "long": _LONG,
    "float": {"type": "number"},
    "double": {"type": "number"},
    "string": {"type": "string"},
    "bytes": {"type": "string"},
}


def primitive(name: str) -> JsonSchema:
    """The JSON Schema of an Avro primitive's JSON form (``long``: an integer in its range)."""
    return dict(_PRIMITIVES[name])


def json_schema_of(avro: Any) -> JsonSchema:
    """The JSON Schema of ``avro``'s JSON form. Named types are inlined where used; a name
    used before its definition (a recursive record) is refused with ``ValueError``."""
    return _convert(avro, {})


def _convert(avro: Any, named: dict[str, JsonSchema]) -> JsonSchema:
    if isinstance(avro, str):
        if avro in _PRIMITIVES:
            return primitive(avro)
        if avro in named:
            return named[avro]
        raise ValueError(f"the Avro type {avro!r} is not defined before its use")
    if isinstance(avro, list):
        return _union(avro, named)
    if not isinstance(avro, Mapping):
        raise ValueError(f"not an Avro schema: {avro!r}")
    kind = avro.get("type")
    converted = _complex(avro, kind, named) if isinstance(kind, str) else _convert(kind, named)
    if "doc" in avro:
        converted["description"] = str(avro["doc"])
    return converted


def _complex(avro: Mapping[str, Any], kind: str, named: dict[str, JsonSchema]) -> JsonSchema:
    if kind == "record":
        schema = _record(avro, named)
    elif kind == "enum":
        schema = {"type": "string", "enum": list(avro["symbols"])}
    elif kind == "array":
        schema = {"type": "array", "items": _convert(avro["items"], named)}
    elif kind == "map":
        schema = {"type": "object", "additionalProperties": _convert(avro["values"], named)}
    elif kind == "fixed":
        schema = {"type": "string"}
    else:
        schema = _convert(kind, named)
        if avro.get("logicalType") in ("timestamp-millis", "local-timestamp-millis"):
            schema["description"] = "epoch milliseconds"
        return schema
    if kind in ("record", "enum", "fixed"):
        named[_full_name(avro)] = schema
        named[str(avro["name"])] = schema
    return schema


def _record(avro: Mapping[str, Any], named: dict[str, JsonSchema]) -> JsonSchema:
    properties: JsonSchema = {}
    required: list[str] = []
    for field in avro.get("fields", ()):
        name = str(field["name"])
        prop = _convert(field["type"], named)
        if "doc" in field:
            prop = {**prop, "description": str(field["doc"])}
        properties[name] = prop
        if "default" not in field:
            required.append(name)
    return {
        "type": "object",
        "title": str(avro["name"]),
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _union(branches: list[Any], named: dict[str, JsonSchema]) -> JsonSchema:
    converted = [_convert(branch, named) for branch in branches]
    return converted[0] if len(converted) == 1 else {"anyOf": converted}


def _full_name(avro: Mapping[str, Any]) -> str:
    name = str(avro["name"])
    namespace = avro.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"

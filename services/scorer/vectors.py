"""Feature vectors from outside the stream (HTTP requests, batch files), checked before scoring.

A vector from a caller has the fields of the domain's feature-vector schema
(``schemas/<domain>.features.avsc``): every field is required, a nullable one may be null.
It may also carry the domain's online-only features (payments: ``merchant_txn_count_1h``); one
that is absent or null is read from the online store, as the stream does. Anything else is
refused with the field named, so a bad input is a clear error, never a made-up model input.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from services.core.declarations import Domain
from services.core.errors import ConfigError, StreamMLError
from services.core.schemas import Schema, SchemaStore
from services.core.serde import Record
from services.core.topics import schema_subject

_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


class Kind(StrEnum):
    STRING = "string"
    LONG = "long"
    INT = "int"
    DOUBLE = "double"
    BOOLEAN = "boolean"
    TIMESTAMP_MS = "timestamp-millis"


_AVRO_KINDS = {
    "string": Kind.STRING,
    "long": Kind.LONG,
    "int": Kind.INT,
    "double": Kind.DOUBLE,
    "float": Kind.DOUBLE,
    "boolean": Kind.BOOLEAN,
}
_EXPECTED = {
    Kind.STRING: "a string",
    Kind.LONG: "an integer",
    Kind.INT: "an integer",
    Kind.DOUBLE: "a finite number",
    Kind.BOOLEAN: "true or false",
    Kind.TIMESTAMP_MS: "epoch milliseconds (an integer)",
}


class InvalidVectorError(StreamMLError):
    """A vector that cannot be scored as given; ``field`` names the culprit where there is one
    (the first, when the problem lists several)."""

    def __init__(
        self,
        problem: str,
        field: str | None = None,
        index: int | None = None,
        *,
        lists_fields: bool = False,
    ) -> None:
        self.problem = problem
        self.field = field
        self.index = index
        self._lists_fields = lists_fields  # the problem names the fields itself
        super().__init__(self.describe())

    def at(self, index: int) -> InvalidVectorError:
        return InvalidVectorError(self.problem, self.field, index, lists_fields=self._lists_fields)

    @property
    def where(self) -> str:
        """``vectors[3].amount``, ``amount``, ``vectors[3]`` or ``""``."""
        head = "" if self.index is None else f"vectors[{self.index}]"
        if self.field is None or self._lists_fields:
            return head
        return f"{head}.{self.field}" if head else self.field

    def describe(self) -> str:
        return f"{self.where}: {self.problem}" if self.where else self.problem


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: Kind
    nullable: bool
    online: bool = False  # an online-only feature: optional, null or absent = read the store

    def parse(self, value: Any) -> Any:
        """The value as the stream's decoder would give it; raises InvalidVectorError."""
        if value is None:
            if self.nullable:
                return None
            raise InvalidVectorError("must not be null", self.name)
        try:
            return _PARSERS[self.kind](value)
        except _Refused as refused:
            detail = f" ({refused.args[0]})" if refused.args else ""
            raise InvalidVectorError(
                f"expected {_EXPECTED[self.kind]}, got {_shown(value)}{detail}", self.name
            ) from None


class VectorSpec:
    """The fields a caller's vector has, in the schema's order, then the online features."""

    def __init__(self, domain: Domain, fields: tuple[FieldSpec, ...]) -> None:
        self.domain = domain
        self.fields = fields
        self.required = tuple(f.name for f in fields if not f.online)
        self.online = tuple(f.name for f in fields if f.online)
        self._by_name = {f.name: f for f in fields}

    @classmethod
    def for_domain(cls, domain: Domain, schemas_dir: Path) -> VectorSpec:
        subject = schema_subject(domain.topics.features)
        return cls.from_schema(domain, SchemaStore.from_dir(schemas_dir).current(subject))

    @classmethod
    def from_schema(cls, domain: Domain, schema: Schema) -> VectorSpec:
        fields = [_field_of(schema.subject, f) for f in schema.source.get("fields", ())]
        names = {f.name for f in fields}
        for needed in (domain.event_id_field, domain.key_field, domain.event_time_field):
            if needed not in names:
                raise ConfigError(f"{schema.subject}: no field {needed!r}, which a vector needs")
        for feature in domain.online_features:
            if feature.name not in names:
                kind = Kind.LONG if feature.is_integer else Kind.DOUBLE
                fields.append(FieldSpec(feature.name, kind, nullable=True, online=True))
        return cls(domain, tuple(fields))

    def parse(self, raw: Any, *, strict: bool = True) -> Record:
        """A caller's vector as a record the scorer takes. ``strict``: unknown fields are
        refused (an HTTP body); otherwise they are ignored (a batch file's other columns)."""
        if not isinstance(raw, Mapping):
            raise InvalidVectorError(f"a vector is a JSON object, not {_shown(raw)}")
        missing = [name for name in self.required if name not in raw]
        if missing:
            raise InvalidVectorError(
                f"missing required field{'s' if len(missing) > 1 else ''}: {', '.join(missing)}",
                missing[0],
                lists_fields=True,
            )
        if strict:
            unknown = sorted(str(k) for k in raw if k not in self._by_name)
            if unknown:
                raise InvalidVectorError(
                    f"unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} "
                    f"(known: {', '.join(self._by_name)})",
                    unknown[0],
                    lists_fields=True,
                )
        record: Record = {}
        for spec in self.fields:
            value = raw.get(spec.name)
            if spec.online and value is None:
                continue  # absent: the scorer reads it from the online store
            record[spec.name] = spec.parse(value)
        return record

    def key_of(self, record: Record) -> bytes:
        """The entity key the stream's records carry (the featurizer keys them by it)."""
        return str(record[self.domain.key_field]).encode()


class _Refused(Exception):
    """A value of the wrong type or out of range (internal: becomes an InvalidVectorError)."""


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Refused
    return value


def _integer(value: Any, low: int = _LONG_MIN, high: int = _LONG_MAX) -> int:
    if isinstance(value, bool):
        raise _Refused
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise _Refused
        value = int(value)
    if not isinstance(value, int):
        raise _Refused
    if not low <= value <= high:
        raise _Refused(f"out of range [{low}, {high}]")
    return value


def _int32(value: Any) -> int:
    return _integer(value, _INT_MIN, _INT_MAX)


def _double(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Refused
    try:
        number = float(value)
    except OverflowError:
        raise _Refused("out of range") from None
    if not math.isfinite(number):
        raise _Refused
    return number


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Refused
    return value


def _timestamp_ms(value: Any) -> int:
    """Epoch milliseconds; a datetime (a batch file's timestamp column) is converted, a naive
    one taken as UTC."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return (aware - _EPOCH) // _ONE_MS
    return _integer(value)


_PARSERS: dict[Kind, Callable[[Any], Any]] = {
    Kind.STRING: _string,
    Kind.LONG: _integer,
    Kind.INT: _int32,
    Kind.DOUBLE: _double,
    Kind.BOOLEAN: _boolean,
    Kind.TIMESTAMP_MS: _timestamp_ms,
}


def _shown(value: Any) -> str:
    """A value as an error message shows it (JSON's words where JSON has them)."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # nan, inf, -inf
    if isinstance(value, int | float):
        return repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:40]}..."
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    kind = "an object" if isinstance(value, Mapping) else "a list"
    return kind if isinstance(value, Mapping | list | tuple) else type(value).__name__


def _field_of(subject: str, field: Mapping[str, Any]) -> FieldSpec:
    name = str(field["name"])
    kind, nullable = _kind_of(field["type"])
    if kind is None:
        raise ConfigError(
            f"{subject}: field {name!r} has type {field['type']!r}, which vectors from "
            "outside the stream cannot carry yet (primitive types and their null unions only)"
        )
    return FieldSpec(name, kind, nullable)


def _kind_of(avro: Any) -> tuple[Kind | None, bool]:
    if isinstance(avro, list):
        others = [t for t in avro if t != "null"]
        if len(others) != 1:
            return None, True
        kind, _ = _kind_of(others[0])
        return kind, len(others) < len(avro)
    if isinstance(avro, Mapping):
        if avro.get("type") == "long" and avro.get("logicalType") == "timestamp-millis":
            return Kind.TIMESTAMP_MS, False
        return _kind_of(avro.get("type"))
    if isinstance(avro, str):
        return _AVRO_KINDS.get(avro), False
    return None, False

"""The schemas in ``schemas/``: current writer schemas by subject, all known ones by fingerprint.

A subject's current schema is ``schemas/<subject>.avsc``; the versions it replaced stay in
``schemas/history/<subject>/<n>.avsc`` so readers still resolve records written with them.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from services.core.errors import ConfigError, UnknownSchemaError

HISTORY_DIR = "history"


def crc64_fingerprint(schema: Any) -> int:
    """CRC-64-AVRO fingerprint of the schema's parsing canonical form, as a signed 64-bit int."""
    digest = fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")
    value: int = struct.unpack("<q", bytes.fromhex(digest))[0]
    return value


@dataclass(frozen=True)
class Schema:
    """One Avro schema as written in its file, parsed once."""

    subject: str
    source: dict[str, Any]
    parsed: Any = field(repr=False)
    fingerprint: int

    @classmethod
    def from_json(cls, subject: str, source: dict[str, Any]) -> Schema:
        # Internally timestamps stay epoch-millisecond ints: logical types are dropped for
        # parsing only. The fingerprint is unaffected (canonical form has no logicalType).
        parsed = parse_schema(without_logical_types(source), _write_hint=False)
        return cls(subject, source, parsed, crc64_fingerprint(source))

    @property
    def fingerprint_bytes(self) -> bytes:
        return struct.pack("<q", self.fingerprint)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f["name"] for f in self.source.get("fields", ()))


class SchemaStore:
    """Every schema under one folder, current and historical."""

    def __init__(self, current: dict[str, Schema], known: dict[int, Schema]) -> None:
        self._current = current
        self._known = known

    @classmethod
    def from_dir(cls, root: Path) -> SchemaStore:
        if not root.is_dir():
            raise ConfigError(f"schema folder {root} does not exist (set STREAMML_SCHEMAS_DIR)")
        current = {p.stem: _load(p.stem, p) for p in sorted(root.glob("*.avsc"))}
        known = {s.fingerprint: s for s in current.values()}
        for path in sorted((root / HISTORY_DIR).glob("*/*.avsc")):
            old = _load(path.parent.name, path)
            known.setdefault(old.fingerprint, old)
        return cls(current, known)

    def current(self, subject: str) -> Schema:
        try:
            return self._current[subject]
        except KeyError:
            raise ConfigError(
                f"no schema for subject {subject!r}: add schemas/{subject}.avsc"
            ) from None

    def by_fingerprint(self, value: int) -> Schema:
        try:
            return self._known[value]
        except KeyError:
            raise UnknownSchemaError(
                f"writer schema fingerprint {value} is not in schemas/ "
                "(a producer wrote with a schema this reader has never seen)"
            ) from None

    def subjects(self) -> tuple[str, ...]:
        return tuple(self._current)


def _load(subject: str, path: Path) -> Schema:
    try:
        source = json.loads(path.read_text())
        return Schema.from_json(subject, source)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"{path} is not a valid Avro schema: {exc}") from exc


def without_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [without_logical_types(v) for v in node]
    return node

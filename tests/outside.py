"""A producer's and a consumer's view from outside: a topic name and an .avsc file, nothing else.

Deliberately imports nothing from ``services``: it proves other teams can plug in with only
the schema files and the Avro single-object encoding spec.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


class OutsideCodec:
    def __init__(self, avsc: str, schemas_dir: Path = SCHEMAS) -> None:
        source = json.loads((schemas_dir / avsc).read_text())
        self.schema = parse_schema(source)
        digest = fingerprint(to_parsing_canonical_form(source), "CRC-64-AVRO")
        self.header = b"\xc3\x01" + bytes.fromhex(digest)  # fastavro's digest is little-endian

    def encode(self, record: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        out.write(self.header)
        schemaless_writer(out, self.schema, record)
        return out.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        assert data[:10] == self.header, "written with a schema this reader does not know"
        return dict(schemaless_reader(io.BytesIO(data[10:]), self.schema, self.schema))


def fingerprint_int(avsc: str) -> int:
    source = json.loads((SCHEMAS / avsc).read_text())
    return int(
        struct.unpack(
            "<q", bytes.fromhex(fingerprint(to_parsing_canonical_form(source), "CRC-64-AVRO"))
        )[0]
    )

"""The generated Avro codec writes and reads exactly what fastavro does."""

from __future__ import annotations

import io
import math
import random
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.utils import generate_many

from services.core.errors import EncodingError, MalformedRecordError
from services.core.flatavro import compile_codec, varint
from services.core.schemas import SchemaStore

FLAT = {
    "type": "record",
    "name": "Flat",
    "fields": [
        {"name": "s", "type": "string"},
        {"name": "b", "type": "bytes"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "t", "type": "boolean"},
        {"name": "ns", "type": ["null", "string"]},
        {"name": "nd", "type": ["double", "null"]},
        {"name": "a", "type": {"type": "array", "items": "double"}},
    ],
}


def random_record(rng: random.Random) -> dict[str, Any]:
    text = "".join(rng.choice("aé€😀z") for _ in range(rng.randrange(0, 200)))
    return {
        "s": text,
        "b": rng.randbytes(rng.randrange(0, 70)),
        "i": rng.randrange(-(2**31), 2**31),
        "l": rng.choice([0, 1, -1, 63, 64, -64, -65, 2**63 - 1, -(2**63), rng.randrange(2**40)]),
        "f": rng.choice([0.0, 1.5, -2.25]),
        "d": rng.choice([0.0, -0.0, math.inf, -1e300, rng.random()]),
        "t": rng.random() < 0.5,
        "ns": rng.choice([None, text]),
        "nd": rng.choice([None, rng.random()]),
        "a": [rng.random() for _ in range(rng.randrange(0, 5))],
    }


def fastavro_bytes(schema: Any, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, schema, record)
    return out.getvalue()


def test_flat_records_encode_and_decode_as_fastavro_does() -> None:
    schema = parse_schema(FLAT)
    codec = compile_codec(schema, "flat")
    assert codec is not None
    encode, decode = codec
    rng = random.Random(5)
    for _ in range(500):
        record = random_record(rng)
        data = encode(record)
        assert data == fastavro_bytes(schema, record)
        assert decode(data, 0) == schemaless_reader(io.BytesIO(data), schema, None)


def test_every_compiled_schema_in_the_repository_matches_fastavro(
    schema_store: SchemaStore,
) -> None:
    """Random records of every schema (nested records, enums, nullable records included)."""
    compiled = []
    for subject in schema_store.subjects():
        schema = schema_store.current(subject).parsed
        codec = compile_codec(schema, subject)
        if codec is None:
            continue
        compiled.append(subject)
        encode, decode = codec
        for record in generate_many(schema, 200):
            data = encode(record)
            assert data == fastavro_bytes(schema, record), subject
            assert decode(data, 0) == schemaless_reader(io.BytesIO(data), schema, None), subject
    # The records of every domain topic the services read and write per event.
    for subject in ("payments.predictions", "payments.labelled", "monitor_part", "dlq"):
        assert subject in compiled


NESTED = {
    "type": "record",
    "name": "Nested",
    "fields": [
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["a", "b", "c"]}},
        {"name": "inner", "type": ["null", FLAT]},
        {"name": "also", "type": {"type": "record", "name": "Also", "fields": FLAT["fields"][:3]}},
    ],
}


def test_nested_records_enums_and_nullable_records_round_trip() -> None:
    schema = parse_schema(NESTED)
    codec = compile_codec(schema, "nested")
    assert codec is not None
    encode, decode = codec
    rng = random.Random(3)
    for _ in range(300):
        flat = random_record(rng)
        record = {
            "kind": rng.choice("abc"),
            "inner": rng.choice([None, flat]),
            "also": {k: flat[k] for k in ("s", "b", "i")},
        }
        data = encode(record)
        assert data == fastavro_bytes(schema, record)
        assert decode(data, 0) == schemaless_reader(io.BytesIO(data), schema, None)
    good = encode({"kind": "c", "inner": None, "also": {"s": "", "b": b"", "i": 0}})
    for bad, says in (
        (b"\x06" + good[1:], "enum index 3 of kind"),
        (good[:1] + b"\x04", "union branch 2 of inner"),
    ):
        with pytest.raises(MalformedRecordError, match=says):
            decode(bad, 0)
    with pytest.raises(EncodingError, match="nested: field 'kind'"):
        encode({"kind": "z", "inner": None, "also": {"s": "", "b": b"", "i": 0}})
    with pytest.raises(EncodingError, match=r"nested: field 'also\.i'"):
        encode({"kind": "a", "inner": None, "also": {"s": "", "b": b"", "i": "x"}})


def test_a_missing_field_with_a_default_is_written_with_it_as_fastavro_does(
    schema_store: SchemaStore,
) -> None:
    schema = schema_store.current("payments.predictions").parsed
    codec = compile_codec(schema, "payments.predictions")
    assert codec is not None
    record = next(iter(generate_many(schema, 1)))
    del record["online_features"]  # a scorer that read no online features leaves it out
    assert codec[0](record) == fastavro_bytes(schema, record)
    assert codec[1](codec[0](record), 0)["online_features"] is None


def test_schemas_it_does_not_cover_are_left_to_fastavro() -> None:
    record_map = {"type": "map", "values": "double"}
    mapped = {"type": "record", "name": "M", "fields": [{"name": "m", "type": record_map}]}
    union = {"type": "record", "name": "U", "fields": [{"name": "u", "type": ["int", "string"]}]}
    logical = {
        "type": "record",
        "name": "L",
        "fields": [{"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}}],
    }
    listed = {"type": "array", "items": {"type": "record", "name": "I", "fields": FLAT["fields"]}}
    records = {"type": "record", "name": "A", "fields": [{"name": "a", "type": listed}]}
    for schema in (mapped, union, logical, records):
        assert compile_codec(parse_schema(schema), "x") is None


def test_bad_bodies_are_malformed_not_crashes() -> None:
    schema = parse_schema(FLAT)
    codec = compile_codec(schema, "flat")
    assert codec is not None
    encode, decode = codec
    data = encode(random_record(random.Random(1)))
    for bad in (data[:-1], data[: len(data) // 2], data + b"\x00", b"", b"\xff" * 12):
        with pytest.raises(MalformedRecordError, match="flat"):
            decode(bad, 0)


def test_a_record_that_does_not_fit_is_refused_on_encode() -> None:
    codec = compile_codec(parse_schema(FLAT), "flat")
    assert codec is not None
    record = random_record(random.Random(2))
    for field, value in (("s", 5), ("l", "x"), ("d", None)):
        with pytest.raises(EncodingError, match=f"flat: field '{field}'"):
            codec[0]({**record, field: value})
    with pytest.raises(EncodingError, match="flat: field 's'"):
        codec[0]({k: v for k, v in record.items() if k != "s"})


def test_varints_match_protobufs_own_encoder() -> None:
    """Including numbers whose high part comes from the cache, next to ones that share it."""
    from google.protobuf.internal.encoder import _VarintBytes

    rng = random.Random(9)
    near = 1_767_312_000_000
    numbers = [0, 1, 127, 128, 0x3FFF, 0x4000, 2**63 - 1, 2**64 - 1]
    numbers += [rng.randrange(2**64) for _ in range(2000)]
    numbers += [near + rng.randrange(100_000) for _ in range(2000)]
    for n in numbers:
        assert varint(n) == _VarintBytes(n), n

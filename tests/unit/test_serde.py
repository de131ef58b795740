"""Avro on the wire: fingerprints, single-object encoding, evolution, errors, registry format."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from services.core.errors import (
    EncodingError,
    MalformedRecordError,
    SerializationError,
    UnknownSchemaError,
)
from services.core.paths import default_schemas_dir
from services.core.schemas import SchemaStore, crc64_fingerprint, without_logical_types
from services.core.serde import CodecFactory, SingleObjectCodec
from services.core.topics import MODEL_EVENTS, MODELS, DomainTopics, schema_subject
from services.schematools.compat import sample_datums

T = 1_767_225_600_000

SAMPLES: dict[str, dict[str, Any]] = {
    "payments.transactions": {
        "event_id": "evt-1",
        "card_id": "card-1",
        "merchant_id": "m-1",
        "amount": 12.5,
        "currency": "EUR",
        "event_time": T,
    },
    "payments.features": {
        "event_id": "evt-1",
        "card_id": "card-1",
        "merchant_id": "m-1",
        "event_time": T,
        "amount": 12.5,
        "txn_count_5m": 1,
        "txn_count_1h": 2,
        "txn_count_24h": 3,
        "amount_sum_1h": 20.0,
        "amount_mean_24h": 8.25,
        "amount_max_24h": 12.5,
        "seconds_since_last_txn": None,
    },
    "payments.outcomes": {"event_id": "evt-1", "is_fraud": True, "observed_at": T + 1},
    "payments.predictions": {
        "event_id": "evt-1",
        "card_id": "card-1",
        "model_name": "payments-fraud",
        "model_version": "3",
        "score": 0.25,
        "decision": False,
        "served_by": "canary",
        "event_time": T,
        "predicted_at": T + 5,
        "online_features": {"merchant_txn_count_1h": 4},
    },
    "payments.labelled": {
        "event_id": "evt-1",
        "card_id": "card-1",
        "event_time": T,
        "label": True,
        "features": None,
        "prediction": {
            "event_id": "evt-1",
            "card_id": "card-1",
            "model_name": "payments-fraud",
            "model_version": "3",
            "score": 0.25,
            "decision": False,
            "served_by": "canary",
            "event_time": T,
            "predicted_at": T + 5,
            "online_features": {"merchant_txn_count_1h": 4},
        },
        "outcome": {"event_id": "evt-1", "is_fraud": True, "observed_at": T + 1},
        "outcome_at": T + 2,
        "joined_at": T + 3,
    },
    "monitoring": {
        "domain": "payments",
        "model_version": "3",
        "served_by": "champion",
        "segment": "amount 50-200",
        "scope": "window",
        "joined": 120,
        "predictions": 0,
        "coverage": None,
        "accuracy": 0.9,
        "auc": 0.8,
        "logloss": 0.3,
        "precision": None,
        "recall": 0.5,
        "label_delay_p50_ms": 1500.0,
        "label_delay_p95_ms": 4000.0,
        "psi": None,
        "ks": None,
        "window_pairs": 5000,
        "snapshot_at": T,
    },
    "dlq": {
        "reason": "malformed",
        "detail": "body does not decode",
        "original_key": b"card-1",
        "original_value": b"\xc3\x01\x00",
        "source_topic": "payments.transactions",
        "source_partition": 2,
        "source_offset": 99,
        "failed_at": T,
        "service": "featurizer",
    },
    "ml.models": {
        "model_name": "payments-fraud",
        "version": "3",
        "stage": "champion",
        "kind": "onnx",
        "artifact_uri": "file:///models/payments-fraud/3/model.onnx",
        "sha256": "ab" * 32,
        "dataset_id": "ds-0123456789abcdef",
        "feature_names": ["amount", "txn_count_5m"],
        "metrics": {"auc": 0.91, "recall": 0.5},
        "created_at": T,
        "updated_at": T + 1,
        "traffic_share": 0.0,
    },
    "ml.models.events": {
        "model_name": "payments-fraud",
        "version": "4",
        "role": "canary",
        "outcome": "refused",
        "reason": "model artifact /models/payments-fraud/4/model.onnx does not exist",
        "sha256": "cd" * 32,
        "service": "scorer/host-1",
        "at": T,
        "step": "load",
        "request_id": "",
        "dataset_id": "",
        "figures": {},
    },
}
TRAINER_STEP: dict[str, Any] = {
    "model_name": "payments-fraud",
    "version": "5",
    "role": "candidate",
    "outcome": "refused",
    "reason": "holdout auc 0.512 is not above the champion's 0.981",
    "sha256": "ab" * 32,
    "service": "trainer/host-1",
    "at": T,
    "step": "gate_failed",
    "request_id": "req-1",
    "dataset_id": "ds-0123456789abcdef",
    "figures": {"holdout_auc": 0.512, "champion_holdout_auc": 0.981},
}
NEW_EVENT_FIELDS = ("step", "request_id", "dataset_id", "figures")  # since ml.models.events v1
TOPICS = (
    *DomainTopics.for_domain("payments", "transactions").data_topics(),
    MODELS,
    MODEL_EVENTS,
)


# --- fingerprints and framing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ("null", 7195948357588979594),
        ("boolean", -6970731678124411036),
        ("int", 8247732601305521295),
    ],
)
def test_crc64_fingerprints_match_the_avro_spec(schema: str, expected: int) -> None:
    assert crc64_fingerprint(schema) == expected


def test_fingerprint_ignores_docs_and_logical_types() -> None:
    plain = {"type": "record", "name": "R", "fields": [{"name": "t", "type": "long"}]}
    documented = {
        "type": "record",
        "name": "R",
        "doc": "words",
        "fields": [{"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}}],
    }
    assert crc64_fingerprint(plain) == crc64_fingerprint(documented)
    renamed = {**plain, "name": "S"}
    assert crc64_fingerprint(plain) != crc64_fingerprint(renamed)


def test_single_object_header(codecs: CodecFactory, schema_store: SchemaStore) -> None:
    data = codecs.for_topic("payments.transactions").encode(SAMPLES["payments.transactions"])
    schema = schema_store.current("payments.transactions")
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == struct.pack("<q", crc64_fingerprint(schema.source))
    assert struct.unpack("<q", data[2:10])[0] == schema.fingerprint


@pytest.mark.parametrize("topic", TOPICS)
def test_every_topic_round_trips(codecs: CodecFactory, topic: str) -> None:
    record = SAMPLES[schema_subject(topic)]
    codec = codecs.for_topic(topic)
    assert codec.decode(codec.encode(record)) == record


def test_a_trainer_step_round_trips_and_old_load_events_read_as_loads(
    codecs: CodecFactory, schema_store: SchemaStore
) -> None:
    codec = codecs.for_topic(MODEL_EVENTS)
    assert codec.decode(codec.encode(TRAINER_STEP)) == TRAINER_STEP
    old = {k: v for k, v in SAMPLES[MODEL_EVENTS].items() if k not in NEW_EVENT_FIELDS}
    old_path = default_schemas_dir() / "history" / MODEL_EVENTS / "1.avsc"
    old_schema = parse_schema(without_logical_types(json.loads(old_path.read_text())))
    written = io.BytesIO()
    schemaless_writer(written, old_schema, old)
    written.seek(0)
    current = parse_schema(without_logical_types(schema_store.current(MODEL_EVENTS).source))
    read = schemaless_reader(written, old_schema, current)
    assert read == {**old, "step": "load", "request_id": "", "dataset_id": "", "figures": {}}


def test_every_schema_round_trips_generated_samples(
    codecs: CodecFactory, schema_store: SchemaStore
) -> None:
    """Every subject in schemas/, including ones added later, with every union branch."""
    subjects = schema_store.subjects()
    assert set(SAMPLES) <= set(subjects)
    for subject in subjects:
        codec = codecs.for_topic(subject)
        for datum in sample_datums(schema_store.current(subject).source):
            data = codec.encode(datum)
            assert codec.encode(codec.decode(data)) == data, subject


# --- evolution ------------------------------------------------------------------------------

V1 = {
    "type": "record",
    "name": "Thing",
    "namespace": "test",
    "fields": [{"name": "id", "type": "string"}, {"name": "size", "type": "long"}],
}
V2 = {
    **V1,
    "fields": [
        *V1["fields"],
        {"name": "colour", "type": "string", "default": "blue"},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}


def schemas_folder(root: Path, current: dict[str, Any], *history: dict[str, Any]) -> Path:
    root.mkdir()
    (root / "demo.things.avsc").write_text(json.dumps(current))
    if history:
        (root / "history" / "demo.things").mkdir(parents=True)
        for n, old in enumerate(history, start=1):
            (root / "history" / "demo.things" / f"{n}.avsc").write_text(json.dumps(old))
    return root


def codec_over(root: Path) -> Any:
    return CodecFactory(SchemaStore.from_dir(root)).for_topic("demo.things")


def test_new_reader_fills_defaults_for_old_data(tmp_path: Path) -> None:
    old = codec_over(schemas_folder(tmp_path / "old", V1))
    new = codec_over(schemas_folder(tmp_path / "new", V2, V1))
    data = old.encode({"id": "a", "size": 3})
    assert new.decode(data) == {"id": "a", "size": 3, "colour": "blue", "note": None}


def test_old_reader_drops_fields_of_new_data(tmp_path: Path) -> None:
    new = codec_over(schemas_folder(tmp_path / "new", V2, V1))
    old = codec_over(schemas_folder(tmp_path / "old", V1, V2))
    data = new.encode({"id": "a", "size": 3, "colour": "red", "note": "hi"})
    assert old.decode(data) == {"id": "a", "size": 3}


def test_a_writer_schema_the_reader_never_saw_is_unknown(tmp_path: Path) -> None:
    new = codec_over(schemas_folder(tmp_path / "new", V2))
    old = codec_over(schemas_folder(tmp_path / "old", V1))
    with pytest.raises(UnknownSchemaError) as raised:
        old.decode(new.encode({"id": "a", "size": 3, "colour": "red", "note": None}))
    assert raised.value.reason == "unknown_schema"


# --- errors ---------------------------------------------------------------------------------


@pytest.fixture
def transactions(codecs: CodecFactory) -> Any:
    return codecs.for_topic("payments.transactions")


@pytest.fixture
def encoded(transactions: Any) -> bytes:
    data: bytes = transactions.encode(SAMPLES["payments.transactions"])
    return data


def test_unknown_fingerprint(transactions: Any, encoded: bytes) -> None:
    data = encoded[:2] + struct.pack("<q", 42) + encoded[10:]
    with pytest.raises(UnknownSchemaError) as raised:
        transactions.decode(data)
    assert raised.value.reason == "unknown_schema"
    assert isinstance(raised.value, SerializationError)


@pytest.mark.parametrize("cut", [1, 5, 20])
def test_truncated_body_is_malformed(transactions: Any, encoded: bytes, cut: int) -> None:
    with pytest.raises(MalformedRecordError) as raised:
        transactions.decode(encoded[:-cut])
    assert raised.value.reason == "malformed"


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc3", b"\xc3\x01\x00\x00", b"\x00\x01" + b"\x00" * 20, b'{"event_id": 1}'],
)
def test_not_single_object_encoded(transactions: Any, data: bytes) -> None:
    with pytest.raises(SerializationError) as raised:
        transactions.decode(data)
    assert type(raised.value) is SerializationError
    assert raised.value.reason == "undecodable"


def test_wrong_magic_on_a_valid_body(transactions: Any, encoded: bytes) -> None:
    with pytest.raises(SerializationError) as raised:
        transactions.decode(b"\xc3\x02" + encoded[2:])
    assert type(raised.value) is SerializationError


def test_trailing_garbage_is_malformed(transactions: Any, encoded: bytes) -> None:
    with pytest.raises(MalformedRecordError, match="left after"):
        transactions.decode(encoded + b"\x00garbage")


@pytest.mark.parametrize(
    "change",
    [
        {"currency": None},
        {"amount": "twelve"},
        {"event_time": "yesterday"},
    ],
)
def test_a_record_that_does_not_fit_is_refused_on_encode(
    transactions: Any, change: dict[str, Any]
) -> None:
    with pytest.raises(EncodingError):
        transactions.encode({**SAMPLES["payments.transactions"], **change})


def test_a_missing_required_field_is_refused_on_encode(transactions: Any) -> None:
    record = dict(SAMPLES["payments.transactions"])
    del record["currency"]
    with pytest.raises(EncodingError, match=r"payments\.transactions"):
        transactions.encode(record)


# --- Confluent wire format ------------------------------------------------------------------


@pytest.fixture
def registry_codec(schema_store: SchemaStore) -> Any:
    factory = CodecFactory(schema_store, registry_url="mock://streamml-test")
    return factory.for_topic("payments.transactions")


def encode_via_registry(codec: Any, record: dict[str, Any]) -> bytes:
    try:
        data: bytes = codec.encode(record)
    except EncodingError as exc:
        pytest.fail(f"the registry codec cannot encode with a mock:// registry URL: {exc}")
    return data


def test_registry_wire_format(registry_codec: Any) -> None:
    record = SAMPLES["payments.transactions"]
    data = encode_via_registry(registry_codec, record)
    assert data[0] == 0
    schema_id = struct.unpack(">I", data[1:5])[0]
    assert schema_id >= 1
    assert registry_codec.decode(data) == record


def test_registry_codec_decodes_like_the_single_object_codec(
    registry_codec: Any, codecs: CodecFactory
) -> None:
    """Services read event_time as epoch milliseconds, whichever wire format is configured."""
    record = SAMPLES["payments.transactions"]
    from_registry = registry_codec.decode(encode_via_registry(registry_codec, record))
    single = codecs.for_topic("payments.transactions")
    from_single = single.decode(single.encode(record))
    assert {k: type(v) for k, v in from_registry.items()} == {
        k: type(v) for k, v in from_single.items()
    }


def test_registry_codec_classifies_bad_input(registry_codec: Any) -> None:
    with pytest.raises(SerializationError) as not_framed:
        registry_codec.decode(b"\x05not confluent framed")
    assert not_framed.value.reason == "undecodable", not_framed.value
    with pytest.raises(SerializationError) as unknown_id:
        registry_codec.decode(b"\x00" + struct.pack(">I", 987654) + b"\x02a")
    assert unknown_id.value.reason == "unknown_schema", unknown_id.value


def test_an_unreachable_registry_is_not_the_records_fault(schema_store: SchemaStore) -> None:
    """A registry outage must not dead-letter good events: it is not a SerializationError."""
    codec = CodecFactory(schema_store, registry_url="http://127.0.0.1:1").for_topic(
        "payments.transactions"
    )
    framed = b"\x00" + struct.pack(">I", 1) + b"\x02a"
    try:
        codec.decode(framed)
    except SerializationError as exc:
        pytest.fail(
            f"a registry that cannot be reached was reported as a bad record "
            f"({type(exc).__name__}, reason {exc.reason!r}); the featurizer would dead-letter "
            f"the event: {exc}"
        )
    except Exception:  # any other error stops the service instead: fine
        return
    pytest.fail("decoding succeeded without a registry")


# --- an outside consumer --------------------------------------------------------------------


def test_an_outside_reader_needs_only_fastavro_and_the_avsc(
    codecs: CodecFactory, schemas_dir: Path
) -> None:
    """Decodes our bytes the way a consumer in another code base would: spec + .avsc + fastavro."""
    import fastavro
    from fastavro.schema import fingerprint, to_parsing_canonical_form

    record = SAMPLES["payments.transactions"]
    data = codecs.for_topic("payments.transactions").encode(record)

    schema = json.loads((schemas_dir / "payments.transactions.avsc").read_text())
    assert data[:2] == b"\xc3\x01", "Avro single-object marker"
    expected = bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))
    assert data[2:10] == expected, "CRC-64-AVRO fingerprint, little-endian"
    body = io.BytesIO(data[10:])
    decoded: dict[str, Any] = fastavro.schemaless_reader(body, fastavro.parse_schema(schema))  # type: ignore[assignment]
    assert body.tell() == len(data) - 10
    event_time = decoded.pop("event_time")  # timestamp-millis: a datetime for this reader
    assert int(event_time.timestamp() * 1000) == record["event_time"]
    assert decoded == {k: v for k, v in record.items() if k != "event_time"}


def test_a_record_of_another_topics_schema_is_refused_as_an_unknown_schema() -> None:
    """Found by fuzzing: a known fingerprint of another subject made fastavro raise its own
    SchemaResolutionError, which no service caught (tests/fuzz/avro/finding-*)."""
    store = SchemaStore.from_dir(default_schemas_dir())
    alerts = SingleObjectCodec(store.current("ml.alerts"), store)
    outcomes = SingleObjectCodec(store.current("payments.outcomes"), store)
    record = outcomes.encode({"event_id": "e", "card_id": "c", "is_fraud": True, "observed_at": 0})
    with pytest.raises(UnknownSchemaError, match=r"payments\.outcomes's schema") as raised:
        alerts.decode(record)
    assert raised.value.reason == "unknown_schema"

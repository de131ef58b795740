"""Derived schemas: the committed ones are what the declarations generate; they fit the services.

Feature names and windows are written once, in a domain's declaration; ``schemas/<domain>.features``
and ``<domain>.predictions`` are generated from it (``streamml schemas generate``). These tests keep
the committed files honest and prove a second, different domain (``rides``, the integration tests'
test domain) goes through the same featurizer and scorer code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastavro.schema import parse_schema

from services.cli import schemas as schemas_cli
from services.core.deadletter import SourcePosition
from services.core.declarations import Aggregation, Domain, Feature
from services.core.domains import load_domain
from services.core.errors import ConfigError
from services.core.schemas import SchemaStore
from services.core.serde import CodecFactory
from services.featurizer.processor import Accepted, EventProcessor
from services.schematools.schemagen import (
    features_schema,
    generated_schemas,
    labelled_schema,
    predictions_schema,
    read_events_schema,
    render,
    window_text,
)
from services.scorer.batch import BatchScorer, Incoming, ModelCaller, VectorScorer
from services.scorer.dedup import RecentIds
from services.scorer.serving import Lineup, heuristic_serving

SECOND_DOMAIN = Path(__file__).resolve().parent.parent / "integration" / "second_domain"
RIDES_FEATURES = SECOND_DOMAIN / "features"
RIDES_SCHEMAS = SECOND_DOMAIN / "schemas"
NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@pytest.fixture(scope="module")
def rides() -> Domain:
    return load_domain(RIDES_FEATURES, "rides")


def names(schema: dict[str, Any]) -> list[str]:
    return [f["name"] for f in schema["fields"]]


def fields(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in schema["fields"]}


# --- the committed files are the generated ones ---------------------------------------------


def test_committed_payments_schemas_are_exactly_what_the_declaration_generates(
    payments: Domain, schemas_dir: Path
) -> None:
    generated = generated_schemas(payments, schemas_dir)
    assert [g.path.name for g in generated] == [
        "payments.features.avsc",
        "payments.predictions.avsc",
        "payments.labelled.avsc",
    ]
    for g in generated:
        assert g.path.read_text(encoding="utf-8") == g.text, (
            f"{g.path.name} is not what features/domains/payments.py generates: "
            "run `streamml schemas generate`"
        )


def test_committed_rides_schemas_are_exactly_what_the_declaration_generates(
    rides: Domain,
) -> None:
    for g in generated_schemas(rides, RIDES_SCHEMAS):
        assert g.is_current(), f"{g.path} is stale: run `streamml schemas generate`"


def test_every_feature_name_in_the_features_schema_comes_from_the_declaration(
    payments: Domain, schemas_dir: Path
) -> None:
    committed = json.loads((schemas_dir / "payments.features.avsc").read_text())
    events = read_events_schema(payments, schemas_dir)
    own = set(names(events))
    derived = [n for n in names(committed) if n not in own]
    assert derived == [f.name for f in payments.vector_features]


# --- what the generator derives -------------------------------------------------------------


def test_features_fields_are_id_keys_time_passthrough_then_features(rides: Domain) -> None:
    schema = features_schema(rides, read_events_schema(rides, RIDES_SCHEMAS))
    assert names(schema) == [
        "trip_id",
        "driver_id",
        "pickup_time",
        "distance_km",
        "fare",
        "trips_10m",
        "fare_sum_1h",
        "fare_mean_1h",
        "distance_max_1h",
        "seconds_since_last_trip",
    ]
    assert (schema["name"], schema["namespace"]) == ("FeatureVector", "streamml.rides")


def test_feature_types_follow_the_aggregation(payments: Domain, schemas_dir: Path) -> None:
    windowed = [
        Feature(f"x_{a.value}", "card", a, timedelta(minutes=7), "amount")
        for a in Aggregation
        if a is not Aggregation.SECONDS_SINCE_LAST
    ]
    domain = dataclasses.replace(payments, features=(*payments.features, *windowed))
    out = fields(features_schema(domain, read_events_schema(payments, schemas_dir)))
    assert out["x_count"]["type"] == "long"
    assert out["x_sum"]["type"] == out["x_mean"]["type"] == out["x_max"]["type"] == "double"
    assert out["seconds_since_last_txn"]["type"] == ["null", "double"]
    assert out["seconds_since_last_txn"]["default"] is None
    assert "default" not in out["x_count"]
    assert out["x_count"]["doc"] == (
        "Card's transactions in the last 7m: those in t's 35s tile and the 11 before it."
    )
    assert out["x_max"]["doc"] == (
        "Largest amount over the card's transactions in the last 7m: those in t's 35s tile and "
        "the 11 before it."
    )
    assert "merchant_txn_count_1h" not in out  # not in the vector, so not in the schema


def test_event_fields_keep_their_event_schema_type(rides: Domain) -> None:
    events = fields(read_events_schema(rides, RIDES_SCHEMAS))
    vector = fields(features_schema(rides, read_events_schema(rides, RIDES_SCHEMAS)))
    for name in ("trip_id", "driver_id", "pickup_time", "distance_km", "fare"):
        assert vector[name]["type"] == events[name]["type"], name
        assert "doc" not in vector[name]


def test_predictions_carry_the_key_field_and_fixed_names(rides: Domain) -> None:
    schema = predictions_schema(rides, read_events_schema(rides, RIDES_SCHEMAS))
    assert names(schema) == [
        "event_id",
        "driver_id",
        "model_name",
        "model_version",
        "score",
        "decision",
        "served_by",
        "event_time",
        "predicted_at",
    ]
    out = fields(schema)
    assert out["event_id"]["doc"] == "The trip's trip_id."
    assert out["event_time"]["type"] == {"type": "long", "logicalType": "timestamp-millis"}
    assert out["served_by"]["type"]["symbols"] == ["champion", "canary", "shadow", "fallback"]
    assert out["score"]["doc"] == "Probability of complaint, in [0, 1]."
    assert schema["doc"] == "Exactly one per trip trip_id. Key: driver_id (UTF-8)."


def test_generated_schemas_are_valid_avro(
    rides: Domain, payments: Domain, schemas_dir: Path
) -> None:
    for domain, folder in ((rides, RIDES_SCHEMAS), (payments, schemas_dir)):
        for g in generated_schemas(domain, folder):
            parse_schema(g.schema, _write_hint=False)


@pytest.mark.parametrize(
    ("window", "text"),
    [
        (timedelta(minutes=5), "5m"),
        (timedelta(hours=24), "24h"),
        (timedelta(seconds=90), "90s"),
        (timedelta(milliseconds=1500), "1500ms"),
    ],
)
def test_window_text(window: timedelta, text: str) -> None:
    assert window_text(window) == text


def test_render_is_stable_and_ends_with_a_newline(rides: Domain) -> None:
    schema = features_schema(rides, read_events_schema(rides, RIDES_SCHEMAS))
    text = render(schema)
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert json.loads(text) == schema
    assert render(json.loads(text)) == text


# --- declarations that do not match their events schema -------------------------------------


def test_a_passthrough_field_missing_from_the_events_schema_is_named(payments: Domain) -> None:
    events = json.loads((RIDES_SCHEMAS / "rides.trips.avsc").read_text())
    with pytest.raises(ConfigError, match=r"entity key 'card_id'.*passthrough field 'amount'"):
        features_schema(payments, events)


def test_a_non_numeric_source_field_is_refused(rides: Domain) -> None:
    by_city = Feature("city_max_1h", "driver", Aggregation.MAX, timedelta(hours=1), "city")
    domain = dataclasses.replace(rides, features=(*rides.features, by_city))
    with pytest.raises(ConfigError, match=r"'city' .* must be numeric"):
        features_schema(domain, read_events_schema(rides, RIDES_SCHEMAS))


def test_a_missing_events_schema_says_which_file_to_write(rides: Domain, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"rides\.trips\.avsc"):
        generated_schemas(rides, tmp_path)


# --- the second domain goes through the same featurizer and scorer code ----------------------


def test_a_rides_event_becomes_a_features_record_and_a_prediction(rides: Domain) -> None:
    codecs = CodecFactory(SchemaStore.from_dir(RIDES_SCHEMAS))
    topics = rides.topics
    processor = EventProcessor(rides, codecs.for_topic(topics.events), lambda: NOW)

    class Store(dict[str, Any]):
        def put(self, key: str, window: Any) -> None:
            self[key] = window

    store = Store()
    vectors = []
    for i, (fare, km) in enumerate([(12.0, 3.5), (30.0, 11.0)]):
        trip = {
            "trip_id": f"t{i}",
            "driver_id": "driver-7",
            "city": "Lisbon",
            "distance_km": km,
            "fare": fare,
            "pickup_time": NOW - 60_000 + i * 30_000,
        }
        source = SourcePosition(topics.events, 0, i)
        verdict = processor.process(
            b"driver-7", codecs.for_topic(topics.events).encode(trip), source, store
        )
        assert isinstance(verdict, Accepted)
        vectors.append(codecs.for_topic(topics.features).encode(verdict.vector))
    last = codecs.for_topic(topics.features).decode(vectors[-1])
    assert last["trips_10m"] == 2 and last["seconds_since_last_trip"] == 30.0
    assert last["fare_sum_1h"] == 42.0 and last["distance_max_1h"] == 11.0

    vector_scorer = VectorScorer(rides, 0.5, None, ModelCaller(timeout_ms=0))
    scorer = BatchScorer(rides, codecs.for_topic(topics.features), vector_scorer, RecentIds(100))
    batch = [
        Incoming(b"driver-7", v, SourcePosition(topics.features, 0, i))
        for i, v in enumerate(vectors)
    ]
    result = scorer.score(batch, Lineup(heuristic_serving(rides)))
    assert result.dead_letters == []
    predictions = codecs.for_topic(topics.predictions)
    decoded = [predictions.decode(predictions.encode(p)) for _, p in result.predictions]
    assert [(p["event_id"], p["driver_id"]) for p in decoded] == [
        ("t0", "driver-7"),
        ("t1", "driver-7"),
    ]
    assert decoded[1]["model_name"] == "rides-complaints"
    expected = rides.heuristic.score({"trips_10m": 2, "fare": 30.0, "distance_max_1h": 11.0})
    assert decoded[1]["score"] == pytest.approx(expected, abs=1e-6)


# --- streamml schemas generate [DOMAIN] [--check] ---------------------------------------------


def run_generate(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    schemas_cli.register(parser.add_subparsers())
    args = parser.parse_args(["schemas", "generate", *argv])
    code: int = args.handler(args)
    return code


@pytest.fixture
def rides_copy(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A writable copy of the rides features and schemas folders, named in the environment."""
    root = clean_env / "copy"
    shutil.copytree(SECOND_DOMAIN, root)
    monkeypatch.setenv("STREAMML_FEATURES_DIR", str(root / "features"))
    monkeypatch.setenv("STREAMML_SCHEMAS_DIR", str(root / "schemas"))
    return root


def test_check_passes_on_current_files(
    rides_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_generate("--check") == 0
    assert "3 generated schemas are up to date" in capsys.readouterr().out


def test_check_names_each_stale_file_and_writes_nothing(
    rides_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    features = rides_copy / "schemas" / "rides.features.avsc"
    predictions = rides_copy / "schemas" / "rides.predictions.avsc"
    features.write_text(features.read_text().replace("trips_10m", "trips_15m"))
    predictions.unlink()
    stale = features.read_text()
    assert run_generate("--check") == 1
    err = capsys.readouterr().err
    assert str(features) in err and str(predictions) in err
    assert features.read_text() == stale and not predictions.exists()


def test_generate_rewrites_stale_files_and_leaves_current_ones(
    rides_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    features = rides_copy / "schemas" / "rides.features.avsc"
    expected = features.read_text()
    features.write_text("{}")
    assert run_generate("rides") == 0
    out = capsys.readouterr().out
    assert f"wrote {features}" in out and "unchanged" in out
    assert features.read_text() == expected
    assert run_generate("--check") == 0


def test_a_changed_declaration_changes_the_generated_schema(
    rides_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    declaration = rides_copy / "features" / "domains" / "rides.py"
    declaration.write_text(
        declaration.read_text().replace('"trips_10m"', '"trips_15m"'), encoding="utf-8"
    )
    assert run_generate("--check") == 1
    assert run_generate() == 0
    features = json.loads((rides_copy / "schemas" / "rides.features.avsc").read_text())
    assert "trips_15m" in names(features) and "trips_10m" not in names(features)


def test_an_unknown_domain_is_a_config_error(rides_copy: Path) -> None:
    with pytest.raises(ConfigError, match="no domain 'payments'"):
        run_generate("payments")


def test_a_labelled_record_carries_the_vector_prediction_and_outcome_as_published(
    payments: Domain, schemas_dir: Path
) -> None:
    codecs = CodecFactory(SchemaStore.from_dir(schemas_dir))
    vector = {
        "event_id": "e1", "card_id": "c1", "merchant_id": "m1", "event_time": NOW,
        "amount": 12.5, "txn_count_5m": 1, "txn_count_1h": 2, "txn_count_24h": 3,
        "amount_sum_1h": 20.0, "amount_mean_24h": 10.0, "amount_max_24h": 12.5,
        "seconds_since_last_txn": None,
    }  # fmt: skip
    prediction = {
        "event_id": "e1", "card_id": "c1", "model_name": "payments-fraud", "model_version": "3",
        "score": 0.75, "decision": True, "served_by": "canary", "event_time": NOW,
        "predicted_at": NOW + 9, "online_features": {"merchant_txn_count_1h": 4},
    }  # fmt: skip
    outcome = {"event_id": "e1", "is_fraud": False, "observed_at": NOW + 60_000}
    record = {
        "event_id": "e1", "card_id": "c1", "event_time": NOW, "label": False, "features": vector,
        "prediction": prediction, "outcome": outcome, "outcome_at": NOW + 61_000,
        "joined_at": NOW + 62_000,
    }  # fmt: skip
    codec = codecs.for_topic("payments.labelled")
    assert codec.decode(codec.encode(record)) == record
    assert codec.decode(codec.encode({**record, "features": None}))["features"] is None
    unread = {**record, "prediction": {**prediction, "online_features": None}}
    assert codec.decode(codec.encode(unread)) == unread  # the online store had no row


def test_predictions_carry_the_online_features_only_for_a_domain_that_has_them(
    payments: Domain, rides: Domain, schemas_dir: Path
) -> None:
    events = read_events_schema(payments, schemas_dir)
    fields = {f["name"]: f for f in predictions_schema(payments, events)["fields"]}
    online = fields["online_features"]
    assert online["default"] is None and online["type"][0] == "null"
    assert [f["name"] for f in online["type"][1]["fields"]] == ["merchant_txn_count_1h"]
    rides_events = read_events_schema(rides, RIDES_SCHEMAS)
    assert "online_features" not in {
        f["name"] for f in predictions_schema(rides, rides_events)["fields"]
    }


def test_a_labelled_schema_needs_the_outcome_to_name_the_event_and_carry_a_boolean_label(
    payments: Domain, schemas_dir: Path
) -> None:
    events = read_events_schema(payments, schemas_dir)
    outcomes = json.loads((schemas_dir / "payments.outcomes.avsc").read_text())
    without_label = {
        **outcomes,
        "fields": [f for f in outcomes["fields"] if f["name"] != "is_fraud"],
    }
    with pytest.raises(ConfigError, match="no field 'is_fraud'"):
        labelled_schema(payments, events, without_label)
    as_int = {
        **outcomes,
        "fields": [
            {**f, "type": "int"} if f["name"] == "is_fraud" else f for f in outcomes["fields"]
        ],
    }
    with pytest.raises(ConfigError, match="must be a boolean"):
        labelled_schema(payments, events, as_int)
    parse_schema(labelled_schema(payments, events, outcomes))

"""The payments declaration, its schemas, and the Domain vocabulary's own guards."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import timedelta
from typing import Any

import pytest

from services.core.deadletter import SourcePosition
from services.core.declarations import Aggregation, Domain, Entity, Feature
from services.core.schemas import SchemaStore
from services.core.serde import CodecFactory
from services.featurizer.processor import Accepted, EventProcessor

NOW = 1_767_225_600_000


def fields_of(store: SchemaStore, subject: str) -> dict[str, Any]:
    return {f["name"]: f for f in store.current(subject).source["fields"]}


def expected_type(feature: Feature) -> Any:
    if feature.is_integer:
        return "long"
    return ["null", "double"] if feature.nullable else "double"


def test_features_schema_has_exactly_the_declared_vector(
    payments: Domain, schema_store: SchemaStore
) -> None:
    vector = fields_of(schema_store, payments.topics.features)
    events = fields_of(schema_store, payments.topics.events)
    keys = [e.key_field for e in payments.entities]
    declared = [
        payments.event_id_field,
        payments.event_time_field,
        *keys,
        *payments.passthrough,
        *(f.name for f in payments.vector_features),
    ]
    assert len(declared) == len(set(declared))
    assert set(vector) == set(declared)
    for name in (payments.event_id_field, payments.event_time_field, *keys, *payments.passthrough):
        assert vector[name]["type"] == events[name]["type"], name
    for feature in payments.vector_features:
        assert vector[feature.name]["type"] == expected_type(feature), feature.name
        if feature.nullable:
            assert "default" in vector[feature.name] and vector[feature.name]["default"] is None


def test_vector_features_are_the_expected_aggregations(payments: Domain) -> None:
    kinds = {f.name: (f.aggregation, f.window) for f in payments.vector_features}
    assert kinds == {
        "txn_count_5m": (Aggregation.COUNT, timedelta(minutes=5)),
        "txn_count_1h": (Aggregation.COUNT, timedelta(hours=1)),
        "txn_count_24h": (Aggregation.COUNT, timedelta(hours=24)),
        "amount_sum_1h": (Aggregation.SUM, timedelta(hours=1)),
        "amount_mean_24h": (Aggregation.MEAN, timedelta(hours=24)),
        "amount_max_24h": (Aggregation.MAX, timedelta(hours=24)),
        "seconds_since_last_txn": (Aggregation.SECONDS_SINCE_LAST, None),
    }
    assert payments.allowed_lateness == timedelta(hours=1)


def test_the_processor_emits_records_of_the_features_schema(
    payments: Domain, schema_store: SchemaStore
) -> None:
    codecs = CodecFactory(schema_store)
    processor = EventProcessor(payments, codecs.for_topic(payments.topics.events), lambda: NOW)
    event = {
        "event_id": "e",
        "card_id": "c",
        "merchant_id": "m",
        "amount": 3.0,
        "currency": "EUR",
        "event_time": NOW,
    }

    class Store(dict[str, Any]):
        def put(self, key: str, window: Any) -> None:
            self[key] = window

    verdict = processor.process(
        b"c",
        codecs.for_topic(payments.topics.events).encode(event),
        SourcePosition(payments.topics.events, 0, 0),
        Store(),
    )
    assert isinstance(verdict, Accepted)
    assert set(verdict.vector) == set(fields_of(schema_store, payments.topics.features))


def test_declared_fields_exist_in_the_event_schema(
    payments: Domain, schema_store: SchemaStore
) -> None:
    events = fields_of(schema_store, payments.topics.events)
    numeric = {"int", "long", "float", "double"}
    for feature in payments.features:
        if feature.aggregation in (Aggregation.SUM, Aggregation.MEAN, Aggregation.MAX):
            assert feature.source_field in events, feature.name
            assert events[feature.source_field]["type"] in numeric, feature.name
        if feature.aggregation is not Aggregation.SECONDS_SINCE_LAST:
            assert feature.window is not None, feature.name
    for check in payments.checks:
        assert check.field_name in events, check.rule
    for entity in payments.entities:
        assert entity.key_field in events
    assert payments.event_id_field in events and payments.event_time_field in events
    assert payments.label_field in fields_of(schema_store, payments.topics.outcomes)
    assert payments.model_inputs == (
        "amount",
        *(f.name for f in payments.vector_features),
        "merchant_txn_count_1h",
    )


def heuristic_inputs(**changes: float | None) -> dict[str, float | None]:
    inputs: dict[str, float | None] = {
        "amount": 40.0,
        "txn_count_5m": 1,
        "txn_count_1h": 2,
        "txn_count_24h": 5,
        "amount_sum_1h": 60.0,
        "amount_mean_24h": 30.0,
        "amount_max_24h": 45.0,
        "seconds_since_last_txn": None,
    }
    inputs.update(changes)
    return inputs


@pytest.mark.parametrize(
    "changes",
    [{}, {"amount": 0.0}, {"amount": 5_000.0}, {"txn_count_5m": 0}, {"txn_count_5m": 8}],
)
def test_heuristic_gives_a_probability(payments: Domain, changes: dict[str, float]) -> None:
    score = payments.heuristic.score(heuristic_inputs(**changes))
    assert 0.0 < score < 1.0


def test_heuristic_stays_in_bounds_for_extreme_inputs(payments: Domain) -> None:
    for inputs in (heuristic_inputs(amount=1e300), heuristic_inputs(txn_count_5m=-1e300), {}):
        score = payments.heuristic.score(inputs)
        assert 0.0 <= score <= 1.0


def test_heuristic_is_monotone_in_the_five_minute_count(payments: Domain) -> None:
    scores = [payments.heuristic.score(heuristic_inputs(txn_count_5m=n)) for n in range(12)]
    assert all(a < b for a, b in itertools.pairwise(scores))
    assert scores[0] < 0.5 < scores[-1]  # a burst of transactions looks like fraud


def test_duplicate_feature_names_are_refused(payments: Domain) -> None:
    again = Feature("txn_count_5m", "card", Aggregation.COUNT, timedelta(minutes=10))
    with pytest.raises(ValueError, match="twice"):
        dataclasses.replace(payments, features=(*payments.features, again))


def test_a_feature_named_like_a_passthrough_field_is_refused(payments: Domain) -> None:
    clash = Feature("amount", "card", Aggregation.MAX, timedelta(hours=1), "amount")
    with pytest.raises(ValueError, match="twice"):
        dataclasses.replace(payments, features=(*payments.features, clash))


def test_unknown_entities_are_refused(payments: Domain) -> None:
    stray = Feature("device_count_1h", "device", Aggregation.COUNT, timedelta(hours=1))
    with pytest.raises(ValueError, match="device"):
        dataclasses.replace(payments, features=(*payments.features, stray))
    with pytest.raises(ValueError, match="unknown"):
        dataclasses.replace(payments, key_entity="device")


def test_a_valid_variation_is_accepted(payments: Domain) -> None:
    device = Entity("device", "device_id")
    extra = Feature("device_count_1h", "device", Aggregation.COUNT, timedelta(hours=1))
    domain = dataclasses.replace(
        payments, entities=(*payments.entities, device), features=(*payments.features, extra)
    )
    assert domain.features_of("device") == (extra,)
    assert domain.retention == timedelta(hours=25)

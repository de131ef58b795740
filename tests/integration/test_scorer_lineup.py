"""The scorer's line-up on real parts: champion, canary by a sticky hash, shadow, refusal, swap.

Feature vectors are published straight to ``payments.features``; the merchants' online rows
are written by Feast itself, so the scorer's batched online read is checked against Feast's
own layout. Every expected score is recomputed from the registered artifact.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.core.domains import load_domain
from services.core.schemas import SchemaStore
from services.core.serde import CodecFactory
from services.core.settings import StackSettings
from services.core.topics import MODEL_EVENTS
from services.featurestore.feast_objects import feature_view_name
from services.featurestore.store import apply_declarations, open_store
from services.models.runtimes import OnnxModel
from services.registry.artifacts import ModelStore
from services.registry.stages import end_trial, promote, stage_trial
from services.registry.versions import (
    CANARY,
    CANDIDATE,
    SHADOW,
    ModelVersion,
    publish,
    read_registry,
)
from services.scorer.serving import canary_bucket
from services.stack.services import ServiceProcess, service_env
from services.trainer.publish import train_and_register
from tests.integration.helpers import TopicReader
from tests.integration.helpers import publish as publish_records
from tests.outside import OutsideCodec

pytestmark = pytest.mark.integration

FEATURES = OutsideCodec("payments.features.avsc")
PREDICTIONS = OutsideCodec("payments.predictions.avsc")
DEAD_LETTERS = OutsideCodec("dlq.avsc")
CANARY_SHARE = 0.3
HOUR_MS = 3_600_000


class Lab:
    """The stack, the domain, three trained versions and a running scorer."""

    def __init__(self, stack: StackSettings, logs_dir: Path) -> None:
        self.stack = stack
        self.domain = load_domain(stack.features_dir, "payments")
        self.codecs = CodecFactory(SchemaStore.from_dir(stack.schemas_dir))
        self.prefix = uuid.uuid4().hex[:8]
        self.versions = [
            train_and_register(stack, self.domain, seed=seed, events=3000) for seed in (11, 12, 13)
        ]
        self.merchants = [f"lineup-m-{self.prefix}-{i}" for i in range(5)]
        self.merchant_counts = {m: 3 + i for i, m in enumerate(self.merchants)}
        apply_declarations(stack, [self.domain])
        self.now = int(time.time() * 1000)
        self.write_merchants(self.merchant_counts, self.now - 60_000)
        self.logs_dir = logs_dir
        self.scorer: ServiceProcess | None = None
        self.sent = 0

    def start_scorer(self) -> None:
        env = service_env(self.stack, {"STREAMML_SCORER_APP_ID": f"lineup-{self.prefix}"})
        self.scorer = ServiceProcess("scorer", env, self.logs_dir / "scorer-lineup.log")

    def write_merchants(self, counts: dict[str, int], at_ms: int) -> None:
        import pandas as pd

        frame = pd.DataFrame(
            [
                {
                    "merchant_id": merchant,
                    "event_time": pd.Timestamp(at_ms, unit="ms", tz="UTC"),
                    "merchant_txn_count_1h": count,
                }
                for merchant, count in counts.items()
            ]
        )
        open_store(self.stack).write_to_online_store(
            feature_view_name(self.domain, "merchant"), frame
        )

    def record(self, version: str) -> ModelVersion:
        return read_registry(self.stack, self.codecs).get(self.domain.model_name, version)

    def vectors(self, n: int, cards: int, merchant: str | None = None) -> list[dict[str, Any]]:
        out = []
        for i in range(n):
            self.sent += 1
            out.append(
                {
                    "event_id": f"lineup-{self.prefix}-{self.sent}",
                    "card_id": f"lineup-card-{self.prefix}-{i % cards}",
                    "merchant_id": merchant or self.merchants[i % len(self.merchants)],
                    "event_time": self.now + self.sent,
                    "amount": 10.0 + (i % 17) * 13.5,
                    "txn_count_5m": 1 + i % 3,
                    "txn_count_1h": 2 + i % 5,
                    "txn_count_24h": 3 + i % 7,
                    "amount_sum_1h": 40.0 + i % 11,
                    "amount_mean_24h": 20.0 + i % 13,
                    "amount_max_24h": 90.0 + i % 19,
                    "seconds_since_last_txn": None if i % 9 == 0 else 30.0 + i,
                }
            )
        return out

    def send(self, vectors: list[dict[str, Any]]) -> None:
        publish_records(
            self.stack,
            self.domain.topics.features,
            [(str(v["card_id"]).encode(), FEATURES.encode(v)) for v in vectors],
        )

    def expected(self, version: str, vectors: list[dict[str, Any]]) -> list[float]:
        """What the registered artifact gives for these vectors and the merchants' rows."""
        record = self.record(version)
        artifact = ModelStore(self.stack.models_dir).load_verified(
            record.artifact_uri, record.sha256
        )
        names = tuple(record.feature_names)
        model = OnnxModel(artifact, names, threads=1)
        rows = [
            self.domain.input_row(
                {**v, "merchant_txn_count_1h": self.merchant_counts.get(str(v["merchant_id"]), 0)},
                names,
            )
            for v in vectors
        ]
        scores: list[float] = model.predict(np.array(rows, dtype=np.float32)).tolist()
        return scores


@pytest.fixture(scope="module")
def lab(stack: StackSettings, logs_dir: Path) -> Iterator[Lab]:
    made = Lab(stack, logs_dir)
    yield made
    if made.scorer is not None and made.scorer.process.poll() is None:
        made.scorer.stop()


def predictions_of(
    reader: TopicReader, vectors: list[dict[str, Any]], timeout_s: float = 60
) -> dict[str, list[dict[str, Any]]]:
    """Every prediction of these vectors' events, read until all have one, then a second more
    so that a second prediction of any of them would show."""
    wanted = {str(v["event_id"]) for v in vectors}
    found: dict[str, list[dict[str, Any]]] = {}
    read = 0

    def collect(values: list[bytes]) -> bool:
        nonlocal read
        for value in values[read:]:
            record = PREDICTIONS.decode(value)
            if record["event_id"] in wanted:
                found.setdefault(record["event_id"], []).append(record)
        read = len(values)
        return wanted <= found.keys()

    reader.read_until(collect, timeout_s)
    collect(reader.settle(1.0))
    return found


def model_events(lab: Lab, version: str, count: int) -> list[dict[str, Any]]:
    codec = lab.codecs.for_topic(MODEL_EVENTS)
    reader = TopicReader(lab.stack, MODEL_EVENTS)
    try:
        values = reader.read_until(
            lambda vs: sum(codec.decode(v)["version"] == version for v in vs) >= count, 60
        )
    finally:
        reader.close()
    return [e for e in map(codec.decode, values) if e["version"] == version]


def test_champion_canary_and_shadow_split_traffic_as_declared(lab: Lab) -> None:
    champion, canary, shadow = lab.versions
    promote(lab.stack, lab.codecs, lab.domain.model_name, champion)
    stage_trial(lab.stack, lab.codecs, lab.domain.model_name, canary, CANARY, CANARY_SHARE)
    stage_trial(lab.stack, lab.codecs, lab.domain.model_name, shadow, SHADOW)
    lab.start_scorer()
    for version in (champion, canary, shadow):
        assert any(e["outcome"] == "loaded" for e in model_events(lab, version, 1)), version
    vectors = lab.vectors(400, cards=100)
    lab.send(vectors)

    main = TopicReader(lab.stack, lab.domain.topics.predictions)
    shadows = TopicReader(lab.stack, lab.domain.topics.shadow_predictions)
    got = predictions_of(main, vectors)
    shadowed = predictions_of(shadows, vectors)
    main.close()
    shadows.close()

    assert {k: len(v) for k, v in got.items()} == {str(v["event_id"]): 1 for v in vectors}
    expected = {version: lab.expected(version, vectors) for version in lab.versions}
    routes: dict[str, str] = {}
    for i, vector in enumerate(vectors):
        (prediction,) = got[str(vector["event_id"])]
        card = str(vector["card_id"])
        in_canary = canary_bucket(card.encode()) < CANARY_SHARE
        assert prediction["served_by"] == ("canary" if in_canary else "champion")
        assert prediction["model_version"] == (canary if in_canary else champion)
        assert prediction["score"] == pytest.approx(expected[prediction["model_version"]][i])
        assert routes.setdefault(card, prediction["served_by"]) == prediction["served_by"]
        (shadow_prediction,) = shadowed[str(vector["event_id"])]
        assert shadow_prediction["served_by"] == "shadow"
        assert shadow_prediction["model_version"] == shadow
        assert shadow_prediction["score"] == pytest.approx(expected[shadow][i])
    share = sum(r == "canary" for r in routes.values()) / len(routes)
    assert 0.1 < share < 0.5, share


def test_a_corrupt_artifact_is_refused_and_the_champion_keeps_serving(lab: Lab) -> None:
    champion = lab.versions[0]
    good = lab.record(lab.versions[2])
    broken = ModelVersion(
        **{
            **good.to_record(),
            "version": f"9{lab.prefix[:4]}",
            "stage": CANDIDATE,
            "sha256": "0" * 64,
        }
    )
    publish(lab.stack, lab.codecs, [broken])
    promote(lab.stack, lab.codecs, lab.domain.model_name, broken.version)
    (event,) = model_events(lab, broken.version, 1)
    assert (event["role"], event["outcome"]) == ("champion", "refused"), event
    assert "sha256" in event["reason"], event
    vectors = lab.vectors(50, cards=100)
    lab.send(vectors)
    reader = TopicReader(lab.stack, lab.domain.topics.predictions)
    got = predictions_of(reader, vectors)
    reader.close()
    versions = {p["model_version"] for (p,) in got.values()}
    assert versions <= {champion, lab.versions[1]} and champion in versions
    promote(lab.stack, lab.codecs, lab.domain.model_name, champion)  # the registry agrees again


def test_unknown_and_idle_merchants_are_scored_by_the_model_with_the_declared_fill(
    lab: Lab,
) -> None:
    """A merchant without a row, or whose row is older than the feature's window, had no event
    in it: the count is its declared fill (0) and the model scores the event."""
    idle, stale = f"lineup-idle-{lab.prefix}", f"lineup-stale-{lab.prefix}"
    ttl_ms = int(lab.domain.feature_ttl.total_seconds() * 1000)
    lab.write_merchants({idle: 4}, lab.now - 2 * HOUR_MS)  # within the TTL, past the 1 h window
    lab.write_merchants({stale: 4}, lab.now - ttl_ms - HOUR_MS)
    unknown = lab.vectors(20, cards=100, merchant=f"lineup-unknown-{lab.prefix}")
    quiet = lab.vectors(20, cards=100, merchant=idle) + lab.vectors(20, cards=100, merchant=stale)
    lab.send(unknown + quiet)
    reader = TopicReader(lab.stack, lab.domain.topics.predictions)
    got = predictions_of(reader, unknown + quiet)
    reader.close()
    for vector in unknown + quiet:
        (prediction,) = got[str(vector["event_id"])]
        assert prediction["served_by"] != "fallback", prediction
        assert prediction["online_features"] == {"merchant_txn_count_1h": 0}
        (want,) = lab.expected(prediction["model_version"], [vector])
        assert prediction["score"] == pytest.approx(want)


def test_a_promotion_mid_stream_loses_no_event_and_scores_none_twice(lab: Lab) -> None:
    end_trial(lab.stack, lab.codecs, lab.domain.model_name, SHADOW)
    new_champion = lab.versions[1]  # the canary until now
    first, second = lab.vectors(300, cards=100), lab.vectors(300, cards=100)
    lab.send(first)
    promote(lab.stack, lab.codecs, lab.domain.model_name, new_champion)
    lab.send(second)
    (loaded,) = [e for e in model_events(lab, new_champion, 2) if e["role"] == "champion"][:1]
    assert loaded["outcome"] == "loaded"
    later = lab.vectors(100, cards=100)
    lab.send(later)
    reader = TopicReader(lab.stack, lab.domain.topics.predictions)
    everything = first + second + later
    got = predictions_of(reader, everything)
    reader.close()
    assert {k: len(v) for k, v in got.items()} == {str(v["event_id"]): 1 for v in everything}
    for vector in later:
        (prediction,) = got[str(vector["event_id"])]
        assert (prediction["model_version"], prediction["served_by"]) == (
            new_champion,
            "champion",
        )


def test_undecodable_feature_records_go_to_the_dlq_and_scoring_goes_on(lab: Lab) -> None:
    good = FEATURES.encode(lab.vectors(1, cards=1)[0])
    bad = {
        b"not avro at all": "undecodable",
        b"\xc3\x01" + b"\x00" * 8 + b"body": "unknown_schema",
        good[:14]: "malformed",
    }
    topic = lab.domain.topics.features
    publish_records(lab.stack, topic, [(b"dlq-card", value) for value in bad])
    after = lab.vectors(5, cards=5)
    lab.send(after)
    letters = TopicReader(lab.stack, lab.domain.topics.features_dlq)
    values = letters.read_until(
        lambda vs: sum(DEAD_LETTERS.decode(v)["original_value"] in bad for v in vs) >= len(bad),
        60,
    )
    letters.close()
    mine = [d for d in map(DEAD_LETTERS.decode, values) if d["original_value"] in bad]
    assert {d["original_value"]: d["reason"] for d in mine} == bad
    assert all(d["source_topic"] == topic and d["service"] == "scorer" for d in mine)
    reader = TopicReader(lab.stack, lab.domain.topics.predictions)
    got = predictions_of(reader, after)
    reader.close()
    assert len(got) == len(after)  # the scorer kept going

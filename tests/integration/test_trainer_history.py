"""Training from history: ``streamml train payments --from-history`` reads the monitor's join
(``payments.labelled``) on the real broker, writes a dataset whose id the same offsets always
give, trains a model that learned the outcomes' rule, and registers it with its lineage."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, TopicPartition

from services.core.domains import load_domain
from services.core.labelled import labelled_input
from services.core.serde import codecs_for
from services.core.settings import StackSettings
from services.registry.artifacts import ModelStore
from services.registry.versions import read_registry
from services.stack.services import service_env
from services.trainer.history import Bound, read_history
from tests.integration.helpers import publish
from tests.outside import OutsideCodec

pytestmark = pytest.mark.integration

LABELLED = OutsideCodec("payments.labelled.avsc")
EVENTS = 1200
BASE_MS = 1_900_000_000_000  # event times of this test's pairs only
STEP_MS = 1000
TRAIN = (sys.executable, "-m", "services.cli", "train", "payments")


def pair(prefix: str, i: int) -> dict[str, Any]:
    """A joined event; its outcome follows one rule (large amounts are fraud)."""
    amount = float((i * 37) % 1000)
    event_id, card = f"hist-{prefix}-{i}", f"hist-card-{prefix}-{i % 50}"
    t = BASE_MS + i * STEP_MS
    return {
        "event_id": event_id,
        "card_id": card,
        "event_time": t,
        "label": amount > 600.0,
        "features": {
            "event_id": event_id,
            "card_id": card,
            "merchant_id": f"m-{i % 9}",
            "event_time": t,
            "amount": amount,
            "txn_count_5m": 1 + i % 3,
            "txn_count_1h": 2 + i % 5,
            "txn_count_24h": 3 + i % 7,
            "amount_sum_1h": amount + 10.0,
            "amount_mean_24h": amount / 2,
            "amount_max_24h": amount,
            "seconds_since_last_txn": None if i % 10 == 0 else float(i % 600),
        },
        "prediction": {
            "event_id": event_id,
            "card_id": card,
            "model_name": "payments-fraud",
            "model_version": "1",
            "score": 0.5,
            "decision": True,
            "served_by": "champion",
            "event_time": t,
            "predicted_at": t + 5,
            "online_features": {"merchant_txn_count_1h": i % 11},
        },
        "outcome": {"event_id": event_id, "is_fraud": amount > 600.0, "observed_at": t + 60_000},
        "outcome_at": t + 61_000,
        "joined_at": t + 62_000,
    }


def ends(stack: StackSettings, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": "ends"})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    found = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        for p in partitions
    }
    consumer.close()
    return found


def offsets_text(offsets: dict[int, int]) -> str:
    return ",".join(f"{p}:{o}" for p, o in sorted(offsets.items()))


def test_train_from_history_builds_a_reproducible_dataset_and_a_model_that_learned_it(
    stack: StackSettings, logs_dir: Path
) -> None:
    domain = load_domain(stack.features_dir, "payments")
    topic = domain.topics.labelled
    prefix = uuid.uuid4().hex[:8]
    pairs = [pair(prefix, i) for i in range(EVENTS)]
    # What cannot be learned from, counted in the manifest: no vector, no online features
    # (the online store had no row), and the same event joined twice (a second monitor).
    no_vector = [{**pair(prefix, EVENTS + i), "features": None} for i in range(5)]
    no_online = [
        {**p, "prediction": {**p["prediction"], "online_features": None}}
        for p in (pair(prefix, EVENTS + 5 + i) for i in range(4))
    ]
    again = pairs[:3]
    since = ends(stack, topic)
    publish(
        stack,
        topic,
        [
            (p["card_id"].encode(), LABELLED.encode(p))
            for p in pairs + no_vector + no_online + again
        ],
    )
    run = subprocess.run(
        [*TRAIN, "--from-history", "--since", offsets_text(since)],
        env=service_env(stack),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    (logs_dir / "train-from-history.log").write_text(run.stderr)
    assert run.returncode == 0, run.stderr
    assert f"reading {topic}" in run.stderr  # progress, then the dataset's summary
    version = run.stdout.strip()

    codecs = codecs_for(stack)
    registered = read_registry(stack, codecs).get(domain.model_name, version)
    card = ModelStore(stack.models_dir).card(domain.model_name, version)
    manifest = json.loads(Path(card["dataset_manifest"]).read_text())
    assert registered.dataset_id == card["dataset_id"] == manifest["dataset_id"]
    assert registered.stage == "candidate" and card["code_version"]
    assert set(card["reference"]["features"]) >= set(domain.model_inputs)
    # The manifest leads to the exact records read: the ranges from our offsets to the end.
    until = ends(stack, topic)
    assert manifest["ranges"] == [
        {"partition": p, "from": since[p], "to": until[p]} for p in sorted(since)
    ]
    assert manifest["rows"] == EVENTS
    assert manifest["skipped"] == {
        "incomplete": 9,
        "duplicate": 3,
        "outside_time": 0,
        "undecodable": 0,
    }
    # The rows are the labelled pairs' inputs as served, in event-time order, with the labels.
    rows = pq.read_table(Path(card["dataset_manifest"]).parent / "rows.parquet").to_pandas()
    assert list(rows["event_id"]) == [p["event_id"] for p in pairs]
    names = tuple(card["feature_names"])
    expected = np.asarray([labelled_input(domain, p, names) for p in pairs], dtype=np.float32)
    np.testing.assert_array_equal(rows[list(names)].to_numpy(dtype=np.float32), expected)
    assert list(rows["label"]) == [p["label"] for p in pairs]
    assert set(rows["served_by"]) == {"champion"}
    # Trained on those outcomes: it found their rule, judged on the latest fifth by event time.
    assert card["holdout_size"] == EVENTS // 5
    assert card["metrics"]["auc"] > 0.95

    # The same command on the same offsets gives the same dataset id; another range another.
    same = read_history(
        stack,
        domain,
        Bound.parse(offsets_text(since)),
        Bound.parse(offsets_text(until)),
        progress=lambda _: None,
    )
    assert same.dataset.dataset_id == card["dataset_id"]
    later = BASE_MS + (EVENTS // 2) * STEP_MS
    half = read_history(
        stack,
        domain,
        Bound.parse(str(later)),
        Bound.parse(offsets_text(until)),
        progress=lambda _: None,
    )
    assert half.event_ids == [p["event_id"] for p in pairs[EVENTS // 2 :]]
    assert half.dataset.dataset_id != card["dataset_id"]


def test_train_from_history_refuses_clearly(stack: StackSettings) -> None:
    def train(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TRAIN, *args],
            env=service_env(stack),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    until = ends(stack, "payments.labelled")
    empty = train("--from-history", "--since", offsets_text(until))
    assert empty.returncode != 0 and "fewer than the 200 a model needs" in empty.stderr
    assert "Traceback" not in empty.stderr
    mixed = train("--bootstrap", "--since", "2026-01-01")
    assert mixed.returncode != 0 and "--from-history" in mixed.stderr
    bad = train("--from-history", "--since", "yesterday")
    assert bad.returncode != 0 and "neither PARTITION:OFFSET" in bad.stderr

"""Online learning from labelled pairs: test-then-train, once only, resumable, snapshots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.core.declarations import Domain
from services.core.errors import ModelError
from services.models.river import ARTIFACT_FILE, RiverModel
from services.registry.artifacts import ModelStore
from services.registry.versions import CANDIDATE, CHAMPION, ModelVersion
from services.scorer.learning.labelled import model_input
from services.scorer.learning.learner import (
    Example,
    LearnCounts,
    OnlineLearner,
    resume_positions,
    snapshot_record,
)

NAMES = ("amount", "txn_count_5m")
MODEL = "fraud"


def example(
    event_id: str, row: tuple[float, float] | None, label: bool, offset: int = 0, partition: int = 0
) -> Example:
    matrix = None if row is None else np.asarray(row, dtype=np.float32)
    return Example(partition, offset, event_id, matrix, label)


def learner(**kwargs: Any) -> OnlineLearner:
    options: dict[str, Any] = {"model_name": MODEL, "version": "1", "now": 0.0, **kwargs}
    return OnlineLearner(RiverModel.new(NAMES), **options)


def test_pairs_are_tested_then_learned() -> None:
    online = learner()
    probe = np.asarray([(900.0, 6.0), (12.0, 0.0)], dtype=np.float32)
    before = online.model.predict(probe)
    assert online.learn([example("e1", (900.0, 6.0), True)]) == LearnCounts(learned=1)
    assert online.model.rows_learned == 1
    # The progressive metric saw the score from before the label was learned: 0.5.
    assert online.progressive_metrics()["progressive_log_loss"] == pytest.approx(math.log(2))
    assert math.isnan(online.progressive_metrics()["progressive_auc"])  # one class so far
    after = online.model.predict(probe)
    assert after[0] > before[0] == 0.5  # learning happened after the test
    online.learn([example("e2", (12.0, 0.0), False, offset=1)])
    assert not math.isnan(online.progressive_metrics()["progressive_auc"])


def test_each_event_is_learned_once_and_incomplete_pairs_are_counted() -> None:
    online = learner()
    counts = online.learn(
        [
            example("e1", (900.0, 6.0), True, 0),
            example("e1", (900.0, 6.0), True, 1),  # a second monitor published it again
            example("e2", None, False, 2),  # no vector: nothing to learn from
            example("e3", (12.0, 0.0), False, 3),
        ]
    )
    assert counts == LearnCounts(learned=2, duplicate=1, incomplete=1)
    assert online.learn([example("e3", (12.0, 0.0), False, 4)]) == LearnCounts(duplicate=1)
    assert online.model.rows_learned == 2
    assert online.totals == LearnCounts(learned=2, duplicate=2, incomplete=1)


def test_learned_ids_are_bounded_oldest_first() -> None:
    online = learner(memory_rows=3)
    online.learn([example(f"e{i}", (float(i), 0.0), False, i) for i in range(5)])
    # e0 and e1 are forgotten: learned again if they come again; e4 is not.
    counts = online.learn(
        [example("e0", (0.0, 0.0), False, 5), example("e4", (4.0, 0.0), False, 6)]
    )
    assert counts == LearnCounts(learned=1, duplicate=1)


def test_positions_move_past_every_record_read() -> None:
    online = learner(positions={0: 10, 1: 7})
    online.learn([example("a", (1.0, 0.0), False, 10, 0), example("b", None, True, 7, 1)])
    online.passed(1, 8)  # an unreadable record
    online.learn([example("c", (1.0, 0.0), False, 3, 0)])  # older: the position stays
    assert online.positions == {0: 11, 1: 9}


def test_the_model_input_is_the_vector_with_the_online_features_as_served(
    payments: Domain,
) -> None:
    domain = payments
    names = ("amount", "merchant_txn_count_1h", "seconds_since_last_txn")
    record: dict[str, Any] = {
        "features": {"amount": 12.5, "seconds_since_last_txn": None},
        "prediction": {"online_features": {"merchant_txn_count_1h": 4}},
    }
    row = model_input(domain, record, names)
    assert row is not None and row.tolist() == [12.5, 4.0, 86_400.0]  # null: the declared fill
    assert model_input(domain, {**record, "features": None}, names) is None
    no_online = {**record, "prediction": {"online_features": None}}
    assert model_input(domain, no_online, names) is None  # the store had no row: incomplete
    assert model_input(domain, no_online, ("amount",)) is not None  # a model that needs none


def test_resume_positions_come_from_a_snapshot_card() -> None:
    assert resume_positions({"online": {"labelled_positions": {"0": 5, "2": 9}}}) == {0: 5, 2: 9}
    assert resume_positions({"seed": 7}) == {}  # a trained version starts at the end


def test_snapshots_are_due_by_time_or_rows_once_something_was_learned() -> None:
    online = learner(now=100.0, snapshot_every_s=60.0, snapshot_every_rows=3)
    assert not online.snapshot_due(1_000.0)  # nothing learned: nothing to save
    online.learn([example("a", (1.0, 0.0), False)])
    assert not online.snapshot_due(159.0)
    assert online.snapshot_due(160.0)
    online.mark_snapshot(160.0, "2")
    assert online.version == "2"
    assert not online.snapshot_due(1_000.0)
    online.learn([example("b", (2.0, 0.0), False), example("c", (3.0, 0.0), False)])
    assert not online.snapshot_due(161.0)
    online.learn([example("d", (4.0, 0.0), True)])
    assert online.rows_since_snapshot == 3
    assert online.snapshot_due(161.0)  # three rows, well before the minute


def test_save_snapshot_makes_a_chain_of_verified_versions(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    base = RiverModel.new(NAMES)
    first = store.save(
        MODEL, "1", base.to_bytes(), {"kind": "river", "seed": 7}, artifact_file=ARTIFACT_FILE
    )
    online = learner(now=0.0, snapshot_every_s=10.0, positions={0: 40, 1: 3})
    online.learn(
        [
            example("a", (900.0, 6.0), True, 40),
            example("b", (12.0, 0.0), False, 41),
            example("zz", None, True, 3, 1),
        ]
    )
    assert online.snapshot_due(10.0)
    saved = online.save_snapshot(store, 10.0)
    assert (saved.version, saved.parent_version, online.version) == ("2", "1", "2")
    assert not online.snapshot_due(100.0)
    assert saved.artifact.uri.endswith(f"/{MODEL}/2/{ARTIFACT_FILE}")
    assert saved.artifact.uri != first.uri
    loaded = RiverModel.from_bytes(
        store.load_verified(saved.artifact.uri, saved.artifact.sha256), NAMES
    )
    probe = np.asarray([(500.0, 3.0), (5.0, 0.0)], dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict(probe), online.model.predict(probe))
    assert loaded.rows_learned == 2
    card = json.loads((saved.artifact.path.parent / "card.json").read_text())
    assert card["seed"] == 7  # the parent's card, carried over
    assert (card["version"], card["parent_version"], card["kind"]) == ("2", "1", "river")
    assert card["sha256"] == saved.artifact.sha256
    assert card["online"]["rows_learned"] == 2
    assert card["online"]["labelled"] == {"learned": 2, "duplicate": 0, "incomplete": 1}
    assert resume_positions(card) == {0: 42, 1: 4}  # the state and where it stopped, together
    assert card["online"]["progressive_log_loss"] == pytest.approx(math.log(2))
    online.learn([example("c", (700.0, 5.0), True, 42)])
    assert online.save_snapshot(store, 20.0).parent_version == "2"
    assert store.versions(MODEL) == [1, 2, 3]


def test_a_failed_snapshot_is_asked_for_again(tmp_path: Path) -> None:
    online = learner(snapshot_every_rows=1)
    online.learn([example("a", (900.0, 6.0), True)])
    with pytest.raises(ModelError, match="no model card"):
        online.save_snapshot(ModelStore(tmp_path), 1.0)  # version 1 was never saved there
    assert online.snapshot_due(1.0)
    assert online.version == "1"


def test_snapshot_record_announces_the_new_version(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store.save(MODEL, "1", RiverModel.new(NAMES).to_bytes(), {}, artifact_file=ARTIFACT_FILE)
    parent = ModelVersion(
        MODEL, "1", CHAMPION, "river", "file:///x", "00", "ds-1", list(NAMES), {"auc": 0.9}, 1, 2
    )
    online = learner()
    online.learn([example("a", (900.0, 6.0), True)])
    saved = online.save_snapshot(store, 1.0)
    record = snapshot_record(parent, saved, online.progressive_metrics())
    assert (record.version, record.stage, record.kind) == ("2", CANDIDATE, "river")
    assert (record.artifact_uri, record.sha256) == (saved.artifact.uri, saved.artifact.sha256)
    assert record.feature_names == list(NAMES)
    assert record.metrics["auc"] == 0.9
    assert "progressive_auc" not in record.metrics  # NaN (one class): left out
    assert record.metrics["progressive_log_loss"] == pytest.approx(math.log(2))
    assert record.created_at > 2


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        learner(memory_rows=0)
    with pytest.raises(ValueError, match="2 inputs"):
        learner().learn([Example(0, 0, "a", np.zeros(3, dtype=np.float32), True)])

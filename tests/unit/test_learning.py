"""Online learning from outcomes: test-then-train, once only, bounded memory, snapshots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.core.errors import ModelError
from services.core.serde import CodecFactory
from services.models.river import ARTIFACT_FILE, RiverModel
from services.registry.artifacts import ModelStore
from services.registry.versions import CANDIDATE, CHAMPION, ModelVersion
from services.scorer.learning.learner import LearnCounts, OnlineLearner, snapshot_record

NAMES = ("amount", "txn_count_5m")
MODEL = "fraud"


def rows(*pairs: tuple[float, float]) -> np.ndarray:
    return np.asarray(pairs, dtype=np.float32).reshape(len(pairs), 2)


def outcome(event_id: str, is_fraud: bool) -> dict[str, Any]:
    return {"event_id": event_id, "is_fraud": is_fraud, "observed_at": 1_767_225_600_000}


def learner(**kwargs: Any) -> OnlineLearner:
    options: dict[str, Any] = {"model_name": MODEL, "version": "1", "now": 0.0, **kwargs}
    return OnlineLearner(RiverModel.new(NAMES), **options)


def test_outcomes_are_tested_then_learned(codecs: CodecFactory) -> None:
    online = learner()
    batch = rows((900.0, 6.0), (12.0, 0.0))
    scored = online.model.predict(batch)  # what the scorer publishes, then remembers
    online.remember(["e1", "e2"], batch)
    assert online.remembered == 2
    codec = codecs.for_topic("payments.outcomes")  # records as the scorer would decode them
    decoded = [codec.decode(codec.encode(outcome("e1", True)))]
    assert online.learn(decoded) == LearnCounts(learned=1)
    assert online.model.rows_learned == 1
    assert online.remembered == 1
    # The progressive metric saw the score from before the label was learned: 0.5.
    assert online.progressive_metrics()["progressive_log_loss"] == pytest.approx(math.log(2))
    assert math.isnan(online.progressive_metrics()["progressive_auc"])  # one class so far
    after = online.model.predict(batch)
    assert after[0] > scored[0] == 0.5  # learning happened after the test
    online.learn([outcome("e2", False)])
    assert not math.isnan(online.progressive_metrics()["progressive_auc"])


def test_each_event_is_learned_once() -> None:
    online = learner()
    online.remember(["e1", "e2"], rows((900.0, 6.0), (12.0, 0.0)))
    counts = online.learn([outcome("e1", True), outcome("e1", True), outcome("e2", False)])
    assert counts == LearnCounts(learned=2, duplicate=1)
    assert online.learn([outcome("e2", False)]) == LearnCounts(duplicate=1)
    online.remember(["e1"], rows((900.0, 6.0)))  # scored again (a replay): not learned again
    assert online.remembered == 0
    assert online.learn([outcome("e1", True)]) == LearnCounts(duplicate=1)
    assert online.model.rows_learned == 2
    assert online.totals == LearnCounts(learned=2, duplicate=3)


def assert_learns_e1_as(online: OnlineLearner, row: tuple[float, float]) -> None:
    """Learning e1 as fraud leaves ``online`` scoring as a twin that remembered ``row`` for it."""
    twin = learner()
    twin.remember(["e1"], rows(row))
    online.learn([outcome("e1", True)])
    twin.learn([outcome("e1", True)])
    probe = rows((500.0, 3.0))
    np.testing.assert_array_equal(online.model.predict(probe), twin.model.predict(probe))


def test_a_re_remembered_event_keeps_its_first_row() -> None:
    online = learner()
    online.remember(["e1"], rows((900.0, 6.0)))
    online.remember(["e1"], rows((1.0, 0.0)))
    assert_learns_e1_as(online, (900.0, 6.0))


def test_unknown_outcomes_are_counted_not_learned() -> None:
    online = learner()
    assert online.learn([outcome("early", True)]) == LearnCounts(unknown=1)
    online.remember(["early"], rows((900.0, 6.0)))  # the outcome came before the event was scored
    assert online.learn([outcome("never-scored", False)]) == LearnCounts(unknown=1)
    assert online.model.rows_learned == 0
    assert online.remembered == 1  # a later outcome for it would still be learned
    assert online.learn([outcome("early", True)]) == LearnCounts(learned=1)


def test_memory_is_bounded_oldest_first() -> None:
    online = learner(memory_rows=3)
    batch = rows(*[(float(i), 0.0) for i in range(5)])
    online.remember([f"e{i}" for i in range(5)], batch)
    assert (online.remembered, online.evicted) == (3, 2)
    counts = online.learn([outcome(f"e{i}", False) for i in range(5)])
    assert counts == LearnCounts(learned=3, unknown=2)
    online.remember([f"f{i}" for i in range(4)], batch[:4])
    online.learn([outcome(f"f{i}", False) for i in range(4)])
    # The learned ids are bounded too: e2 has been forgotten, so its repeat is unknown.
    counts = online.learn([outcome("e2", False), outcome("f3", False)])
    assert counts == LearnCounts(unknown=1, duplicate=1)
    assert online.evicted == 3


def test_remembered_rows_are_copies() -> None:
    online = learner()
    batch = rows((900.0, 6.0))
    online.remember(["e1"], batch)
    batch[0] = (0.0, 0.0)  # the scorer reuses its batch buffers
    assert_learns_e1_as(online, (900.0, 6.0))


def test_snapshots_are_due_by_time_or_rows_once_something_was_learned() -> None:
    online = learner(now=100.0, snapshot_every_s=60.0, snapshot_every_rows=3)
    assert not online.snapshot_due(1_000.0)  # nothing learned: nothing to save
    online.remember(["a", "b", "c", "d"], rows((1.0, 0.0), (2.0, 0.0), (3.0, 0.0), (4.0, 0.0)))
    online.learn([outcome("a", False)])
    assert not online.snapshot_due(159.0)
    assert online.snapshot_due(160.0)
    online.mark_snapshot(160.0, "2")
    assert online.version == "2"
    assert not online.snapshot_due(1_000.0)
    online.learn([outcome("b", False), outcome("c", False)])
    assert not online.snapshot_due(161.0)
    online.learn([outcome("d", True)])
    assert online.rows_since_snapshot == 3
    assert online.snapshot_due(161.0)  # three rows, well before the minute


def test_save_snapshot_makes_a_chain_of_verified_versions(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    base = RiverModel.new(NAMES)
    first = store.save(
        MODEL, "1", base.to_bytes(), {"kind": "river", "seed": 7}, artifact_file=ARTIFACT_FILE
    )
    online = learner(now=0.0, snapshot_every_s=10.0)
    online.remember(["a", "b"], rows((900.0, 6.0), (12.0, 0.0)))
    online.learn([outcome("a", True), outcome("b", False), outcome("zz", True)])
    assert online.snapshot_due(10.0)
    saved = online.save_snapshot(store, 10.0)
    assert (saved.version, saved.parent_version, online.version) == ("2", "1", "2")
    assert not online.snapshot_due(100.0)
    assert saved.artifact.uri.endswith(f"/{MODEL}/2/{ARTIFACT_FILE}")
    assert saved.artifact.uri != first.uri
    loaded = RiverModel.from_bytes(
        store.load_verified(saved.artifact.uri, saved.artifact.sha256), NAMES
    )
    probe = rows((500.0, 3.0), (5.0, 0.0))
    np.testing.assert_array_equal(loaded.predict(probe), online.model.predict(probe))
    assert loaded.rows_learned == 2
    card = json.loads((saved.artifact.path.parent / "card.json").read_text())
    assert card["seed"] == 7  # the parent's card, carried over
    assert (card["version"], card["parent_version"], card["kind"]) == ("2", "1", "river")
    assert card["sha256"] == saved.artifact.sha256
    assert card["online"]["rows_learned"] == 2
    assert card["online"]["outcomes"] == {"learned": 2, "unknown": 1, "duplicate": 0}
    assert card["online"]["progressive_log_loss"] == pytest.approx(math.log(2))
    online.remember(["c"], rows((700.0, 5.0)))
    online.learn([outcome("c", True)])
    assert online.save_snapshot(store, 20.0).parent_version == "2"
    assert store.versions(MODEL) == [1, 2, 3]


def test_a_failed_snapshot_is_asked_for_again(tmp_path: Path) -> None:
    online = learner(snapshot_every_rows=1)
    online.remember(["a"], rows((900.0, 6.0)))
    online.learn([outcome("a", True)])
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
    online.remember(["a"], rows((900.0, 6.0)))
    online.learn([outcome("a", True)])
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
    online = learner()
    with pytest.raises(ValueError, match="event ids"):
        online.remember(["a", "b"], rows((1.0, 0.0)))
    with pytest.raises(ValueError, match="2 inputs"):
        online.remember(["a"], np.zeros((1, 3), dtype=np.float32))

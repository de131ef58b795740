"""Training data, the MLP, its ONNX export and the bootstrap model, end to end on small data."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

from services.core.declarations import Aggregation, Domain
from services.core.domains import load_domain
from services.core.errors import ModelError
from services.core.paths import default_features_dir
from services.producer.synthetic import LabelledTransaction, PaymentsGenerator
from services.registry.artifacts import ModelStore
from services.trainer.bootstrap import holdout_metrics, train_bootstrap
from services.trainer.dataset import Dataset, build_dataset, split
from services.trainer.export import export_onnx, onnx_session, parity_check
from services.trainer.model import train_mlp

CARD_KEYS = {
    "model_name", "version", "kind", "feature_names", "dataset_id", "train_size", "holdout_size",
    "metrics", "parity_max_abs_diff", "seed", "epochs", "versions", "created_at",
    "intended_use", "limitations", "sha256", "artifact_uri",
}  # fmt: skip


@cache
def payments() -> Domain:
    return load_domain(default_features_dir(), "payments")


@cache
def transactions(n: int = 4000) -> tuple[LabelledTransaction, ...]:
    generator = PaymentsGenerator(
        seed=3, cards=60, fraud_share=0.05, start_ms=1_700_000_000_000, rate_per_s=0.01
    )
    return tuple(generator.events(n))


@cache
def small_dataset() -> Dataset:
    return build_dataset(payments(), transactions(), source="test")


def _brute_force(domain: Domain, events: tuple[LabelledTransaction, ...], row: int) -> list[float]:
    """The declared features of ``events[row]``, straight from their definition."""
    event = events[row].record
    t = event["event_time"]
    values = [float(event[name]) for name in domain.passthrough]
    for feature in (*domain.vector_features, *domain.online_features):
        key = domain.entity(feature.entity).key_field
        history = [e.record for e in events[: row + 1] if e.record[key] == event[key]]
        if feature.aggregation is Aggregation.SECONDS_SINCE_LAST:
            earlier = [r["event_time"] for r in history[:-1]]
            values.append((t - max(earlier)) / 1000.0 if earlier else feature.fill)
            continue
        assert feature.window_ms is not None
        width = -(-feature.window_ms // 12)  # a window is its last 12 tiles
        amounts = [r["amount"] for r in history if 0 <= t // width - r["event_time"] // width < 12]
        by_aggregation = {
            Aggregation.COUNT: float(len(amounts)),
            Aggregation.SUM: sum(amounts),
            Aggregation.MEAN: sum(amounts) / len(amounts),
            Aggregation.MAX: max(amounts),
        }
        values.append(by_aggregation[feature.aggregation])
    return values


def test_dataset_features_match_their_definition() -> None:
    domain, events, dataset = payments(), transactions(), small_dataset()
    assert dataset.feature_names == domain.model_inputs
    assert dataset.X.dtype == np.float32
    assert dataset.X.shape == (len(events), len(domain.model_inputs))
    assert dataset.y.tolist() == [float(e.is_fraud) for e in events]
    fraud_rows = [i for i, e in enumerate(events) if e.is_fraud][:10]
    rows = [0, 1, 2, *range(100, len(events), 373), *fraud_rows, len(events) - 1]
    for row in rows:
        expected = np.asarray(_brute_force(domain, events, row), dtype=np.float32)
        np.testing.assert_allclose(dataset.X[row], expected, rtol=1e-6, err_msg=f"row {row}")
    assert dataset.X[:, dataset.feature_names.index("txn_count_5m")].max() >= 3  # bursts


def test_dataset_id_is_a_content_id_and_split_partitions() -> None:
    dataset = small_dataset()
    again = build_dataset(payments(), transactions(), source="elsewhere")
    assert again.dataset_id == dataset.dataset_id
    assert dataset.dataset_id.startswith("ds-")
    assert len(dataset.dataset_id) == 19
    train, holdout = split(dataset, 0.25, seed=1)
    assert (len(train), len(holdout)) == (3000, 1000)
    assert len({train.dataset_id, holdout.dataset_id, dataset.dataset_id}) == 3
    rows = sorted(map(bytes, np.concatenate([train.X, holdout.X])))
    assert rows == sorted(map(bytes, dataset.X))
    assert split(dataset, 0.25, seed=1)[1].dataset_id == holdout.dataset_id
    assert split(dataset, 0.25, seed=2)[1].dataset_id != holdout.dataset_id


def test_holdout_metrics_on_known_scores() -> None:
    y = np.array([0, 0, 1, 1, 0], dtype=np.float32)
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.6], dtype=np.float32)
    metrics = holdout_metrics(y, scores)
    assert metrics["auc"] == pytest.approx(4 / 6)  # 4 of 6 (positive, negative) pairs ordered
    assert metrics["precision_at_0_5"] == pytest.approx(0.5)
    assert metrics["recall_at_0_5"] == pytest.approx(0.5)
    assert metrics["positive_rate"] == pytest.approx(0.4)
    expected_loss = -np.mean(np.log([0.9, 0.6, 0.35, 0.8, 0.4]))
    assert metrics["log_loss"] == pytest.approx(float(expected_loss), rel=1e-6)
    assert holdout_metrics(y, np.full(5, 0.3, dtype=np.float32))["auc"] == pytest.approx(0.5)
    assert holdout_metrics(y, y)["auc"] == pytest.approx(1.0)


def test_training_is_deterministic_and_export_agrees_with_torch() -> None:
    train, holdout = split(small_dataset(), seed=5)
    module = train_mlp(train, epochs=3, seed=5, lr=3e-3, batch_size=128)
    twin = train_mlp(train, epochs=3, seed=5, lr=3e-3, batch_size=128)
    for name, value in module.state_dict().items():
        assert torch.equal(value, twin.state_dict()[name]), name
    artifact = export_onnx(module, len(train.feature_names))
    assert parity_check(module, artifact, holdout.X) <= 1e-5
    session = onnx_session(artifact)
    assert [i.name for i in session.get_inputs()] == ["features"]
    assert [o.name for o in session.get_outputs()] == ["score"]
    vector = holdout.X[holdout.y == 1][:1]  # one raw, unscaled feature vector
    (score,) = session.run(["score"], {"features": vector})
    with torch.no_grad():
        expected = module(torch.from_numpy(vector)).numpy()
    assert score.shape == (1, 1)
    assert 0.0 < float(score[0, 0]) < 1.0
    np.testing.assert_allclose(score, expected, atol=1e-6)


def test_parity_check_catches_a_graph_that_differs() -> None:
    train, holdout = split(small_dataset(), seed=5)
    module = train_mlp(train, epochs=1, seed=5)
    artifact = export_onnx(module, len(train.feature_names))
    with torch.no_grad():
        module.get_parameter("net.4.bias").add_(0.5)
    with pytest.raises(ModelError, match="disagree"):
        parity_check(module, artifact, holdout.X[:64])


def test_bootstrap_end_to_end(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    first = train_bootstrap(payments(), store, n_events=8000)
    second = train_bootstrap(payments(), store, n_events=8000)
    assert (first.version, second.version) == ("1", "2")
    assert first.dataset_id == second.dataset_id
    assert first.kind == "onnx"
    assert first.feature_names == payments().model_inputs
    assert first.metrics["auc"] > 0.7
    card = json.loads(first.card_path.read_text())
    assert set(card) >= CARD_KEYS
    assert card["model_name"] == payments().model_name == first.model_name
    assert card["sha256"] == first.sha256
    assert card["metrics"] == first.metrics
    artifact = store.load_verified(first.artifact_uri, first.sha256)
    assert hashlib.sha256(artifact).hexdigest() == first.sha256
    assert first.artifact_uri.endswith("/payments-fraud/1/model.onnx")

"""The first model: trained on synthetic traffic so a fresh stack has something to score with.

Synthetic events -> features replayed through the featurizer's aggregator -> MLP -> ONNX ->
parity check -> holdout metrics -> model card and artifact in the store. Nothing is saved
unless the exported graph agrees with torch, so a registered artifact is one that was checked.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime
import torch

from services.core.declarations import Domain
from services.models.reference import reference_of
from services.models.runtimes import KIND
from services.producer.synthetic import PaymentsGenerator
from services.registry.artifacts import ARTIFACT_FILE, CARD_FILE, ModelStore
from services.trainer.dataset import Dataset, build_dataset, split
from services.trainer.export import export_onnx, onnx_session, parity_check
from services.trainer.model import train_mlp

# Bootstrap traffic: about ten payments per card a day, so the 5 minute to 24 hour windows see
# realistic counts. Scoring traffic with a very different per-card rate is out of distribution.
BOOTSTRAP_CARDS = 2000
BOOTSTRAP_RATE_PER_S = 0.25
BOOTSTRAP_FRAUD_SHARE = 0.03
BOOTSTRAP_START_MS = 1_700_000_000_000  # fixed, so a seed always gives the same dataset
PARITY_ROWS = 512

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedModel:
    """What the registry needs to announce a trained, saved and verified model version."""

    model_name: str
    version: str
    kind: str
    artifact_uri: str
    sha256: str
    dataset_id: str
    feature_names: tuple[str, ...]
    metrics: dict[str, float]
    card_path: Path


def holdout_metrics(
    y: npt.ArrayLike, scores: npt.ArrayLike, threshold: float = 0.5
) -> dict[str, float]:
    """AUC (rank-based, ties averaged), log loss, precision/recall at ``threshold``, rates."""
    labels = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(scores, dtype=np.float64).ravel()
    positives = labels == 1.0
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    _, inverse, counts = np.unique(p, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = float(average_rank[inverse][positives].sum())
    auc = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg) if n_pos and n_neg else 0.5
    clipped = np.clip(p, 1e-7, 1.0 - 1e-7)
    log_loss = -float(np.mean(labels * np.log(clipped) + (1.0 - labels) * np.log(1.0 - clipped)))
    flagged = p >= threshold
    true_pos = int((flagged & positives).sum())
    return {
        "auc": float(auc),
        "log_loss": log_loss,
        "precision_at_0_5": true_pos / int(flagged.sum()) if flagged.any() else 0.0,
        "recall_at_0_5": true_pos / n_pos if n_pos else 0.0,
        "positive_rate": n_pos / len(labels) if len(labels) else 0.0,
        "flagged_rate_at_0_5": float(flagged.mean()) if len(labels) else 0.0,
    }


def bootstrap_data(domain: Domain, *, seed: int, n_events: int) -> tuple[Dataset, Dataset, Dataset]:
    """The bootstrap's synthetic dataset and its seeded train/holdout split: (all, train, holdout).

    Shared by every bootstrap model kind, so they train and are compared on the same rows.
    """
    generator = PaymentsGenerator(
        seed=seed,
        cards=BOOTSTRAP_CARDS,
        fraud_share=BOOTSTRAP_FRAUD_SHARE,
        start_ms=BOOTSTRAP_START_MS,
        rate_per_s=BOOTSTRAP_RATE_PER_S,
    )
    source = f"synthetic PaymentsGenerator seed={seed} n={n_events}"
    log.info("building the bootstrap dataset: %d synthetic events, seed %d", n_events, seed)
    dataset = build_dataset(domain, generator.events(n_events), source=source)
    train, holdout = split(dataset, 0.2, seed=seed)
    return dataset, train, holdout


def train_bootstrap(
    domain: Domain, store: ModelStore, *, seed: int = 7, n_events: int = 60_000, epochs: int = 12
) -> TrainedModel:
    """Trains, checks and saves the next version of ``domain.model_name``."""
    started = time.perf_counter()
    dataset, train, holdout = bootstrap_data(domain, seed=seed, n_events=n_events)
    module = train_mlp(train, epochs=epochs, seed=seed)
    artifact = export_onnx(module, len(dataset.feature_names))
    parity = parity_check(module, artifact, holdout.X[:PARITY_ROWS])
    (scores,) = onnx_session(artifact).run(None, {"features": holdout.X})
    metrics = holdout_metrics(holdout.y, scores)
    version = store.next_version(domain.model_name)
    card = {
        **base_card(
            domain,
            kind=KIND,
            version=version,
            dataset=dataset,
            train=train,
            holdout=holdout,
            metrics=metrics,
            seed=seed,
            scores=scores,
        ),
        **onnx_card_fields(len(dataset.feature_names), parity, epochs),
    }
    return save_trained(
        store, card, artifact, dataset=dataset, started=started, artifact_file=ARTIFACT_FILE
    )


def onnx_card_fields(n_inputs: int, parity: float, epochs: int) -> dict[str, Any]:
    """What the card of every ONNX-exported MLP says of its graph, its check and its tools."""
    return {
        "input": {"name": "features", "dtype": "float32", "shape": ["batch", n_inputs]},
        "output": {"name": "score", "dtype": "float32", "shape": ["batch", 1]},
        "parity_max_abs_diff": parity,
        "epochs": epochs,
        "versions": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    }


def save_trained(
    store: ModelStore,
    card: dict[str, Any],
    artifact: bytes,
    *,
    dataset: Dataset,
    started: float,
    artifact_file: str,
) -> TrainedModel:
    """Saves a checked artifact and its card (from ``base_card``) as the card's version."""
    model_name, version, kind = card["model_name"], card["version"], card["kind"]
    metrics: dict[str, float] = card["metrics"]
    stored = store.save(model_name, version, artifact, card, artifact_file=artifact_file)
    log.info(
        "trained %s v%s (%s): holdout auc %.3f in %.1f s",
        model_name,
        version,
        kind,
        metrics["auc"],
        time.perf_counter() - started,
    )
    return TrainedModel(
        model_name=model_name,
        version=version,
        kind=kind,
        artifact_uri=stored.uri,
        sha256=stored.sha256,
        dataset_id=dataset.dataset_id,
        feature_names=dataset.feature_names,
        metrics=metrics,
        card_path=stored.path.parent / CARD_FILE,
    )


def base_card(
    domain: Domain,
    *,
    kind: str,
    version: str,
    dataset: Dataset,
    train: Dataset,
    holdout: Dataset,
    metrics: dict[str, float],
    seed: int,
    scores: npt.ArrayLike,
) -> dict[str, Any]:
    """The model card fields every bootstrap kind has; each kind adds its own. ``scores``: the
    model's on the holdout, whose inputs and scores make the drift reference."""
    columns = {name: holdout.X[:, i] for i, name in enumerate(dataset.feature_names)}
    return {
        "model_name": domain.model_name,
        "version": version,
        "kind": kind,
        "feature_names": list(dataset.feature_names),
        "dataset_id": dataset.dataset_id,
        "train_dataset_id": train.dataset_id,
        "holdout_dataset_id": holdout.dataset_id,
        "train_size": len(train),
        "holdout_size": len(holdout),
        "training_data": {
            "source": dataset.source,
            "cards": BOOTSTRAP_CARDS,
            "rate_per_s": BOOTSTRAP_RATE_PER_S,
            "fraud_share": BOOTSTRAP_FRAUD_SHARE,
        },
        "metrics": metrics,
        "reference": reference_of(columns, np.ravel(np.asarray(scores))),
        "seed": seed,
        "created_at": datetime.now(UTC).isoformat(),
        "intended_use": (
            f"Bootstrap scorer for the {domain.name} stream until a model trained on real "
            "outcomes replaces it; its scores rank transactions by fraud risk."
        ),
        "limitations": (
            "Trained only on synthetic traffic (about ten payments per card a day, "
            f"{BOOTSTRAP_FRAUD_SHARE:.0%} fraud bursts), so scores are neither calibrated "
            "probabilities nor evidence about real fraud."
        ),
    }

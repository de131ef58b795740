"""A version trained on history: the dataset read from ``<domain>.labelled``, then the same
torch MLP as the bootstrap, exported to ONNX and checked against torch before it is saved.

The holdout is a time split: the most recent ``holdout_share`` of the rows by event time, so the
metrics say how the model does on data later than what it learned from, as it will serve.
The card records the dataset id and its manifest (which leads to the exact records), the code
version, the parameters, the holdout metrics and the training reference the monitor compares
live data with.
"""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.core.declarations import Domain
from services.core.errors import ConfigError
from services.core.settings import StackSettings
from services.models.reference import reference_of
from services.models.runtimes import KIND
from services.registry.artifacts import ARTIFACT_FILE, ModelStore
from services.trainer.bootstrap import (
    PARITY_ROWS,
    TrainedModel,
    holdout_metrics,
    onnx_card_fields,
    save_trained,
)
from services.trainer.dataset import Dataset
from services.trainer.export import export_onnx, onnx_session, parity_check
from services.trainer.golden import GoldenSet
from services.trainer.history import MANIFEST_FILE, Bound, HistoryDataset, read_history
from services.trainer.model import train_mlp

MIN_ROWS = 200  # below this a holdout says nothing: refuse rather than register noise
HOLDOUT_SHARE = 0.2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HistoryTraining:
    """A version trained on history, and the recent holdout the gate judges it on."""

    trained: TrainedModel
    holdout: Dataset
    history: HistoryDataset
    compared: list[dict[str, Any]] = field(default_factory=list)


def train_from_history(
    settings: StackSettings,
    domain: Domain,
    *,
    since: Bound,
    until: Bound,
    seed: int = 7,
    golden: GoldenSet | None = None,
) -> HistoryTraining:
    """Builds the dataset, trains, checks and saves the next version of the domain's model."""
    history = read_history(settings, domain, since, until)
    return train_on_history(settings, domain, history, seed=seed, golden=golden)


def holdout_start(history: HistoryDataset, holdout_share: float = HOLDOUT_SHARE) -> int:
    """The event time where the latest ``holdout_share`` of the history's rows begins."""
    if len(history.dataset) == 0:
        raise ConfigError(f"{history.dataset.dataset_id} has no rows")
    first = len(history.dataset) - max(1, round(len(history.dataset) * holdout_share))
    return int(history.event_times[first])


@dataclass(frozen=True)
class Fit:
    """A model fitted on a history's rows before a point in event time, scored on the rows
    after it (the recent holdout); not yet saved."""

    history: HistoryDataset
    train: Dataset
    holdout: Dataset
    artifact: bytes
    parity: float
    scores: npt.NDArray[np.float64]
    metrics: dict[str, float]
    holdout_rule: str
    shuffle_labels: bool


def fit_on_history(
    history: HistoryDataset,
    *,
    seed: int,
    epochs: int,
    holdout_share: float = HOLDOUT_SHARE,
    holdout_from_ms: int | None = None,
    min_rows: int = MIN_ROWS,
    shuffle_labels: bool = False,
) -> Fit:
    """Trains the MLP on the rows before the holdout and checks its ONNX export against torch.

    The holdout is the rows with event time from ``holdout_from_ms`` when given (so models
    trained on different histories are judged on the same recent rows), else the latest
    ``holdout_share``. ``shuffle_labels`` trains on the training labels in a random order: the
    gate's negative control, a model that learned nothing true (its card says so)."""
    train, holdout = time_split(history, holdout_share, min_rows, holdout_from_ms)
    if shuffle_labels:
        shuffled = np.random.default_rng(seed).permutation(train.y)
        train = replace(train, y=shuffled, source=f"{train.source}; labels shuffled")
    module = train_mlp(train, epochs=epochs, seed=seed)
    artifact = export_onnx(module, len(train.feature_names))
    parity = parity_check(module, artifact, holdout.X[:PARITY_ROWS])
    (scores,) = onnx_session(artifact).run(None, {"features": holdout.X})
    rule = (
        f"the latest {holdout_share:.0%} of the rows by event time"
        if holdout_from_ms is None
        else f"the rows with event time from {holdout_from_ms} (ms)"
    )
    return Fit(
        history,
        train,
        holdout,
        artifact,
        parity,
        np.ravel(np.asarray(scores, dtype=np.float64)),
        holdout_metrics(holdout.y, scores),
        rule,
        shuffle_labels,
    )


def train_on_history(
    settings: StackSettings,
    domain: Domain,
    history: HistoryDataset,
    *,
    seed: int = 7,
    epochs: int = 12,
    golden: GoldenSet | None = None,
) -> HistoryTraining:
    """Trains, checks and saves the next version on a dataset read by ``read_history``."""
    started = time.perf_counter()
    fit = fit_on_history(history, seed=seed, epochs=epochs)
    return save_fit(settings, domain, fit, seed=seed, epochs=epochs, golden=golden, started=started)


def save_fit(
    settings: StackSettings,
    domain: Domain,
    fit: Fit,
    *,
    seed: int,
    epochs: int,
    golden: GoldenSet | None,
    started: float,
    compared: list[dict[str, Any]] | None = None,
) -> HistoryTraining:
    """Saves the fitted model as the next version, its card complete (``compared``: the other
    fits it was chosen over, and why)."""
    history, train, holdout, artifact = fit.history, fit.train, fit.holdout, fit.artifact
    golden_metrics = None
    if golden is not None:
        (golden_scores,) = onnx_session(artifact).run(None, {"features": golden.dataset.X})
        golden_metrics = {
            "version": golden.version,
            **holdout_metrics(golden.dataset.y, golden_scores),
        }
    store = ModelStore(settings.models_dir)
    version = store.next_version(domain.model_name)
    columns = {name: holdout.X[:, i] for i, name in enumerate(holdout.feature_names)}
    card: dict[str, Any] = {
        "model_name": domain.model_name,
        "version": version,
        "kind": KIND,
        "feature_names": list(train.feature_names),
        "dataset_id": history.dataset.dataset_id,
        "dataset_manifest": str(history.path / MANIFEST_FILE),
        "dataset": {k: v for k, v in history.manifest.items() if k != "created_at"},
        "train_dataset_id": train.dataset_id,
        "holdout_dataset_id": holdout.dataset_id,
        "train_size": len(train),
        "holdout_size": len(holdout),
        "holdout": fit.holdout_rule,
        "metrics": fit.metrics,
        "golden_metrics": golden_metrics,
        "compared": compared or [],
        "labels_shuffled": fit.shuffle_labels,
        "reference": reference_of(columns, fit.scores),
        "parameters": {
            "seed": seed,
            "epochs": epochs,
            "since": history.manifest.get("since"),
            "until": history.manifest.get("until"),
        },
        "seed": seed,
        "code_version": code_version(),
        "created_at": datetime.now(UTC).isoformat(),
        **onnx_card_fields(len(columns), fit.parity, epochs),
        "intended_use": (
            f"Scores {domain.name} events by the risk their outcome's {domain.label_field} is "
            "true, trained on the outcomes the monitor joined to served predictions."
        ),
        "limitations": (
            "Learned only from the events in its dataset's ranges; scores rank risk and are not "
            "calibrated probabilities."
        ),
    }
    trained = save_trained(
        store, card, artifact, dataset=history.dataset, started=started, artifact_file=ARTIFACT_FILE
    )
    return HistoryTraining(trained, holdout, history, compared or [])


def time_split(
    history: HistoryDataset, holdout_share: float, min_rows: int, cut_ms: int | None = None
) -> tuple[Dataset, Dataset]:
    """(train, holdout): the rows before and after a point in event time (``cut_ms``, or where
    the latest ``holdout_share`` begins), both with both classes; a clear error when the
    history cannot give that."""
    dataset = history.dataset
    if not 0.0 < holdout_share < 1.0:
        raise ConfigError(f"the holdout share must be in (0, 1), not {holdout_share}")
    if len(dataset) < min_rows:
        raise ConfigError(
            f"{dataset.dataset_id} has {len(dataset)} usable rows, fewer than the {min_rows} "
            f"a model needs (skipped: {history.manifest['skipped']}); wait for more outcomes or "
            "widen --since/--until"
        )
    cut = len(dataset) - max(1, round(len(dataset) * holdout_share))
    if cut_ms is not None:  # rows are in event-time order
        cut = int(np.searchsorted(history.event_times, cut_ms, side="left"))
    parts = []
    for name, rows in (("train", np.arange(cut)), ("holdout", np.arange(cut, len(dataset)))):
        part = dataset.subset(rows, name)
        if part.positives in (0, len(part)):
            raise ConfigError(
                f"the {name} part of {dataset.dataset_id} has only one class "
                f"({part.positives} positive of {len(part)}): a model cannot be trained and "
                "judged on it"
            )
        parts.append(part)
    return parts[0], parts[1]


def code_version() -> str:
    """The git commit of the code that trained (``+dirty`` with local changes), or the package
    version outside a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"streamml {package_version('streamml')}"
    return f"{commit}{'+dirty' if dirty else ''}"

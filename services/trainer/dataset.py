"""Training data computed the way the featurizer computes features online.

Training/serving skew is the usual way a streaming model goes wrong, so features are not
re-derived here with pandas: the events are replayed in arrival order through the featurizer's
own ``EntityAggregator``, and each row holds the features as of its event, exactly what the
scorer will be given for that event.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from services.core.declarations import Domain
from services.core.windows import EntityAggregator, EntityWindow, FeatureValues
from services.producer.synthetic import LabelledTransaction

Matrix = npt.NDArray[np.float32]


def model_input_row(
    domain: Domain, event: Mapping[str, Any], features: Mapping[str, float | int | None]
) -> list[float]:
    """One model input vector in ``domain.model_inputs`` order, nulls filled as the scorer
    fills them (each feature's declared ``missing``): one rule for training and serving."""
    return domain.input_row({**event, **features}, domain.model_inputs)


@dataclass(frozen=True)
class Dataset:
    """Model inputs ``X`` (float32, rows x inputs), labels ``y`` (float32) and their origin."""

    X: Matrix
    y: Matrix
    feature_names: tuple[str, ...]
    dataset_id: str
    source: str

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def positives(self) -> int:
        return int(self.y.sum())

    def subset(self, rows: npt.NDArray[np.int64], part: str) -> Dataset:
        """The given rows, with their own content id and a source naming this dataset."""
        X, y = self.X[rows], self.y[rows]
        source = f"{self.source}; {part} part of {self.dataset_id}"
        return Dataset(X, y, self.feature_names, dataset_id(self.feature_names, X, y), source)


def dataset_id(feature_names: tuple[str, ...], X: Matrix, y: Matrix) -> str:
    """A content id: the same rows, labels and columns always get the same id."""
    digest = hashlib.sha256(json.dumps(list(feature_names)).encode())
    digest.update(np.ascontiguousarray(X).tobytes())
    digest.update(np.ascontiguousarray(y).tobytes())
    return "ds-" + digest.hexdigest()[:16]


def build_dataset(
    domain: Domain, transactions: Iterable[LabelledTransaction], *, source: str
) -> Dataset:
    """Replays ``transactions`` in arrival order; one row per transaction, as of that event.

    Every entity's features count the event itself. Online-only features (the merchant's)
    are read by the scorer from the online store, which may not have counted the event yet
    (docs/scorer.md): a difference of at most one featurizer batch."""
    aggregators = {
        entity.name: EntityAggregator(domain, entity.name) for entity in domain.featurized_entities
    }
    windows: dict[tuple[str, str], EntityWindow] = {}
    rows: list[list[float]] = []
    labels: list[float] = []
    for transaction in transactions:
        event = transaction.record
        event_id = str(event[domain.event_id_field])
        time_ms = int(event[domain.event_time_field])
        values: FeatureValues = {}
        for entity, aggregator in aggregators.items():
            key = (entity, str(event[domain.entity(entity).key_field]))
            window = windows.setdefault(key, EntityWindow())
            values.update(aggregator.add(window, event_id, time_ms, event))
        rows.append(model_input_row(domain, event, values))
        labels.append(1.0 if transaction.is_fraud else 0.0)
    names = domain.model_inputs
    X = np.asarray(rows, dtype=np.float32).reshape(len(rows), len(names))
    y = np.asarray(labels, dtype=np.float32)
    return Dataset(X, y, names, dataset_id(names, X, y), source)


def split(dataset: Dataset, holdout_share: float = 0.2, *, seed: int) -> tuple[Dataset, Dataset]:
    """A seeded random train/holdout split; each part gets its own content id."""
    if not 0.0 < holdout_share < 1.0:
        raise ValueError(f"holdout_share must be in (0, 1), not {holdout_share}")
    order = np.random.default_rng(seed).permutation(len(dataset))
    n_holdout = max(1, round(len(dataset) * holdout_share))
    train = dataset.subset(np.sort(order[n_holdout:]), "train")
    holdout = dataset.subset(np.sort(order[:n_holdout]), "holdout")
    return train, holdout

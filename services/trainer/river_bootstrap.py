"""The first ``river`` model: the online pipeline, warmed up on the bootstrap's synthetic data.

Same events, features, split and holdout metrics as the ONNX bootstrap (``bootstrap.py``), so
the two kinds' cards compare. The train split is learned one row at a time in arrival order,
as the scorer will go on learning from outcomes. The artifact is reloaded from its bytes and
must score the holdout rows exactly as the trained model does before it is saved.
"""

from __future__ import annotations

import logging
import sys
import time
from importlib.metadata import version as package_version

import numpy as np

from services.core.declarations import Domain
from services.core.errors import ModelError
from services.models.river import ARTIFACT_FILE, KIND, PIPELINE_DESCRIPTION, RiverModel
from services.registry.artifacts import ModelStore
from services.trainer.bootstrap import (
    PARITY_ROWS,
    TrainedModel,
    base_card,
    bootstrap_data,
    holdout_metrics,
    save_trained,
)

PROGRESS_ROWS = 10_000  # log learning progress every this many rows

log = logging.getLogger(__name__)


def train_river_bootstrap(
    domain: Domain, store: ModelStore, *, seed: int = 7, n_events: int = 60_000
) -> TrainedModel:
    """Trains, checks and saves the next version of ``domain.model_name`` as kind ``river``."""
    started = time.perf_counter()
    dataset, train, holdout = bootstrap_data(domain, seed=seed, n_events=n_events)
    model = RiverModel.new(dataset.feature_names)
    learn_started = time.perf_counter()
    labels = train.y.astype(bool).tolist()
    for start in range(0, len(train), PROGRESS_ROWS):
        stop = min(start + PROGRESS_ROWS, len(train))
        model.learn(train.X[start:stop], labels[start:stop])
        log.info("river bootstrap: learned %d of %d rows", stop, len(train))
    learn_s = time.perf_counter() - learn_started
    scores = model.predict(holdout.X)
    metrics = holdout_metrics(holdout.y, scores)
    artifact = model.to_bytes()
    reloaded = RiverModel.from_bytes(artifact, dataset.feature_names)
    parity = float(np.max(np.abs(reloaded.predict(holdout.X[:PARITY_ROWS]) - scores[:PARITY_ROWS])))
    if parity != 0.0:
        raise ModelError(f"the reloaded river model scores differently (max diff {parity})")
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
        "input": {
            "dtype": "float32",
            "shape": ["batch", len(dataset.feature_names)],
            "order": "feature_names",
        },
        "output": {"name": "score", "dtype": "float64", "shape": ["batch"]},
        "pipeline": PIPELINE_DESCRIPTION,
        "artifact_format": "pickle of {format, kind, feature_names, rows_learned, pipeline}",
        "rows_learned": model.rows_learned,
        "learn_seconds": round(learn_s, 3),
        "parity_max_abs_diff": parity,
        "online_learning": (
            f"The scorer goes on learning from {domain.topics.labelled} (test-then-train); "
            "its snapshots are later versions whose card names this one as an ancestor."
        ),
        "versions": {"river": package_version("river"), "python": sys.version.split()[0]},
    }
    return save_trained(
        store, card, artifact, dataset=dataset, started=started, artifact_file=ARTIFACT_FILE
    )

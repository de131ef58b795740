"""The river bootstrap: trained on the synthetic stream, saved, and loaded back verified."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from services.core.declarations import Domain
from services.models.river import ARTIFACT_FILE, RiverModel
from services.registry.artifacts import ModelStore
from services.trainer.bootstrap import bootstrap_data, holdout_metrics
from services.trainer.river_bootstrap import train_river_bootstrap

N_EVENTS = 6000


def test_river_bootstrap_end_to_end(tmp_path: Path, payments: Domain) -> None:
    store = ModelStore(tmp_path)
    trained = train_river_bootstrap(payments, store, seed=3, n_events=N_EVENTS)
    assert (trained.model_name, trained.version, trained.kind) == (
        payments.model_name,
        "1",
        "river",
    )
    assert trained.feature_names == payments.model_inputs
    assert trained.metrics["auc"] > 0.85
    assert trained.artifact_uri.endswith(f"/{payments.model_name}/1/{ARTIFACT_FILE}")

    card = json.loads(trained.card_path.read_text())
    assert card["kind"] == "river"
    assert (card["sha256"], card["artifact_uri"]) == (trained.sha256, trained.artifact_uri)
    assert card["metrics"] == trained.metrics
    assert card["dataset_id"] == trained.dataset_id
    assert card["parity_max_abs_diff"] == 0.0
    assert card["rows_learned"] == card["train_size"] == round(N_EVENTS * 0.8)
    assert {"intended_use", "limitations", "training_data", "versions", "pipeline"} <= set(card)

    artifact = store.load_verified(trained.artifact_uri, trained.sha256)
    model = RiverModel.from_bytes(artifact, trained.feature_names)
    assert model.rows_learned == card["rows_learned"]
    dataset, _, holdout = bootstrap_data(payments, seed=3, n_events=N_EVENTS)
    assert dataset.dataset_id == trained.dataset_id  # the ONNX bootstrap's data, reproduced
    scores = model.predict(holdout.X)
    assert np.isfinite(scores).all()
    assert holdout_metrics(holdout.y, scores) == trained.metrics

    again = train_river_bootstrap(payments, store, seed=3, n_events=N_EVENTS)
    assert again.version == "2"
    assert again.metrics == trained.metrics  # deterministic for a seed

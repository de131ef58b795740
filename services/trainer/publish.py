"""Training a version and registering it as a candidate: the trainer's way into the registry."""

from __future__ import annotations

import sys

from services.core.declarations import Domain
from services.core.serde import codecs_for
from services.core.settings import StackSettings
from services.models import river, runtimes
from services.registry.artifacts import ModelStore
from services.registry.versions import CANDIDATE, ModelVersion, now_ms, publish

ONNX = runtimes.KIND
RIVER = river.KIND
KINDS = (ONNX, RIVER)


def train_and_register(
    settings: StackSettings, domain: Domain, *, seed: int, events: int, kind: str = ONNX
) -> str:
    """Trains on synthetic data, registers the version as a candidate; returns the version."""
    store = ModelStore(settings.models_dir)
    if kind == RIVER:
        from services.trainer.river_bootstrap import train_river_bootstrap

        trained = train_river_bootstrap(domain, store, seed=seed, n_events=events)
    else:
        from services.trainer.bootstrap import train_bootstrap

        trained = train_bootstrap(domain, store, seed=seed, n_events=events)
    created = now_ms()
    record = ModelVersion(
        model_name=trained.model_name,
        version=trained.version,
        stage=CANDIDATE,
        kind=trained.kind,
        artifact_uri=trained.artifact_uri,
        sha256=trained.sha256,
        dataset_id=trained.dataset_id,
        feature_names=list(trained.feature_names),
        metrics=dict(trained.metrics),
        created_at=created,
        updated_at=created,
    )
    publish(settings, codecs_for(settings), [record])
    metrics = ", ".join(
        f"{k}={v:.3f}" for k, v in sorted(trained.metrics.items()) if isinstance(v, float)
    )
    print(
        f"registered {record.key} as {CANDIDATE}: {metrics}; card {trained.card_path}",
        file=sys.stderr,
    )
    return trained.version

"""Training a version and registering it as a candidate: the trainer's way into the registry."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from services.core.declarations import Domain
from services.core.errors import ConfigError
from services.core.serde import codecs_for
from services.core.settings import StackSettings
from services.models import river, runtimes
from services.registry.artifacts import ModelStore
from services.registry.versions import CANDIDATE, ModelVersion, now_ms, publish

if TYPE_CHECKING:
    from services.trainer.bootstrap import TrainedModel

ONNX = runtimes.KIND
RIVER = river.KIND
KINDS = (ONNX, RIVER)


def train(
    settings: StackSettings,
    domain: Domain,
    *,
    from_history: bool,
    since: str | None,
    until: str | None,
    seed: int,
    events: int,
    kind: str,
) -> str:
    """``streamml train``: on synthetic data (``--bootstrap``) or on history."""
    if not from_history and (since or until):
        raise ConfigError("--since and --until choose the history to train on: --from-history")
    if not from_history:
        return train_and_register(settings, domain, seed=seed, events=events, kind=kind)
    if kind != ONNX:
        raise ConfigError(
            f"--from-history trains the {ONNX} kind; a {RIVER} model learns from "
            f"{domain.topics.labelled} while it serves"
        )
    return train_history_and_register(settings, domain, since=since, until=until, seed=seed)


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
    return register(settings, trained)


def train_history_and_register(
    settings: StackSettings, domain: Domain, *, since: str | None, until: str | None, seed: int
) -> str:
    """Trains on ``<domain>.labelled`` between ``since`` and ``until`` (offsets or event times,
    see ``history.Bound``), registers the version as a candidate; returns the version."""
    from services.trainer.from_history import train_from_history
    from services.trainer.golden import load_golden
    from services.trainer.history import Bound

    done = train_from_history(
        settings,
        domain,
        since=Bound.parse(since),
        until=Bound.parse(until),
        seed=seed,
        golden=load_golden(settings.features_dir, domain),
    )
    return register(settings, done.trained)


def register(settings: StackSettings, trained: TrainedModel) -> str:
    """Announces a trained, saved and checked version on ``ml.models`` as a candidate."""
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
        f"registered {record.key} as {CANDIDATE} (dataset {trained.dataset_id}): {metrics}; "
        f"card {trained.card_path}",
        file=sys.stderr,
    )
    return trained.version

"""Which model serves: the registry's champion when one loads, else the declared heuristic."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from services.core.declarations import Domain
from services.core.errors import ModelError
from services.core.modelstore import ModelStore
from services.core.registry import CHAMPION, ModelVersion
from services.scorer.runtimes import HeuristicModel, ModelRuntime, OnnxModel

log = logging.getLogger(__name__)

HEURISTIC_VERSION = "heuristic"
FALLBACK = "fallback"


@dataclass(frozen=True)
class Serving:
    """A loaded model and how its predictions are labelled."""

    runtime: ModelRuntime
    model_name: str
    version: str
    served_by: str


def heuristic_serving(domain: Domain) -> Serving:
    return Serving(HeuristicModel(domain.heuristic), domain.model_name, HEURISTIC_VERSION, FALLBACK)


def load_serving(record: ModelVersion, store: ModelStore, threads: int) -> Serving:
    """Loads and verifies an artifact, and runs it once before it takes traffic."""
    if record.kind != "onnx":
        raise ModelError(f"{record.key}: model kind {record.kind!r} is not servable by this scorer")
    artifact = store.load_verified(record.artifact_uri, record.sha256)
    names = tuple(record.feature_names)
    runtime = OnnxModel(artifact, names, threads)
    import numpy as np

    warm = runtime.predict(np.zeros((1, len(names)), dtype=np.float32))
    if warm.shape != (1,) or not np.isfinite(warm).all():
        raise ModelError(f"{record.key}: warm-up gave {warm!r}, expected one finite score")
    return Serving(runtime, record.model_name, record.version, CHAMPION)

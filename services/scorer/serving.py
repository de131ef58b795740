"""Which models serve: the champion, an optional canary and shadow, and the declared heuristic.

The registry's stages decide the line-up (``services/registry/versions.py``): the champion scores
every key the canary does not take; the canary takes a share of the entity keys, chosen by a
stable hash of the key so a card always goes the same way, in every scorer instance and after
every restart; the shadow scores everything, and its predictions go to the shadow topic only.
The heuristic scores when no model can (``served_by = fallback``).
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass

import numpy as np

from services.core.declarations import Domain
from services.core.errors import ModelError
from services.models.river import KIND as RIVER
from services.models.river import RiverModel
from services.models.runtimes import KIND as ONNX
from services.models.runtimes import HeuristicModel, ModelRuntime, OnnxModel
from services.registry.artifacts import ModelStore
from services.registry.versions import CANARY, CHAMPION, SHADOW, ModelVersion

log = logging.getLogger(__name__)

HEURISTIC_VERSION = "heuristic"
FALLBACK = "fallback"
ROLES = (CHAMPION, CANARY, SHADOW)
_HASH_RANGE = 1 << 32


@dataclass(frozen=True)
class Serving:
    """A loaded model and how its predictions are labelled."""

    runtime: ModelRuntime
    model_name: str
    version: str
    served_by: str
    kind: str = "heuristic"
    sha256: str = ""

    @property
    def is_model(self) -> bool:
        return self.served_by != FALLBACK

    @property
    def learns(self) -> bool:
        """An online model: it learns from outcomes after it has scored."""
        return self.kind == RIVER


def canary_bucket(key: bytes) -> float:
    """Where a key falls in [0, 1): CRC-32 of its bytes, the same in every process."""
    return zlib.crc32(key) / _HASH_RANGE


@dataclass(frozen=True)
class Lineup:
    """The servings of one moment; the scorer swaps the whole line-up between micro-batches."""

    champion: Serving
    canary: Serving | None = None
    canary_share: float = 0.0
    shadow: Serving | None = None

    def route(self, key: bytes) -> Serving:
        """The serving that scores this entity key: the canary for its share, else the champion."""
        if self.canary is not None and canary_bucket(key) < self.canary_share:
            return self.canary
        return self.champion

    def describe(self) -> str:
        parts = [f"champion {self.champion.version}"]
        if self.canary is not None:
            parts.append(f"canary {self.canary.version} on {self.canary_share:.0%} of keys")
        if self.shadow is not None:
            parts.append(f"shadow {self.shadow.version}")
        return ", ".join(parts)


def heuristic_serving(domain: Domain) -> Serving:
    return Serving(HeuristicModel(domain.heuristic), domain.model_name, HEURISTIC_VERSION, FALLBACK)


def load_serving(record: ModelVersion, store: ModelStore, threads: int, role: str) -> Serving:
    """Loads and verifies an artifact, and runs it once before it takes traffic."""
    artifact = store.load_verified(record.artifact_uri, record.sha256)
    names = tuple(record.feature_names)
    runtime = load_runtime(record, artifact, threads)
    warm = runtime.predict(np.zeros((1, len(names)), dtype=np.float32))
    if warm.shape != (1,) or not np.isfinite(warm).all():
        raise ModelError(f"{record.key}: warm-up gave {warm!r}, expected one finite score")
    return Serving(runtime, record.model_name, record.version, role, record.kind, record.sha256)


def load_runtime(record: ModelVersion, artifact: bytes, threads: int) -> ModelRuntime:
    names = tuple(record.feature_names)
    if record.kind == ONNX:
        return OnnxModel(artifact, names, threads)
    if record.kind == RIVER:
        return RiverModel.from_bytes(artifact, names)
    raise ModelError(f"{record.key}: model kind {record.kind!r} is not servable by this scorer")

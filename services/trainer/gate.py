"""The promotion gate: a candidate against the champion on the recent holdout and the golden set.

The rules are the domain's (``Retraining.gate``):

- recent holdout (rows later in event time than any the candidate trained on): the candidate's
  AUC must exceed the champion's by more than ``holdout_auc_gain``;
- golden set: the candidate's AUC may be below the champion's by at most ``golden_auc_margin``;
- on both: at least ``min_auc``, champion or not.

Every rule gives a reason, kept or broken, and the figures it was judged on; the result goes
into the candidate's card and onto ``ml.models.events``. A failed gate leaves the champion serving.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from services.core.declarations import Gate
from services.core.errors import ModelError
from services.models.river import KIND as RIVER
from services.models.river import RiverModel
from services.models.runtimes import KIND as ONNX
from services.models.runtimes import ModelRuntime, OnnxModel
from services.registry.artifacts import ModelStore
from services.registry.versions import ModelVersion
from services.trainer.bootstrap import holdout_metrics
from services.trainer.dataset import Dataset

HOLDOUT = "holdout"
GOLDEN = "golden"


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: list[str]
    figures: dict[str, float] = field(default_factory=dict)

    def to_card(self) -> dict[str, object]:
        return {"passed": self.passed, "reasons": self.reasons, "figures": self.figures}


def judge(
    rules: Gate, candidate: dict[str, float], champion: dict[str, float] | None
) -> GateResult:
    """Pure: the rules applied to the AUCs per set (``holdout``, ``golden`` when there is one)."""
    reasons: list[str] = []
    broken = False
    figures = {f"{name}_auc": auc for name, auc in candidate.items()}
    if champion is not None:
        figures.update({f"champion_{name}_auc": auc for name, auc in champion.items()})
    for name, auc in candidate.items():
        if auc < rules.min_auc:
            broken = True
            reasons.append(f"{name} AUC {auc:.4f} is below the floor {rules.min_auc:.4f}")
    if champion is None:
        reasons.append("no champion to compare with: judged on the floor alone")
        return GateResult(not broken, reasons, figures)
    gain = candidate[HOLDOUT] - champion[HOLDOUT]
    kept = gain > rules.holdout_auc_gain
    broken |= not kept
    reasons.append(
        f"holdout AUC {candidate[HOLDOUT]:.4f} vs the champion's {champion[HOLDOUT]:.4f}: "
        f"{gain:+.4f}, {'more' if kept else 'not more'} than the required "
        f"{rules.holdout_auc_gain:+.4f}"
    )
    if GOLDEN in candidate and GOLDEN in champion:
        drop = champion[GOLDEN] - candidate[GOLDEN]
        kept = drop <= rules.golden_auc_margin
        broken |= not kept
        reasons.append(
            f"golden-set AUC {candidate[GOLDEN]:.4f} vs the champion's {champion[GOLDEN]:.4f}: "
            f"{'within' if kept else 'more than'} the allowed drop of {rules.golden_auc_margin:.4f}"
        )
    return GateResult(not broken, reasons, figures)


def aucs(store: ModelStore, version: ModelVersion, sets: dict[str, Dataset]) -> dict[str, float]:
    """The version's AUC on each set, its artifact checked against the registered sha256."""
    runtime = load_runtime(store, version)
    return {
        name: holdout_metrics(data.y, runtime.predict(columns_for(version, data)))["auc"]
        for name, data in sets.items()
    }


def load_runtime(store: ModelStore, version: ModelVersion) -> ModelRuntime:
    artifact = store.load_verified(version.artifact_uri, version.sha256)
    names = tuple(version.feature_names)
    if version.kind == ONNX:
        return OnnxModel(artifact, names, threads=1)
    if version.kind == RIVER:
        return RiverModel.from_bytes(artifact, names)
    raise ModelError(f"{version.key} is of kind {version.kind!r}, which the gate cannot run")


def columns_for(version: ModelVersion, data: Dataset) -> np.ndarray:
    """The dataset's columns in the version's input order."""
    missing = [n for n in version.feature_names if n not in data.feature_names]
    if missing:
        raise ModelError(f"{version.key} needs inputs {missing} that {data.source} lacks")
    order = [data.feature_names.index(n) for n in version.feature_names]
    return np.ascontiguousarray(data.X[:, order])

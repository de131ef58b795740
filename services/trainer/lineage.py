"""``streamml models history <domain>``: every version, where it came from, what became of it.

Read from the registry (stages), the model cards (dataset, code version, gate result) and
``ml.models.events`` (the trainer's steps and the scorers' loads, in order).
"""

from __future__ import annotations

from datetime import UTC, datetime

from services.core.errors import ModelError
from services.core.serde import CodecFactory, Record
from services.core.settings import StackSettings
from services.registry.artifacts import ModelStore
from services.registry.versions import CANARY, ModelVersion, read_registry
from services.trainer.journal import Step, read_journal

# The figures worth a column per step; the rest stay in the record.
SHOWN = {
    Step.DATASET_BUILT: ("rows",),
    Step.TRAINED: ("auc",),
    Step.GATE_PASSED: ("holdout_auc", "champion_holdout_auc", "golden_auc", "champion_golden_auc"),
    Step.GATE_FAILED: ("holdout_auc", "champion_holdout_auc", "golden_auc", "champion_golden_auc"),
    Step.CANARY_STARTED: ("traffic_share",),
    Step.PROMOTED: ("canary_joined", "canary_accuracy", "champion_joined", "champion_accuracy"),
    Step.ROLLED_BACK: ("canary_joined", "canary_accuracy", "champion_joined", "champion_accuracy"),
}


def lineage(settings: StackSettings, codecs: CodecFactory, model_name: str) -> list[str]:
    versions = read_registry(settings, codecs).versions(model_name)
    if not versions:
        return [f"{model_name}: no versions registered"]
    store = ModelStore(settings.models_dir)
    lines = [f"{model_name}: {len(versions)} versions", ""]
    lines.append("version  stage        dataset              trained from      gate     code")
    for version in versions:
        lines.append(_version_line(store, version))
    steps = [r for r in read_journal(settings, codecs, model_name) if r["step"] != Step.LOAD]
    lines += ["", f"steps on ml.models.events ({len(steps)}):"]
    lines += [_step_line(r) for r in steps] or [
        "  none yet (streamml run trainer answers requests)"
    ]
    return lines


def _version_line(store: ModelStore, version: ModelVersion) -> str:
    try:
        card = store.card(version.model_name, version.version)
    except ModelError:
        card = {}
    gate = card.get("gate")
    gated = "-" if not gate else ("passed" if gate.get("passed") else "failed")
    source = "history" if card.get("dataset_manifest") else card.get("kind", "?")
    if card.get("parent_version"):
        source = f"snapshot of {card['parent_version']}"
    elif source != "history":
        source = "bootstrap"
    stage = version.stage
    if stage == CANARY:
        stage = f"canary({version.traffic_share:g})"
    code = str(card.get("code_version", "-"))[:12]
    return (
        f"{version.version:<8} {stage:<12} {version.dataset_id:<20} {source:<16} {gated:<8} {code}"
    )


def _step_line(record: Record) -> str:
    at = datetime.fromtimestamp(int(record["at"]) / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    step = Step(record["step"])
    figures = record["figures"]
    shown = " ".join(
        f"{name}={figures[name]:.4g}" for name in SHOWN.get(step, ()) if name in figures
    )
    request = str(record["request_id"])[:8]
    dataset = f" {record['dataset_id']}" if record["dataset_id"] else ""
    head = f"  {at} {step.value:<14} v{record['version']:<5} req {request}{dataset}"
    return f"{head} {shown}\n      {record['reason']}".rstrip()

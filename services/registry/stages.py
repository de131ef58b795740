"""Moving versions between stages: promote, canary and shadow trials, rollback.

Each change is one transaction on ``ml.models`` (see ``versions.publish``): the version that
leaves a stage and the one that enters it change together, so no reader sees two champions.
"""

from __future__ import annotations

from services.core.errors import RegistryError
from services.core.serde import CodecFactory
from services.core.settings import StackSettings
from services.registry.versions import (
    ARCHIVED,
    CANARY,
    CANDIDATE,
    CHAMPION,
    SHADOW,
    ModelVersion,
    publish,
    read_registry,
)


def promote(
    settings: StackSettings, codecs: CodecFactory, model_name: str, version: str
) -> ModelVersion:
    """Makes ``version`` the champion; the previous champion is archived in the same transaction."""
    view = read_registry(settings, codecs)
    target = view.get(model_name, version)
    changes = [target.staged(CHAMPION)]
    current = view.champion(model_name)
    if current is not None and current.version != version:
        changes.append(current.staged(ARCHIVED))
    publish(settings, codecs, changes)
    return changes[0]


def stage_trial(
    settings: StackSettings,
    codecs: CodecFactory,
    model_name: str,
    version: str,
    stage: str,
    traffic_share: float = 0.0,
) -> ModelVersion:
    """Puts ``version`` on trial as the canary (scoring ``traffic_share`` of the keys) or the
    shadow (scoring everything, published only to the shadow topic). A version already in
    that stage goes back to candidate, in the same transaction."""
    if stage not in (CANARY, SHADOW):
        raise RegistryError(f"a trial stage is {CANARY} or {SHADOW}, not {stage!r}")
    if stage == CANARY and not 0.0 < traffic_share <= 1.0:
        raise RegistryError(f"a canary's traffic share is in (0, 1], not {traffic_share}")
    view = read_registry(settings, codecs)
    target = view.get(model_name, version)
    if target.stage == CHAMPION:
        raise RegistryError(f"{target.key} is the champion; it cannot also be the {stage}")
    changes = [target.staged(stage, traffic_share if stage == CANARY else 0.0)]
    current = view.in_stage(model_name, stage)
    if current is not None and current.version != version:
        changes.append(current.staged(CANDIDATE))
    publish(settings, codecs, changes)
    return changes[0]


def end_trial(
    settings: StackSettings, codecs: CodecFactory, model_name: str, stage: str
) -> ModelVersion:
    """Sends the version in ``stage`` (canary or shadow) back to candidate."""
    current = read_registry(settings, codecs).in_stage(model_name, stage)
    if current is None:
        raise RegistryError(f"{model_name} has no {stage}")
    changed = current.staged(CANDIDATE)
    publish(settings, codecs, [changed])
    return changed


def rollback(
    settings: StackSettings, codecs: CodecFactory, model_name: str
) -> tuple[ModelVersion, ModelVersion]:
    """Gives the champion's place back to the most recently archived version; returns (the
    restored champion, the archived one)."""
    view = read_registry(settings, codecs)
    current = view.champion(model_name)
    if current is None:
        raise RegistryError(f"{model_name} has no champion to roll back")
    archived = [v for v in view.versions(model_name) if v.stage == ARCHIVED]
    if not archived:
        raise RegistryError(f"{model_name} has no earlier champion to return to")
    previous = max(archived, key=lambda v: v.updated_at)
    restored, retired = previous.staged(CHAMPION), current.staged(ARCHIVED)
    publish(settings, codecs, [restored, retired])
    return restored, retired

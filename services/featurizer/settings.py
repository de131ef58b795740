"""Featurizer settings (``STREAMML_FEATURIZER_*``) on top of the stack's."""

from __future__ import annotations

from pydantic import Field

from services.core.settings import StackSettings


class FeaturizerSettings(StackSettings):
    featurizer_online_batch_rows: int = Field(
        default=500, ge=1, description="Flush the online store when this many rows wait"
    )
    featurizer_online_flush_ms: int = Field(
        default=50, ge=1, description="...or when the oldest waiting row is this old"
    )
    featurizer_commit_interval_ms: int = Field(default=500, ge=10)
    featurizer_app_id: str = Field(
        default="streamml-featurizer",
        description="faust app id: consumer group and changelog-topic prefix; featurizers "
        "running different --domain sets need different ids",
    )
    featurizer_batch_size: int = Field(
        default=1000, ge=1, description="Most events per micro-batch"
    )
    featurizer_batch_wait_ms: int = Field(
        default=5, ge=1, description="Longest wait to fill a micro-batch"
    )

"""Scorer settings (``STREAMML_SCORER_*``) on top of the stack's."""

from __future__ import annotations

from pydantic import Field

from services.core.settings import StackSettings, host_name


class ScorerSettings(StackSettings):
    scorer_batch_size: int = Field(default=500, ge=1, description="Most events per micro-batch")
    scorer_batch_wait_ms: int = Field(default=5, ge=0, description="Longest wait to fill a batch")
    scorer_threshold: float = Field(
        default=0.5, ge=0.0, le=1.0, description="decision = score >= this"
    )
    scorer_threads: int = Field(default=1, ge=1, description="ONNX Runtime intra-op threads")
    scorer_instance: str = Field(
        default_factory=host_name,
        description="Stable per instance (default: the host name, unique per container): "
        "names its transactional producer. Two instances on one host need their own.",
    )
    scorer_dedup_capacity: int = Field(default=1_000_000, ge=1, description="Recent event ids kept")

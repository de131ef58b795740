"""Scorer settings (``STREAMML_SCORER_*``) on top of the stack's."""

from __future__ import annotations

from pydantic import Field

from services.core.settings import StackSettings, host_name


class ScorerSettings(StackSettings):
    scorer_app_id: str = Field(
        default="streamml-scorer",
        description="Prefix of the consumer group (<app id>-<domain>) and transactional ids; "
        "scorers of one domain that should share the work share it",
    )
    scorer_batch_size: int = Field(default=500, ge=1, description="Most events per micro-batch")
    scorer_batch_wait_ms: int | None = Field(
        default=None,
        ge=0,
        description="Longest wait to fill a batch (0: take only what has already been "
        "fetched). Default: 0 on Kafka, 5 on the embedded broker",
    )
    scorer_threshold: float = Field(
        default=0.5, ge=0.0, le=1.0, description="decision = score >= this"
    )
    scorer_threads: int = Field(default=1, ge=1, description="ONNX Runtime intra-op threads")
    http_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of the scorer's HTTP API (scoring, health, OpenAPI, /metrics) on "
        "STREAMML_METRICS_HOST; unset: the API is served on the metrics port",
    )
    scorer_instance: str = Field(
        default_factory=host_name,
        description="Stable per instance (default: the host name, unique per container): "
        "names its transactional producer. Two instances on one host need their own.",
    )
    scorer_dedup_capacity: int = Field(
        default=1_000_000,
        ge=1,
        description="Recent event ids kept (24 bytes each, allocated when the scorer starts)",
    )
    scorer_dedup_lookback_s: int = Field(
        default=86_400,
        ge=0,
        description="At start-up, the recent event ids are rebuilt from the predictions "
        "published this long ago or later (at most scorer_dedup_capacity); 0 rebuilds none",
    )
    scorer_dedup_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Longest the start-up rebuild of the recent event ids may take; past it "
        "the scorer starts with what was read so far (and warns)",
    )
    scorer_model_timeout_ms: int = Field(
        default=1000,
        ge=0,
        description="A model call on one micro-batch that takes longer is given up on and the "
        "heuristic scores the batch (0: no limit)",
    )
    scorer_snapshot_every_s: float = Field(
        default=600.0,
        gt=0,
        description="How often an online (river) model that learned something is saved and "
        "registered as a candidate",
    )

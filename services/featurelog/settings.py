"""Feature-log settings (``STREAMML_FEATURE_LOG_*``) on top of the stack's."""

from __future__ import annotations

from pydantic import Field

from services.core.settings import StackSettings


class FeatureLogSettings(StackSettings):
    # Larger batches mean fewer, bigger part files (Feast reads each file as one partition);
    # the time bound keeps a quiet stream's rows from waiting unwritten.
    feature_log_batch_rows: int = Field(
        default=5000, ge=1, description="Write a batch when this many records wait"
    )
    feature_log_flush_ms: int = Field(
        default=1000, ge=1, description="...or when the oldest waiting record is this old"
    )

"""Monitor settings (``STREAMML_MONITOR_*``) on top of the stack's."""

from __future__ import annotations

from pydantic import Field

from services.core.settings import StackSettings, host_name


class MonitorSettings(StackSettings):
    monitor_app_id: str = Field(
        default="streamml-monitor",
        description="Prefix of the consumer group, transactional ids and internal topics "
        "(<app id>.<domain>.by-event, <app id>.<domain>.join-state)",
    )
    monitor_instance: str = Field(
        default_factory=host_name,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="This instance's name within the group, stable across restarts: its "
        "transactional id, so a restarted instance aborts what its crashed self left open",
    )
    monitor_batch_size: int = Field(default=2000, ge=1, description="Most records per batch")
    monitor_batch_wait_ms: int = Field(
        default=50,
        ge=0,
        description="Longest wait to fill a batch: the monitor is off the scoring path, so it "
        "trades a little delay for fewer transactions",
    )
    monitor_snapshot_every_s: float = Field(
        default=10.0,
        gt=0,
        description="How often the quality figures are published on <domain>.monitoring",
    )
    monitor_restore_timeout_s: float = Field(
        default=120.0, gt=0, description="Longest a join-state restore may take before failing"
    )

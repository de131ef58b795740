"""Trainer settings (``STREAMML_TRAINER_*``) on top of the stack's."""

from __future__ import annotations

from pydantic import Field

from services.core.settings import StackSettings, host_name


class TrainerSettings(StackSettings):
    trainer_app_id: str = Field(
        default="streamml-trainer",
        description="Prefix of the consumer group on ml.retrain.requests (<app id>.<domain>)",
    )
    trainer_instance: str = Field(
        default_factory=host_name,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="This instance's name in the steps it tells on ml.models.events",
    )
    trainer_seed: int = Field(default=7, description="Seed of every model the trainer trains")
    trainer_epochs: int = Field(default=12, ge=1, description="Training epochs of the MLP")
    trainer_poll_s: float = Field(
        default=1.0, gt=0, description="How often a waiting step looks again"
    )
    trainer_shuffle_labels: bool = Field(
        default=False,
        description="A fire drill for the gate: train every candidate on shuffled labels, "
        "so it learns nothing true and the gate (or the canary) must stop it",
    )

"""``streamml run trainer``: the trainer wired from its settings, run until stopped."""

from __future__ import annotations

from services.core.domains import load_domain
from services.core.metrics import served_registry
from services.core.serde import codecs_for
from services.core.settings import load_settings


def run(domain_name: str) -> int:
    """Answers retraining requests for ``domain_name`` until SIGTERM; returns 0."""
    from services.trainer.service import Trainer
    from services.trainer.settings import TrainerSettings

    settings = load_settings(TrainerSettings)
    domain = load_domain(settings.features_dir, domain_name)
    registry = served_registry(settings, "trainer")
    trainer = Trainer(settings, domain, codecs_for(settings), registry)
    trainer.install_signal_handlers()
    trainer.run()
    return 0

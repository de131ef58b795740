"""``streamml run monitor``: the monitor wired from its settings, run until stopped."""

from __future__ import annotations

from services.core.domains import load_domain
from services.core.metrics import served_registry
from services.core.serde import codecs_for
from services.core.settings import load_settings


def run(domain_name: str) -> int:
    """Monitors ``domain_name`` until SIGTERM; returns 0."""
    from services.monitor.service import Monitor
    from services.monitor.settings import MonitorSettings

    settings = load_settings(MonitorSettings)
    domain = load_domain(settings.features_dir, domain_name)
    registry = served_registry(settings, "monitor")
    monitor = Monitor(settings, domain, codecs_for(settings), registry)
    monitor.install_signal_handlers()
    monitor.run()
    return 0

"""``streamml feature-log run``: the feature log's sink, wired from its settings."""

from __future__ import annotations

from services.core.domains import load_domain
from services.core.metrics import served_registry
from services.core.serde import codecs_for
from services.core.settings import load_settings


def run(domain_name: str) -> int:
    """Writes ``domain_name``'s feature vectors to parquet until SIGTERM; returns 0."""
    from services.featurelog.settings import FeatureLogSettings
    from services.featurelog.sink import FeatureLogSink

    settings = load_settings(FeatureLogSettings)
    domain = load_domain(settings.features_dir, domain_name)
    registry = served_registry(settings, "featurelog")
    sink = FeatureLogSink(settings, domain, codecs_for(settings), registry)
    sink.install_signal_handlers()
    sink.run()
    return 0

"""``streamml run featurizer``: the service wired from its settings, run until stopped."""

from __future__ import annotations

from collections.abc import Sequence

from services.core.domains import load_domains
from services.core.errors import ConfigError
from services.core.metrics import served_registry
from services.core.serde import codecs_for
from services.core.settings import load_settings


def run(domain_names: Sequence[str] | None = None) -> int:
    """Featurizes ``domain_names`` (all declared when None) until SIGTERM; returns 0."""
    from services.featurestore.store import apply_declarations, open_store
    from services.featurizer.service import Featurizer
    from services.featurizer.settings import FeaturizerSettings

    settings = load_settings(FeaturizerSettings)
    declared = load_domains(settings.features_dir)
    unknown = sorted(set(domain_names or ()) - set(declared))
    if unknown:
        raise ConfigError(f"--domain {unknown}: not declared; declared: {sorted(declared)}")
    domains = [declared[n] for n in domain_names] if domain_names else list(declared.values())
    apply_declarations(settings, domains)  # idempotent: each instance knows its feature views
    registry = served_registry(settings, "featurizer")
    featurizer = Featurizer(settings, domains, codecs_for(settings), open_store(settings), registry)
    featurizer.install_signal_handlers()
    featurizer.run()
    return 0

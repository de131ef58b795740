"""Finds the domains declared in ``features/domains/``: each module there defining ``DOMAIN``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from services.core.declarations import Domain
from services.core.errors import ConfigError

_MODULE_PREFIX = "streamml_features_"
DOMAINS_DIR = "domains"


def load_domains(features_dir: Path) -> dict[str, Domain]:
    if not features_dir.is_dir():
        raise ConfigError(
            f"feature folder {features_dir} does not exist (set STREAMML_FEATURES_DIR)"
        )
    domains: dict[str, Domain] = {}
    for path in sorted((features_dir / DOMAINS_DIR).glob("*.py")):
        domain = _domain_in(path)
        if domain is None:
            continue
        if domain.name in domains:
            raise ConfigError(f"domain {domain.name!r} is declared twice in {features_dir}")
        domains[domain.name] = domain
    return domains


def load_domain(features_dir: Path, name: str) -> Domain:
    domains = load_domains(features_dir)
    try:
        return domains[name]
    except KeyError:
        known = ", ".join(sorted(domains)) or "none"
        raise ConfigError(
            f"no domain {name!r} declared in {features_dir} (declared: {known})"
        ) from None


def _domain_in(path: Path) -> Domain | None:
    module_name = _MODULE_PREFIX + path.stem
    module = sys.modules.get(module_name)
    if module is None or getattr(module, "__file__", None) != str(path):
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise ConfigError(f"{path} failed to import: {exc}") from exc
    domain = getattr(module, "DOMAIN", None)
    if domain is not None and not isinstance(domain, Domain):
        raise ConfigError(f"{path}: DOMAIN must be a services.core.declarations.Domain")
    return domain

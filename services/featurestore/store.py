"""The Feast FeatureStore as streamml configures it: features/feature_store.yaml plus settings."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from services.core.declarations import Domain
from services.core.errors import ConfigError, StackError
from services.core.settings import StackSettings
from services.featurestore.feast_objects import feast_objects, feature_view_name

log = logging.getLogger(__name__)

STORE_YAML = "feature_store.yaml"


def feast_redis_connection(redis_url: str) -> str:
    """Feast's Redis connection string (``host:port,db=N[,password=...]``) from a redis:// URL."""
    parts = urlsplit(redis_url)
    if parts.scheme not in {"redis", "rediss"} or not parts.hostname:
        raise ConfigError(
            f"STREAMML_REDIS_URL must look like redis://host:port/0, got {parts.scheme}://..."
        )
    pieces = [f"{parts.hostname}:{parts.port or 6379}"]
    db = parts.path.lstrip("/")
    if db:
        pieces.append(f"db={db}")
    if parts.password:
        pieces.append(f"password={parts.password}")
    if parts.scheme == "rediss":
        pieces.append("ssl=true")
    return ",".join(pieces)


def feast_home(settings: StackSettings) -> Path:
    return (settings.home / "feast").resolve()


def offline_dir(settings: StackSettings) -> Path:
    return feast_home(settings) / "offline"


def open_store(settings: StackSettings) -> Any:
    """A FeatureStore whose registry and online store follow the settings."""
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    path = settings.features_dir / STORE_YAML
    try:
        raw: dict[str, Any] = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    home = feast_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    raw["registry"] = str(home / "registry.db")
    raw["online_store"] = {
        **raw["online_store"],
        "connection_string": feast_redis_connection(settings.redis),
    }
    config = RepoConfig(**raw)
    config.repo_path = settings.features_dir
    return FeatureStore(config=config)


def apply_declarations(settings: StackSettings, domains: list[Domain]) -> list[str]:
    """Registers every domain's entities and feature views; returns the view names."""
    store = open_store(settings)
    objects = feast_objects(domains, offline_dir(settings))
    store.apply(objects)
    names = [o.name for o in objects if o.__class__.__name__ == "FeatureView"]
    log.info("feast: applied %s", ", ".join(names))
    return names


def online_row(settings: StackSettings, domain: Domain, entity: str) -> dict[str, Any]:
    """One entity's online features, ``entity`` given as ``KEY_FIELD=VALUE``."""
    field, _, value = entity.partition("=")
    declared = next((e for e in domain.entities if e.key_field == field), None)
    if declared is None or not value:
        keys = ", ".join(e.key_field for e in domain.entities)
        raise StackError(f"expected KEY_FIELD=VALUE with one of: {keys}")
    view = feature_view_name(domain, declared.name)
    refs = [f"{view}:{f.name}" for f in domain.features_of(declared.name)]
    response = open_store(settings).get_online_features(features=refs, entity_rows=[{field: value}])
    return {k: v[0] for k, v in response.to_dict().items()}

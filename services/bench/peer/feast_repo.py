"""The peer's own Feast repository: one entity, push source and feature view per entity.

Shaped after the Feast docs' push-source page (https://docs.feast.dev/reference/data-sources/push)
and the quickstart (https://docs.feast.dev/getting-started/quickstart): a ``feature_store.yaml``
with a Redis online store, ``Entity``, a ``PushSource`` backed by a ``FileSource``, a
``FeatureView`` fed by that push source, ``FeatureStore.apply`` once at start. Nothing of the
repo in ``features/`` is reused except the feature names and types, which come from the
payments declaration so that the model finds the inputs it was trained on. The project name is
the peer's own, so its Redis keys never meet ours.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Float64, Int64

from services.core.declarations import Domain
from services.core.settings import StackSettings
from services.featurestore.feast_objects import TIMESTAMP_FIELD
from services.featurestore.store import STORE_YAML, feast_redis_connection

PROJECT = "streamml_peer"
REPO_DIR = "peer-feast"


def view_name(entity: str) -> str:
    return f"{entity}_features"


def push_source_name(entity: str) -> str:
    return f"{entity}_push"


def apply_repo(settings: StackSettings, home: Path, domain: Domain, project: str = PROJECT) -> Any:
    """Writes ``<home>/peer-feast/feature_store.yaml``, applies the objects; the store. Each
    peer has its ``project``, so their Redis keys never meet ours or each other's."""
    repo = (home / REPO_DIR).resolve()
    repo.mkdir(parents=True, exist_ok=True)
    (repo / STORE_YAML).write_text(yaml.safe_dump(_store_config(settings, repo, project)))
    store = FeatureStore(repo_path=str(repo))
    store.apply(_objects(domain, repo / "offline"))
    return store


def _store_config(settings: StackSettings, repo: Path, project: str) -> dict[str, Any]:
    return {
        "project": project,
        "provider": "local",
        "registry": str(repo / "registry.db"),
        "online_store": {
            "type": "redis",
            "connection_string": feast_redis_connection(settings.redis),
        },
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }


def _objects(domain: Domain, offline: Path) -> list[Any]:
    objects: list[Any] = []
    for declared in domain.featurized_entities:
        entity = Entity(
            name=declared.name, join_keys=[declared.key_field], value_type=ValueType.STRING
        )
        push = PushSource(
            name=push_source_name(declared.name),
            batch_source=FileSource(
                name=f"{declared.name}_log",
                path=str(offline / f"{declared.name}.parquet"),
                timestamp_field=TIMESTAMP_FIELD,
            ),
        )
        view = FeatureView(
            name=view_name(declared.name),
            entities=[entity],
            ttl=domain.feature_ttl,
            schema=[
                Field(name=f.name, dtype=Int64 if f.is_integer else Float64)
                for f in domain.features_of(declared.name)
            ],
            source=push,
            online=True,
        )
        objects += [entity, push, view]
    return objects

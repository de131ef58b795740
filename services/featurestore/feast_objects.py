"""Feast entities and feature views, derived from the domain declarations, never written by hand."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

from services.core.declarations import Domain

TIMESTAMP_FIELD = "event_time"


def entity_name(domain: Domain, entity: str) -> str:
    return f"{domain.name}_{entity}"


def feature_view_name(domain: Domain, entity: str) -> str:
    return f"{domain.name}_{entity}_features"


def offline_path(offline_dir: Path, domain: Domain, entity: str) -> Path:
    return offline_dir / domain.name / f"{entity}.parquet"


def feast_objects(domains: Iterable[Domain], offline_dir: Path) -> list[Any]:
    objects: list[Any] = []
    for domain in domains:
        for declared in domain.featurized_entities:
            features = domain.features_of(declared.name)
            entity = Entity(
                name=entity_name(domain, declared.name),
                join_keys=[declared.key_field],
                value_type=ValueType.STRING,
            )
            source = FileSource(
                name=f"{feature_view_name(domain, declared.name)}_log",
                path=str(offline_path(offline_dir, domain, declared.name).resolve()),
                timestamp_field=TIMESTAMP_FIELD,
            )
            view = FeatureView(
                name=feature_view_name(domain, declared.name),
                entities=[entity],
                ttl=domain.feature_ttl,
                schema=[
                    Field(name=f.name, dtype=Int64 if f.is_integer else Float64) for f in features
                ],
                source=source,
                online=True,
            )
            objects += [entity, view]
    return objects

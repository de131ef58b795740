"""The features a vector does not carry, read from the online store once per micro-batch.

Payments vectors carry the card's features; the merchant's live only in the online store
(Feast's Redis layout, written by the featurizer). For each micro-batch the scorer reads every
distinct merchant of the batch in one pipelined round trip and adds the values to the vectors.

An entity without a row has had no event yet, and one whose row is older than a feature's
window (or, for a feature without one, than the domain's feature TTL) has had none in it: the
feature takes its declared ``fill`` (a count of 0), the value the trainer computes for an empty
window, and the model scores the event. Only an online store that cannot be read is a reason to
score without the model: ``enrich`` then raises ``OnlineStoreUnavailable``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis

from services.core.declarations import Domain, Feature
from services.core.errors import StackError
from services.core.serde import Record
from services.core.settings import StackSettings
from services.featurestore.redis_layout import (
    RedisLayout,
    ViewLayout,
    decode_timestamp_ms,
    decode_value,
    layout_for,
    redis_client,
    view_layouts,
)
from services.featurestore.store import open_store

MISSING_FEATURE = "missing_feature"
ONLINE_STORE = "online_store"
# A read that takes longer than this fails (the store is down, or hangs), and the batch is
# scored without the online features instead of waiting.
READ_TIMEOUT_S = 1.0


class OnlineStoreUnavailable(StackError):
    """The online store could not be read."""


@dataclass(frozen=True)
class _Read:
    """One online feature: its hash field, its value for an empty window, and how old a row
    may be for its value to still hold."""

    name: str
    field: bytes
    fill: float | int
    max_age_ms: int


@dataclass(frozen=True)
class _EntityRead:
    key_field: str
    ts_field: bytes
    features: tuple[_Read, ...]


class OnlineFeatureReader:
    """Adds a domain's online-only features to vectors; one Redis round trip per call."""

    def __init__(self, client: redis.Redis, layout: RedisLayout, domain: Domain) -> None:
        self._client = client
        self._layout = layout
        self._time_field = domain.event_time_field
        ttl_ms = int(domain.feature_ttl.total_seconds() * 1000)
        wanted = {f.name: f for f in domain.online_features}
        self._reads = tuple(
            _read_of(view, wanted, ttl_ms)
            for view in view_layouts([domain]).values()
            if any(name in wanted for name, _, _ in view.fields)
        )
        self.feature_names = tuple(f.name for f in domain.online_features)

    def enrich(self, vectors: Sequence[Record]) -> None:
        """Sets each vector's online features (the declared fill where the entity had no event
        in the window); raises ``OnlineStoreUnavailable`` when the store cannot be read."""
        if not self._reads or not vectors:
            return
        pipe = self._client.pipeline(transaction=False)
        asked: list[tuple[_EntityRead, list[int], list[str]]] = []
        for read in self._reads:
            # A caller that brings the values (HTTP, batch files) is taken at its word.
            needing = [
                i for i, v in enumerate(vectors) if any(f.name not in v for f in read.features)
            ]
            keys = list(dict.fromkeys(str(vectors[i][read.key_field]) for i in needing))
            fields = [f.field for f in read.features] + [read.ts_field]
            for key in keys:
                pipe.hmget(self._layout.entity_key(read.key_field, key), fields)  # type: ignore[arg-type]
            asked.append((read, needing, keys))
        try:
            replies = iter(pipe.execute())
        except redis.RedisError as exc:
            raise OnlineStoreUnavailable(f"the online store could not be read: {exc}") from exc
        for read, needing, keys in asked:
            rows = {key: next(replies) for key in keys}
            for i in needing:
                vector = vectors[i]
                *values, stamp = rows[str(vector[read.key_field])]
                at_ms = decode_timestamp_ms(stamp)
                age_ms = None if at_ms is None else int(vector[self._time_field]) - at_ms
                for feature, value in zip(read.features, values, strict=True):
                    held = age_ms is not None and age_ms < feature.max_age_ms
                    decoded = decode_value(value) if held else None
                    vector[feature.name] = feature.fill if decoded is None else decoded


def _read_of(view: ViewLayout, wanted: dict[str, Feature], ttl_ms: int) -> _EntityRead:
    features = tuple(
        _Read(name, field, _fill_of(wanted[name]), wanted[name].window_ms or ttl_ms)
        for name, field, _ in view.fields
        if name in wanted
    )
    return _EntityRead(view.key_field, view.ts_field, features)


def _fill_of(feature: Feature) -> float | int:
    return int(feature.fill) if feature.is_integer else float(feature.fill)


def open_online_reader(settings: StackSettings, domain: Domain) -> OnlineFeatureReader | None:
    """The reader of the features a vector does not carry; None when the domain has none."""
    if not domain.online_features:
        return None
    client = redis_client(settings.redis, READ_TIMEOUT_S)
    return OnlineFeatureReader(client, layout_for(open_store(settings)), domain)

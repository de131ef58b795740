"""The features a vector does not carry, read from the online store once per micro-batch.

Payments vectors carry the card's features; the merchant's live only in the online store
(Feast's Redis layout, written by the featurizer). For each micro-batch the scorer reads every
distinct merchant of the batch in one pipelined round trip and adds the values to the vectors.
An event whose row is absent, or older than the domain's feature TTL at the event's time, is
marked, and the heuristic scores it (``served_by = fallback``): a model never sees a made-up
input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis

from services.core.declarations import Domain
from services.core.serde import Record
from services.core.settings import StackSettings
from services.featurestore.redis_layout import (
    RedisLayout,
    ViewLayout,
    decode_timestamp_ms,
    decode_value,
    layout_for,
    view_layouts,
)
from services.featurestore.store import open_store

MISSING_FEATURE = "missing_feature"
STALE_FEATURE = "stale_feature"


@dataclass(frozen=True)
class _EntityRead:
    key_field: str
    ts_field: bytes
    features: tuple[tuple[str, bytes], ...]  # (feature, hash field)


class OnlineFeatureReader:
    """Adds a domain's online-only features to vectors; one Redis round trip per call."""

    def __init__(self, client: redis.Redis, layout: RedisLayout, domain: Domain) -> None:
        self._client = client
        self._layout = layout
        self._time_field = domain.event_time_field
        self._ttl_ms = int(domain.feature_ttl.total_seconds() * 1000)
        wanted = {f.name for f in domain.online_features}
        self._reads = tuple(
            _read_of(view, wanted)
            for view in view_layouts([domain]).values()
            if any(name in wanted for name, _, _ in view.fields)
        )
        self.feature_names = tuple(f.name for f in domain.online_features)

    def enrich(self, vectors: Sequence[Record]) -> list[str | None]:
        """Sets each vector's online features; returns, per vector, why it cannot be scored
        by a model (``missing_feature``, ``stale_feature``) or None."""
        problems: list[str | None] = [None] * len(vectors)
        if not self._reads or not vectors:
            return problems
        pipe = self._client.pipeline(transaction=False)
        asked: list[tuple[_EntityRead, list[int], list[str]]] = []
        for read in self._reads:
            # A caller that brings the values (HTTP, batch files) is taken at its word.
            needing = [
                i for i, v in enumerate(vectors) if any(n not in v for n, _ in read.features)
            ]
            keys = list(dict.fromkeys(str(vectors[i][read.key_field]) for i in needing))
            fields = [f for _, f in read.features] + [read.ts_field]
            for key in keys:
                pipe.hmget(self._layout.entity_key(read.key_field, key), fields)  # type: ignore[arg-type]
            asked.append((read, needing, keys))
        replies = iter(pipe.execute())
        for read, needing, keys in asked:
            rows = {key: next(replies) for key in keys}
            for i in needing:
                vector = vectors[i]
                *values, stamp = rows[str(vector[read.key_field])]
                at_ms = decode_timestamp_ms(stamp)
                for (name, _), value in zip(read.features, values, strict=True):
                    vector[name] = decode_value(value)
                if at_ms is None:
                    problems[i] = problems[i] or MISSING_FEATURE
                elif int(vector[self._time_field]) - at_ms > self._ttl_ms:
                    problems[i] = problems[i] or STALE_FEATURE
        return problems


def _read_of(view: ViewLayout, wanted: set[str]) -> _EntityRead:
    features = tuple((name, field) for name, field, _ in view.fields if name in wanted)
    return _EntityRead(view.key_field, view.ts_field, features)


def open_online_reader(settings: StackSettings, domain: Domain) -> OnlineFeatureReader | None:
    """The reader of the features a vector does not carry; None when the domain has none."""
    if not domain.online_features:
        return None
    client = redis.Redis.from_url(settings.redis)
    return OnlineFeatureReader(client, layout_for(open_store(settings)), domain)

"""Feast's Redis online-store layout, written without Feast's per-row pandas and Arrow path.

Feast's Redis store keeps one hash per entity key: the key is the serialized entity key plus
the project name, each feature is a field named by the murmur3 hash of ``<view>:<feature>``
holding a serialized ``ValueProto``, and ``_ts:<view>`` holds the row's event time as a
``Timestamp``. This module builds exactly those bytes with Feast's own helpers, so
``get_online_features`` reads what we write, and it keeps Feast's rule that an older row
never replaces a newer one. It exists because Feast's ``write_to_online_store`` spends about
25 µs per row turning a DataFrame into protobufs, more than the featurizer's whole budget.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import redis
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from google.protobuf.timestamp_pb2 import Timestamp as TimestampProto
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.core.declarations import Domain
from services.core.flatavro import varint
from services.featurestore.feast_objects import feature_view_name

EMPTY_VALUE = ValueProto().SerializeToString()
# Timestamp's nanos field for each whole millisecond (absent when zero, as protobuf writes it).
_NANOS_FIELD = [b"\x10" + varint(ms * 1_000_000) if ms else b"" for ms in range(1000)]
_KEY_CACHE = 200_000


@dataclass(frozen=True)
class ViewLayout:
    """The Redis field names of one feature view and how each feature's value is encoded."""

    name: str
    key_field: str
    ts_field: bytes
    fields: tuple[tuple[str, bytes, bool], ...]  # (feature, hash field, is integer)

    @property
    def field_keys(self) -> tuple[bytes, ...]:
        """The hash field of each feature, in ``fields`` order."""
        return tuple(field_key for _, field_key, _ in self.fields)


def view_layouts(domains: Sequence[Domain]) -> dict[str, ViewLayout]:
    layouts: dict[str, ViewLayout] = {}
    for domain in domains:
        for entity in domain.featurized_entities:
            features = domain.features_of(entity.name)
            name = feature_view_name(domain, entity.name)
            layouts[name] = ViewLayout(
                name=name,
                key_field=entity.key_field,
                ts_field=f"_ts:{name}".encode(),
                fields=tuple((f.name, _mmh3(f"{name}:{f.name}"), f.is_integer) for f in features),
            )
    return layouts


class RedisLayout:
    """Entity keys, values and timestamps as Feast's Redis online store stores them."""

    def __init__(self, project: str, serialization_version: int) -> None:
        self._project = project
        self._version = serialization_version
        self.entity_key = lru_cache(maxsize=_KEY_CACHE)(self._entity_key)

    def _entity_key(self, join_key: str, value: str) -> bytes:
        proto = EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(string_val=value)])
        key: bytes = _redis_key(self._project, proto, self._version)
        return key

    @staticmethod
    def timestamp(event_time_ms: int) -> bytes:
        """``Timestamp(seconds, nanos)`` serialized: field 1 and field 2, both varints."""
        seconds, millis = divmod(event_time_ms, 1000)
        out = b"\x08" + varint(seconds) if seconds else b""
        return out + _NANOS_FIELD[millis]

    @staticmethod
    def hash_values(view: ViewLayout, values: Mapping[str, float | int | None]) -> list[bytes]:
        """Each feature's value, in ``view.field_keys`` order, as a serialized ``ValueProto``."""
        return [
            EMPTY_VALUE
            if (value := values.get(name)) is None
            else int64_value(int(value))
            if is_integer
            else double_value(float(value))
            for name, _field_key, is_integer in view.fields
        ]


# ValueProto by hand (protobuf wire format): int64_val is field 4 (varint), double_val field 5
# (fixed 64-bit). Building them through the generated class costs more than the rest of a row.
_INT64_TAG = bytes([4 << 3 | 0])
_DOUBLE_TAG = bytes([5 << 3 | 1])
_pack_double = struct.Struct("<d").pack


def int64_value(value: int) -> bytes:
    """``ValueProto(int64_val=value)`` serialized."""
    return _INT64_TAG + varint(value & 0xFFFFFFFFFFFFFFFF)


def double_value(value: float) -> bytes:
    """``ValueProto(double_val=value)`` serialized."""
    return _DOUBLE_TAG + _pack_double(value)


def layout_for(store: Any) -> RedisLayout:
    """The layout of an open Feast FeatureStore's project."""
    return RedisLayout(store.config.project, store.config.entity_key_serialization_version)


def redis_client(url: str, timeout_s: float) -> redis.Redis:
    """A client that fails at once when Redis does not answer: no retries of its own (redis-py's
    default retries with backoff held a caller for up to 8 s per call), a bounded connect and
    read. The caller decides what an unanswered call means (the featurizer waits and tries
    again; the scorer serves the heuristic)."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def decode_value(data: bytes | None) -> float | int | None:
    """A stored ``ValueProto``'s number; None for an empty value or a missing field."""
    if not data:
        return None
    proto = ValueProto.FromString(data)
    kind = proto.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    number: float | int = getattr(proto, kind)
    return number


def decode_timestamp_ms(data: bytes | None) -> int | None:
    """A stored ``Timestamp`` in epoch milliseconds; None when the row has none."""
    if data is None:
        return None
    stamp = TimestampProto.FromString(data)
    return int(stamp.seconds) * 1000 + int(stamp.nanos) // 1_000_000

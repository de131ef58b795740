"""Forwarded events (payments: to the merchant windows) are counted once, also when a crash
makes the key entity's route forward them again."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from services.core.declarations import Domain
from services.core.serde import CodecFactory
from services.featurizer.metrics import FeaturizerMetrics
from services.featurizer.online import OnlineBuffer
from services.featurizer.routes import SecondaryRoute
from services.featurizer.secondary import forward_key, forward_partition, forward_source

APP = "streamml-featurizer"
T0 = 1_767_225_600_000


@dataclass
class Forward:
    """What the consumer hands the route: only the accessors it reads."""

    _partition: int
    _key: bytes
    _value: bytes

    def partition(self) -> int:
        return self._partition

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value


def test_a_forward_key_names_its_source_after_any_entity_key() -> None:
    for entity in (b"m-1", b"", b"\x00\xff" * 40):
        assert forward_source(forward_key(entity, 7, 2**40 + 3)) == (7, 2**40 + 3)
        assert forward_partition(entity, 6) == zlib.crc32(entity) % 6


def test_forwards_sent_again_after_a_crash_are_counted_once_across_a_restart(
    payments: Domain, codecs: CodecFactory, make_transaction: Any
) -> None:
    merchant = payments.secondary_entities[0]
    registry = CollectorRegistry()
    metrics = FeaturizerMetrics.create(registry)
    route = SecondaryRoute(payments, merchant, APP, codecs, metrics)
    encode = codecs.for_topic(payments.topics.events).encode

    def forwards(source: int, offsets: range) -> list[Forward]:
        found = []
        for offset in offsets:
            event = make_transaction(f"e-{source}-{offset}", T0 + offset * 1000, merchant="m-1")
            found.append(Forward(0, forward_key(b"m-1", source, offset), encode(event)))
        return found

    def count(table_route: SecondaryRoute) -> int:
        return len(table_route.table.partition(0).windows["m-1"].recent_times)

    route.handle(forwards(0, range(10)) + forwards(1, range(5)), OnlineBuffer())
    route.handle(forwards(0, range(5, 13)), OnlineBuffer())  # 5..9 again after a crash
    assert count(route) == 18
    again = registry.get_sample_value(
        "streamml_featurizer_forwarded_again_total",
        {"domain": payments.name, "entity": merchant.name},
    )
    assert again == 5

    log = [(r.key, r.value) for r in route.table.drain({0: 42})]
    restarted = SecondaryRoute(payments, merchant, APP, codecs, metrics)
    restarted.table.restore(0, log, 42)
    restarted.handle(forwards(1, range(3, 8)), OnlineBuffer())  # 3, 4 counted before
    assert count(restarted) == 21

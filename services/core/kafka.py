"""Kafka clients configured one way for every service, and explicit topic creation.

Every topic is created before anything produces to it, with its partition count: a broker
that auto-creates topics picks its own count, which breaks co-partitioned tables.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from services.core.declarations import Domain
from services.core.errors import StackError
from services.core.settings import (
    BACKGROUND_FETCH_WAIT_MS,
    HISTORY_FETCH_WAIT_MS,
    StackSettings,
)
from services.core.topics import ALERTS, MODEL_EVENTS, MODELS, RETRAIN_REQUESTS

log = logging.getLogger(__name__)

ADMIN_TIMEOUT_S = 15.0
# How long a micro-batch loop blocks for its first record before it looks around (shutdown,
# model swaps) and blocks again.
IDLE_POLL_S = 0.1
# What a history reader's quiet poll adds to two fetch waits, for the broker's own delays.
QUIET_MARGIN_S = 0.1


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)


def topic_specs(settings: StackSettings, domains: Iterable[Domain]) -> list[TopicSpec]:
    """Every topic the declared domains and the platform need."""
    specs = [
        TopicSpec(MODELS, 1, {"cleanup.policy": "compact"}),
        TopicSpec(MODEL_EVENTS, 1),
        TopicSpec(ALERTS, 1),
        TopicSpec(RETRAIN_REQUESTS, 1),
    ]
    for domain in domains:
        specs += [TopicSpec(t, settings.topic_partitions) for t in domain.topics.data_topics()]
    return specs


def partition_count(settings: StackSettings, topic: str) -> int:
    """How many partitions an existing topic has."""
    metadata = admin_client(settings).list_topics(topic, timeout=ADMIN_TIMEOUT_S)
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise StackError(
            f"topic {topic} does not exist; create the stack's topics first (streamml topics "
            "create, or streamml up)"
        )
    return len(found.partitions)


def client_config(settings: StackSettings) -> dict[str, Any]:
    """What every client of the cluster needs: where it is, and how to reach it (SASL, TLS:
    ``STREAMML_KAFKA_CLIENT_CONFIG``, librdkafka's own names)."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap,
        **settings.kafka_client_config,
    }
    if settings.kafka_debug:
        config["debug"] = settings.kafka_debug
    return config


def admin_client(settings: StackSettings) -> AdminClient:
    return AdminClient(client_config(settings))


def create_topics(settings: StackSettings, specs: Iterable[TopicSpec]) -> list[str]:
    """Creates the topics that do not exist yet; returns their names. Existing ones are checked."""
    admin = admin_client(settings)
    wanted = {s.name: s for s in specs}
    existing = admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics
    for name, spec in wanted.items():
        if name in existing and len(existing[name].partitions) != spec.partitions:
            log.warning(
                "topic %s has %d partitions, declared %d; keeping what exists",
                name,
                len(existing[name].partitions),
                spec.partitions,
            )
    missing = [s for n, s in wanted.items() if n not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(s.name, s.partitions, settings.topic_replication, config=dict(s.config))
            for s in missing
        ],
        operation_timeout=ADMIN_TIMEOUT_S,
    )
    for name, future in futures.items():
        try:
            future.result(ADMIN_TIMEOUT_S)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise StackError(f"could not create topic {name}: {exc}") from exc
    return [s.name for s in missing]


def consumer_config(settings: StackSettings, group_id: str | None, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        **client_config(settings),
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": settings.session_timeout,
        "heartbeat.interval.ms": max(settings.session_timeout // 6, 100),
        "fetch.wait.max.ms": settings.fetch_wait,
        "enable.partition.eof": False,
    }
    if group_id is not None:
        config["group.id"] = group_id
    else:
        config["group.id"] = "streamml-unassigned"  # librdkafka wants one even for assign()
    config.update(extra)
    return config


def log_ends(
    settings: StackSettings, topic: str, partitions: Iterable[int], timeout_s: float
) -> dict[int, int]:
    """Each partition's high watermark: the end of its log, records of transactions not yet
    resolved and their markers included. A read_committed consumer's own query answers the last
    stable offset instead, which stops short of a transaction whose commit Kafka has already
    answered but whose markers are not on the partition yet: a reader that stops there misses
    a write that came before it."""
    probe = Consumer(consumer_config(settings, None, **{"isolation.level": "read_uncommitted"}))
    try:
        return {
            p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1]
            for p in partitions
        }
    finally:
        probe.close()


def consume_batch(
    consumer: Consumer, size: int, wait_s: float, clock: Callable[[], float] = time.monotonic
) -> list[Message]:
    """A micro-batch of at most ``size`` records, gathered until ``wait_s`` after the call
    (0: only what was already fetched).

    It first blocks up to ``IDLE_POLL_S`` for one record. Under load that returns at once and
    the window is a plain ``consume(size, wait_s)``'s; a record that ends an idle wait past the
    window is taken with whatever came with it, not held for a window of its own, and a wait
    of 0 blocks there instead of spinning.
    """
    deadline = clock() + wait_s
    messages = consumer.consume(1, IDLE_POLL_S)
    if messages and size > 1:
        messages += consumer.consume(size - 1, max(0.0, deadline - clock()))
    return messages


def background_consumer_config(
    settings: StackSettings, group_id: str | None, **extra: Any
) -> dict[str, Any]:
    """A consumer off the hot path: fetching at most every ``BACKGROUND_FETCH_WAIT_MS``."""
    return _waiting_at_least(BACKGROUND_FETCH_WAIT_MS, settings, group_id, extra)


def history_consumer_config(settings: StackSettings, **extra: Any) -> dict[str, Any]:
    """A reader of a partition's history, outside any group, with partition-EOF events: it
    fetches at least ``HISTORY_FETCH_WAIT_MS`` (see settings), so a long log gets read."""
    return _waiting_at_least(
        HISTORY_FETCH_WAIT_MS, settings, None, {"enable.partition.eof": True, **extra}
    )


def _waiting_at_least(
    wait_ms: int, settings: StackSettings, group_id: str | None, extra: Mapping[str, Any]
) -> dict[str, Any]:
    """``consumer_config`` with a fetch wait of at least ``wait_ms`` (a longer configured
    one is kept)."""
    wait = max(settings.fetch_wait, wait_ms)
    return consumer_config(settings, group_id, **{"fetch.wait.max.ms": wait, **extra})


def quiet_poll_s(config: Mapping[str, Any]) -> float:
    """How long a poll must stay empty to say nothing more is coming: two fetch waits (one
    may have just begun) and a margin."""
    return QUIET_MARGIN_S + 2 * int(config["fetch.wait.max.ms"]) / 1000


def producer_config(settings: StackSettings, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        **client_config(settings),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "compression.type": "none",
    }
    config.update(extra)
    return config

"""Reads changelog partitions from the beginning to their end, for a restore.

The end is where the broker says a partition ends (librdkafka's partition-EOF event at the
last stable offset, read_committed), confirmed by one more quiet poll: the embedded broker's
high watermark can point inside the last record batch, and records after it still arrive.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from services.core.errors import StackError
from services.core.kafka import history_consumer_config, quiet_poll_s
from services.core.settings import StackSettings

log = logging.getLogger(__name__)

Records = list[tuple[bytes, bytes | None]]
_BATCH = 10_000
PROGRESS_EVERY_S = 10.0  # a long restore says how far it has come


def read_changelogs(
    settings: StackSettings, wanted: Iterable[tuple[str, int]], timeout_s: float
) -> dict[tuple[str, int], Records]:
    """Every committed record of the given (topic, partition)s, in offset order, per one."""
    found: dict[tuple[str, int], Records] = {tp: [] for tp in sorted(set(wanted))}
    if not found:
        return found
    config = history_consumer_config(settings)
    quiet_s = quiet_poll_s(config)
    consumer = Consumer(config)
    try:
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in found])
        pending = set(found)
        started = time.monotonic()
        deadline = started + timeout_s
        next_progress = started + PROGRESS_EVERY_S
        while True:
            messages = consumer.consume(_BATCH, quiet_s if not pending else 0.05)
            if not messages and not pending:
                return found
            if time.monotonic() >= next_progress:
                next_progress += PROGRESS_EVERY_S
                log.info(
                    "restoring %d changelog partitions: %d records read in %.0f s, %d at their end",
                    len(found),
                    sum(len(r) for r in found.values()),
                    time.monotonic() - started,
                    len(found) - len(pending),
                )
            for message in messages:
                where = (str(message.topic()), int(message.partition() or 0))
                error = message.error()
                if error is None:
                    found[where].append((message.key() or b"", message.value()))
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(where)
                else:
                    raise StackError(f"reading changelog {where}: {error}")
            if time.monotonic() > deadline:
                raise StackError(
                    f"restoring {sorted(found)} took more than {timeout_s:.0f} s; read "
                    f"{sum(len(r) for r in found.values())} records, {sorted(pending)} never "
                    "reached their end"
                )
    finally:
        consumer.close()

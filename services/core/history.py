"""Reading a small topic's whole history (the monitor's snapshots and alerts): for the monitor's
report, its own start (the alerts it raised before) and `streamml status`."""

from __future__ import annotations

from confluent_kafka import Consumer

from services.core.changelog import read_changelogs
from services.core.errors import SerializationError
from services.core.kafka import history_consumer_config
from services.core.serde import Record, codecs_for
from services.core.settings import StackSettings

READ_TIMEOUT_S = 60.0
METADATA_TIMEOUT_S = 10.0


def read_history(settings: StackSettings, topic: str) -> list[Record]:
    """Every record of a monitor topic (snapshots, alerts), oldest first."""
    probe = Consumer(history_consumer_config(settings))
    try:
        metadata = probe.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics[topic]
    finally:
        probe.close()
    if metadata.error is not None:
        return []
    codec = codecs_for(settings).for_topic(topic)
    found = read_changelogs(settings, [(topic, p) for p in metadata.partitions], READ_TIMEOUT_S)
    records = []
    for values in found.values():
        for _, value in values:
            try:
                records.append(codec.decode(value or b""))
            except SerializationError:
                continue
    return sorted(records, key=lambda r: int(r.get("snapshot_at") or r.get("raised_at") or 0))

"""Collects records from a topic by event id, with the time each one arrived."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable

from confluent_kafka import Consumer

from services.core.kafka import consumer_config
from services.core.serde import Codec, Record
from services.core.settings import StackSettings


class Collector:
    """A read_committed reader of one topic that keeps every record it sees, per event id."""

    def __init__(self, settings: StackSettings, topic: str, codec: Codec) -> None:
        self._codec = codec
        self._consumer = Consumer(consumer_config(settings, f"streamml-collect-{time.time_ns()}"))
        self._consumer.subscribe([topic])
        self.records: dict[str, list[Record]] = defaultdict(list)
        self.received_ms: dict[str, float] = {}

    def poll(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for message in self._consumer.consume(1000, 0.05):
                if message.error() is not None:
                    continue
                record = self._codec.decode(message.value())
                event_id = record["event_id"]
                self.records[event_id].append(record)
                self.received_ms.setdefault(event_id, time.time() * 1000)

    def wait_for(self, event_ids: Iterable[str], timeout_s: float) -> set[str]:
        """Polls until every id has a record or the time is up; returns the ids still missing."""
        missing = set(event_ids) - set(self.records)
        deadline = time.monotonic() + timeout_s
        while missing and time.monotonic() < deadline:
            self.poll(0.2)
            missing -= set(self.records)
        return missing

    def close(self) -> None:
        self._consumer.close()

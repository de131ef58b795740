"""Collects records from a topic by event id, with the time each one arrived.

A background thread reads all the time, so arrival times are true receipt times even while
the caller is busy publishing.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable

from confluent_kafka import Consumer

from services.core.kafka import consume_batch, consumer_config
from services.core.serde import Codec, Record
from services.core.settings import StackSettings


class Collector:
    """A read_committed reader of one topic that keeps every record it sees, per event id."""

    def __init__(self, settings: StackSettings, topic: str, codec: Codec) -> None:
        self._codec = codec
        self._consumer = Consumer(consumer_config(settings, f"streamml-collect-{time.time_ns()}"))
        self._consumer.subscribe([topic])
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.records: dict[str, list[Record]] = defaultdict(list)
        self.received_ms: dict[str, float] = {}
        self._thread = threading.Thread(target=self._read, name=f"collect-{topic}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stopped.is_set():
            # Stamped when the first record comes in, not at the end of a fill window.
            messages = consume_batch(self._consumer, 1000, 0.0)
            received = time.time() * 1000
            values = [m.value() for m in messages if m.error() is None]
            decoded = [self._codec.decode(v) for v in values if v is not None]
            with self._lock:
                for record in decoded:
                    self.records[record["event_id"]].append(record)
                    self.received_ms.setdefault(record["event_id"], received)

    def latest(self, n: int) -> list[Record]:
        """The first record of each of the latest ``n`` event ids to arrive."""
        with self._lock:
            return [records[0] for records in list(self.records.values())[-n:]]

    def missing(self, event_ids: Iterable[str]) -> set[str]:
        with self._lock:
            return {e for e in event_ids if e not in self.records}

    def wait_for(self, event_ids: Iterable[str], timeout_s: float) -> set[str]:
        """Waits until every id has a record or the time is up; returns the ids still missing."""
        missing = set(event_ids)
        deadline = time.monotonic() + timeout_s
        while True:
            missing = self.missing(missing)
            if not missing or time.monotonic() >= deadline:
                return missing
            time.sleep(0.05)

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(10)
        self._consumer.close()

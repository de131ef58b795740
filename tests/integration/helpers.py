"""Plain Kafka clients for tests: publish raw bytes, read a topic back (read_committed)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from services.core.settings import StackSettings


def publish(
    settings: StackSettings, topic: str, items: Iterable[tuple[bytes | None, bytes | None]]
) -> list[tuple[int, int]]:
    """Publishes in order; returns each record's (partition, offset), in the same order."""
    producer = Producer({"bootstrap.servers": settings.bootstrap, "linger.ms": 2})
    positions: list[tuple[int, int]] = []
    for index, (key, value) in enumerate(items):
        positions.append((-1, -1))

        def delivered(error: Any, message: Any, index: int = index) -> None:
            assert error is None, f"record {index} was not delivered: {error}"
            positions[index] = (message.partition(), message.offset())

        producer.produce(topic, key=key, value=value, on_delivery=delivered)
    assert producer.flush(30) == 0, "not every record was delivered"
    return positions


class TopicReader:
    """Reads a topic from the beginning, as an outside read_committed consumer would."""

    def __init__(self, settings: StackSettings, topic: str) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.bootstrap,
                "group.id": f"test-reader-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "session.timeout.ms": 6000,
                "fetch.wait.max.ms": 2,
            }
        )
        self._consumer.subscribe([topic])
        self.values: list[bytes] = []
        self.keys: list[bytes | None] = []

    def read_until(self, done: Callable[[list[bytes]], bool], timeout_s: float) -> list[bytes]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not done(self.values):
            for message in self._consumer.consume(500, 0.1):
                if message.error() is None:
                    self.values.append(message.value())
                    self.keys.append(message.key())
        return self.values

    def settle(self, seconds: float) -> list[bytes]:
        """Keeps reading for a while: anything duplicated or late shows up here."""
        return self.read_until(lambda _: False, seconds)

    def close(self) -> None:
        self._consumer.close()


def by_event_id(
    records: Iterable[dict[str, Any]], wanted: set[str]
) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record["event_id"] in wanted:
            found.setdefault(record["event_id"], []).append(record)
    return found


def clear_trials(settings: StackSettings, model_name: str) -> None:
    """Sends any canary or shadow another test left behind back to candidate, so a test that
    expects the champion alone gets it (the session shares one registry)."""
    from services.core.schemas import SchemaStore
    from services.core.serde import CodecFactory
    from services.registry.stages import end_trial
    from services.registry.versions import CANARY, SHADOW, read_registry

    codecs = CodecFactory(SchemaStore.from_dir(settings.schemas_dir))
    view = read_registry(settings, codecs)
    for stage in (CANARY, SHADOW):
        if view.in_stage(model_name, stage) is not None:
            end_trial(settings, codecs, model_name, stage)


def streamml(
    home: Path, *args: str, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env.update({"STREAMML_HOME": str(home)}, **(extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=home.parent,
        check=False,
    )


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


def skip_what_is_there(stack: StackSettings, topic: str, group: str) -> None:
    """Commits ``group`` at the end of ``topic``: earlier tests of the session left thousands
    of events there, which a peer, one event at a time, would take minutes on."""
    consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": group})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    ends = [
        TopicPartition(topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p))[1])
        for p in partitions
    ]
    consumer.commit(offsets=ends, asynchronous=False)
    consumer.close()

"""The model registry is the compacted topic ``ml.models``: one record per model version.

The key is ``<model_name>@<version>``, so compaction keeps the latest stage of every version,
and ``stage`` says which version serves (champion) and which are candidates or archived.
A promotion rewrites two records (new champion, old champion archived) in one transaction,
so a read_committed reader never sees two champions or none.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from services.core.errors import RegistryError, StackError
from services.core.kafka import consumer_config, log_ends, producer_config
from services.core.serde import CodecFactory
from services.core.settings import StackSettings
from services.core.topics import MODELS

CHAMPION = "champion"
CANARY = "canary"
SHADOW = "shadow"
CANDIDATE = "candidate"
ARCHIVED = "archived"
READ_TIMEOUT_S = 10.0
IDLE_S = 0.3


@dataclass(frozen=True)
class ModelVersion:
    model_name: str
    version: str
    stage: str
    kind: str
    artifact_uri: str
    sha256: str
    dataset_id: str
    feature_names: list[str]
    metrics: dict[str, float] = field(default_factory=dict)
    created_at: int = 0
    updated_at: int = 0
    traffic_share: float = 0.0  # canary only: the share of entity keys it scores

    @property
    def key(self) -> str:
        return f"{self.model_name}@{self.version}"

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ModelVersion:
        return cls(**{k: record[k] for k in cls.__dataclass_fields__})

    def staged(self, stage: str, traffic_share: float = 0.0) -> ModelVersion:
        return replace(self, stage=stage, traffic_share=traffic_share, updated_at=now_ms())


def now_ms() -> int:
    return int(time.time() * 1000)


def _sort_key(version: ModelVersion) -> tuple[int, str]:
    return (int(version.version), "") if version.version.isdigit() else (1 << 62, version.version)


class RegistryView:
    """The registry as of a read: the latest record of every version."""

    def __init__(self, versions: Iterable[ModelVersion]) -> None:
        self._versions = {v.key: v for v in versions}

    def apply(self, version: ModelVersion) -> None:
        self._versions[version.key] = version

    def versions(self, model_name: str) -> list[ModelVersion]:
        return sorted(
            (v for v in self._versions.values() if v.model_name == model_name), key=_sort_key
        )

    def get(self, model_name: str, version: str) -> ModelVersion:
        found = self._versions.get(f"{model_name}@{version}")
        if found is None:
            known = ", ".join(v.version for v in self.versions(model_name)) or "none"
            raise RegistryError(f"{model_name} has no version {version!r} (known: {known})")
        return found

    def champion(self, model_name: str) -> ModelVersion | None:
        return self.in_stage(model_name, CHAMPION)

    def canary(self, model_name: str) -> ModelVersion | None:
        return self.in_stage(model_name, CANARY)

    def shadow(self, model_name: str) -> ModelVersion | None:
        return self.in_stage(model_name, SHADOW)

    def in_stage(self, model_name: str, stage: str) -> ModelVersion | None:
        """The newest version in ``stage`` (the registry's writers keep one per stage)."""
        return next((v for v in reversed(self.versions(model_name)) if v.stage == stage), None)


def read_records(
    settings: StackSettings, codecs: CodecFactory, timeout_s: float = READ_TIMEOUT_S
) -> Iterator[ModelVersion]:
    """Every committed record on ``ml.models``, from the beginning to the end of the log as the
    read starts: a transaction written before it and still being committed is waited for.
    Raises ``StackError`` when the end is not reached in ``timeout_s``, never returns part."""
    consumer = Consumer(consumer_config(settings, None))
    try:
        partitions = consumer.list_topics(MODELS, timeout=timeout_s).topics[MODELS].partitions
        ends = log_ends(settings, MODELS, partitions, timeout_s)
        consumer.assign([TopicPartition(MODELS, p, OFFSET_BEGINNING) for p in partitions])
        remaining = {p for p, end in ends.items() if end > 0}
        passed_end: dict[int, bool] = {}
        codec = codecs.for_topic(MODELS)
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise StackError(
                    f"reading {MODELS} did not reach the end in {timeout_s:.0f} s: partitions "
                    f"{sorted(remaining)} are behind (a transaction on them is still open?)"
                )
            message = consumer.poll(IDLE_S)
            if message is None:
                # The embedded broker reports a high watermark that can be short of the last
                # record (docs/operations.md): past the reported end, quiet means done. A
                # transaction's commit marker takes an offset no record has, so a reader's
                # position at or past the end counts as having passed it.
                positions = consumer.position([TopicPartition(MODELS, p) for p in remaining])
                for tp in positions:
                    if tp.offset >= ends[tp.partition]:
                        passed_end[tp.partition] = True
                remaining = {p for p in remaining if not passed_end.get(p)}
                continue
            if message.error() is not None:
                continue
            value, offset, partition = message.value(), message.offset(), message.partition()
            if value is not None:
                yield ModelVersion.from_record(codec.decode(value))
            if offset is not None and partition is not None and offset + 1 >= ends[partition]:
                passed_end[partition] = True
    except KafkaException as exc:
        raise StackError(f"cannot read {MODELS}: {exc}") from exc
    finally:
        consumer.close()


def read_registry(
    settings: StackSettings, codecs: CodecFactory, timeout_s: float = READ_TIMEOUT_S
) -> RegistryView:
    return RegistryView(read_records(settings, codecs, timeout_s))


def publish(settings: StackSettings, codecs: CodecFactory, versions: list[ModelVersion]) -> None:
    """Writes the records in one transaction: all of them land, or none."""
    producer = Producer(
        producer_config(settings, **{"transactional.id": f"streamml-registry-{uuid.uuid4().hex}"})
    )
    codec = codecs.for_topic(MODELS)
    try:
        producer.init_transactions(READ_TIMEOUT_S)
        producer.begin_transaction()
        for version in versions:
            producer.produce(
                MODELS, key=version.key.encode(), value=codec.encode(version.to_record())
            )
        producer.commit_transaction(READ_TIMEOUT_S)
    except KafkaException as exc:
        raise StackError(f"cannot write to {MODELS}: {exc}") from exc

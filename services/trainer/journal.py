"""The trainer's steps on ``ml.models.events``: what it tells the world, and what it reads back
on a restart to know where each retrain stopped.

Each step is one record keyed ``<model_name>@<version>``, flushed before the trainer goes on,
so the journal never says less than what was done (a crash can only leave a step done and not
yet told, which the restart finds in the registry).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from services.core.delivery import Acknowledged
from services.core.errors import StackError
from services.core.kafka import history_consumer_config, producer_config
from services.core.serde import CodecFactory, Record
from services.core.settings import StackSettings
from services.core.topics import MODEL_EVENTS
from services.registry.versions import now_ms

CLOSE_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0
LOADED, REFUSED = "loaded", "refused"  # the schema's outcome: went on, or was stopped


class Step(StrEnum):
    LOAD = "load"  # a scorer's, not the trainer's
    REQUESTED = "requested"
    SKIPPED = "skipped"
    DATASET_BUILT = "dataset_built"
    TRAINED = "trained"
    GATE_PASSED = "gate_passed"
    GATE_FAILED = "gate_failed"
    CANARY_STARTED = "canary_started"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABANDONED = "abandoned"


# A retrain ends at one of these; the first three end it having judged a candidate, so the
# cooldown counts from them.
JUDGED = frozenset({Step.GATE_FAILED, Step.PROMOTED, Step.ROLLED_BACK})
FINAL = JUDGED | {Step.ABANDONED, Step.SKIPPED}


@dataclass(frozen=True)
class Told:
    """One step as read back from the journal."""

    step: Step
    version: str
    request_id: str
    reason: str
    at: int
    dataset_id: str = ""
    figures: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: Record) -> Told:
        return cls(
            Step(record["step"]),
            record["version"],
            record["request_id"],
            record["reason"],
            int(record["at"]),
            record["dataset_id"],
            dict(record["figures"]),
        )


class Journal:
    """Writes the trainer's steps for one model."""

    def __init__(
        self, settings: StackSettings, codecs: CodecFactory, model_name: str, instance: str
    ) -> None:
        self._model_name = model_name
        self._service = f"trainer/{instance}"
        self._codec = codecs.for_topic(MODEL_EVENTS)
        self._producer = Acknowledged(producer_config(settings))

    def tell(
        self,
        step: Step,
        version: str,
        request_id: str,
        reason: str,
        *,
        role: str,
        sha256: str = "",
        dataset_id: str = "",
        figures: dict[str, float] | None = None,
    ) -> Told:
        at = now_ms()
        stopped = step in FINAL and step is not Step.PROMOTED
        record: dict[str, Any] = {
            "model_name": self._model_name,
            "version": version,
            "role": role,
            "outcome": REFUSED if stopped else LOADED,
            "reason": reason,
            "sha256": sha256,
            "service": self._service,
            "at": at,
            "step": step.value,
            "request_id": request_id,
            "dataset_id": dataset_id,
            "figures": {k: float(v) for k, v in (figures or {}).items()},
        }
        key = f"{self._model_name}@{version}".encode()
        self._producer.send(MODEL_EVENTS, key, self._codec.encode(record))
        self._producer.confirm(f"the {step} step of {key.decode()}")
        return Told(step, version, request_id, reason, at, dataset_id, record["figures"])

    def close(self) -> None:
        self._producer.close(CLOSE_TIMEOUT_S)


def read_journal(settings: StackSettings, codecs: CodecFactory, model_name: str) -> list[Record]:
    """Every record on ``ml.models.events`` about ``model_name`` (loads included), in order."""
    return [r for r in _read_all(settings, codecs) if r["model_name"] == model_name]


def trainer_steps(records: list[Record]) -> list[Told]:
    return [Told.from_record(r) for r in records if r["step"] != Step.LOAD.value]


def _read_all(settings: StackSettings, codecs: CodecFactory) -> Iterator[Record]:
    codec = codecs.for_topic(MODEL_EVENTS)
    consumer = Consumer(history_consumer_config(settings))
    try:
        metadata = consumer.list_topics(MODEL_EVENTS, timeout=READ_TIMEOUT_S).topics[MODEL_EVENTS]
        ends = {
            p: consumer.get_watermark_offsets(
                TopicPartition(MODEL_EVENTS, p), timeout=READ_TIMEOUT_S
            )[1]
            for p in metadata.partitions
        }
        remaining = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(MODEL_EVENTS, p, OFFSET_BEGINNING) for p in remaining])
        deadline = time.monotonic() + READ_TIMEOUT_S
        while remaining:
            if time.monotonic() > deadline:
                raise StackError(f"{MODEL_EVENTS} was not read to its end in {READ_TIMEOUT_S} s")
            message = consumer.poll(0.5)
            if message is None:
                continue
            partition, offset, value = message.partition(), message.offset(), message.value()
            if message.error() is None and value is not None:
                yield codec.decode(value)
            # A transaction marker or the partition's end: past the end recorded above.
            if partition is not None and offset is not None and offset + 1 >= ends[partition]:
                remaining.discard(partition)
            elif message.error() is not None and partition is not None:
                position = consumer.position([TopicPartition(MODEL_EVENTS, partition)])[0]
                if position.offset >= ends[partition]:
                    remaining.discard(partition)
    except KafkaException as exc:
        raise StackError(f"cannot read {MODEL_EVENTS}: {exc}") from exc
    finally:
        consumer.close()

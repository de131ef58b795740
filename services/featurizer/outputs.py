"""The featurizer's outputs (vectors, forwards, dead letters) through one confluent-kafka producer.

librdkafka batches and sends in C, far cheaper per record than faust's producer path. A micro-batch
is acknowledged to faust only after ``flush`` has seen every record delivered, so a crash can
replay records but never lose them.
"""

from __future__ import annotations

import asyncio

from confluent_kafka import KafkaError, Message, Producer

from services.core.errors import StackError
from services.core.kafka import producer_config
from services.core.settings import StackSettings

FLUSH_TIMEOUT_S = 30.0


class Outputs:
    def __init__(self, settings: StackSettings) -> None:
        self._producer = Producer(producer_config(settings, **{"linger.ms": 1}))
        self._failed: list[str] = []

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self._producer.produce(topic, key=key, value=value, on_delivery=self._delivered)

    async def flush(self) -> None:
        remaining = await asyncio.get_running_loop().run_in_executor(
            None, self._producer.flush, FLUSH_TIMEOUT_S
        )
        failed, self._failed = self._failed, []
        if remaining or failed:
            raise StackError(
                f"{remaining} records undelivered after {FLUSH_TIMEOUT_S:.0f} s, "
                f"{len(failed)} failed ({'; '.join(failed[:3])}); stopping so they are replayed"
            )

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failed.append(f"{message.topic()}: {error}")

"""Dead letters of the feature log, sent with a plain producer and confirmed before a commit.

A record on ``<domain>.features`` was written by the featurizer and so should always decode;
one that does not is kept whole on ``<domain>.features.dlq`` rather than stopping the log.
Its offset may only be committed once the dead letter is delivered, hence ``confirm()``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from services.core.deadletter import SourcePosition, dead_letter
from services.core.errors import StackError
from services.core.serde import Codec

log = logging.getLogger(__name__)

SERVICE = "feature-log"
FLUSH_TIMEOUT_S = 30.0


class DeadLetters:
    def __init__(self, producer: Any, topic: str, codec: Codec) -> None:
        self._producer = producer
        self._topic = topic
        self._codec = codec
        self._failures: list[str] = []

    def send(self, message: Any, reason: str, detail: str) -> None:
        """``message``: the confluent_kafka.Message that could not be used."""
        source = SourcePosition(message.topic(), message.partition(), message.offset())
        letter = dead_letter(
            reason=reason,
            detail=detail,
            key=message.key(),
            value=message.value(),
            source=source,
            service=SERVICE,
            failed_at_ms=int(time.time() * 1000),
        )
        self._producer.produce(
            self._topic,
            key=message.key(),
            value=self._codec.encode(letter),
            on_delivery=self._delivered,
        )
        log.warning("dead letter (%s) for %s: %s", reason, source, detail)

    def confirm(self) -> None:
        """Returns once every dead letter sent so far is delivered; raises if one was not."""
        if self._producer.flush(FLUSH_TIMEOUT_S) or self._failures:
            raise StackError(f"dead letters not delivered to {self._topic}: {self._failures}")

    def close(self) -> None:
        self._producer.flush(FLUSH_TIMEOUT_S)

    def _delivered(self, error: Any, _message: Any) -> None:
        if error is not None:
            self._failures.append(str(error))

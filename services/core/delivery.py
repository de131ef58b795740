"""Records that must be acknowledged before their sender goes on: alerts, retraining requests,
the trainer's journal steps, dead letters whose source offset is committed next.

A broker that restarts is away for seconds (a controlled shutdown, then the node reloading its
logs), longer under load. librdkafka keeps each record and retries it until its
``message.timeout.ms`` (5 minutes by default); a sender that gave up after a few seconds of its
own would stop a service that had lost nothing. So ``confirm`` waits as long as librdkafka
does, says every ``PROGRESS_S`` what it is still waiting for, and raises only for a record
librdkafka itself gave up on or the broker refused.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Producer

from services.core.errors import StackError

log = logging.getLogger(__name__)

PROGRESS_S = 10.0


class Acknowledged:
    """A plain producer whose records are confirmed: ``confirm`` returns once every record sent
    so far is acknowledged, and raises ``StackError`` naming the ones that were not."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        self._failures: list[str] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        self._producer.produce(topic, value, key, on_delivery=self._delivered)

    def confirm(self, what: str) -> None:
        waited = 0.0
        while left := self._producer.flush(PROGRESS_S):
            waited += PROGRESS_S
            log.warning(
                "%s: %d records not acknowledged after %.0f s (the broker may be restarting); "
                "still waiting, as long as librdkafka retries them",
                what,
                left,
                waited,
            )
        if self._failures:
            failures, self._failures = self._failures, []
            raise StackError(f"{what} was not delivered: {'; '.join(failures)}")

    def close(self, timeout_s: float) -> None:
        left = self._producer.flush(timeout_s)
        if left:
            log.warning("%d records were not acknowledged before the producer closed", left)

    def _delivered(self, error: Any, _message: Any) -> None:
        if error is not None:
            self._failures.append(str(error))

"""Waiting for enough labelled pairs after a change point before training on them."""

from __future__ import annotations

import logging

from confluent_kafka import Consumer, KafkaException, TopicPartition

from services.core.declarations import Domain
from services.core.errors import StackError
from services.core.kafka import background_consumer_config
from services.core.labelled import labelled_input
from services.core.serde import CodecFactory
from services.core.settings import StackSettings

METADATA_TIMEOUT_S = 10.0
SEEK_SLACK_MS = 60_000

log = logging.getLogger(__name__)


class LabelledCount:
    """Counts the distinct events on ``<domain>.labelled`` with the model's whole input and an
    event time at or after ``since_ms``, as the monitor joins them.

    It starts reading where records were written from a little before ``since_ms`` minus the
    domain's ``max_future`` (an event is joined after it happened, give or take a producer's
    clock), so it reads neither the whole history nor misses a pair."""

    def __init__(
        self, settings: StackSettings, domain: Domain, codecs: CodecFactory, since_ms: int
    ) -> None:
        self._domain, self._since = domain, since_ms
        self._topic = domain.topics.labelled
        self._codec = codecs.for_topic(self._topic)
        self._names = domain.model_inputs
        self._seen: set[str] = set()
        self._consumer = Consumer(background_consumer_config(settings, None))
        start = since_ms - int(domain.max_future.total_seconds() * 1000) - SEEK_SLACK_MS
        try:
            metadata = self._consumer.list_topics(self._topic, timeout=METADATA_TIMEOUT_S)
            self.partitions = sorted(metadata.topics[self._topic].partitions)
            wanted = [TopicPartition(self._topic, p, max(start, 0)) for p in self.partitions]
            self._consumer.assign(
                self._consumer.offsets_for_times(wanted, timeout=METADATA_TIMEOUT_S)
            )
        except KafkaException as exc:
            self._consumer.close()
            raise StackError(f"cannot read {self._topic}: {exc}") from exc

    @property
    def count(self) -> int:
        return len(self._seen)

    def poll(self) -> int:
        """Reads what has arrived; returns the count so far."""
        for message in self._consumer.consume(2000, 0.5):
            value = message.value()
            if message.error() is not None or value is None:
                continue
            try:
                pair = self._codec.decode(value)
            except Exception as exc:  # counted by the dataset's manifest, not here
                log.debug("undecodable %s record: %s", self._topic, exc)
                continue
            if int(pair["event_time"]) < self._since:
                continue
            if labelled_input(self._domain, pair, self._names) is not None:
                self._seen.add(str(pair["event_id"]))
        return self.count

    def ends(self) -> dict[int, int]:
        """Each partition's committed end now: the dataset's upper bound."""
        try:
            return {
                p: self._consumer.get_watermark_offsets(
                    TopicPartition(self._topic, p), timeout=METADATA_TIMEOUT_S
                )[1]
                for p in self.partitions
            }
        except KafkaException as exc:
            raise StackError(f"cannot read {self._topic}'s ends: {exc}") from exc

    def close(self) -> None:
        self._consumer.close()

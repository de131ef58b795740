"""Consumer groups' lag, read from outside: each group's committed offsets against the ends of
its topics, without joining the group (the soak samples it every few seconds)."""

from __future__ import annotations

from confluent_kafka import Consumer, KafkaException, TopicPartition

from services.bench.output import say
from services.core.settings import StackSettings


class GroupLags:
    """Each group's committed offsets against the ends of its topics (no group is joined)."""

    def __init__(self, settings: StackSettings, groups: dict[str, list[str]]) -> None:
        self._groups = groups
        self._consumers = {
            group: Consumer({"bootstrap.servers": settings.bootstrap, "group.id": group})
            for group in groups
        }

    def read(self) -> dict[str, int]:
        """Records behind, per group; a group whose offsets did not come in time is left out
        of this sample (a soak outlives a slow answer; 25 minutes into the first 60-minute
        run, one committed-offsets request timed out and ended it)."""
        found = {}
        for group, topics in self._groups.items():
            try:
                found[group] = self._behind(self._consumers[group], topics)
            except KafkaException as exc:
                say(f"soak: the lag of {group} is missing from this sample ({exc})")
        return found

    @staticmethod
    def _behind(consumer: Consumer, topics: list[str]) -> int:
        partitions = [
            TopicPartition(topic, number)
            for topic in topics
            for number in consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ]
        behind = 0
        for committed in consumer.committed(partitions, timeout=10):
            _, end = consumer.get_watermark_offsets(committed, timeout=10)
            behind += end - max(committed.offset, 0)
        return behind

    def close(self) -> None:
        for consumer in self._consumers.values():
            consumer.close()

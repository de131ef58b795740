"""The event ids a scorer has already predicted, newest kept, oldest forgotten first.

The set lives in memory; ``recent_predictions`` rebuilds it at start-up from the scorer's own
committed predictions, so a feature vector that arrives again after a restart (or a crash) is
still dropped. The rebuild is bounded: ids of predictions published within the lookback, at
most ``capacity`` records read back per partition, within a timeout.

Reading "to the end" follows the embedded broker's rules (docs/operations.md): its high
watermark can be short of the last record, so the end is the partition-EOF event confirmed by
a quiet poll. It also answers an offset lookup by time with the log start whatever the time
asked, so the lookup is checked with a time in the future first, and when the answer is not
believable the read starts ``capacity`` records before the reported end instead; records
older than the lookback are skipped either way.
"""

from __future__ import annotations

import logging
import time
from array import array
from dataclasses import dataclass

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from services.core.errors import SerializationError, StackError
from services.core.kafka import history_consumer_config, quiet_poll_s
from services.core.serde import Codec
from services.core.settings import StackSettings
from services.core.windows import event_hash
from services.scorer.settings import ScorerSettings

log = logging.getLogger(__name__)

_BATCH = 10_000
_BUSY_POLL_S = 0.05
_PROBE_AHEAD_MS = 24 * 3600 * 1000  # a time no record can have yet: a broker must answer -1


class RecentIds:
    """At most ``capacity`` event ids, oldest forgotten first; an id added again is a no-op.

    Ids are kept as their 64-bit hashes (``event_hash``) in two arrays allocated whole at the
    start: a ring in arrival order, and an open-addressing table (linear probing, at most half
    full) to look them up. The memory is about 24 bytes per id of capacity from the first
    event on, so a scorer's RSS does not grow as the set fills. Two ids that share a 64-bit hash
    would be taken for one: with a million ids kept, about one lookup in 10^13.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a recent-id set needs a capacity of at least 1, not {capacity}")
        self._capacity = capacity
        size = 1 << max(2 * capacity - 1, 1).bit_length()  # a power of two, at least 2 x capacity
        self._mask = size - 1
        self._slots = array("q", bytes(8 * size))  # 0 is an empty slot; written, so resident
        self._ring = array("q", bytes(8 * capacity))
        self._oldest = 0
        self._count = 0

    @property
    def nbytes(self) -> int:
        """The memory the two arrays take."""
        return (len(self._slots) + len(self._ring)) * 8

    def __contains__(self, event_id: object) -> bool:
        return self._find(_key(str(event_id)))[1]

    def __len__(self) -> int:
        return self._count

    def add(self, event_id: str) -> None:
        key = _key(event_id)
        slot, present = self._find(key)
        if present:
            return
        if self._count == self._capacity:
            self._forget(self._ring[self._oldest])
            slot = self._find(key)[0]  # forgetting can move entries into the probe path
            self._ring[self._oldest] = key
            self._oldest = (self._oldest + 1) % self._capacity
        else:
            self._ring[(self._oldest + self._count) % self._capacity] = key
            self._count += 1
        self._slots[slot] = key

    def _find(self, key: int) -> tuple[int, bool]:
        """The slot that holds ``key``, or the empty slot where it would go."""
        slots, mask = self._slots, self._mask
        slot = key & mask
        while True:
            held = slots[slot]
            if held == key:
                return slot, True
            if held == 0:
                return slot, False
            slot = (slot + 1) & mask

    def _forget(self, key: int) -> None:
        """Removes ``key`` and shifts back the entries after it that probed past it, so every
        entry stays reachable from its home slot without tombstones."""
        slots, mask = self._slots, self._mask
        hole, present = self._find(key)
        if not present:
            return
        slots[hole] = 0
        slot = hole
        while True:
            slot = (slot + 1) & mask
            held = slots[slot]
            if held == 0:
                return
            home = held & mask
            # The entry may stay when its home lies cyclically in (hole, slot].
            if (home - hole - 1) & mask < (slot - hole) & mask:
                continue
            slots[hole] = held
            slots[slot] = 0
            hole = slot


def _key(event_id: str) -> int:
    key = event_hash(event_id)
    return key or 1  # 0 marks an empty slot


@dataclass
class RebuildStats:
    """What a rebuild read: records seen, and those it skipped and why."""

    records: int = 0
    undecodable: int = 0
    older: int = 0
    timed_out: bool = False


class PredictionIds:
    """Takes prediction records one at a time; adds the event ids of those recent enough."""

    def __init__(self, ids: RecentIds, codec: Codec, since_ms: int) -> None:
        self.ids = ids
        self.stats = RebuildStats()
        self._codec = codec
        self._since_ms = since_ms

    def take(self, value: bytes | None, timestamp_ms: int | None) -> None:
        self.stats.records += 1
        if timestamp_ms is not None and timestamp_ms < self._since_ms:
            self.stats.older += 1
            return
        if value is None:
            self.stats.undecodable += 1
            return
        try:
            event_id = self._codec.decode(value)["event_id"]
        except (SerializationError, KeyError):
            self.stats.undecodable += 1
            return
        self.ids.add(str(event_id))


def start_offset(low: int, high: int, by_time: int | None, capacity: int) -> int:
    """Where to start reading one partition.

    ``by_time`` is the broker's first offset at or after the lookback: None when it cannot
    tell, -1 when no record is that recent. Never more than ``capacity`` records before the
    reported end (``high``), never before the log start (``low``).
    """
    floor = max(low, high - capacity)
    if by_time is None:
        return floor
    if by_time < 0:
        return max(low, high)  # nothing recent: only what may lie past the reported end
    return max(floor, by_time)


def recent_predictions(
    settings: StackSettings,
    topic: str,
    codec: Codec,
    capacity: int,
    lookback_ms: int,
    timeout_s: float,
) -> RecentIds:
    """The event ids of the committed predictions on ``topic`` published in the last
    ``lookback_ms``, newest last, at most ``capacity`` of them.

    Undecodable records are skipped and counted. When the read takes longer than
    ``timeout_s`` it stops there, warns, and returns what it has. Raises StackError when the
    topic cannot be read at all.
    """
    ids = RecentIds(capacity)
    if lookback_ms <= 0:
        log.info("%s: dedup lookback is 0, no recent event ids rebuilt", topic)
        return ids
    started = time.monotonic()
    deadline = started + timeout_s
    now_ms = int(time.time() * 1000)
    collector = PredictionIds(ids, codec, now_ms - lookback_ms)
    config = history_consumer_config(settings)
    consumer = Consumer(config)
    try:
        starts, how = _start_offsets(consumer, topic, capacity, now_ms - lookback_ms, deadline)
        _read_to_end(consumer, topic, starts, collector, deadline, quiet_poll_s(config))
    except KafkaException as exc:
        raise StackError(f"cannot read {topic} to rebuild the recent event ids: {exc}") from exc
    finally:
        consumer.close()
    stats = collector.stats
    log.info(
        "%s: rebuilt %d recent event ids in %.2f s (from %s; %d records read, %d older than "
        "the lookback, %d undecodable)",
        topic,
        len(ids),
        time.monotonic() - started,
        how,
        stats.records,
        stats.older,
        stats.undecodable,
    )
    if stats.undecodable:
        log.warning("%s: skipped %d undecodable records", topic, stats.undecodable)
    if stats.timed_out:
        log.warning(
            "%s: rebuilding the recent event ids took more than %.0f s; stopped there, the "
            "newest ids may be missing and a vector seen again may be scored again",
            topic,
            timeout_s,
        )
    return ids


def recent_predictions_for(settings: ScorerSettings, topic: str, codec: Codec) -> RecentIds:
    """``recent_predictions`` with the scorer's settings."""
    return recent_predictions(
        settings,
        topic,
        codec,
        settings.scorer_dedup_capacity,
        settings.scorer_dedup_lookback_s * 1000,
        settings.scorer_dedup_timeout_s,
    )


def _remaining(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.1)


def _start_offsets(
    consumer: Consumer, topic: str, capacity: int, since_ms: int, deadline: float
) -> tuple[dict[int, int], str]:
    """Each partition's first offset to read, and how it was found (for the log)."""
    found = consumer.list_topics(topic, timeout=_remaining(deadline)).topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise StackError(
            f"topic {topic} does not exist; create the stack's topics first (streamml topics "
            "create, or streamml up)"
        )
    marks: dict[int, tuple[int, int]] = {
        p: consumer.get_watermark_offsets(
            TopicPartition(topic, p), timeout=_remaining(deadline), cached=False
        )
        for p in sorted(found.partitions)
    }
    by_time = _offsets_by_time(consumer, topic, marks, since_ms, deadline)
    if all(high == 0 for _, high in marks.values()):
        how = "an empty topic"
    elif by_time is not None:
        how = "the offsets for the lookback's start"
    else:
        how = f"at most the last {capacity} records"
    starts = {
        p: start_offset(low, high, None if by_time is None else by_time.get(p), capacity)
        for p, (low, high) in marks.items()
    }
    return starts, f"{how}, {len(starts)} partitions"


def _offsets_by_time(
    consumer: Consumer,
    topic: str,
    marks: dict[int, tuple[int, int]],
    since_ms: int,
    deadline: float,
) -> dict[int, int] | None:
    """The broker's offsets for ``since_ms``, or None when its answer cannot be trusted."""

    def lookup(at_ms: int) -> list[TopicPartition]:
        wanted = [TopicPartition(topic, p, at_ms) for p in marks]
        answer: list[TopicPartition] = consumer.offsets_for_times(
            wanted, timeout=_remaining(deadline)
        )
        return answer

    try:
        future = lookup(int(time.time() * 1000) + _PROBE_AHEAD_MS)
        answer = lookup(since_ms)
    except KafkaException as exc:
        log.info("%s: the broker cannot look offsets up by time (%s)", topic, exc)
        return None
    if any(tp.error is not None for tp in [*future, *answer]):
        log.info("%s: the broker's offset lookup by time failed for a partition", topic)
        return None
    # No record has a timestamp a day ahead: a broker that honours the time answers -1.
    if any(0 <= tp.offset < marks[tp.partition][1] for tp in future):
        log.info(
            "%s: the broker ignores the time of an offset lookup (the embedded broker does)",
            topic,
        )
        return None
    return {tp.partition: tp.offset for tp in answer}


def _read_to_end(
    consumer: Consumer,
    topic: str,
    starts: dict[int, int],
    collector: PredictionIds,
    deadline: float,
    quiet_s: float,
) -> None:
    """Reads every partition from its start to its end: the partition-EOF event, then a quiet
    poll (the embedded broker's high watermark can be short of the last record)."""
    consumer.assign([TopicPartition(topic, p, offset) for p, offset in starts.items()])
    pending = set(starts)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            collector.stats.timed_out = True
            return
        messages = consumer.consume(_BATCH, min(left, _BUSY_POLL_S if pending else quiet_s))
        if not messages and not pending:
            return
        for message in messages:
            error = message.error()
            if error is None:
                collector.take(message.value(), _timestamp_ms(message))
            elif error.code() == KafkaError._PARTITION_EOF:
                pending.discard(int(message.partition() or 0))
            else:
                raise StackError(f"reading {topic} [{message.partition()}]: {error}")


def _timestamp_ms(message: Message) -> int | None:
    kind, value = message.timestamp()
    return None if kind == TIMESTAMP_NOT_AVAILABLE else int(value)

"""A batch of consumed records: rows per partition, the offsets to commit, its size and age.

Pure bookkeeping, no Kafka: the sink adds each record (as a row, or as skipped when it went to
the DLQ) and takes the batch when it is due. A partition may have offsets to commit and no
rows, when every record of it was a dead letter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from services.featurelog.parts import Row


@dataclass
class Batch:
    rows: dict[int, list[Row]] = field(default_factory=dict)
    first_offsets: dict[int, int] = field(default_factory=dict)  # of each partition's rows
    next_offsets: dict[int, int] = field(default_factory=dict)  # what to commit
    records: int = 0

    @property
    def row_count(self) -> int:
        return sum(len(rows) for rows in self.rows.values())


class PendingBatch:
    """Collects records until the batch is full or its oldest record is old enough."""

    def __init__(
        self, max_rows: int, max_age_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_rows = max_rows
        self._max_age_s = max_age_s
        self._clock = clock
        self._batch = Batch()
        self._since: float | None = None

    def add(self, partition: int, offset: int, row: Row) -> None:
        self._batch.rows.setdefault(partition, []).append(row)
        self._batch.first_offsets.setdefault(partition, offset)
        self.skip(partition, offset)

    def skip(self, partition: int, offset: int) -> None:
        """A record that is consumed (to be committed) but not written."""
        batch = self._batch
        batch.next_offsets[partition] = max(batch.next_offsets.get(partition, 0), offset + 1)
        batch.records += 1
        if self._since is None:
            self._since = self._clock()

    @property
    def records(self) -> int:
        return self._batch.records

    def room(self) -> int:
        return max(self._max_rows - self._batch.records, 1)

    def seconds_left(self) -> float | None:
        """Until the batch is due by age; None while it is empty."""
        if self._since is None:
            return None
        return max(self._max_age_s - (self._clock() - self._since), 0.0)

    def due(self) -> bool:
        left = self.seconds_left()
        return left is not None and (self._batch.records >= self._max_rows or left <= 0.0)

    def take(self) -> Batch:
        batch, self._batch, self._since = self._batch, Batch(), None
        return batch

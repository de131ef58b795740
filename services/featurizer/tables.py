"""faust tables seen as the processor's WindowStore, written once per micro-batch."""

from __future__ import annotations

from typing import Any

import faust

from services.featurizer.windows import EntityWindow


class PartitionedTable(faust.Table):  # type: ignore[type-arg]
    """A table whose writes name their changelog partition.

    faust takes a write's changelog partition from the event being iterated, and refuses a
    write outside one. Micro-batches write after iterating, so each write names the partition
    of the event its key came from: the same partition, as faust would pick.
    """

    target_partition: int | None = None

    def partition_for_key(self, key: Any) -> int | None:
        if self.target_partition is not None:
            return self.target_partition
        partition: int | None = super().partition_for_key(key)
        return partition


def windows_table(app: faust.App, name: str, partitions: int) -> PartitionedTable:
    table = PartitionedTable(
        app, name=name, beacon=app.tables.beacon, partitions=partitions, key_type=bytes
    )
    app.tables.add(table)
    return table


class BatchWindows:
    """Windows read once per micro-batch and written back once, however many events they took.

    One changelog record per entity per batch instead of one per event. Set ``partition`` to
    the partition of the event being processed before handing this to the processor.
    """

    def __init__(self, table: PartitionedTable) -> None:
        self._table = table
        self._loaded: dict[str, EntityWindow | None] = {}
        self._dirty: dict[str, int] = {}
        self.partition = 0

    def get(self, key: str) -> EntityWindow | None:
        if key not in self._loaded:
            data = self._table.get(key.encode())
            self._loaded[key] = None if data is None else EntityWindow.from_json(data)
        return self._loaded[key]

    def put(self, key: str, window: EntityWindow) -> None:
        self._loaded[key] = window
        self._dirty[key] = self.partition

    def write_back(self) -> int:
        """Writes every changed window to its changelog partition; returns how many."""
        try:
            for key, partition in self._dirty.items():
                window = self._loaded[key]
                assert window is not None
                self._table.target_partition = partition
                self._table[key.encode()] = window.to_json()
        finally:
            self._table.target_partition = None
        written = len(self._dirty)
        self._loaded.clear()
        self._dirty.clear()
        return written

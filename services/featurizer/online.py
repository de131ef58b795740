"""Batched writes to the Feast online store.

Rows wait in a buffer that keeps, per entity and feature view, only the newest row by event
time; a flush writes them all with one Feast call per view. Feast's Redis store compares each
row's event time with the stored one and skips older rows, so whatever order flushes land in,
an older value never overwrites a newer one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

PendingRows = dict[str, dict[str, "OnlineRow"]]


@dataclass(frozen=True, slots=True)
class OnlineRow:
    key_field: str
    key: str
    event_time_ms: int
    values: Mapping[str, float | int | None]


class OnlineBuffer:
    """Collects the newest row per (feature view, entity key) until it is taken for a flush."""

    def __init__(self) -> None:
        self._rows: PendingRows = {}
        self._count = 0
        self._since: float | None = None

    def add(self, view: str, row: OnlineRow) -> None:
        rows = self._rows.setdefault(view, {})
        current = rows.get(row.key)
        if current is None or row.event_time_ms >= current.event_time_ms:
            rows[row.key] = row
        self._count += 1
        if self._since is None:
            self._since = time.monotonic()

    def due(self, max_rows: int, max_age_s: float) -> bool:
        if self._since is None:
            return False
        return self._count >= max_rows or time.monotonic() - self._since >= max_age_s

    def take(self) -> PendingRows:
        rows, self._rows, self._count, self._since = self._rows, {}, 0, None
        return rows


def write_rows(store: Any, pending: PendingRows) -> int:
    """Writes the taken rows, one Feast call per feature view; returns the number of rows."""
    written = 0
    for view, rows in pending.items():
        if not rows:
            continue
        frame = pd.DataFrame([_flat(row) for row in rows.values()])
        store.write_to_online_store(view, frame)
        written += len(frame)
    return written


def _flat(row: OnlineRow) -> dict[str, Any]:
    return {
        row.key_field: row.key,
        "event_time": datetime.fromtimestamp(row.event_time_ms / 1000, tz=UTC),
        **row.values,
    }

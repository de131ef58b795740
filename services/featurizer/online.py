"""Batched writes to the Feast online store (Redis), in Feast's own layout.

Rows wait in a buffer that keeps, per feature view and entity key, only the newest row by
event time. A write sends the whole buffer as one server-side script call: for each row,
Redis compares the row's event time with the ``_ts:<view>`` already stored and writes the
row only when it is not older. So whatever order writes land in, an older value never
overwrites a newer one, and the featurizer spends no round trip reading timestamps back.
Equal times: the later-arrived row counts more events, so it wins (Feast itself would keep
the first).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from services.featurestore.redis_layout import RedisLayout, ViewLayout

PendingRows = dict[str, dict[str, "OnlineRow"]]
ROWS_PER_CALL = 2000
# A write that takes longer than this fails and is tried again (the store hangs or is gone).
WRITE_TIMEOUT_S = 5.0

# KEYS: one per row, in order. ARGV: groups of rows of one feature view, each group
# ts field, field count n, the n field names, row count m, then per row: its timestamp bytes
# and n values. A view's names travel once per group, not once per row. Returns how many rows
# were written.
WRITE_NEWER_SCRIPT = """
local function stored_time(bytes)
  local seconds, nanos, i = 0, 0, 1
  while i <= #bytes do
    local tag = string.byte(bytes, i)
    i = i + 1
    local value, scale, b = 0, 1, 128
    while b >= 128 do
      b = string.byte(bytes, i)
      i = i + 1
      value = value + (b % 128) * scale
      scale = scale * 128
    end
    if tag == 8 then seconds = value elseif tag == 16 then nanos = value end
  end
  return seconds, nanos
end
local written, a, k = 0, 1, 1
while a <= #ARGV do
  local ts_field, n = ARGV[a], tonumber(ARGV[a + 1])
  local names = a + 2
  local rows = tonumber(ARGV[names + n])
  a = names + n + 1
  for r = 1, rows do
    local ts_bytes = ARGV[a]
    local old = redis.call('HGET', KEYS[k], ts_field)
    local newer = true
    if old then
      local s, ns = stored_time(old)
      local seconds, nanos = stored_time(ts_bytes)
      newer = seconds > s or (seconds == s and nanos >= ns)
    end
    if newer then
      local args = {ts_field, ts_bytes}
      for j = 1, n do
        args[#args + 1] = ARGV[names + j - 1]
        args[#args + 1] = ARGV[a + j]
      end
      redis.call('HSET', KEYS[k], unpack(args))
      written = written + 1
    end
    a = a + 1 + n
    k = k + 1
  end
end
return written
"""


@dataclass(slots=True)  # one per entity and batch: not frozen, which costs more to build
class OnlineRow:
    key: str
    event_time_ms: int
    values: Mapping[str, float | int | None]


class OnlineBuffer:
    """Collects the newest row per (feature view, entity key) until it is taken for a write."""

    def __init__(self) -> None:
        self._rows: PendingRows = {}

    def add(self, view: str, row: OnlineRow) -> None:
        rows = self._rows.get(view)
        if rows is None:
            rows = self._rows[view] = {}
        current = rows.get(row.key)
        if current is None or row.event_time_ms >= current.event_time_ms:
            rows[row.key] = row

    def __len__(self) -> int:
        return sum(len(rows) for rows in self._rows.values())

    def take(self) -> PendingRows:
        rows, self._rows = self._rows, {}
        return rows


class OnlineWriter:
    """Writes taken rows, a script call per ``ROWS_PER_CALL`` rows; returns the rows written."""

    def __init__(
        self, client: redis.Redis, layout: RedisLayout, views: Mapping[str, ViewLayout]
    ) -> None:
        self._script: Any = client.register_script(WRITE_NEWER_SCRIPT)
        self._layout = layout
        self._views = views

    def write(self, pending: PendingRows) -> int:
        keys: list[bytes] = []
        args: list[Any] = []
        written = 0
        entity_key, timestamp, values_of = (
            self._layout.entity_key,
            self._layout.timestamp,
            self._layout.hash_values,
        )
        for view_name, rows in pending.items():
            view = self._views[view_name]
            header = (view.ts_field, len(view.fields), *view.field_keys)
            items = list(rows.values())
            for start in range(0, len(items), ROWS_PER_CALL):
                chunk = items[start : start + ROWS_PER_CALL]
                args += header
                args.append(len(chunk))
                for row in chunk:
                    keys.append(entity_key(view.key_field, row.key))
                    args.append(timestamp(row.event_time_ms))
                    args += values_of(view, row.values)
                if len(keys) >= ROWS_PER_CALL:
                    written += int(self._script(keys=keys, args=args))
                    keys, args = [], []
        if keys:
            written += int(self._script(keys=keys, args=args))
        return written

"""Training datasets from history: ``<domain>.labelled``, the monitor's join, read by offsets.

Each labelled record holds the model's input exactly as it was served (the vector and the
online features the scorer read) and the outcome that came later, so a dataset read from it is
point-in-time correct by construction and has no online/offline skew: nothing is recomputed.
(Feast's offline store is not needed for that: it would rebuild what the topic already holds.)

A dataset is a folder ``<home>/datasets/<domain>/<dataset id>/`` with ``rows.parquet`` (one row
per event: ``event_id``, ``event_time``, ``label``, one column per model input, where it was
read and how it was served) and ``manifest.json``. Its id is derived from the topic, the
partition/offset ranges it read, the event-time filter and the sha256 of its rows: the same
command on the same offsets gives the same id, and the id leads back to the exact records.

Not every record becomes a row, and each is counted in the manifest: a record without the
model's whole input (``incomplete``: no vector, or no online features), an event already read
(``duplicate``: a second monitor publishes the same pairs), one outside the event-time filter.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Consumer, KafkaError, TopicPartition

from services.core.declarations import Domain
from services.core.errors import ConfigError, StackError
from services.core.kafka import history_consumer_config
from services.core.labelled import labelled_input
from services.core.serde import codecs_for
from services.core.settings import StackSettings
from services.trainer.dataset import Dataset

ROWS_FILE = "rows.parquet"
MANIFEST_FILE = "manifest.json"
METADATA_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 300.0
PROGRESS_EVERY = 50_000
_OFFSETS = re.compile(r"^\d+:\d+(,\d+:\d+)*$")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Bound:
    """One end of ``--since``/``--until``: offsets per partition, or an event time (ms)."""

    offsets: dict[int, int] | None = None
    time_ms: int | None = None

    @classmethod
    def parse(cls, text: str | None) -> Bound:
        """``P:O[,P:O...]`` (partition:offset), epoch milliseconds, or an ISO-8601 time
        (naive means UTC); None or empty: no bound."""
        if not text:
            return cls()
        text = text.strip()
        if _OFFSETS.match(text):
            pairs = (part.split(":") for part in text.split(","))
            return cls(offsets={int(p): int(o) for p, o in pairs})
        if text.isdigit():
            return cls(time_ms=int(text))
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(
                f"{text!r} is neither PARTITION:OFFSET[,...], epoch milliseconds nor an "
                "ISO-8601 time"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return cls(time_ms=int(moment.timestamp() * 1000))

    def describe(self) -> Any:
        if self.offsets is not None:
            return {"offsets": {str(p): o for p, o in sorted(self.offsets.items())}}
        return None if self.time_ms is None else {"event_time_ms": self.time_ms}


@dataclass
class Counts:
    records: int = 0
    rows: int = 0
    incomplete: int = 0
    duplicate: int = 0
    outside_time: int = 0
    undecodable: int = 0


@dataclass
class HistoryDataset:
    """The dataset read from ``<domain>.labelled``, its rows in event-time order."""

    dataset: Dataset
    event_ids: list[str]
    event_times: npt.NDArray[np.int64]
    manifest: dict[str, Any]
    path: Path
    served: dict[str, list[Any]] = field(default_factory=dict)


def read_history(
    settings: StackSettings,
    domain: Domain,
    since: Bound,
    until: Bound,
    *,
    progress: Callable[[str], None] | None = None,
) -> HistoryDataset:
    """Reads the ranges, builds the rows, writes ``rows.parquet`` and ``manifest.json``."""
    say = progress or _stderr
    topic = domain.topics.labelled
    codec = codecs_for(settings).for_topic(topic)
    names = domain.model_inputs
    consumer = Consumer(history_consumer_config(settings))
    try:
        ranges = _ranges(consumer, topic, since, until)
        total = sum(end - start for start, end in ranges.values())
        say(f"reading {topic}: {total} offsets in {len(ranges)} partitions")
        counts = Counts()
        rows: dict[str, tuple[int, list[float], bool, dict[str, Any]]] = {}
        for record in _records(consumer, topic, ranges, counts, say):
            try:
                pair = codec.decode(record)
            except Exception as exc:  # counted; one bad record does not stop a dataset
                counts.undecodable += 1
                log.warning("undecodable %s record: %s", topic, exc)
                continue
            event_time = int(pair["event_time"])
            if not _within(event_time, since, until):
                counts.outside_time += 1
                continue
            row = labelled_input(domain, pair, names)
            if row is None:
                counts.incomplete += 1
                continue
            event_id = str(pair["event_id"])
            if event_id in rows:
                counts.duplicate += 1
                continue
            prediction = pair["prediction"]
            served = {k: prediction[k] for k in ("model_version", "served_by", "score")}
            rows[event_id] = (event_time, row, bool(pair["label"]), served)
    finally:
        consumer.close()
    counts.rows = len(rows)
    return _write(settings, domain, topic, ranges, since, until, counts, rows, say)


def _ranges(
    consumer: Consumer, topic: str, since: Bound, until: Bound
) -> dict[int, tuple[int, int]]:
    """[start, end) per partition: the given offsets, else the partition's start and its
    committed end now, so the read is bounded and its id reproducible."""
    metadata = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise StackError(f"topic {topic} does not exist: is the monitor running?")
    ranges: dict[int, tuple[int, int]] = {}
    for partition in sorted(metadata.partitions):
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=METADATA_TIMEOUT_S
        )
        start = (since.offsets or {}).get(partition, low)
        end = (until.offsets or {}).get(partition, high)
        if start < low:
            raise ConfigError(
                f"{topic} partition {partition} starts at offset {low} now (older records "
                f"were deleted by retention): offset {start} cannot be read"
            )
        ranges[partition] = (start, max(start, min(end, high)))
    unknown = set((since.offsets or {}) | (until.offsets or {})) - set(ranges)
    if unknown:
        raise ConfigError(f"{topic} has no partition {sorted(unknown)}")
    return ranges


def _records(
    consumer: Consumer,
    topic: str,
    ranges: dict[int, tuple[int, int]],
    counts: Counts,
    say: Callable[[str], None],
) -> Any:
    """Every committed record's value in the ranges (aborted ones and markers are skipped)."""
    todo = {p: end for p, (start, end) in ranges.items() if end > start}
    consumer.assign([TopicPartition(topic, p, ranges[p][0]) for p in todo])
    deadline = time.monotonic() + READ_TIMEOUT_S
    while todo:
        if time.monotonic() > deadline:
            raise StackError(f"{topic} could not be read to the end of {todo} in time")
        for message in consumer.consume(1000, 0.5):
            partition, offset = message.partition(), message.offset()
            if partition is None or offset is None or partition not in todo:
                continue
            error = message.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                raise StackError(f"reading {topic}: {error}")
            end = todo[partition]
            if error is None and offset < end:
                counts.records += 1
                if counts.records % PROGRESS_EVERY == 0:
                    say(f"  {counts.records} records read")
                yield message.value()
            # A partition is done at its last record, or past its end (markers, aborted
            # records): the end-of-partition event's offset is the position then.
            if offset >= end - 1 if error is None else offset >= end:
                del todo[partition]


def _within(event_time: int, since: Bound, until: Bound) -> bool:
    return (since.time_ms is None or event_time >= since.time_ms) and (
        until.time_ms is None or event_time < until.time_ms
    )


def _write(
    settings: StackSettings,
    domain: Domain,
    topic: str,
    ranges: dict[int, tuple[int, int]],
    since: Bound,
    until: Bound,
    counts: Counts,
    rows: dict[str, tuple[int, list[float], bool, dict[str, Any]]],
    say: Callable[[str], None],
) -> HistoryDataset:
    names = domain.model_inputs
    ordered = sorted(rows.items(), key=lambda item: (item[1][0], item[0]))  # event time, id
    event_ids = [event_id for event_id, _ in ordered]
    times = np.asarray([r[0] for _, r in ordered], dtype=np.int64)
    X = np.asarray([r[1] for _, r in ordered], dtype=np.float32).reshape(len(ordered), len(names))
    y = np.asarray([1.0 if r[2] else 0.0 for _, r in ordered], dtype=np.float32)
    served = {k: [r[3][k] for _, r in ordered] for k in ("model_version", "served_by", "score")}
    rows_sha = _rows_sha256(names, event_ids, times, X, y)
    read = {
        "topic": topic,
        "ranges": [{"partition": p, "from": s, "to": e} for p, (s, e) in sorted(ranges.items())],
        "event_time_from_ms": since.time_ms,
        "event_time_until_ms": until.time_ms,
    }
    digest = hashlib.sha256(json.dumps({**read, "rows_sha256": rows_sha}, sort_keys=True).encode())
    dataset_id = "ds-" + digest.hexdigest()[:16]
    manifest = {
        "dataset_id": dataset_id,
        "domain": domain.name,
        **read,
        "since": since.describe(),
        "until": until.describe(),
        "rows_sha256": rows_sha,
        "feature_names": list(names),
        "label_field": domain.label_field,
        "rows": len(ordered),
        "positives": int(y.sum()),
        "event_time_min_ms": int(times.min()) if len(times) else None,
        "event_time_max_ms": int(times.max()) if len(times) else None,
        "skipped": {
            "incomplete": counts.incomplete,
            "duplicate": counts.duplicate,
            "outside_time": counts.outside_time,
            "undecodable": counts.undecodable,
        },
        "records_read": counts.records,
        "created_at": datetime.now(UTC).isoformat(),
    }
    folder = settings.datasets_dir / domain.name / dataset_id
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "event_id": event_ids,
            "event_time": pa.array(times, type=pa.timestamp("ms", tz="UTC")),
            "label": pa.array(y.astype(bool)),
            **{name: X[:, i] for i, name in enumerate(names)},
            **served,
        }
    )
    pq.write_table(table, folder / ROWS_FILE)
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    say(
        f"dataset {dataset_id}: {len(ordered)} rows ({int(y.sum())} positive) from "
        f"{counts.records} records; skipped {manifest['skipped']}; {folder}"
    )
    source = f"{topic} {read['ranges']}"
    dataset = Dataset(X, y, names, dataset_id, source)
    return HistoryDataset(dataset, event_ids, times, manifest, folder, served)


def _rows_sha256(
    names: tuple[str, ...],
    event_ids: list[str],
    times: npt.NDArray[np.int64],
    X: npt.NDArray[np.float32],
    y: npt.NDArray[np.float32],
) -> str:
    """The rows' content, independent of how Parquet lays them out."""
    digest = hashlib.sha256(json.dumps([list(names), event_ids]).encode())
    for array in (times.astype("<i8"), X.astype("<f4"), y.astype("<f4")):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)

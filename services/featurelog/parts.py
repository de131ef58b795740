"""Part files: each batch adds one parquet file per Kafka partition under Feast's FileSource path.

Feast's file offline store reads a FileSource path with ``dask.dataframe.read_parquet``, which
reads a directory of parquet files as one table. So the path ``feast_objects.offline_path``
declares (``<offline>/<domain>/<entity>.parquet``) is a directory, and the log only ever adds
files to it: nothing is rewritten in place. A file is written under a name starting with ``.``
(which pyarrow and dask skip) and renamed into place, so a reader sees a whole file or none.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from services.core.declarations import Domain
from services.core.errors import ConfigError
from services.core.serde import Record
from services.core.settings import StackSettings
from services.featurestore.feast_objects import TIMESTAMP_FIELD, offline_path
from services.featurestore.store import offline_dir

# Orders the rows of one Kafka partition: the record's offset, as microseconds after the epoch.
# Of two rows with equal (key, event_time) the greater one is the state after both events.
CREATED = "created"
PART_PREFIX = "part-"
PART_SUFFIX = ".parquet"
TEMP_SUFFIX = ".tmp"

Row = dict[str, Any]


def log_dir(settings: StackSettings, domain: Domain) -> Path:
    """The directory Feast's FileSource for the domain's key entity points at."""
    return offline_path(offline_dir(settings), domain, domain.key_entity)


def part_name(partition: int, first_offset: int) -> str:
    """Named by where the batch starts: a batch rewritten after a crash replaces its own file."""
    return f"{PART_PREFIX}{partition}-{first_offset}{PART_SUFFIX}"


def arrow_schema(domain: Domain) -> pa.Schema:
    """Explicit, so every part agrees (a batch of only nulls would otherwise be null-typed)."""
    fields = [
        pa.field(domain.key_field, pa.string()),
        pa.field(TIMESTAMP_FIELD, pa.timestamp("ms", tz="UTC")),
        pa.field(CREATED, pa.timestamp("us", tz="UTC")),
        pa.field(domain.event_id_field, pa.string()),
    ]
    fields += [
        pa.field(f.name, pa.int64() if f.is_integer else pa.float64())
        for f in domain.features_of(domain.key_entity)
    ]
    return pa.schema(fields)


def vector_fields(domain: Domain) -> tuple[str, ...]:
    """The fields of a feature vector the log reads."""
    features = tuple(f.name for f in domain.features_of(domain.key_entity))
    return (domain.key_field, domain.event_time_field, domain.event_id_field, *features)


def log_row(domain: Domain, vector: Record, offset: int) -> Row:
    """One parquet row from one decoded vector; timestamps stay epoch ints, nulls stay None."""
    row: Row = {
        domain.key_field: vector[domain.key_field],
        TIMESTAMP_FIELD: vector[domain.event_time_field],
        CREATED: offset,
        domain.event_id_field: vector[domain.event_id_field],
    }
    for feature in domain.features_of(domain.key_entity):
        row[feature.name] = vector[feature.name]
    return row


def prepare_dir(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise ConfigError(
            f"{directory} is a file; the feature log keeps a directory of part files there "
            "(move the file away)"
        )
    directory.mkdir(parents=True, exist_ok=True)


def write_part(
    directory: Path, partition: int, first_offset: int, rows: Sequence[Row], schema: pa.Schema
) -> Path:
    """Writes the rows durably under a hidden name, then renames the file into place."""
    final = directory / part_name(partition, first_offset)
    temp = directory / f".{final.name}{TEMP_SUFFIX}"
    table = pa.Table.from_pylist(list(rows), schema=schema)
    try:
        with temp.open("wb") as out:
            pq.write_table(table, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    return final


def _fsync_dir(directory: Path) -> None:
    """Makes the rename itself durable before the offsets are committed."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

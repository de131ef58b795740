"""Batch scoring (`streamml score-batch`): a parquet file of vectors scored as the scorer does.

The registry's serving line-up is loaded as the scorer loads it (the champion, and the canary
with its share of the entity keys; no shadow, whose predictions are never served), the rows go
through the scorer's own ``VectorScorer`` in chunks, and missing online features are read from
the online store. The output is the input's columns plus the prediction fields.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.core.declarations import Domain
from services.core.domains import load_domain
from services.core.errors import ConfigError, ModelError, RegistryError
from services.core.serde import Record, codecs_for
from services.core.settings import load_settings
from services.registry.artifacts import ModelStore
from services.registry.versions import CANARY, CHAMPION, RegistryView, read_registry
from services.scorer.online import open_online_reader
from services.scorer.serving import Lineup, heuristic_serving, load_serving
from services.scorer.vectors import InvalidVectorError, VectorSpec

if TYPE_CHECKING:
    import pyarrow as pa

    from services.scorer.batch import VectorScorer

log = logging.getLogger(__name__)

CHUNK_ROWS = 10_000
# The prediction fields a row gets; the others (event id, key, event time) are input columns.
OUTPUT_FIELDS = ("model_name", "model_version", "score", "decision", "served_by", "predicted_at")


def score_batch(
    domain_name: str, source_path: Path, output: Path, *, chunk_rows: int, require_model: bool
) -> Summary:
    """Scores the parquet file ``source_path`` into ``output`` with the registry's serving
    line-up; with no champion the heuristic scores, unless ``require_model``."""
    from services.scorer.batch import ModelCaller, VectorScorer
    from services.scorer.settings import ScorerSettings

    if chunk_rows < 1:
        raise ConfigError("--chunk-rows must be at least 1")
    settings = load_settings(ScorerSettings)
    domain = load_domain(settings.features_dir, domain_name)
    spec = VectorSpec.for_domain(domain, settings.schemas_dir)
    source = open_input(source_path, spec)
    check_output(source_path, output)
    view = read_registry(settings, codecs_for(settings))
    lineup = serving_lineup(view, domain, ModelStore(settings.models_dir), settings.scorer_threads)
    if not lineup.champion.is_model:
        if require_model:
            raise RegistryError(f"{domain.model_name} has no champion (--require-model)")
        _say(
            f"no champion of {domain.model_name} is registered: the heuristic scores every row "
            "(served_by=fallback)"
        )
    _say(f"serving: {lineup.describe()}")
    # No time limit on a model call: a batch job waits for its model rather than fall back.
    scorer = VectorScorer(
        domain, settings.scorer_threshold, open_online_reader(settings, domain), ModelCaller(0)
    )
    summary = score_file(source, output, spec, scorer, lineup, chunk_rows)
    _say(summary.describe(output))
    return summary


def serving_lineup(view: RegistryView, domain: Domain, store: ModelStore, threads: int) -> Lineup:
    """The champion and canary the registry names, loaded and checked as the scorer loads them
    (``load_serving``), with nothing produced to Kafka. A champion that cannot be loaded is an
    error (a running scorer would keep its previous champion, which a batch job cannot know);
    a canary that cannot be loaded is left out, as the scorer leaves it out."""
    name = domain.model_name
    champion_record = view.champion(name)
    if champion_record is None:
        return Lineup(heuristic_serving(domain))
    try:
        champion = load_serving(champion_record, store, threads, CHAMPION)
    except ModelError as exc:
        raise ModelError(
            f"the champion {champion_record.key} cannot be loaded, so no scorer serves it: {exc}"
        ) from exc
    canary_record = view.canary(name)
    if canary_record is None:
        return Lineup(champion)
    try:
        canary = load_serving(canary_record, store, threads, CANARY)
    except ModelError as exc:
        _say(f"the canary {canary_record.key} cannot be loaded; the champion takes its keys: {exc}")
        return Lineup(champion)
    return Lineup(champion, canary, canary_record.traffic_share)


@dataclass
class Source:
    """An input file that has the columns a vector needs."""

    path: Path
    file: Any  # pyarrow.parquet.ParquetFile
    rows: int
    schema: pa.Schema


def open_input(path: Path, spec: VectorSpec) -> Source:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise ConfigError(f"input file {path} does not exist")
    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ConfigError(f"{path} is not a parquet file: {exc}") from exc
    schema = file.schema_arrow
    check_columns(schema.names, spec, path)
    return Source(path, file, file.metadata.num_rows, schema)


def check_columns(columns: list[str], spec: VectorSpec, path: Path) -> None:
    """Every field of the vector schema is a column; no column is named like an output field."""
    missing = [name for name in spec.required if name not in columns]
    if missing:
        raise ConfigError(
            f"{path} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(a {spec.domain.name} vector has {', '.join(spec.required)}; optional: "
            f"{', '.join(spec.online) or 'none'})"
        )
    taken = [name for name in OUTPUT_FIELDS if name in columns]
    if taken:
        raise ConfigError(
            f"{path} already has the column{'s' if len(taken) > 1 else ''} {', '.join(taken)}, "
            "which the output adds; rename or drop them"
        )
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise ConfigError(f"{path} has duplicate columns: {', '.join(duplicated)}")


def check_output(source: Path, output: Path) -> None:
    if output.resolve() == source.resolve():
        raise ConfigError("--output must not be the input file")
    if output.is_dir():
        raise ConfigError(f"--output {output} is a folder; name a file")


def rows_to_vectors(
    rows: list[dict[str, Any]], spec: VectorSpec, first_row: int
) -> list[tuple[bytes, Record]]:
    """(entity key, vector) of each row; a row that is not a vector is an error naming it."""
    keyed = []
    for i, row in enumerate(rows):
        try:
            record = spec.parse(row, strict=False)
        except InvalidVectorError as exc:
            raise ConfigError(f"row {first_row + i} (0-based): {exc.describe()}") from None
        keyed.append((spec.key_of(record), record))
    return keyed


def prediction_columns(predictions: list[Record]) -> dict[str, pa.Array]:
    """The output's prediction columns, typed as the predictions schema types them."""
    import pyarrow as pa

    types = {
        "model_name": pa.string(),
        "model_version": pa.string(),
        "score": pa.float64(),
        "decision": pa.bool_(),
        "served_by": pa.string(),
        "predicted_at": pa.timestamp("ms", tz="UTC"),
    }
    return {
        name: pa.array([p[name] for p in predictions], type=types[name]) for name in OUTPUT_FIELDS
    }


@dataclass
class Summary:
    rows: int = 0
    seconds: float = 0.0
    served: Counter[tuple[str, str]] = field(default_factory=Counter)
    fallbacks: Counter[str] = field(default_factory=Counter)

    def describe(self, output: Path) -> str:
        served = ", ".join(
            f"{by} {version}: {n}" for (by, version), n in sorted(self.served.items())
        )
        causes = ", ".join(f"{cause} {n}" for cause, n in sorted(self.fallbacks.items()))
        rate = self.rows / self.seconds if self.seconds > 0 else 0.0
        line = f"scored {self.rows} rows in {self.seconds:.1f} s ({rate:,.0f} rows/s) to {output}"
        if served:
            line += f"; {served}"
        return line + (f"; fallbacks: {causes}" if causes else "")


def score_file(
    source: Source,
    output: Path,
    spec: VectorSpec,
    scorer: VectorScorer,
    lineup: Lineup,
    chunk_rows: int,
) -> Summary:
    """Scores ``source`` chunk by chunk into a temporary file beside ``output``, renamed to it
    once complete: a failed run leaves no half-written output."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    schema = source.schema
    for name, array in prediction_columns([]).items():
        schema = schema.append(pa.field(name, array.type))
    summary = Summary()
    started = time.monotonic()
    progress = source.rows > chunk_rows
    try:
        with pq.ParquetWriter(partial, schema) as writer:
            for batch in _batches(source, chunk_rows):
                keyed = rows_to_vectors(batch.to_pylist(), spec, summary.rows)
                scored = scorer.score(keyed, lineup)
                predictions = [p for _, p in scored.predictions]
                columns = prediction_columns(predictions)
                table = pa.Table.from_batches([batch])
                for name, array in columns.items():
                    table = table.append_column(name, array)
                writer.write_table(table.cast(schema))
                summary.rows += len(predictions)
                summary.served.update((p["served_by"], p["model_version"]) for p in predictions)
                summary.fallbacks.update(scored.fallback_causes)
                if progress:
                    _progress(summary.rows, source.rows, time.monotonic() - started)
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    summary.seconds = time.monotonic() - started
    return summary


def _batches(source: Source, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    for batch in source.file.iter_batches(batch_size=chunk_rows):
        if batch.num_rows:
            yield batch


def _progress(done: int, total: int, seconds: float) -> None:
    rate = done / seconds if seconds > 0 else 0.0
    _say(f"{done}/{total} rows ({done / total:.0%}), {rate:,.0f} rows/s")


def _say(message: str) -> None:
    print(f"score-batch: {message}", file=sys.stderr, flush=True)

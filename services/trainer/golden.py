"""A domain's golden set: a versioned, curated dataset kept with the domain's declaration.

A folder under ``features/`` (``Retraining.golden_set``, e.g. ``golden/payments/v1``) with
``rows.parquet`` (one column per model input, and ``label``) and ``manifest.json`` (how it was
made, its row counts and its content id). The gate scores the champion and every candidate on
it: a candidate that forgets what the domain is sure of does not get traffic.

A golden set is never edited in place: its content id is checked on every load, and a changed
truth gets a new version folder (``build`` writes one). ``python -m services.trainer.golden
<domain> <folder>`` builds the payments-shaped sets from the synthetic generator.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from services.core.declarations import Domain
from services.core.errors import ConfigError
from services.trainer.dataset import Dataset, build_dataset, dataset_id

ROWS_FILE = "rows.parquet"
MANIFEST_FILE = "manifest.json"
LABEL = "label"
GOLDEN_RATE_PER_S = 400.0
GOLDEN_START_MS = 1_700_000_000_000  # fixed, so a seed always gives the same set


@dataclass(frozen=True)
class GoldenSet:
    version: str  # the folder's path under features/
    dataset: Dataset
    manifest: dict[str, Any]


def golden_folder(features_dir: Path, domain: Domain) -> Path | None:
    declared = domain.retraining.golden_set
    return None if declared is None else features_dir / declared


def load_golden(features_dir: Path, domain: Domain) -> GoldenSet | None:
    """The domain's declared golden set, checked against its manifest; None when none is
    declared. ConfigError when it is missing, changed since it was made, or lacks an input."""
    folder = golden_folder(features_dir, domain)
    if folder is None:
        return None
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        table = pq.read_table(folder / ROWS_FILE)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"the golden set {folder} cannot be read: {exc}") from exc
    names = domain.model_inputs
    missing = [n for n in (*names, LABEL) if n not in table.column_names]
    if missing:
        raise ConfigError(f"the golden set {folder} lacks the columns {missing}")
    X = np.column_stack([table.column(n).to_numpy() for n in names]).astype(np.float32)
    y = table.column(LABEL).to_numpy().astype(np.float32)
    content = dataset_id(names, X, y)
    if content != manifest.get("dataset_id"):
        raise ConfigError(
            f"the golden set {folder} holds {content}, its manifest says "
            f"{manifest.get('dataset_id')}: it was changed in place; make a new version instead"
        )
    version = str(domain.retraining.golden_set)
    return GoldenSet(version, Dataset(X, y, names, content, f"golden set {version}"), manifest)


def build(
    domain: Domain, folder: Path, *, seed: int, events: int, negatives_per_positive: int
) -> GoldenSet:
    """Curates a golden set from the synthetic stream: every fraud, and a seeded sample of
    ``negatives_per_positive`` ordinary payments per fraud. Refuses to overwrite a version."""
    from services.producer.publish import DEFAULT_CARDS
    from services.producer.synthetic import PaymentsGenerator

    if (folder / ROWS_FILE).exists():
        raise ConfigError(f"{folder} already holds a golden set; write a new version folder")
    # The shape of the traffic the domain serves (``streamml produce``'s cards, and a rate the
    # services see in the demo and the tests), so its windows look like the live ones.
    generator = PaymentsGenerator(
        seed=seed, cards=DEFAULT_CARDS, rate_per_s=GOLDEN_RATE_PER_S, start_ms=GOLDEN_START_MS
    )
    source = (
        f"synthetic PaymentsGenerator seed={seed} n={events} cards={DEFAULT_CARDS} "
        f"rate={GOLDEN_RATE_PER_S:g}/s"
    )
    everything = build_dataset(domain, generator.events(events), source=source)
    positives = np.flatnonzero(everything.y == 1.0)
    negatives = np.flatnonzero(everything.y == 0.0)
    rng = np.random.default_rng(seed)
    wanted = min(len(negatives), negatives_per_positive * len(positives))
    chosen = np.sort(np.concatenate([positives, rng.choice(negatives, wanted, replace=False)]))
    golden = everything.subset(chosen, "golden")
    columns = {n: golden.X[:, i] for i, n in enumerate(golden.feature_names)}
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({**columns, LABEL: golden.y}), folder / ROWS_FILE)
    manifest = {
        "dataset_id": golden.dataset_id,
        "domain": domain.name,
        "rows": len(golden),
        "positives": golden.positives,
        "source": source,
        "curation": f"every fraud, and {negatives_per_positive} ordinary payments per fraud "
        "drawn at random (seeded) from the same stream",
        "feature_names": list(golden.feature_names),
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return GoldenSet(str(folder), golden, manifest)


def main() -> None:
    from services.core.domains import load_domain
    from services.core.paths import default_features_dir

    parser = argparse.ArgumentParser(description="build a new golden set version")
    parser.add_argument("domain")
    parser.add_argument("folder", type=Path, help="a new folder, e.g. features/golden/<d>/v2")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--negatives-per-positive", type=int, default=4)
    args = parser.parse_args()
    domain = load_domain(default_features_dir(), args.domain)
    built = build(
        domain,
        args.folder,
        seed=args.seed,
        events=args.events,
        negatives_per_positive=args.negatives_per_positive,
    )
    print(f"{args.folder}: {built.manifest['rows']} rows ({built.manifest['positives']} fraud)")


if __name__ == "__main__":
    main()

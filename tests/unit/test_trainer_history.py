"""Training from history, its pure parts: the --since/--until bounds and the time split."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from services.core.errors import ConfigError
from services.trainer.dataset import Dataset, dataset_id
from services.trainer.from_history import code_version, time_split
from services.trainer.history import Bound, HistoryDataset

NAMES = ("amount", "txn_count_5m")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0:10,3:7", Bound(offsets={0: 10, 3: 7})),
        ("2:0", Bound(offsets={2: 0})),
        ("1767225600000", Bound(time_ms=1_767_225_600_000)),
        ("2026-01-01T00:00:00Z", Bound(time_ms=1_767_225_600_000)),
        ("2026-01-01T01:00:00+01:00", Bound(time_ms=1_767_225_600_000)),
        ("2026-01-01", Bound(time_ms=1_767_225_600_000)),  # naive: UTC
        (None, Bound()),
        ("", Bound()),
    ],
)
def test_bounds_are_offsets_or_event_times(text: str | None, expected: Bound) -> None:
    assert Bound.parse(text) == expected


@pytest.mark.parametrize("text", ["yesterday", "0:10,", "0:-1", "1:2:3"])
def test_a_bound_that_is_neither_is_refused_with_the_forms_named(text: str) -> None:
    with pytest.raises(ConfigError, match="neither PARTITION:OFFSET"):
        Bound.parse(text)


def history(labels: list[bool]) -> HistoryDataset:
    n = len(labels)
    X = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    y = np.asarray(labels, dtype=np.float32)
    dataset = Dataset(X, y, NAMES, dataset_id(NAMES, X, y), "test")
    times = np.arange(n, dtype=np.int64) * 1000
    manifest = {"skipped": {"incomplete": 0}}
    return HistoryDataset(dataset, [f"e{i}" for i in range(n)], times, manifest, Path("."))


def test_the_holdout_is_the_latest_rows_by_event_time() -> None:
    train, holdout = time_split(history([i % 3 == 0 for i in range(100)]), 0.2, 10)
    assert (len(train), len(holdout)) == (80, 20)
    assert holdout.X[0].tolist() == [160.0, 161.0]  # row 80 onwards: later than all of train
    assert train.dataset_id != holdout.dataset_id


def test_too_few_rows_or_one_class_is_refused_clearly() -> None:
    with pytest.raises(ConfigError, match="50 usable rows, fewer than the 200"):
        time_split(history([i % 2 == 0 for i in range(50)]), 0.2, 200)
    # All positives are early: the holdout has none to judge the model by.
    with pytest.raises(ConfigError, match=r"holdout part .* has only one class"):
        time_split(history([i < 10 for i in range(100)]), 0.2, 10)
    with pytest.raises(ConfigError, match=r"train part .* has only one class"):
        time_split(history([i >= 80 for i in range(100)]), 0.2, 10)
    with pytest.raises(ConfigError, match="holdout share"):
        time_split(history([i % 2 == 0 for i in range(100)]), 1.0, 10)


def test_the_code_version_is_the_commit() -> None:
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?|streamml .+", code_version())

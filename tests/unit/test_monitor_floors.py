"""Quality alerts: one per fall below a declared floor, re-armed only after recovering."""

from __future__ import annotations

from services.core.declarations import QualityFloor
from services.monitor.floors import FloorWatch
from services.monitor.quality import Figures


def window(joined: int, accuracy: float, auc: float | None, logloss: float) -> Figures:
    return Figures(joined, accuracy, auc, logloss, None, None, None, None)


def test_a_fall_below_a_floor_alerts_once_and_rearms_after_recovering() -> None:
    watch = FloorWatch(QualityFloor(min_auc=0.6, max_logloss=0.5, rearm_snapshots=2))
    good, bad = window(1_000, 0.9, 0.8, 0.2), window(1_000, 0.9, 0.55, 0.2)
    assert watch.judge("1", "champion", good) == []
    (breach,) = watch.judge("1", "champion", bad)
    assert (breach.figure, breach.value, breach.threshold, breach.pairs) == ("auc", 0.55, 0.6, 1000)
    assert watch.judge("1", "champion", bad) == []  # still down: no second alert
    assert watch.judge("1", "champion", good) == []  # one snapshot back: not re-armed yet
    assert watch.judge("1", "champion", bad) == []
    assert watch.judge("1", "champion", good) == []
    assert watch.judge("1", "champion", good) == []  # two in a row: re-armed
    assert [b.figure for b in watch.judge("1", "champion", bad)] == ["auc"]
    assert [b.figure for b in watch.judge("1", "canary", window(900, 0.9, 0.8, 0.9))] == ["logloss"]


def test_small_windows_and_missing_figures_are_not_judged() -> None:
    watch = FloorWatch(QualityFloor(min_accuracy=0.9, min_auc=0.6, min_pairs=500))
    assert watch.judge("1", "champion", window(499, 0.1, 0.1, 9.0)) == []
    assert [b.figure for b in watch.judge("1", "champion", window(500, 0.5, None, 0.1))] == [
        "accuracy"
    ]

"""Quality alerts: a model version's window figures against the domain's declared floors.

Each snapshot, every (version, served_by) window with at least ``min_pairs`` labelled pairs is
judged: accuracy or AUC under its floor, log loss over its ceiling. A figure past its floor
raises one finding; it re-arms after ``rearm_snapshots`` snapshots in a row back within the
floor (hysteresis: one fall, one alert). Pure logic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.core.declarations import QualityFloor
from services.monitor.quality import Figures


@dataclass(frozen=True)
class Breach:
    model_version: str
    served_by: str
    figure: str  # accuracy, auc or logloss
    value: float
    threshold: float
    pairs: int


@dataclass
class FloorWatch:
    declared: QualityFloor
    _down: dict[tuple[str, str, str], int] = field(default_factory=dict)  # key: snapshots within

    def already_raised(self, version: str, served_by: str, figure: str) -> None:
        """A breach alerted before (by an earlier instance): it re-arms only after recovering."""
        self._down[(version, served_by, figure)] = 0

    def judge(self, version: str, served_by: str, window: Figures) -> list[Breach]:
        if window.joined < self.declared.min_pairs:
            return []
        declared, found = self.declared, []
        for figure, value, threshold, higher_is_better in (
            ("accuracy", window.accuracy, declared.min_accuracy, True),
            ("auc", window.auc, declared.min_auc, True),
            ("logloss", window.logloss, declared.max_logloss, False),
        ):
            if value is None or threshold is None:
                continue
            key = (version, served_by, figure)
            if (value < threshold) if higher_is_better else (value > threshold):
                if key not in self._down:
                    found.append(
                        Breach(version, served_by, figure, value, threshold, window.joined)
                    )
                self._down[key] = 0
            elif key in self._down:
                self._down[key] += 1
                if self._down[key] >= declared.rearm_snapshots:
                    del self._down[key]
        return found

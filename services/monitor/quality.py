"""How good the predictions were, once their outcomes came: per model version and served_by,
per declared segment, over a sliding window of the latest pairs and since the version started.

Figures of a set of (score, decision, label) pairs: the joined count, accuracy (the decision
against the label), ROC AUC and log loss of the score, precision and recall at the decision
threshold, and the label delay's distribution. Outcome coverage is the share of a version's
predictions that have been labelled so far. Pure logic: the monitor feeds it labelled records.

Since-start AUC counts scores in ``AUC_BINS`` equal bins of [0, 1]: two scores in one bin are a
tie (half a correct ordering), so it is exact up to pairs closer than 1/``AUC_BINS`` and its
memory does not grow with the stream. The window's AUC is exact.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

AUC_BINS = 10_000
EPSILON = 1e-15  # log loss clips scores to [EPSILON, 1 - EPSILON]
ALL = "all"  # the segment every pair is in
WINDOW = "window"
TOTAL = "total"
DRIFT = "drift"  # the scope of a drift snapshot (not a quality figure)


@dataclass(frozen=True)
class Pair:
    score: float
    decision: bool
    label: bool
    label_delay_ms: int


@dataclass(frozen=True)
class Figures:
    joined: int
    accuracy: float | None
    auc: float | None
    logloss: float | None
    precision: float | None
    recall: float | None
    label_delay_p50_ms: float | None
    label_delay_p95_ms: float | None


def figures_of(pairs: Iterable[Pair]) -> Figures:
    """The exact figures of a set of pairs (the window's, and the tests' recomputation)."""
    listed = list(pairs)
    totals = _Totals()
    for pair in listed:
        totals.add(pair)
    ranked = sorted((p.score, p.label) for p in listed)
    delays: dict[int, int] = {}
    for pair in listed:
        delays[pair.label_delay_ms] = delays.get(pair.label_delay_ms, 0) + 1
    return totals.figures(_auc_of_sorted(ranked), delays)


@dataclass
class _Totals:
    joined: int = 0
    correct: int = 0
    true_positive: int = 0
    predicted_positive: int = 0
    actual_positive: int = 0
    logloss_sum: float = 0.0

    def add(self, pair: Pair) -> None:
        self.joined += 1
        self.correct += pair.decision == pair.label
        self.true_positive += pair.decision and pair.label
        self.predicted_positive += pair.decision
        self.actual_positive += pair.label
        p = min(max(pair.score, EPSILON), 1 - EPSILON)
        self.logloss_sum -= math.log(p if pair.label else 1 - p)

    def figures(self, auc: float | None, delays: Mapping[int, int]) -> Figures:
        """``delays``: label delay (ms) -> how many pairs had it."""
        n = self.joined
        return Figures(
            joined=n,
            accuracy=self.correct / n if n else None,
            auc=auc,
            logloss=self.logloss_sum / n if n else None,
            precision=_ratio(self.true_positive, self.predicted_positive),
            recall=_ratio(self.true_positive, self.actual_positive),
            label_delay_p50_ms=_quantile(delays, 0.50),
            label_delay_p95_ms=_quantile(delays, 0.95),
        )


@dataclass
class _SinceStart:
    totals: _Totals = field(default_factory=_Totals)
    positives: list[int] = field(default_factory=lambda: [0] * AUC_BINS)
    negatives: list[int] = field(default_factory=lambda: [0] * AUC_BINS)
    delays: dict[int, int] = field(default_factory=dict)  # delay rounded to 1 s -> count

    def add(self, pair: Pair) -> None:
        self.totals.add(pair)
        b = min(int(pair.score * AUC_BINS), AUC_BINS - 1) if pair.score > 0 else 0
        (self.positives if pair.label else self.negatives)[b] += 1
        second = round(pair.label_delay_ms / 1000) * 1000
        self.delays[second] = self.delays.get(second, 0) + 1

    def figures(self) -> Figures:
        return self.totals.figures(_binned_auc(self.positives, self.negatives), self.delays)


class Quality:
    """The figures of every (model version, served_by, segment)."""

    def __init__(self, window_pairs: int) -> None:
        self._window_pairs = window_pairs
        self._windows: dict[tuple[str, str, str], deque[Pair]] = {}
        self._totals: dict[tuple[str, str, str], _SinceStart] = {}
        self._predictions: dict[tuple[str, str], int] = {}

    def predicted(self, version: str, served_by: str) -> None:
        """One prediction published (labelled or not): the denominator of coverage."""
        key = (version, served_by)
        self._predictions[key] = self._predictions.get(key, 0) + 1

    def add(self, version: str, served_by: str, segments: Iterable[str], pair: Pair) -> None:
        for segment in (ALL, *segments):
            key = (version, served_by, segment)
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = deque(maxlen=self._window_pairs)
                self._totals[key] = _SinceStart()
            window.append(pair)
            self._totals[key].add(pair)

    def figure_keys(self) -> list[tuple[str, str, str]]:
        return sorted(self._totals)

    def window(self, key: tuple[str, str, str]) -> Figures:
        return figures_of(self._windows[key])

    def total(self, key: tuple[str, str, str]) -> Figures:
        return self._totals[key].figures()

    def coverage(self, version: str, served_by: str) -> float | None:
        """Labelled pairs over predictions, for the version and served_by (segment all)."""
        labelled = self._totals.get((version, served_by, ALL))
        return _ratio(
            labelled.totals.joined if labelled else 0, self._predictions.get((version, served_by))
        )

    @property
    def labelled(self) -> int:
        """Labelled pairs read, all versions (each pair is once in the segment all)."""
        return sum(t.totals.joined for (_, _, segment), t in self._totals.items() if segment == ALL)

    @property
    def predictions(self) -> Mapping[tuple[str, str], int]:
        return self._predictions


def _auc_of_sorted(ranked: list[tuple[float, bool]]) -> float | None:
    """Mann-Whitney AUC of (score, label) pairs sorted by score; ties count one half."""
    positives = sum(1 for _, label in ranked if label)
    negatives = len(ranked) - positives
    if not positives or not negatives:
        return None
    below, wins, i = 0, 0.0, 0  # negatives below the current score
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        pos = sum(1 for _, label in ranked[i:j] if label)
        neg = (j - i) - pos
        wins += pos * (below + neg / 2)
        below += neg
        i = j
    return wins / (positives * negatives)


def _binned_auc(positives: list[int], negatives: list[int]) -> float | None:
    total_pos, total_neg = sum(positives), sum(negatives)
    if not total_pos or not total_neg:
        return None
    below, wins = 0, 0.0
    for pos, neg in zip(positives, negatives, strict=True):
        wins += pos * (below + neg / 2)
        below += neg
    return wins / (total_pos * total_neg)


def _ratio(part: int, whole: int | None) -> float | None:
    return part / whole if whole else None


def _quantile(counts: Mapping[int, int], q: float) -> float | None:
    """The value at rank ``int(q * n)`` (0-based) of the ``n`` counted values."""
    n = sum(counts.values())
    if not n:
        return None
    rank, seen = min(n - 1, int(q * n)), 0
    for value, count in sorted(counts.items()):
        seen += count
        if seen > rank:
            return float(value)
    raise AssertionError("unreachable: the ranks add up to n")

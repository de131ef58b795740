"""Data drift and prediction drift: a sliding window of live vectors and scores against the
serving model's training reference (its card's ``reference``, ``services.models.reference``).

Every ``check_every`` values, once the window is full, each referenced feature of the vectors
(and the score) is compared: PSI and KS on the reference's bins. A subject that goes past a
threshold raises one finding and is then *drifting*: no more findings until ``cooldown_checks``
checks in a row find it back under both thresholds (hysteresis: one drift, one alert). If it is
still past a threshold ``persists_for`` (event time) after its finding, one persistent finding
follows (the monitor asks for retraining then). Pure logic.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.core.declarations import DataDrift
from services.models.reference import count_into, ks, psi

SCORE = "score"
DATA_DRIFT = "data_drift"
PREDICTION_DRIFT = "prediction_drift"


@dataclass(frozen=True)
class Finding:
    kind: str  # data_drift or prediction_drift
    subject: str  # the feature's name, or "score"
    statistic: str  # psi or ks
    value: float
    threshold: float
    window_start_ms: int
    window_end_ms: int
    window_values: int
    persistent: bool  # still there persists_for after the first finding


@dataclass
class _Subject:
    edges: list[float]
    reference: list[int]
    values: deque[tuple[int, float | None]]
    drifting: bool = False  # alerted, not yet back under the thresholds for long
    alerted_at_ms: int = 0  # event time of the window's end when it alerted
    under_checks: int = 0  # consecutive checks back under both thresholds
    asked: bool = False  # the persistent finding of this drift was given


@dataclass
class DistributionWatch:
    declared: DataDrift
    version: str | None = None
    _subjects: dict[str, _Subject] = field(default_factory=dict)
    _vectors: int = 0
    _scores: int = 0
    latest: dict[str, tuple[float, float]] = field(default_factory=dict)  # subject: psi, ks

    def use_reference(self, version: str, reference: Mapping[str, Any]) -> None:
        """Compares with this version's reference from now on (a new champion: a new window)."""
        if version == self.version:
            return
        self.version = version
        window = self.declared.window_vectors
        histograms = {**reference.get("features", {}), SCORE: reference.get("score", {})}
        self._subjects = {
            name: _Subject(list(h["edges"]), list(h["counts"]), deque(maxlen=window))
            for name, h in histograms.items()
            if h and h.get("edges")
        }
        self._vectors = self._scores = 0
        self.latest.clear()

    def window_size(self, subject: str) -> int:
        return len(self._subjects[subject].values)

    def add_vector(self, vector: Mapping[str, Any], event_time_ms: int) -> list[Finding]:
        """One live vector; the findings of a check, when one was due."""
        for name, subject in self._subjects.items():
            if name != SCORE and name in vector:
                subject.values.append((event_time_ms, _number(vector[name])))
        self._vectors += 1
        if self._vectors % self.declared.check_every:
            return []
        return [
            finding
            for name, subject in self._subjects.items()
            if name != SCORE and len(subject.values) == subject.values.maxlen
            for finding in self._check_subject(name, subject)
        ]

    def add_score(self, score: float, event_time_ms: int) -> list[Finding]:
        """One live score of the serving version; the findings of a check, when one was due."""
        subject = self._subjects.get(SCORE)
        if subject is None:
            return []
        subject.values.append((event_time_ms, score))
        self._scores += 1
        if (
            self._scores % self.declared.check_every
            or len(subject.values) < self.declared.window_vectors
        ):
            return []
        return self._check_subject(SCORE, subject)

    def _check_subject(self, name: str, subject: _Subject) -> list[Finding]:
        """Hysteresis: a subject alerts when it goes past a threshold, then is *drifting* (no
        more alerts) until ``cooldown_checks`` checks in a row find it back under both."""
        declared = self.declared
        live = count_into(subject.edges, (v for _, v in subject.values))
        by_psi, by_ks = psi(subject.reference, live), ks(subject.reference, live)
        self.latest[name] = (by_psi, by_ks)
        past = by_psi > declared.psi_threshold or by_ks > declared.ks_threshold
        if not subject.drifting:
            if not past:
                return []
            subject.drifting, subject.under_checks, subject.asked = True, 0, False
            subject.alerted_at_ms = subject.values[-1][0]
            return [self._finding(name, subject, by_psi, by_ks, persistent=False)]
        if not past:
            subject.under_checks += 1
            subject.drifting = subject.under_checks < declared.cooldown_checks
            return []
        subject.under_checks = 0
        persisted_ms = subject.values[-1][0] - subject.alerted_at_ms
        if subject.asked or persisted_ms < declared.persists_for.total_seconds() * 1000:
            return []
        subject.asked = True
        return [self._finding(name, subject, by_psi, by_ks, persistent=True)]

    def _finding(
        self, name: str, subject: _Subject, by_psi: float, by_ks: float, *, persistent: bool
    ) -> Finding:
        declared = self.declared
        use_psi = by_psi > declared.psi_threshold or by_ks <= declared.ks_threshold
        return Finding(
            kind=PREDICTION_DRIFT if name == SCORE else DATA_DRIFT,
            subject=name,
            statistic="psi" if use_psi else "ks",
            value=by_psi if use_psi else by_ks,
            threshold=declared.psi_threshold if use_psi else declared.ks_threshold,
            window_start_ms=subject.values[0][0],
            window_end_ms=subject.values[-1][0],
            window_values=len(subject.values),
            persistent=persistent,
        )


def _number(value: Any) -> float | None:
    return None if value is None else float(value)

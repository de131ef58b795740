"""Concept drift: river's detectors on the stream of errors of each model version.

Each labelled pair is an error (1) when the prediction's decision differs from the outcome's
label, else 0. One detector per (model version, served_by) reads that stream: ADWIN by default
(an adaptive window that is cut where its two halves' error rates differ significantly), DDM or
Page-Hinkley when the domain declares so. A detection raises one alarm, and a fresh detector
reads on from there; for ``cooldown_pairs`` more pairs its alarms are held (hysteresis: one
drift, one alarm, not a storm). A change it finds meanwhile that began after the alarm was
raised, or goes the other way (a rise soon after a fall), is another drift: it is raised when
the hold ends, not lost. A rise whose error rate is still closer to its after than its before
``persists_for`` (event time) after its alarm (or when the hold ends, if later) is raised once
more, as persistent: a detector sees changes, not levels, and a drift that stays gives it
nothing more to see, so a first retrain too early to learn the new concept would otherwise be
the last. river's ADWIN forgets everything at a detection, so the fresh detector
first reads the pairs ADWIN kept after its cut. The change point, where ADWIN knows it, is the
event time of the pair where the error rate most likely changed (the CUSUM split of the window
ADWIN kept and as much before it): from there on, the data reflect the new concept.
Pure logic: the monitor feeds it pairs and publishes what it returns.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import Any

from river import drift
from river.drift import binary

from services.core.declarations import ConceptDrift

STATISTIC = {"adwin": "adwin", "ddm": "ddm", "page_hinkley": "page_hinkley"}
SUBJECT = "error_rate"


@dataclass(frozen=True)
class Alarm:
    model_version: str
    served_by: str
    detector: str
    error_rate_before: float | None  # over the pairs the detector had dropped, when it knows
    error_rate_after: float  # over the pairs since the change point (ADWIN) or the last ones
    pairs_seen: int  # pairs of this version the detector had read when it fired
    change_point_ms: int | None
    # Not a detection: the rise of an earlier alarm, still there ``persists_for`` later. Its
    # change point is where it was found still there: the data from there on are the new
    # concept's, and newer than anything a retrain asked for by the first alarm learned from.
    persistent: bool = False

    @property
    def worse(self) -> bool:
        """The error rate rose (or nothing is known of before): a model of the new data is
        needed. A fall is alerted too, but asks for nothing."""
        return self.error_rate_before is None or self.error_rate_after > self.error_rate_before


def make_detector(declared: ConceptDrift) -> Any:
    if declared.detector == "adwin":
        return drift.ADWIN(delta=declared.adwin_delta)  # type: ignore[no-untyped-call]
    if declared.detector == "ddm":
        return binary.DDM(warm_start=declared.ddm_warm_start)
    return drift.PageHinkley(threshold=declared.page_hinkley_threshold)


class _Watched:
    def __init__(self, declared: ConceptDrift) -> None:
        self.detector = make_detector(declared)
        self.quiet_until = 0
        self.held: Alarm | None = None  # found while quiet: raised when the quiet ends
        self.last_worse: bool | None = None  # the direction of the last alarm raised
        self.last_raised_ms = 0  # the event time of the pair that raised it
        self.seen = 0
        self.errors = 0
        self.recent: deque[tuple[int, int]] = deque(maxlen=declared.recent_pairs)
        self.rise: Alarm | None = None  # the last rise raised, until its persistence is judged


class ConceptWatch:
    def __init__(self, declared: ConceptDrift) -> None:
        self._declared = declared
        self._watched: dict[tuple[str, str], _Watched] = {}

    def add(self, version: str, served_by: str, error: bool, event_time_ms: int) -> Alarm | None:
        key = (version, served_by)
        watched = self._watched.get(key)
        if watched is None:
            watched = self._watched[key] = _Watched(self._declared)
        watched.seen += 1
        watched.errors += error
        watched.recent.append((event_time_ms, int(error)))
        detector = watched.detector
        detector.update(int(error) if self._declared.detector == "ddm" else float(error))
        alarm: Alarm | None = None
        if detector.drift_detected:
            alarm = self._alarm(version, served_by, watched)
            watched.detector = self._reseeded(watched)
        if watched.seen < watched.quiet_until:
            # The same drift found again (its transition, cut before the last alarm was raised)
            # is the storm the hold is for; a change that began after it, or one the other way
            # (a rise after a fall), is another drift, held till the end.
            if alarm is not None and self._another_drift(alarm, watched):
                watched.held = alarm
            return None
        alarm, watched.held = alarm or watched.held, None
        if alarm is not None:
            watched.quiet_until = watched.seen + self._declared.cooldown_pairs
            watched.last_worse, watched.last_raised_ms = alarm.worse, event_time_ms
            watched.rise = alarm if alarm.worse else None
            return alarm
        return self._persisting(watched, event_time_ms)

    def _persisting(self, watched: _Watched, event_time_ms: int) -> Alarm | None:
        """The last rise, raised again once if its error rate is still up ``persists_for``
        after it: over the pairs since it was raised, nearer its after than its before."""
        rise = watched.rise
        if rise is None:
            return None
        persists_for_ms = int(self._declared.persists_for.total_seconds() * 1000)
        if event_time_ms < watched.last_raised_ms + persists_for_ms:
            return None
        watched.rise = None
        since = [e for t, e in watched.recent if t >= watched.last_raised_ms]
        if not since:
            return None
        rate = sum(since) / len(since)
        before = rise.error_rate_before or 0.0
        if rate <= (before + rise.error_rate_after) / 2:
            return None
        return replace(
            rise,
            error_rate_after=rate,
            pairs_seen=watched.seen,
            change_point_ms=event_time_ms,
            persistent=True,
        )

    @staticmethod
    def _another_drift(alarm: Alarm, watched: _Watched) -> bool:
        if alarm.worse != watched.last_worse:
            return True
        began = alarm.change_point_ms
        return began is not None and began > watched.last_raised_ms

    def _reseeded(self, watched: _Watched) -> Any:
        """A fresh detector that has read the pairs after the cut. river's detectors forget
        everything at a detection, the pairs after the cut too: a change that began among them
        (a rise right after a fall) would then never be seen."""
        fresh = make_detector(self._declared)
        width = int(getattr(watched.detector, "width", 0) or 0)
        for _, error in list(watched.recent)[-width:] if width else ():
            fresh.update(int(error) if self._declared.detector == "ddm" else float(error))
        return fresh

    def _alarm(self, version: str, served_by: str, watched: _Watched) -> Alarm:
        detector, recent = watched.detector, list(watched.recent)
        width = int(getattr(detector, "width", 0) or 0)
        if 0 < width <= len(recent):
            span = recent[-2 * width :]
            k = _split([e for _, e in span], default=len(span) - width)
            before, after = span[:k], span[k:]
            change_point: int | None = after[0][0]
        else:
            after, before, change_point = recent[-self._declared.recent_pairs // 4 :], [], None
        return Alarm(
            model_version=version,
            served_by=served_by,
            detector=self._declared.detector,
            error_rate_before=sum(e for _, e in before) / len(before) if before else None,
            error_rate_after=sum(e for _, e in after) / len(after) if after else 0.0,
            pairs_seen=watched.seen,
            change_point_ms=change_point,
        )


MIN_SEGMENT = 30  # pairs on each side of an estimated change point


def _split(errors: list[int], default: int) -> int:
    """Where the error rate most likely changed: the split of ``errors`` whose two sides' means
    differ most, weighted by how many pairs each side has (the CUSUM estimate). ADWIN's own
    cut only bounds it: the window it keeps after firing still starts well before the change."""
    n = len(errors)
    if n < 2 * MIN_SEGMENT:
        return default
    total = sum(errors)
    best, best_score, running = default, -1.0, 0
    for k in range(1, n):
        running += errors[k - 1]
        if k < MIN_SEGMENT or n - k < MIN_SEGMENT:
            continue
        gap = abs((total - running) / (n - k) - running / k)
        score = gap * (k * (n - k) / n) ** 0.5
        if score > best_score:
            best, best_score = k, score
    return best

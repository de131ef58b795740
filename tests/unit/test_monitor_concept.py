"""Concept drift on the error stream: quiet on a stationary stream, one alarm per drift, as
early as river's own detector on the same stream; and the generator's injected drifts."""

from __future__ import annotations

import random
from datetime import timedelta

import numpy as np
import pytest
from river import drift

from services.core.declarations import ConceptDrift
from services.core.errors import ConfigError
from services.monitor.concept import ConceptWatch
from services.producer.drift import CONCEPT_SHARE, DATA_FACTOR, Drift, Drifts

STATIONARY_RATE = 0.05


def errors(rng: random.Random, n: int, rate: float) -> list[bool]:
    return [rng.random() < rate for _ in range(n)]


def alarms(watch: ConceptWatch, stream: list[bool]) -> list[int]:
    """Where the detector alarmed (a rise raised again as persistent is not a detection)."""
    found = []
    for i, error in enumerate(stream):
        alarm = watch.add("1", "champion", error, 1_000 * i)
        if alarm is not None and not alarm.persistent:
            found.append(i)
    return found


def test_fifty_thousand_stationary_pairs_raise_no_alarm() -> None:
    for seed in (1, 2, 3):
        stream = errors(random.Random(seed), 50_000, STATIONARY_RATE)
        assert alarms(ConceptWatch(ConceptDrift()), stream) == []


def test_a_concept_drift_raises_one_alarm_as_early_as_rivers_adwin() -> None:
    rng = random.Random(4)
    change = 10_000
    stream = errors(rng, change, STATIONARY_RATE) + errors(rng, 10_000, 0.35)
    watch = ConceptWatch(ConceptDrift(cooldown_pairs=5_000))
    found = alarms(watch, stream)
    reference = drift.ADWIN()
    first_reference = next(
        i for i, e in enumerate(stream) if reference.update(float(e)) or reference.drift_detected
    )
    assert found[0] == first_reference  # the same detector, the same stream, the same moment
    assert change <= found[0] <= change + 300  # the bound docs/monitor.md states
    assert found == [found[0]]  # one drift, one alarm (the cooldown holds the rest)


def test_the_alarm_places_the_change_point_and_the_rates_around_it() -> None:
    rng = random.Random(5)
    change = 8_000
    stream = errors(rng, change, STATIONARY_RATE) + errors(rng, 4_000, 0.4)
    watch = ConceptWatch(ConceptDrift())
    alarm = None
    for i, error in enumerate(stream):
        alarm = watch.add("7", "canary", error, 1_000 * i) or alarm
        if alarm is not None:
            break
    assert alarm is not None and alarm.model_version == "7" and alarm.served_by == "canary"
    assert alarm.change_point_ms is not None
    assert abs(alarm.change_point_ms - 1_000 * change) <= 1_000 * 300
    # ADWIN fires within a few dozen pairs of the change: the window it keeps still holds some
    # pairs from before, so the rate after is diluted, yet well above the rate before.
    assert alarm.error_rate_before is not None and alarm.error_rate_before < 0.07
    assert alarm.error_rate_after > 1.5 * alarm.error_rate_before


@pytest.mark.parametrize("detector", ["ddm", "page_hinkley"])
def test_other_detectors_are_selectable_and_alarm_on_the_drift(detector: str) -> None:
    rng = random.Random(6)
    stream = errors(rng, 5_000, STATIONARY_RATE) + errors(rng, 5_000, 0.6)
    found = alarms(ConceptWatch(ConceptDrift(detector=detector, cooldown_pairs=20_000)), stream)
    assert len(found) == 1 and found[0] >= 5_000


def test_each_version_has_its_own_detector() -> None:
    rng = random.Random(7)
    watch = ConceptWatch(ConceptDrift())
    drifting = errors(rng, 4_000, STATIONARY_RATE) + errors(rng, 4_000, 0.5)
    steady = errors(rng, 8_000, STATIONARY_RATE)
    raised = set()
    for i, (a, b) in enumerate(zip(drifting, steady, strict=True)):
        for version, error in (("1", a), ("2", b)):
            if watch.add(version, "champion", error, i) is not None:
                raised.add(version)
    assert raised == {"1"}


def test_declared_detectors_are_checked() -> None:
    with pytest.raises(ValueError, match="one of"):
        ConceptDrift(detector="kswin")


def test_drift_syntax() -> None:
    assert Drift.parse("concept@5000") == Drift("concept", 5000)
    assert Drift.parse(" data@0 ") == Drift("data", 0)
    for bad in ("concept", "concept@", "label@3", "data@-1", "data@x"):
        with pytest.raises(ConfigError, match="data@N, concept@N or pattern@N"):
            Drift.parse(bad)


def test_injected_drifts_change_amounts_or_labels_from_their_event_on() -> None:
    drifts = Drifts([Drift("data", 10), Drift("concept", 1_000)], seed=3)
    record = {"amount": 12.5, "card_id": "c"}
    assert drifts.apply(9, record, False) == (record, False)
    assert drifts.apply(10, record, False)[0]["amount"] == 12.5 * DATA_FACTOR
    assert drifts.apply(10, record, False)[1] is False  # data drift leaves the truth alone
    before = [drifts.apply(i, record, False)[1] for i in range(100, 1_000)]
    after = [drifts.apply(i, record, False)[1] for i in range(1_000, 11_000)]
    assert not any(before)
    assert np.mean(after) == pytest.approx(CONCEPT_SHARE, abs=0.02)
    assert all(drifts.apply(i, record, True)[1] for i in range(1_000, 1_100))  # frauds stay


def test_a_fall_in_the_error_rate_is_alarmed_but_asks_for_no_retraining() -> None:
    rng = random.Random(5)
    falling = errors(rng, 3_000, 0.2) + errors(rng, 5_000, 0.02)
    rising = errors(rng, 3_000, 0.02) + errors(rng, 5_000, 0.2)
    for stream, worse in ((falling, False), (rising, True)):
        watch = ConceptWatch(ConceptDrift())
        found = [a for i, e in enumerate(stream) if (a := watch.add("1", "champion", e, i))]
        assert found and found[0].error_rate_before is not None
        assert found[0].worse is worse
        assert (found[0].error_rate_after > found[0].error_rate_before) is worse


def test_a_second_drift_during_the_hold_is_raised_when_the_hold_ends() -> None:
    rng = random.Random(8)
    # A fall (a fresh stream settling), then soon after a rise (a new kind of fraud).
    stream = errors(rng, 3_000, 0.2) + errors(rng, 600, 0.05) + errors(rng, 6_000, 0.3)
    watch = ConceptWatch(ConceptDrift(cooldown_pairs=2_000))
    found = [(i, a) for i, e in enumerate(stream) if (a := watch.add("1", "champion", e, i))]
    assert [a.worse for _, a in found] == [False, True], found
    fell_at, (rose_at, rose) = found[0][0], found[1]
    assert rose_at == fell_at + 2_000  # held until the hold ended, then raised
    assert rose.change_point_ms is not None and rose.change_point_ms >= 3_000


def test_a_second_rise_that_began_during_the_hold_is_raised_when_it_ends() -> None:
    rng = random.Random(9)
    # A mild rise, then soon after a strong one (a new kind of fraud on top).
    stream = errors(rng, 4_000, 0.04) + errors(rng, 1_500, 0.09) + errors(rng, 6_000, 0.25)
    watch = ConceptWatch(ConceptDrift(cooldown_pairs=2_000))
    found = [(i, a) for i, e in enumerate(stream) if (a := watch.add("1", "champion", e, i))]
    assert len(found) == 2 and all(a.worse for _, a in found), found
    (first_at, _), (second_at, second) = found
    assert first_at < 5_500 and second_at == first_at + 2_000  # held, then raised
    assert second.change_point_ms is not None and second.change_point_ms > first_at
    assert second.error_rate_after > 0.2


def test_a_rise_still_there_after_persists_for_is_raised_once_more_as_persistent() -> None:
    """A detector sees changes, not levels: after its alarm a drift that stays gives it nothing
    more. Still up five minutes (event time, a pair a second here) later, the rise is raised
    again, once, so a retrain that came too early to learn it is not the last."""
    rng = random.Random(10)
    stream = errors(rng, 5_000, STATIONARY_RATE) + errors(rng, 3_000, 0.35)
    watch = ConceptWatch(ConceptDrift(cooldown_pairs=100, persists_for=timedelta(minutes=5)))
    found = [
        (i, a) for i, e in enumerate(stream) if (a := watch.add("1", "champion", e, 1_000 * i))
    ]
    assert [a.persistent for _, a in found] == [False, True], found
    (first_at, first), (again_at, again) = found
    assert again_at == first_at + 300  # persists_for after the alarm, in event time
    held = ConceptWatch(ConceptDrift(cooldown_pairs=2_000, persists_for=timedelta(minutes=5)))
    at = [i for i, e in enumerate(stream) if held.add("1", "champion", e, 1_000 * i)]
    assert at == [first_at, first_at + 2_000]  # or when the hold ends, if that is later
    assert again.worse and again.error_rate_after == pytest.approx(0.35, abs=0.05)
    assert again.error_rate_before == first.error_rate_before
    assert again.change_point_ms == 1_000 * again_at  # where it was found still there


def test_a_rise_that_went_away_is_not_raised_again() -> None:
    rng = random.Random(11)
    stream = (
        errors(rng, 5_000, STATIONARY_RATE)
        + errors(rng, 200, 0.5)
        + errors(rng, 3_000, STATIONARY_RATE)
    )
    watch = ConceptWatch(ConceptDrift(persists_for=timedelta(minutes=5)))
    found = [a for i, e in enumerate(stream) if (a := watch.add("1", "champion", e, 1_000 * i))]
    assert found and found[0].worse
    assert not any(a.persistent for a in found), found

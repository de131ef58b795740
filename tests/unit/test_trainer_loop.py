"""The trainer's pure decisions: the gate's rules, the canary's verdict, the golden set's
integrity, the card-testing drift."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from services.core.declarations import Gate, Retraining
from services.core.domains import load_domain
from services.core.errors import ConfigError
from services.core.paths import default_features_dir
from services.producer.drift import PATTERN_AMOUNT, PATTERN_SHARE, Drift, Drifts
from services.producer.synthetic import PaymentsGenerator
from services.trainer.canary import Totals, judge_canary
from services.trainer.gate import GOLDEN, HOLDOUT, judge
from services.trainer.golden import LABEL, ROWS_FILE, load_golden
from services.trainer.journal import Step, Told
from services.trainer.retrain import LATEST_EVENT, Request
from services.trainer.service import why_skip

PAYMENTS = load_domain(default_features_dir(), "payments")
RULES = Gate(holdout_auc_gain=0.0, golden_auc_margin=0.05, min_auc=0.6)


def test_the_gate_passes_a_candidate_better_on_the_holdout_and_close_on_the_golden_set() -> None:
    result = judge(RULES, {HOLDOUT: 0.95, GOLDEN: 0.96}, {HOLDOUT: 0.80, GOLDEN: 0.99})
    assert result.passed
    assert result.figures == {
        "holdout_auc": 0.95,
        "golden_auc": 0.96,
        "champion_holdout_auc": 0.80,
        "champion_golden_auc": 0.99,
    }
    assert len(result.reasons) == 2 and "within" in result.reasons[1]


@pytest.mark.parametrize(
    ("candidate", "broken"),
    [
        ({HOLDOUT: 0.80, GOLDEN: 0.99}, "not more"),  # no better on recent data
        ({HOLDOUT: 0.95, GOLDEN: 0.90}, "more than the allowed drop"),  # forgot the golden set
        ({HOLDOUT: 0.55, GOLDEN: 0.99}, "below the floor"),
    ],
)
def test_the_gate_fails_a_candidate_for_each_broken_rule(
    candidate: dict[str, float], broken: str
) -> None:
    result = judge(RULES, candidate, {HOLDOUT: 0.80, GOLDEN: 0.99})
    assert not result.passed
    assert any(broken in reason for reason in result.reasons), result.reasons


def test_without_a_champion_only_the_floor_counts() -> None:
    assert judge(RULES, {HOLDOUT: 0.7}, None).passed
    failed = judge(RULES, {HOLDOUT: 0.5}, None)
    assert not failed.passed and "no champion" in failed.reasons[-1]


def test_champion_totals_over_the_trial_subtract_exactly() -> None:
    first = Totals.of({"joined": 1000, "accuracy": 0.9, "logloss": 0.3})
    later = Totals.of({"joined": 1600, "accuracy": 0.8625, "logloss": 0.35})
    trial = later.minus(first)
    assert trial.joined == 600
    assert trial.accuracy == pytest.approx((1380 - 900) / 600)
    assert trial.logloss == pytest.approx((560 - 300) / 600)


def test_the_canary_waits_for_enough_outcomes_on_both_sides() -> None:
    rules = Retraining(canary_min_pairs=500, canary_accuracy_margin=0.01)
    good = Totals(600, 570.0, 60.0)
    assert judge_canary(rules, Totals(499, 499.0, 1.0), good) is None
    assert judge_canary(rules, good, Totals(499, 400.0, 1.0)) is None


def test_the_canary_is_promoted_within_the_margin_and_rolled_back_beyond_it() -> None:
    rules = Retraining(canary_min_pairs=500, canary_accuracy_margin=0.01)
    champion = Totals(1000, 950.0, 100.0)  # accuracy 0.95
    kept = judge_canary(rules, Totals(500, 471.0, 50.0), champion)  # 0.942: -0.008
    assert kept is not None and kept.promote
    assert kept.figures["canary_accuracy"] == pytest.approx(0.942)
    dropped = judge_canary(rules, Totals(500, 465.0, 50.0), champion)  # 0.93: -0.02
    assert dropped is not None and not dropped.promote and "worse than" in dropped.reason


def test_the_payments_golden_set_loads_and_matches_its_manifest() -> None:
    golden = load_golden(default_features_dir(), PAYMENTS)
    assert golden is not None
    assert golden.dataset.feature_names == PAYMENTS.model_inputs
    assert golden.dataset.dataset_id == golden.manifest["dataset_id"]
    assert 0 < golden.dataset.positives < len(golden.dataset)


def test_a_golden_set_changed_in_place_is_refused(tmp_path: Path) -> None:
    source = default_features_dir() / "golden" / "payments" / "v1"
    copy = tmp_path / "golden" / "payments" / "v1"
    shutil.copytree(source, copy)
    table = pq.read_table(copy / ROWS_FILE)
    labels = table.column(LABEL).to_numpy().copy()
    labels[0] = 1.0 - labels[0]
    pq.write_table(
        table.set_column(table.column_names.index(LABEL), LABEL, [labels]), copy / ROWS_FILE
    )
    with pytest.raises(ConfigError, match="changed in place"):
        load_golden(tmp_path, PAYMENTS)


def test_card_testing_appears_from_its_event_on_as_tiny_frauds() -> None:
    drifts = Drifts([Drift.parse("pattern@2000")], seed=3)
    events = list(PaymentsGenerator(seed=3, cards=500, rate_per_s=50.0).events(6000))
    applied = [drifts.apply(i, e.record, e.is_fraud) for i, e in enumerate(events)]
    tiny = np.array([r["amount"] <= PATTERN_AMOUNT[1] for r, _ in applied])
    fraud = np.array([f for _, f in applied])
    assert not tiny[:2000].any()
    assert tiny[2000:].mean() == pytest.approx(PATTERN_SHARE, abs=0.02)
    assert fraud[2000:][tiny[2000:]].mean() > 0.99  # the odd tiny legitimate payment aside
    with pytest.raises(ConfigError, match="pattern@N"):
        Drift.parse("pattern")


MINUTE = 60_000
COOLDOWN = timedelta(minutes=30)


def request(at: int, *, version: str = "1", change_point: int | None = None) -> Request:
    return Request(f"r{at}", "payments", version, "drift", change_point, at)


def retrain(request_id: str, end: Step, at: int, data_until: int) -> list[Told]:
    return [
        Told(Step.REQUESTED, "1", request_id, "drift", at - 3 * MINUTE),
        Told(
            Step.DATASET_BUILT,
            "1",
            request_id,
            "rows",
            at - 2 * MINUTE,
            "ds-1",
            {LATEST_EVENT: float(data_until)},
        ),
        Told(Step.TRAINED, "2", request_id, "trained", at - MINUTE),
        Told(end, "2", request_id, "why", at),
    ]


def test_the_first_request_about_the_champion_is_answered() -> None:
    assert why_skip(request(10 * MINUTE), [], COOLDOWN, "1") is None


def test_a_request_about_another_version_is_skipped() -> None:
    reason = why_skip(request(10 * MINUTE, version="heuristic"), [], COOLDOWN, "1")
    assert reason is not None and "the champion is 1" in reason
    assert "no champion" in str(why_skip(request(10 * MINUTE), [], COOLDOWN, None))


@pytest.mark.parametrize("end", [Step.PROMOTED, Step.ROLLED_BACK, Step.GATE_FAILED])
def test_requests_made_during_a_retrain_or_its_cooldown_are_skipped(end: Step) -> None:
    told = retrain("r0", end, at=100 * MINUTE, data_until=95 * MINUTE)
    for at in (99 * MINUTE, 101 * MINUTE, 129 * MINUTE):  # during it, and within 30 min after
        reason = why_skip(request(at), told, COOLDOWN, "1")
        assert reason is not None and "answered by retrain r0" in reason
    assert why_skip(request(131 * MINUTE), told, COOLDOWN, "1") is None


def test_after_a_failed_gate_a_change_later_than_its_data_is_answered_at_once() -> None:
    told = retrain("r0", Step.GATE_FAILED, at=100 * MINUTE, data_until=95 * MINUTE)
    later = request(101 * MINUTE, change_point=97 * MINUTE)
    assert why_skip(later, told, COOLDOWN, "1") is None
    within = request(101 * MINUTE, change_point=90 * MINUTE)  # the same change, seen again
    assert why_skip(within, told, COOLDOWN, "1") is not None
    promoted = retrain("r0", Step.PROMOTED, at=100 * MINUTE, data_until=95 * MINUTE)
    assert why_skip(later, promoted, COOLDOWN, "1") is not None  # a new champion gets its time


def test_an_abandoned_retrain_holds_nothing_back() -> None:
    told = retrain("r0", Step.ABANDONED, at=100 * MINUTE, data_until=95 * MINUTE)
    assert why_skip(request(101 * MINUTE), told, COOLDOWN, "1") is None

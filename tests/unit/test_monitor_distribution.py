"""Data and prediction drift against a training reference: quiet while live data look like
the training data, one alert naming the shifted feature, persistence, and the statistics."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from services.core.declarations import DataDrift
from services.models.reference import count_into, histogram_of, ks, psi, reference_of
from services.monitor.distribution import DATA_DRIFT, PREDICTION_DRIFT, DistributionWatch

DECLARED = DataDrift(
    window_vectors=2_000, check_every=500, cooldown_checks=3, persists_for=timedelta(seconds=900)
)


def training(rng: np.random.Generator, n: int = 20_000) -> dict[str, np.ndarray]:
    return {
        "amount": rng.lognormal(3.5, 1.0, n),
        "txn_count_1h": rng.poisson(2.0, n).astype(float),
        "seconds_since_last_txn": rng.exponential(3_000.0, n),
    }


def live_vectors(rng: np.random.Generator, n: int, amount_factor: float = 1.0) -> list[dict]:
    columns = training(rng, n)
    since = columns["seconds_since_last_txn"]
    return [
        {
            "amount": float(columns["amount"][i]) * amount_factor,
            "txn_count_1h": float(columns["txn_count_1h"][i]),
            "seconds_since_last_txn": None if i % 10 == 0 else float(since[i]),
        }
        for i in range(n)
    ]


def watch_for(rng: np.random.Generator) -> DistributionWatch:
    watch = DistributionWatch(DECLARED)
    watch.use_reference("3", reference_of(training(rng), rng.beta(2, 5, 20_000)))
    return watch


def test_live_data_like_the_training_data_raise_nothing() -> None:
    rng = np.random.default_rng(1)
    watch = watch_for(rng)
    findings = [f for i, v in enumerate(live_vectors(rng, 20_000)) for f in watch.add_vector(v, i)]
    findings += [f for i, s in enumerate(rng.beta(2, 5, 20_000)) for f in watch.add_score(s, i)]
    assert findings == []


def test_a_shifted_feature_raises_one_alert_naming_it_then_a_persistent_one() -> None:
    rng = np.random.default_rng(2)
    watch = watch_for(rng)
    stream = live_vectors(rng, 4_000) + live_vectors(rng, 6_000, amount_factor=3.0)
    findings = [f for i, v in enumerate(stream) for f in watch.add_vector(v, 1_000 * i)]
    assert [(f.kind, f.subject, f.persistent) for f in findings] == [
        (DATA_DRIFT, "amount", False),
        (DATA_DRIFT, "amount", True),
    ]
    first = findings[0]
    assert first.statistic == "psi" and first.value > DECLARED.psi_threshold
    assert first.window_values == DECLARED.window_vectors
    assert first.window_end_ms - first.window_start_ms == 1_000 * (DECLARED.window_vectors - 1)


def test_a_shifted_score_is_prediction_drift() -> None:
    rng = np.random.default_rng(3)
    watch = watch_for(rng)
    scores = list(rng.beta(2, 5, 3_000)) + list(rng.beta(5, 2, 3_000))
    findings = [f for i, s in enumerate(scores) for f in watch.add_score(float(s), i)]
    assert findings and findings[0].kind == PREDICTION_DRIFT and findings[0].subject == "score"


def test_psi_and_ks_on_the_reference_bins() -> None:
    rng = np.random.default_rng(4)
    reference = histogram_of(rng.normal(0, 1, 50_000))
    edges, counts = reference["edges"], reference["counts"]
    assert len(edges) == 9 and sum(counts) == 50_000
    same = count_into(edges, rng.normal(0, 1, 5_000).tolist())
    moved = count_into(edges, rng.normal(1, 1, 5_000).tolist())
    assert psi(counts, same) < 0.02 and ks(counts, same) < 0.04
    assert psi(counts, moved) > 0.5 and ks(counts, moved) == pytest.approx(0.38, abs=0.05)
    assert count_into(edges, [None, float("nan"), -1e9, 1e9]) == [1] + [0] * 8 + [1]

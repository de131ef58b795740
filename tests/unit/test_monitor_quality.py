"""Quality figures against a brute-force recomputation; windows, segments and coverage."""

from __future__ import annotations

import math
import random

import pytest

from services.core.declarations import Segment
from services.monitor.quality import AUC_BINS, Pair, Quality, figures_of


def brute_auc(pairs: list[Pair]) -> float:
    positives = [p.score for p in pairs if p.label]
    negatives = [p.score for p in pairs if not p.label]
    wins = sum(1.0 if s > t else 0.5 if s == t else 0.0 for s in positives for t in negatives)
    return wins / (len(positives) * len(negatives))


def random_pairs(rng: random.Random, n: int) -> list[Pair]:
    pairs = []
    for _ in range(n):
        label = rng.random() < 0.3
        score = min(1.0, max(0.0, rng.gauss(0.65 if label else 0.35, 0.2)))
        pairs.append(Pair(score, score >= 0.5, label, rng.randrange(0, 60_000)))
    return pairs


def test_figures_equal_a_brute_force_recomputation() -> None:
    pairs = random_pairs(random.Random(5), 400)
    pairs += [Pair(0.5, True, True, 10), Pair(0.5, True, False, 10)]  # a tie across labels
    figures = figures_of(pairs)
    n = len(pairs)
    tp = sum(p.decision and p.label for p in pairs)
    assert figures.joined == n
    assert figures.accuracy == sum(p.decision == p.label for p in pairs) / n
    assert figures.precision == tp / sum(p.decision for p in pairs)
    assert figures.recall == tp / sum(p.label for p in pairs)
    clipped = [(min(max(p.score, 1e-15), 1 - 1e-15), p.label) for p in pairs]
    expected_logloss = -sum(math.log(s if y else 1 - s) for s, y in clipped) / n
    assert figures.logloss == pytest.approx(expected_logloss, rel=1e-12)
    assert figures.auc == pytest.approx(brute_auc(pairs), abs=1e-12)
    delays = sorted(p.label_delay_ms for p in pairs)
    assert figures.label_delay_p50_ms == delays[n // 2]


def test_figures_of_nothing_or_one_class_are_none_not_made_up() -> None:
    assert figures_of([]).accuracy is None
    one_class = figures_of([Pair(0.2, False, False, 0), Pair(0.9, True, False, 0)])
    assert one_class.auc is None and one_class.recall is None
    assert one_class.accuracy == 0.5 and one_class.precision == 0.0


def test_the_since_start_auc_is_exact_up_to_its_bins() -> None:
    pairs = random_pairs(random.Random(6), 3000)
    quality = Quality(window_pairs=100)
    for pair in pairs:
        quality.add("1", "champion", (), pair)
    total = quality.total(("1", "champion", "all"))
    assert total.auc == pytest.approx(brute_auc(pairs), abs=1 / AUC_BINS)
    assert total.joined == 3000
    assert total.accuracy == figures_of(pairs).accuracy
    on_the_grid = [Pair(round(p.score * 100) / 100, p.decision, p.label, 0) for p in pairs]
    gridded = Quality(window_pairs=10)
    for pair in on_the_grid:
        gridded.add("1", "champion", (), pair)
    assert gridded.total(("1", "champion", "all")).auc == pytest.approx(brute_auc(on_the_grid))


def test_the_window_holds_the_latest_pairs_of_each_version_and_segment() -> None:
    quality = Quality(window_pairs=50)
    pairs = random_pairs(random.Random(7), 200)
    for i, pair in enumerate(pairs):
        quality.add("2" if i % 2 else "1", "canary", ("amount<50",) if i < 100 else (), pair)
    assert quality.window(("1", "canary", "all")) == figures_of(pairs[0::2][-50:])
    assert quality.window(("2", "canary", "amount<50")) == figures_of(pairs[1:100:2][-50:])
    assert quality.total(("2", "canary", "amount<50")).joined == 50
    assert quality.figure_keys() == [
        ("1", "canary", "all"),
        ("1", "canary", "amount<50"),
        ("2", "canary", "all"),
        ("2", "canary", "amount<50"),
    ]


def test_coverage_is_labelled_over_predicted() -> None:
    quality = Quality(window_pairs=10)
    for _ in range(8):
        quality.predicted("1", "champion")
    assert quality.coverage("1", "champion") == 0.0
    for pair in random_pairs(random.Random(8), 2):
        quality.add("1", "champion", (), pair)
    assert quality.coverage("1", "champion") == 0.25
    assert quality.coverage("9", "champion") is None


def test_segment_bands() -> None:
    amount = Segment("amount", (0.0, 50.0, 200.0))
    assert [amount.band_of(v) for v in (-3.0, 49.99, 50.0, 199.0, 200.0, 1e9)] == [
        "amount<50",
        "amount<50",
        "amount 50-200",
        "amount 50-200",
        "amount>=200",
        "amount>=200",
    ]
    assert amount.band_of(None) is None and amount.band_of(math.nan) is None
    with pytest.raises(ValueError, match="edges must rise"):
        Segment("amount", (50.0, 0.0))

"""The soak's verdict from its samples: memory growth after the warm-up, lag, p99 per quarter."""

from __future__ import annotations

from pathlib import Path

from services.bench.soak import Sample, SoakResult, plot, read_json, summarise, write_json


def result(
    rss_at: list[float],
    lag_at: list[int],
    p99_at: list[float],
    idle: int = 0,
    broker_at: list[float] | None = None,
    loadgen_at: list[float] | None = None,
) -> SoakResult:
    """Samples every 5 s; the first ``idle`` ones before any prediction (the load generator
    still encoding)."""
    made = SoakResult(minutes=1, rate=1000, sample_s=5, warm_up_s=10, broker="kafka", cards=100)
    for i, (rss, lag, p99) in enumerate(zip(rss_at, lag_at, p99_at, strict=True)):
        made.samples.append(
            Sample(
                t_s=5.0 * i,
                rss_mib={
                    "scorer": rss,
                    "featurizer": 100.0,
                    "broker": (broker_at or [400.0] * len(rss_at))[i],
                    "loadgen": (loadgen_at or [300.0] * len(rss_at))[i],
                },
                cpu_percent={"scorer": 20.0, "featurizer": 30.0},
                lag={"scorer-group": lag},
                latency_ms={"p50": 20.0, "p95": 40.0, "p99": p99, "max": 90.0},
                predicted=max(0, 5000 * (i + 1 - idle)),
                scored_ms={"p50": 10.0, "p95": 20.0, "p99": p99 / 2, "max": 45.0},
            )
        )
    return made


def test_memory_that_keeps_growing_after_the_warm_up_is_not_flat() -> None:
    warm_then_flat = result([50, 90] + [100.0] * 20, [0] * 22, [50.0] * 22)
    summary = summarise(warm_then_flat)
    assert summary["rss_flat"] is True  # growth during the warm-up does not count
    assert summary["rss_growth_after_warm_up"]["scorer"] == 0.0
    leaking = result([100.0 + 5 * i for i in range(22)], [0] * 22, [50.0] * 22)
    summary = summarise(leaking)
    assert summary["rss_flat"] is False
    assert summary["rss_growth_after_warm_up"]["scorer"] > 0.1


def test_the_broker_redis_and_the_load_generator_are_recorded_but_not_judged() -> None:
    heap_filling = [400.0 + 10 * i for i in range(22)]
    summary = summarise(
        result([100.0] * 22, [0] * 22, [50.0] * 22, broker_at=heap_filling, loadgen_at=heap_filling)
    )
    assert summary["rss_growth_after_warm_up"]["broker"] > 0.1
    assert summary["rss_growth_after_warm_up"]["loadgen"] > 0.1
    assert summary["rss_flat"] is True and summary["rss_judged"] == ["featurizer", "scorer"]


def test_the_warm_up_counts_from_the_first_prediction() -> None:
    """Four idle samples while the generator encodes, then the load: memory that grows as the
    load begins is the warm-up's, not growth after it."""
    rss = [50.0] * 4 + [70.0] + [100.0] * 21
    summary = summarise(result(rss, [0] * 26, [50.0] * 26, idle=4))
    assert summary["load_began_s"] == 15.0  # the sample before the first prediction
    assert summary["rss_growth_after_warm_up"]["scorer"] == 0.0
    assert summarise(result(rss, [0] * 26, [50.0] * 26))["rss_flat"] is False  # from t = 0


def test_lag_and_p99_are_summarised_after_the_warm_up() -> None:
    lags = [5000, 3000] + [10 * (i % 3) for i in range(20)]
    p99s = [500.0, 400.0] + [30.0] * 10 + [60.0] * 10
    summary = summarise(result([100.0] * 22, lags, p99s))
    assert summary["lag_peak_after_warm_up"] == {"scorer-group": 20}
    assert summary["p99_ms_median_per_quarter"] == [30.0, 30.0, 60.0, 60.0]
    assert summary["scored_p99_ms_median_per_quarter"] == [15.0, 15.0, 30.0, 30.0]
    assert summary["every_event_predicted_once"] is True
    served = result([100.0] * 22, lags, p99s)
    served.served_by = {"champion": 1990, "fallback": 10}
    assert summarise(served)["fallback_share"] == 0.005


def test_too_short_a_run_says_so() -> None:
    assert "too few" in summarise(result([1.0] * 3, [0] * 3, [1.0] * 3))["note"]


def test_the_json_and_the_plot_are_written(tmp_path: Path) -> None:
    made = result([100.0] * 8, [0] * 8, [20.0] * 8)
    write_json(made, tmp_path / "soak.json")
    plot(made, tmp_path / "soak.png")
    assert '"samples"' in (tmp_path / "soak.json").read_text()
    assert read_json(tmp_path / "soak.json") == made
    assert (tmp_path / "soak.png").read_bytes()[:4] == b"\x89PNG"

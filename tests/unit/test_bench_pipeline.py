"""The pure parts of ``streamml bench``: event ids, per-step accounting, the report."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, start_http_server

from services.bench.arrivals import StepArrivals
from services.bench.loadgen import (
    StepPlan,
    encoded_events,
    encoded_outcomes,
    event_id,
    parse_event_id,
    schedule,
)
from services.bench.pipeline import StepResult, SystemResult
from services.bench.pipeline_report import DOCS_END, DOCS_START, table, throughput_ratio, write_docs
from services.bench.procstat import exited
from services.bench.scrape import histogram_mean, metric_totals
from services.bench.stats import percentile
from services.core.serde import CodecFactory


def step(offered: float, throughput: float, *, kept_up: bool) -> StepResult:
    return StepResult(
        offered_per_s=offered,
        seconds=10.0,
        sent=int(offered * 10),
        predicted=int(offered * 10),
        duplicated=0,
        missing=0,
        kept_up=kept_up,
        throughput_per_s=throughput,
        latency_ms_p50=5.0,
        latency_ms_p95=9.0,
        latency_ms_p99=12.0,
        latency_ms_max=30.0,
        vector_ms_p50=2.0,
        vector_ms_p99=6.0,
        send_lag_s=0.0,
        cpu_seconds={"broker": 1.5, "scorer": 0.5},
        stages={"scorer_batches": 40, "scorer_mean_batch": 25.5, "scorer_mean_commit_ms": 18.2},
    )


def test_event_ids_carry_run_step_and_index_and_others_are_told_apart() -> None:
    assert parse_event_id(event_id("ab12cd34", 3, 1_234_567)) == ("ab12cd34", 3, 1_234_567)
    for foreign in ("e-1", "card-7-x", "", "a-b-c"):
        assert parse_event_id(foreign) is None


def test_a_step_plan_survives_its_trip_to_the_generator_process() -> None:
    plan = StepPlan("127.0.0.1:9092", "/s", "payments.transactions", 10, 7, "r", 2, 1_500.0, 4.0)
    assert StepPlan.from_json(plan.to_json()) == plan
    assert plan.count == 6_000


def test_each_event_s_outcome_follows_it_by_the_label_delay_in_one_schedule(
    codecs: CodecFactory,
) -> None:
    plan = StepPlan(
        "127.0.0.1:9092", "/s", "payments.transactions", 10, 7, "r", 0, 100.0, 2.0,
        outcomes_topic="payments.outcomes", label_delay_s=0.5,
    )  # fmt: skip
    assert StepPlan.from_json(plan.to_json()) == plan
    start = 1_000.0
    events = encoded_events(plan, start, codecs.for_topic(plan.topic))
    outcomes = encoded_outcomes(plan, start, events, codecs.for_topic(plan.outcomes_topic))
    merged = list(schedule(plan, start, events, outcomes))
    assert [due for due, *_ in merged] == sorted(due for due, *_ in merged)
    sent = {plan.topic: {}, plan.outcomes_topic: {}}  # event id -> due
    for due, _, topic, _key, value in merged:
        record = codecs.for_topic(topic).decode(value)
        sent[topic][record["event_id"]] = (due, record)
    events_sent, outcomes_sent = sent[plan.topic], sent[plan.outcomes_topic]
    assert set(events_sent) == set(outcomes_sent) and len(events_sent) == plan.count
    for identifier, (due, outcome) in outcomes_sent.items():
        event_due, event = events_sent[identifier]
        assert due == pytest.approx(event_due + 0.5)
        assert outcome["observed_at"] == event["event_time"] + 500
    assert list(schedule(plan, start, events, [])) == [
        (start + i / plan.rate, i, plan.topic, k, v) for i, (k, v) in enumerate(events)
    ]


def test_step_arrivals_count_missing_and_duplicated_events() -> None:
    arrivals = StepArrivals(5)
    for index in (0, 1, 1, 3, 3, 3):
        arrivals.seen[index] += 1
    assert arrivals.arrived == 3
    assert arrivals.duplicated == 2


def test_sustained_throughput_is_the_best_kept_up_step_and_the_ratio_uses_it() -> None:
    ours = SystemResult(
        "streamml", 10_000, 4, [step(1_000, 990, kept_up=True)], broker="Apache Kafka 4.4.0"
    )
    ours.steps.append(step(8_000, 7_900, kept_up=True))
    ours.steps.append(step(12_000, 9_000, kept_up=False))  # fell behind: not sustained
    peer = SystemResult("peer", 10_000, 4, [step(100, 99, kept_up=True)])
    peer.steps.append(step(200, 120, kept_up=False))
    assert ours.sustained_per_s == 7_900
    quix = SystemResult("quix", 10_000, 4, [step(1_000, 990, kept_up=True)])
    quix.steps.append(step(1_500, 1_100, kept_up=False))
    assert throughput_ratio([ours, peer]) == 7_900 / 99
    assert throughput_ratio([ours, peer, quix], "quix") == 7_900 / 990
    text = table([ours, peer, quix])
    assert "| streamml | 12,000 | 9,000 | no |" in text
    assert "streamml sustains 79.8 times peer's throughput" in text
    assert "streamml sustains 8.0 times quix's throughput" in text
    assert "**quix at 1,000 events/s**: p50" in text
    assert "| scorer 40 x 25.5, 18.2 ms |" in text
    assert "4 partitions, on Apache Kafka 4.4.0; kept up: done within 1 s + 0 ms" in text


def test_the_docs_section_is_replaced_between_its_markers_and_nothing_else(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text(f"# Benchmarks\n\nbefore\n\n{DOCS_START}\nold table\n{DOCS_END}\n\nafter\n")
    write_docs(docs, f"{DOCS_START}\nnew table\n{DOCS_END}")
    assert docs.read_text() == (
        f"# Benchmarks\n\nbefore\n\n{DOCS_START}\nnew table\n{DOCS_END}\n\nafter\n"
    )
    fresh = tmp_path / "other.md"
    fresh.write_text("# Other\n")
    write_docs(fresh, f"{DOCS_START}\nx\n{DOCS_END}")
    assert fresh.read_text() == f"# Other\n\n{DOCS_START}\nx\n{DOCS_END}\n"


def test_histogram_means_between_two_scrapes_of_a_live_metrics_endpoint() -> None:
    registry = CollectorRegistry()
    commit = Histogram("streamml_x_commit_seconds", "t", ["domain"], registry=registry)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        port = server.server_port
        commit.labels("a").observe(0.010)
        before = metric_totals(port, "streamml_x_")
        commit.labels("a").observe(0.020)
        commit.labels("b").observe(0.040)  # label sets are summed
        after = metric_totals(port, "streamml_x_")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert histogram_mean(before, after, "streamml_x_commit_seconds", 1000.0) == (2, 30.0)
    assert histogram_mean(after, after, "streamml_x_commit_seconds") == (0, 0.0)


def test_a_process_that_ended_is_told_from_one_that_runs() -> None:
    import subprocess
    import sys

    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 20
        while not exited(ended.pid):  # it ends, and stays a zombie until reaped
            assert time.monotonic() < deadline, "a process that does nothing never ended"
            time.sleep(0.05)
        assert not exited(running.pid)
    finally:
        running.kill()
        running.wait()
        ended.wait()
    assert exited(ended.pid)  # reaped: gone


def test_percentiles_are_nearest_rank_and_empty_is_zero() -> None:
    ordered = [float(v) for v in range(1, 101)]
    assert percentile(ordered, 50, 1) == 51.0
    assert percentile(ordered, 99, 1) == 100.0
    assert percentile([1.234], 99, 2) == 1.23
    assert percentile([], 50, 1) == 0.0

"""``streamml bench soak``: the pipeline under a steady load for a long time, watched.

On a fresh local stack (Apache Kafka unless the embedded broker is chosen) the bootstrap model is
promoted, the featurizer, the scorer and the monitor start, and the open-loop load generator
offers ``rate`` events/s for ``minutes``, each event's outcome following it ``LABEL_DELAY_S``
later. Every ``sample_s`` seconds this records, for each process (broker,
Redis, the services, the load generator): resident memory (RSS) and CPU; each consumer group's
lag (records behind the end of its topics); and the latency percentiles of the predictions that
arrived since the last sample: event time to a read_committed reader's receipt, and event time
to the scorer's ``predicted_at`` stamp (which side of the scorer's commit a change is on). At
the end every event is accounted for (predicted once, more than once, or missing; joined with
its outcome by the monitor), and the summary says whether memory
stayed flat after the warm-up (under ``RSS_GROWTH_LIMIT``), the lag stayed bounded and p99 stable.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from services.bench.arrivals import Arrivals
from services.bench.lags import GroupLags
from services.bench.loadgen import StepPlan
from services.bench.output import say
from services.bench.procstat import exited, resident_mib, usage
from services.bench.scrape import metric_totals
from services.bench.stats import percentile
from services.bench.systems import OurPipeline, champion
from services.core.domains import load_domain
from services.core.errors import StackError
from services.core.serde import codecs_for
from services.core.settings import StackSettings
from services.featurizer.settings import FeaturizerSettings
from services.monitor.service import group_id as monitor_group
from services.monitor.settings import MonitorSettings
from services.scorer.service import group_id as scorer_group
from services.scorer.settings import ScorerSettings
from services.stack import local

SEED = 7
TRAIN_EVENTS = 20_000
DRAIN_S = 60.0
RSS_GROWTH_LIMIT = 0.10  # after the warm-up: "flat"
# Recorded, not judged: the servers the stack runs for us (a JVM's RSS grows as its heap is
# first touched, up to -Xmx; Redis's with the online rows; neither is our state), and the load
# generator (it holds the run's events, encoded before it starts).
LOAD_GENERATOR = "loadgen"
NOT_JUDGED = ("broker", "redis", LOAD_GENERATOR)
PROGRESS_EVERY_S = 60.0
LABEL_DELAY_S = 30.0
SERVICES = ("featurizer", "scorer", "monitor")
JOINED = "streamml_monitor_joined_total"


@dataclass
class Sample:
    t_s: float  # since the load began
    rss_mib: dict[str, float]
    cpu_percent: dict[str, float]  # of one core, over the last interval
    lag: dict[str, int]  # consumer group: records behind the end of its topics
    latency_ms: dict[str, float]  # p50, p95, p99, max of the interval's predictions
    predicted: int  # predictions of this run so far
    # the same, from event time to the scorer's predicted_at only (featurizer and scorer, not
    # the scorer's commit nor the reader): says which side a change of latency_ms is on
    scored_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class SoakResult:
    minutes: float
    rate: float
    sample_s: float
    warm_up_s: float
    broker: str
    cards: int
    sent: int = 0
    predicted: int = 0
    missing: int = 0
    duplicated: int = 0
    labelled: int = 0  # prediction-outcome pairs the monitor joined
    served_by: dict[str, int] = field(default_factory=dict)  # predictions by who scored them
    samples: list[Sample] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def run_soak(
    base: StackSettings,
    *,
    minutes: float,
    rate: float,
    sample_s: float,
    cards: int,
    warm_up_s: float | None = None,
) -> SoakResult:
    seconds = minutes * 60
    warm = min(seconds / 4, 120.0) if warm_up_s is None else warm_up_s
    home = base.home / "bench-soak"
    shutil.rmtree(home, ignore_errors=True)
    with local.running_servers(base.model_copy(update={"home": home})) as (settings, state):
        domain = load_domain(settings.features_dir, "payments")
        champion(settings, domain, TRAIN_EVENTS, SEED)  # promoted: the scorer serves it
        system = OurPipeline(settings, home, {}, SERVICES)
        pids = {
            **system.pids,
            "broker": next(iter(state.broker_pids), 0),
            "redis": state.redis_pid or 0,
        }
        result = SoakResult(minutes, rate, sample_s, warm, state.broker, cards)
        run_id = uuid.uuid4().hex[:8]
        codecs = codecs_for(settings)
        arrivals = Arrivals(
            settings, domain.topics.predictions, codecs.for_topic(domain.topics.predictions), run_id
        )
        featurizer = FeaturizerSettings().featurizer_app_id  # the services' own defaults
        forwarded = [domain.topics.by_entity(featurizer, e.name) for e in domain.secondary_entities]
        lags = GroupLags(
            settings,
            {
                featurizer: [domain.topics.events, *forwarded],
                scorer_group(ScorerSettings(), domain): [domain.topics.features],
                monitor_group(MonitorSettings(), domain): [
                    domain.topics.predictions,
                    domain.topics.outcomes,
                ],
            },
        )
        plan = StepPlan(
            settings.bootstrap, str(settings.schemas_dir), domain.topics.events,
            cards, SEED, run_id, 0, rate, seconds,
            outcomes_topic=domain.topics.outcomes, label_delay_s=LABEL_DELAY_S,
        )  # fmt: skip
        arrivals.expect(0, plan.count)
        say(
            f"soak: {rate:,.0f} events/s for {minutes:g} min ({plan.count:,} events), a sample "
            f"every {sample_s:g} s; warm-up {warm:.0f} s; logs in {home}"
        )
        try:
            generator = subprocess.Popen(
                [sys.executable, "-m", "services.bench.loadgen", plan.to_json()],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                _watch(result, generator, arrivals, lags, pids, seconds)
            except BaseException:
                generator.kill()  # never left behind, sending to a stack that is gone
                generator.wait()
                raise
            out, _ = generator.communicate()
            if generator.returncode:
                raise StackError(f"the load generator failed (exit {generator.returncode})")
            result.sent = json.loads(out.strip().splitlines()[-1])["sent"]
            arrivals.wait(0, DRAIN_S)
            final = arrivals.snapshot(0)
            result.predicted, result.duplicated = final.arrived, final.duplicated
            result.served_by = dict(final.served_by)
            result.missing = plan.count - final.arrived
            result.labelled = _joined(system.metrics_ports["monitor"], plan.count)
        finally:
            arrivals.close()
            lags.close()
            system.stop()
    result.summary = summarise(result)
    return result


def _watch(
    result: SoakResult,
    generator: subprocess.Popen[str],
    arrivals: Arrivals,
    lags: GroupLags,
    pids: dict[str, int],
    seconds: float,
) -> None:
    """Samples until the generator is done (it is watched too: its CPU says whether it had
    the time to send on schedule)."""
    watched = {**pids, LOAD_GENERATOR: generator.pid}
    started = last = time.monotonic()
    cpu_before = {n: usage(p).cpu_seconds for n, p in watched.items() if p}
    seen, said = 0, started
    while generator.poll() is None:
        time.sleep(max(0.0, result.sample_s - (time.monotonic() - last)))
        now = time.monotonic()
        gone = sorted(n for n, p in pids.items() if p and exited(p))
        if gone:
            raise StackError(f"soak: {', '.join(gone)} exited; see the logs")
        if generator.poll() is not None:
            break  # done since the last sample: its last interval is not a full one
        cpu = {n: usage(p).cpu_seconds for n, p in watched.items() if p}
        latencies, scored, seen = arrivals.latencies_since(0, seen)
        sample = Sample(
            t_s=round(now - started, 1),
            rss_mib={n: round(resident_mib(p), 1) for n, p in watched.items() if p},
            cpu_percent={n: round(100 * (cpu[n] - cpu_before[n]) / (now - last), 1) for n in cpu},
            lag=lags.read(),
            latency_ms=_percentiles(latencies),
            predicted=seen,
            scored_ms=_percentiles(scored),
        )
        result.samples.append(sample)
        cpu_before, last = cpu, now
        if now - said >= PROGRESS_EVERY_S:
            said = now
            say(f"soak: {sample.t_s / 60:.0f}/{seconds / 60:.0f} min, {_line(sample)}")


def _joined(port: int, expected: int) -> int:
    """The monitor's joined pairs once they reach ``expected``, or after ``DRAIN_S``."""
    deadline = time.monotonic() + DRAIN_S
    while True:
        joined = int(metric_totals(port, JOINED).get(JOINED, 0))
        if joined >= expected or time.monotonic() > deadline:
            return joined
        time.sleep(1.0)


def _percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {}
    ordered = sorted(latencies)
    found = {f"p{q}": percentile(ordered, q, 1) for q in (50, 95, 99)}
    found["max"] = round(ordered[-1], 1)
    return found


def _line(sample: Sample) -> str:
    rss = ", ".join(f"{n} {v:.0f}" for n, v in sample.rss_mib.items())
    lag = ", ".join(f"{n} {v}" for n, v in sample.lag.items())
    p99 = sample.latency_ms.get("p99", float("nan"))
    return f"RSS MiB: {rss}; lag: {lag}; p99 {p99:.0f} ms; predicted {sample.predicted:,}"


def summarise(result: SoakResult) -> dict[str, Any]:
    """RSS growth after the warm-up per process (``rss_flat`` judges streamml's services, not
    the broker's or Redis's), the lag's peak and end, p99 per quarter. The
    warm-up counts from the first prediction: the load generator encodes everything it will send
    before it starts (minutes, for an hour's events and outcomes)."""
    began = load_began_s(result)
    after = [s for s in result.samples if s.t_s >= began + result.warm_up_s]
    if len(after) < 4:
        return {"note": "too few samples after the warm-up to judge"}
    head, tail = after[: max(1, len(after) // 10)], after[-max(1, len(after) // 10) :]
    growth = {
        name: round(
            _mean([s.rss_mib[name] for s in tail]) / _mean([s.rss_mib[name] for s in head]) - 1, 4
        )
        for name in after[0].rss_mib
    }
    quarter = max(1, len(after) // 4)
    quarters = [after[i : i + quarter] for i in range(0, quarter * 4, quarter)]
    p99_by_quarter = [
        round(_median([s.latency_ms["p99"] for s in part if s.latency_ms]), 1) for part in quarters
    ]
    scored_p99_by_quarter = [
        round(_median([s.scored_ms["p99"] for s in part if s.scored_ms]), 1) for part in quarters
    ]
    groups = sorted({g for s in after for g in s.lag})
    lag_peak = {g: max(s.lag.get(g, 0) for s in after) for g in groups}
    return {
        "load_began_s": began,
        "rss_growth_after_warm_up": growth,
        "rss_flat": all(g < RSS_GROWTH_LIMIT for n, g in growth.items() if n not in NOT_JUDGED),
        "rss_judged": sorted(n for n in growth if n not in NOT_JUDGED),
        "lag_peak_after_warm_up": lag_peak,
        "lag_at_end": after[-1].lag,
        "p99_ms_median_per_quarter": p99_by_quarter,
        "scored_p99_ms_median_per_quarter": scored_p99_by_quarter,
        "every_event_predicted_once": result.missing == 0 and result.duplicated == 0,
        "every_event_labelled": result.labelled == result.sent,
        "fallback_share": round(
            result.served_by.get("fallback", 0) / max(1, sum(result.served_by.values())), 5
        ),
    }


def load_began_s(result: SoakResult) -> float:
    """When the first predictions came (the sample before the first that counted any)."""
    samples = result.samples
    first = next((i for i, s in enumerate(samples) if s.predicted > 0), 0)
    return samples[first - 1].t_s if first > 0 else 0.0


def read_json(path: Path) -> SoakResult:
    """A soak's result as ``write_json`` wrote it (to summarise or plot it again)."""
    data = json.loads(path.read_text())
    samples = [Sample(**sample) for sample in data.pop("samples")]
    return SoakResult(**data, samples=samples)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _median(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def write_json(result: SoakResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(result), indent=1) + "\n")


_PANELS = ("RSS (MiB)", "CPU (% of a core)", "consumer lag (records)", "latency (ms)")


def _panel(sample: Sample, title: str) -> dict[str, float | None]:
    """One sample's series of a panel, by name."""
    if title == _PANELS[0]:
        return dict(sample.rss_mib)
    if title == _PANELS[1]:
        return dict(sample.cpu_percent)
    if title == _PANELS[2]:
        return {k: float(v) for k, v in sample.lag.items()}
    found = {k: sample.latency_ms.get(k) for k in ("p50", "p99")}
    found["p99 to predicted_at"] = sample.scored_ms.get("p99")
    return found


def plot(result: SoakResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s.t_s / 60 for s in result.samples]
    figure, axes = plt.subplots(4, 1, figsize=(9, 11), sharex=True)
    for axis, title in zip(axes, _PANELS, strict=True):
        names = list(_panel(result.samples[0], title)) if result.samples else []
        for name in names:
            axis.plot(minutes, [_panel(s, title).get(name) for s in result.samples], label=name)
        axis.set_ylabel(title)
        axis.legend(fontsize=7, loc="upper left")
        warm = load_began_s(result) + result.warm_up_s
        axis.axvline(warm / 60, color="grey", linestyle=":", linewidth=1)
    axes[-1].set_xlabel("minutes")
    figure.suptitle(
        f"soak: {result.rate:,.0f} events/s for {result.minutes:g} min on {result.broker}"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def run_and_report(
    base: StackSettings, minutes: float, rate: float, sample_s: float, cards: int, out: Path
) -> SoakResult:
    """Runs the soak; writes ``out`` (JSON) and the plot beside it (``.png``)."""
    result = run_soak(base, minutes=minutes, rate=rate, sample_s=sample_s, cards=cards)
    write_json(result, out)
    plot(result, out.with_suffix(".png"))
    say(f"soak: {json.dumps(result.summary)}")
    say(f"soak: wrote {out} and {out.with_suffix('.png')}")
    return result

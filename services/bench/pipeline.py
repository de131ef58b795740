"""``streamml bench``: the whole pipeline, events in to predictions out, against the peer.

Method, per system (ours: the featurizer and the scorer; the peer: services/bench/peer), each
on a fresh embedded stack (broker and Redis) on this machine:

1. The bootstrap model is trained and promoted; the system's processes start; a warm-up step
   (a few hundred events) must come out as predictions before anything is measured.
2. Steps of rising offered rate. Each step is one run of the open-loop load generator in a
   process of its own (``loadgen.py``): events due at fixed times, stamped with their due time.
   The predictions are read, read_committed, in this process (``arrivals.py``); so are the
   feature vectors, which splits each latency into the featurizer's share and the rest.
3. A step is **kept up** when every one of its events has been predicted within
   ``KEEP_UP_S`` plus the system's own steady latency (the p99 of its warm-up's second half,
   past the start's transient) of the step's last
   due time, and the generator itself kept to its schedule. The allowance lets a system whose
   outputs wait for a checkpoint (Quix Streams under exactly-once) show the rate it keeps
   pace with; its latency is reported beside.
   The first step that is not kept up ends the ladder: the pipeline fell behind (its backlog
   grows as long as the load lasts). Its events are still waited for, up to ``DRAIN_S``, so
   every event is accounted for: predicted once, predicted more than once, or missing.
4. Per step: sustained throughput (predictions over the step's span), latency from event time
   to receipt (p50, p95, p99, max), and CPU seconds of every process over the step (broker,
   Redis, each service, the load generator, this measuring process); peak RSS at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from services.bench.arrivals import Arrivals, StepArrivals
from services.bench.loadgen import StepPlan, StepSent
from services.bench.output import say
from services.bench.procstat import exited, usage
from services.bench.scrape import histogram_mean, metric_totals
from services.bench.stats import percentile
from services.bench.systems import champion, start_system
from services.core.declarations import Domain
from services.core.domains import load_domain
from services.core.errors import StackError
from services.core.serde import codecs_for
from services.core.settings import StackSettings
from services.stack import local

KEEP_UP_S = 1.0
DRAIN_S = 30.0
WARM_UP_TIMEOUT_S = 180.0
TRAIN_EVENTS = 20_000
SEED = 7


@dataclass(frozen=True)
class Ladder:
    """The offered rates of one system's steps, and how long each lasts."""

    rates: tuple[float, ...]
    seconds: float
    # Not measured: a load that lets the services start and Kafka's JIT compile the broker's
    # hot paths (on a fresh broker the compiler takes most of a core for a minute or two, and
    # transactions take 30 ms instead of 8).
    warm_up_rate: float = 200.0
    warm_up_seconds: float = 2.0


FULL = {
    "streamml": Ladder(
        (1_000, 2_000, 4_000, 6_000, 8_000, 10_000, 12_000, 15_000, 20_000), 10.0, 1_000, 90
    ),
    "peer": Ladder((20, 30, 40, 50, 75, 100, 150, 200, 300, 400), 10.0, 20, 90),
    "quix": Ladder(
        (100, 150, 200, 250, 300, 400, 500, 750, 1_000, 1_500, 2_000, 3_000), 10.0, 100, 90
    ),
}
QUICK = {
    "streamml": Ladder((1_000, 4_000), 4.0),
    "peer": Ladder((25, 100), 4.0),
    "quix": Ladder((100, 250), 4.0),
}


@dataclass(frozen=True)
class StepResult:
    offered_per_s: float
    seconds: float
    sent: int
    predicted: int
    duplicated: int
    missing: int
    kept_up: bool
    throughput_per_s: float
    latency_ms_p50: float
    latency_ms_p95: float
    latency_ms_p99: float
    latency_ms_max: float
    vector_ms_p50: float | None  # event time to the feature vector's receipt: the featurizer's
    vector_ms_p99: float | None  # share (None: the system publishes no vectors, as the peer)
    send_lag_s: float
    cpu_seconds: dict[str, float]
    # From our services' own histograms over the step: batches, mean batch size, mean
    # transaction commit in ms, per service (empty for the peer, which has none).
    stages: dict[str, float] = field(default_factory=dict)


@dataclass
class SystemResult:
    system: str
    cards: int
    partitions: int
    steps: list[StepResult] = field(default_factory=list)
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)  # what --set gave our services
    broker: str = ""  # what the system ran on, as `streamml up` names it
    keep_up_allowance_ms: float = 0.0  # its warm-up's settled p99, allowed beside KEEP_UP_S

    @property
    def sustained_per_s(self) -> float:
        """The highest throughput of a kept-up step (0 when none was)."""
        return max((s.throughput_per_s for s in self.steps if s.kept_up), default=0.0)


def run(
    base: StackSettings,
    *,
    systems: Sequence[str],
    quick: bool,
    cards: int,
    rates: Sequence[float] | None = None,
    step_seconds: float | None = None,
    service_settings: Mapping[str, str] | None = None,
    warm_up_s: float | None = None,
) -> list[SystemResult]:
    """Each system's ladder (``rates``, ``step_seconds`` and ``warm_up_s`` override the
    default one's); ``service_settings``: environment settings for our services."""
    results = []
    for name in systems:
        ladder = (QUICK if quick else FULL)[name]
        ladder = replace(
            ladder,
            rates=tuple(rates or ladder.rates),
            seconds=step_seconds or ladder.seconds,
            warm_up_seconds=ladder.warm_up_seconds if warm_up_s is None else warm_up_s,
        )
        results.append(_run_system(base, name, ladder, cards, service_settings or {}))
    return results


def _run_system(
    base: StackSettings, name: str, ladder: Ladder, cards: int, service_settings: Mapping[str, str]
) -> SystemResult:
    home = base.home / f"bench-{name}"
    shutil.rmtree(home, ignore_errors=True)
    with local.running_servers(base.model_copy(update={"home": home})) as (settings, state):
        domain = load_domain(settings.features_dir, "payments")
        model_path, version = champion(settings, domain, TRAIN_EVENTS, SEED)
        say(f"{name}: starting")
        system = start_system(name, settings, home, model_path, version, service_settings)
        run_id = uuid.uuid4().hex[:8]
        codecs = codecs_for(settings)
        codec = codecs.for_topic(domain.topics.predictions)
        arrivals = Arrivals(settings, domain.topics.predictions, codec, run_id)
        vectors = Arrivals(
            settings, domain.topics.features, codecs.for_topic(domain.topics.features), run_id
        )
        pids = {
            **system.pids,
            "broker": next(iter(state.broker_pids), 0),
            "redis": state.redis_pid or 0,
        }
        result = SystemResult(name, cards, settings.topic_partitions, broker=state.broker)
        if name in ("streamml", "quix"):
            result.settings = dict(service_settings)
        try:
            readers = (arrivals, vectors)
            step = _Stepper(settings, domain, readers, pids, run_id, cards, system.metrics_ports)
            # Not measured: the services may still be starting (their metrics too).
            say(
                f"{name}: warming up, {ladder.warm_up_rate:,.0f} events/s for "
                f"{ladder.warm_up_seconds:.0f} s (not measured)"
            )
            warm = step.run(
                ladder.warm_up_rate,
                ladder.warm_up_seconds,
                timeout_s=WARM_UP_TIMEOUT_S,
                stages=False,
            )
            if warm.missing:
                ended = sorted(n for n, p in pids.items() if p and exited(p))
                why = f" ({', '.join(ended)} exited)" if ended else ""
                raise StackError(
                    f"{name}: {warm.missing} warm-up events never came out{why}; see the logs "
                    f"in {home}"
                )
            result.keep_up_allowance_ms = step.settled_p99_ms
            step.allowance_s = step.settled_p99_ms / 1000
            say(f"{name}: warm-up p99 (its second half) {step.settled_p99_ms:g} ms, allowed")
            for rate in ladder.rates:
                say(f"{name}: {rate:,.0f} events/s for {ladder.seconds:.0f} s")
                outcome = step.run(rate, ladder.seconds, timeout_s=DRAIN_S)
                result.steps.append(outcome)
                say(_summary(outcome))
                if not outcome.kept_up:
                    break
            result.peak_rss_mib = {n: round(usage(p).peak_rss_mib, 1) for n, p in pids.items()}
            result.peak_rss_mib["loadgen"] = step.loadgen_peak_rss_mib
            result.peak_rss_mib["measuring"] = round(usage(os.getpid()).peak_rss_mib, 1)
        finally:
            arrivals.close()
            vectors.close()
            system.stop()
        return result


class _Stepper:
    """Runs one step: the generator's process, the wait for its predictions, the CPU spent."""

    def __init__(
        self,
        settings: StackSettings,
        domain: Domain,
        readers: tuple[Arrivals, Arrivals],
        pids: dict[str, int],
        run_id: str,
        cards: int,
        metrics_ports: dict[str, int],
    ) -> None:
        self._settings = settings
        self._ports = metrics_ports
        self._topic = domain.topics.events
        self._arrivals, self._vectors = readers
        self._pids = pids
        self._run_id = run_id
        self._cards = cards
        self._number = 0
        self.loadgen_peak_rss_mib = 0.0
        self.allowance_s = 0.0  # the system's steady latency, from its warm-up (see the top)
        self.settled_p99_ms = 0.0  # the last step's p99 over its second half

    def run(
        self, rate: float, seconds: float, *, timeout_s: float, stages: bool = True
    ) -> StepResult:
        number, self._number = self._number, self._number + 1
        plan = StepPlan(
            bootstrap=self._settings.bootstrap,
            schemas_dir=str(self._settings.schemas_dir),
            topic=self._topic,
            cards=self._cards,
            seed=SEED,
            run_id=self._run_id,
            step=number,
            rate=rate,
            seconds=seconds,
        )
        self._arrivals.expect(number, plan.count)
        self._vectors.expect(number, plan.count)
        before, stages_before = self._cpu(), self._stage_totals() if stages else {}
        sent, loadgen_cpu = self._generate(plan)
        kept_up = self._arrivals.wait(
            number, max(0.0, sent.last_due_unix_s + KEEP_UP_S + self.allowance_s - time.time())
        )
        if not kept_up:
            self._arrivals.wait(number, timeout_s)
        after, stages_after = self._cpu(), self._stage_totals() if stages else {}
        cpu = {n: round(after[n] - before[n], 2) for n in after}
        cpu["loadgen"] = round(loadgen_cpu, 2)
        arrived = self._arrivals.snapshot(number)
        vectors = self._vectors.snapshot(number)
        # The step's second half by arrival: past the start's transient (services warming up).
        settled = sorted(arrived.latencies_ms[len(arrived.latencies_ms) // 2 :])
        self.settled_p99_ms = percentile(settled, 99, 1) if settled else 0.0
        kept_up = kept_up and sent.send_lag_s < KEEP_UP_S
        result = _step_result(plan, sent, arrived, vectors, kept_up, cpu, self.allowance_s)
        result.stages.update(_stages(stages_before, stages_after))
        return result

    def _stage_totals(self) -> dict[str, dict[str, float]]:
        return {n: metric_totals(p, f"streamml_{n}_") for n, p in self._ports.items()}

    def _generate(self, plan: StepPlan) -> tuple[StepSent, float]:
        """Runs the generator's process; its report and its CPU seconds (from wait4)."""
        process = subprocess.Popen(
            [sys.executable, "-m", "services.bench.loadgen", plan.to_json()],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        out = process.stdout.read()
        _, status, used = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            raise StackError(f"the load generator failed (exit {process.returncode})")
        sent = StepSent.from_json(out.strip().splitlines()[-1])
        self.loadgen_peak_rss_mib = max(self.loadgen_peak_rss_mib, round(sent.peak_rss_mib, 1))
        return sent, used.ru_utime + used.ru_stime

    def _cpu(self) -> dict[str, float]:
        found = {n: usage(p).cpu_seconds for n, p in self._pids.items() if p}
        found["measuring"] = usage(os.getpid()).cpu_seconds
        return found


def _stages(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
) -> dict[str, float]:
    """Per service: batches, mean batch size, mean commit ms over the step."""
    found: dict[str, float] = {}
    for service, now in after.items():
        then = before[service]
        batches, mean_size = histogram_mean(then, now, f"streamml_{service}_batch_size")
        found[f"{service}_batches"] = batches
        found[f"{service}_mean_batch"] = mean_size
        commit = f"streamml_{service}_commit_seconds"
        found[f"{service}_mean_commit_ms"] = histogram_mean(then, now, commit, 1000.0)[1]
    return found


def _step_result(
    plan: StepPlan,
    sent: StepSent,
    arrived: StepArrivals,
    vectors: StepArrivals,
    kept_up: bool,
    cpu: dict[str, float],
    allowance_s: float = 0.0,
) -> StepResult:
    latencies = sorted(arrived.latencies_ms)
    to_vector = sorted(vectors.latencies_ms)
    # From the first due time to the last arrival, less the system's steady latency: a step
    # kept at pace, with outputs held for a checkpoint, still spans its own length.
    span = max(arrived.last_arrival_unix_s - sent.first_due_unix_s - allowance_s, plan.seconds)
    return StepResult(
        offered_per_s=plan.rate,
        seconds=plan.seconds,
        sent=sent.sent,
        predicted=arrived.arrived,
        duplicated=arrived.duplicated,
        missing=plan.count - arrived.arrived,
        kept_up=kept_up,
        throughput_per_s=round(arrived.arrived / span, 1),
        latency_ms_p50=percentile(latencies, 50, 1),
        latency_ms_p95=percentile(latencies, 95, 1),
        latency_ms_p99=percentile(latencies, 99, 1),
        latency_ms_max=round(latencies[-1], 1) if latencies else 0.0,
        vector_ms_p50=percentile(to_vector, 50, 1) if to_vector else None,
        vector_ms_p99=percentile(to_vector, 99, 1) if to_vector else None,
        send_lag_s=round(sent.send_lag_s, 3),
        cpu_seconds=cpu,
    )


def _summary(step: StepResult) -> str:
    verdict = "kept up" if step.kept_up else "FELL BEHIND"
    return (
        f"  {verdict}: {step.throughput_per_s:,.0f}/s, p50 {step.latency_ms_p50} ms, "
        f"p99 {step.latency_ms_p99} ms, missing {step.missing}, duplicated {step.duplicated}"
    )


def write_json(results: list[SystemResult], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")

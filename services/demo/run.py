"""`streamml demo`: a local stack, a bootstrap model, featurizer, scorer and monitor, some
events with their outcomes, and a concept drift injected halfway that the monitor alarms."""

from __future__ import annotations

import shutil
import statistics
import sys
import time
from collections import Counter

from confluent_kafka import Consumer

from services.core.domains import load_domain
from services.core.kafka import consumer_config
from services.core.serde import Codec, Record, codecs_for
from services.core.settings import StackSettings
from services.core.topics import ALERTS
from services.demo.collect import Collector
from services.stack import local
from services.stack.services import ServiceProcess, service_env

WARMUP_TIMEOUT_S = 90.0
DRAIN_TIMEOUT_S = 90.0
ALERT_TIMEOUT_S = 60.0
LABEL_DELAY_S = 1.0


def step(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def run(*, count: int, rate: float) -> int:
    """The demo on a fresh local stack under ``.streamml/demo``: 0 when every event got exactly
    one prediction."""
    base = StackSettings()
    home = base.home / "demo"
    shutil.rmtree(home, ignore_errors=True)
    settings = base.model_copy(update={"home": home})
    step("starting a broker and Redis (the first run fetches Apache Kafka's jars)")
    services: list[ServiceProcess] = []
    try:
        with local.running_servers(settings) as (stack, state):
            step(f"broker: {state.broker} at {state.kafka_bootstrap}")
            try:
                return _run(count, rate, stack, services)
            finally:
                for service in services:
                    service.stop()
    finally:
        step("stopped everything the demo started")


def _run(count: int, rate: float, settings: StackSettings, services: list[ServiceProcess]) -> int:
    from services.producer.drift import Drift
    from services.producer.publish import Outcomes, publish_synthetic
    from services.registry.stages import promote
    from services.trainer.publish import train_and_register

    domain = load_domain(settings.features_dir, "payments")
    codecs = codecs_for(settings)
    step("training a bootstrap model (torch -> ONNX) and promoting it")
    version = train_and_register(settings, domain, seed=7, events=40_000)
    promote(settings, codecs, domain.model_name, version)
    step("starting the featurizer, the scorer and the monitor")
    env = service_env(settings, {"STREAMML_MONITOR_SNAPSHOT_EVERY_S": "2"})
    logs = settings.home / "logs"
    services += [
        ServiceProcess(s, env, logs / f"{s}.log") for s in ("featurizer", "scorer", "monitor")
    ]
    alerts = AlertReader(settings, codecs.for_topic(ALERTS))
    collector = Collector(
        settings, domain.topics.predictions, codecs.for_topic(domain.topics.predictions)
    )
    events = codecs.for_topic(domain.topics.events)
    step("waiting for the pipeline to answer a first event")
    warmup = publish_synthetic(settings, domain, events, count=1, rate=1.0, seed=999)
    if collector.wait_for(warmup, WARMUP_TIMEOUT_S):
        print(f"no prediction within {WARMUP_TIMEOUT_S:.0f} s; see {logs}", file=sys.stderr)
        return 1
    drift = Drift("concept", count // 2)
    step(
        f"publishing {count} transactions at {rate:.0f}/s, each outcome {LABEL_DELAY_S:g} s "
        f"later; the fraud pattern changes at transaction {drift.start} (concept drift)"
    )
    outcomes = Outcomes(codecs.for_topic(domain.topics.outcomes), LABEL_DELAY_S)
    event_ids = publish_synthetic(
        settings, domain, events, count=count, rate=rate, seed=1, outcomes=outcomes, drifts=[drift]
    )
    missing = collector.wait_for(event_ids, DRAIN_TIMEOUT_S)
    time.sleep(1.0)  # anything late or doubled shows up meanwhile
    collector.close()
    step("waiting for the monitor to alarm the drift")
    alert = alerts.first(domain.name, ALERT_TIMEOUT_S)
    alerts.close()
    code = _summary(collector, event_ids, missing, settings)
    if alert is None:
        print(f"  drift alert         none within {ALERT_TIMEOUT_S:.0f} s; see {logs}/monitor.log")
        return 1
    before = "" if alert["baseline"] is None else f"{alert['baseline']:.1%} -> "
    print(
        f"  drift alert         {alert['kind']} on version {alert['model_version']}: "
        f"error rate {before}{alert['value']:.1%} ({alert['statistic']}), on ml.alerts"
    )
    print(f"  quality             streamml monitor report {domain.name} (docs/monitor.md)")
    return code


def _summary(
    collector: Collector, event_ids: list[str], missing: set[str], settings: StackSettings
) -> int:
    got = [collector.records[e] for e in event_ids if e in collector.records]
    doubled = sum(1 for records in got if len(records) > 1)
    latencies = sorted(
        collector.received_ms[e] - collector.records[e][0]["event_time"]
        for e in event_ids
        if e in collector.records
    )
    served = Counter((r[0]["model_version"], r[0]["served_by"]) for r in got)
    fraud = sum(1 for r in got if r[0]["decision"])
    print()
    print("streamml demo: payments")
    print(f"  events in           {len(event_ids)}")
    print(f"  predictions out     {len(got)}  (missing {len(missing)}, duplicated {doubled})")
    if latencies:
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        p50 = statistics.median(latencies)
        print(f"  latency event->prediction  p50 {p50:.1f} ms  p99 {p99:.1f} ms")
    print(f"  flagged as fraud    {fraud}")
    print(
        "  served by           "
        + ", ".join(f"version {v} ({s}): {n}" for (v, s), n in sorted(served.items()))
    )
    if any(s == "fallback" for _, s in served):
        print(
            "                      (fallback: the heuristic scored them; the scorer's "
            "streamml_scorer_fallbacks_total says why, e.g. a merchant with no online row yet)"
        )
    print("  next: streamml up --detach; streamml consume payments.predictions --count 5;")
    print(f"        docs/architecture.md; service logs in {settings.home / 'logs'}")
    return 0 if not missing and not doubled else 1


class AlertReader:
    """Reads ``ml.alerts`` from its beginning (the demo's stack is fresh)."""

    def __init__(self, settings: StackSettings, codec: Codec) -> None:
        self._codec = codec
        self._consumer = Consumer(consumer_config(settings, f"streamml-demo-{time.time_ns()}"))
        self._consumer.subscribe([ALERTS])

    def first(self, domain: str, timeout_s: float) -> Record | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for message in self._consumer.consume(100, 0.5):
                value = message.value()
                if message.error() is None and value is not None:
                    alert = self._codec.decode(value)
                    if alert["domain"] == domain:
                        return alert
        return None

    def close(self) -> None:
        self._consumer.close()

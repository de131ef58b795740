"""`streamml demo`: a local stack, a bootstrap model, featurizer and scorer, some events."""

from __future__ import annotations

import shutil
import statistics
import sys
import time
from collections import Counter

from services.core.domains import load_domain
from services.core.serde import codecs_for
from services.core.settings import StackSettings
from services.demo.collect import Collector
from services.stack import local
from services.stack.services import ServiceProcess, service_env

WARMUP_TIMEOUT_S = 90.0
DRAIN_TIMEOUT_S = 90.0


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
    from services.producer.publish import publish_synthetic
    from services.registry.stages import promote
    from services.trainer.publish import train_and_register

    domain = load_domain(settings.features_dir, "payments")
    codecs = codecs_for(settings)
    step("training a bootstrap model (torch -> ONNX) and promoting it")
    version = train_and_register(settings, domain, seed=7, events=40_000)
    promote(settings, codecs, domain.model_name, version)
    step("starting the featurizer and the scorer")
    env = service_env(settings)
    logs = settings.home / "logs"
    services += [ServiceProcess(s, env, logs / f"{s}.log") for s in ("featurizer", "scorer")]
    collector = Collector(
        settings, domain.topics.predictions, codecs.for_topic(domain.topics.predictions)
    )
    events = codecs.for_topic(domain.topics.events)
    step("waiting for the pipeline to answer a first event")
    warmup = publish_synthetic(settings, domain, events, count=1, rate=1.0, seed=999)
    if collector.wait_for(warmup, WARMUP_TIMEOUT_S):
        print(f"no prediction within {WARMUP_TIMEOUT_S:.0f} s; see {logs}", file=sys.stderr)
        return 1
    step(f"publishing {count} transactions at {rate:.0f}/s")
    event_ids = publish_synthetic(settings, domain, events, count=count, rate=rate, seed=1)
    missing = collector.wait_for(event_ids, DRAIN_TIMEOUT_S)
    time.sleep(1.0)  # anything late or doubled shows up meanwhile
    collector.close()
    return _summary(collector, event_ids, missing, settings)


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

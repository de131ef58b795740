"""`streamml demo`: the closed loop on a fresh local stack.

A bootstrap model is promoted; featurizer, scorer, monitor and trainer run as services. Payments
and their outcomes stream in; after ``count`` of them card testing appears (tiny payments that
turn out fraudulent, ``--drift pattern@N``). The monitor sees the champion's errors jump and
asks for retraining; the trainer waits for labelled pairs after the change point, trains, gates,
canaries and promotes, nobody touching anything. The summary shows the steps and the accuracy
before the change, after it, and after the promotion.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import threading
import time
from collections import Counter

from confluent_kafka import Consumer

from services.core.declarations import Domain
from services.core.domains import load_domain
from services.core.kafka import consumer_config
from services.core.serde import Codec, CodecFactory, Record, codecs_for
from services.core.settings import StackSettings
from services.core.topics import ALERTS, MODEL_EVENTS
from services.demo.collect import Collector
from services.producer.drift import PATTERN
from services.stack import local
from services.stack.services import ServiceProcess, service_env

FIRST_ANSWER_TIMEOUT_S = 90.0
WARMUP_TIMEOUT_S = 180.0
LOOP_TIMEOUT_S = 300.0
AFTER_PROMOTION_S = 15.0
DRAIN_TIMEOUT_S = 90.0
LABEL_DELAY_S = 1.0
SERVING_SHARE = 0.95  # of the latest WARM_WINDOW predictions served by the champion: warm
WARM_WINDOW = 400
# The demo ends at a promotion or a rollback. A failed gate or an abandoned retrain is not the
# end: the drift is still there, and a later request with a later change point is answered.
ENDS = ("promoted", "rolled_back")


def step(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def run(*, count: int, rate: float) -> int:
    """The demo on a fresh local stack under ``.streamml/demo``: 0 when every event got exactly
    one prediction and the retrained model was promoted."""
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


class Stream:
    """Payments and their outcomes at ``rate``, in a thread, until stopped."""

    def __init__(self, settings: StackSettings, domain: Domain, rate: float, seed: int) -> None:
        from services.producer.drift import Drifts
        from services.producer.publish import Outcomes, publish_synthetic

        codecs = codecs_for(settings)
        self._stop = threading.Event()
        self.event_ids: list[str] = []
        self.drifts = Drifts([], seed)  # one begins once the pipeline is warm

        def publish() -> None:
            self.event_ids = publish_synthetic(
                settings,
                domain,
                codecs.for_topic(domain.topics.events),
                count=100_000_000,
                rate=rate,
                seed=seed,
                outcomes=Outcomes(codecs.for_topic(domain.topics.outcomes), LABEL_DELAY_S),
                drifts=self.drifts,
                stop=self._stop.is_set,
            )

        self._thread = threading.Thread(target=publish, name="demo-stream", daemon=True)
        self._thread.start()

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(60)
        return self.event_ids


def _run(count: int, rate: float, settings: StackSettings, services: list[ServiceProcess]) -> int:
    from services.producer.publish import publish_synthetic
    from services.registry.stages import promote
    from services.trainer.publish import train_and_register

    domain = load_domain(settings.features_dir, "payments")
    codecs = codecs_for(settings)
    step("training a bootstrap model (torch -> ONNX) and promoting it")
    version = train_and_register(settings, domain, seed=7, events=40_000)
    promote(settings, codecs, domain.model_name, version)
    step("starting the featurizer, the scorer, the monitor and the trainer")
    env = service_env(settings, {"STREAMML_MONITOR_SNAPSHOT_EVERY_S": "2"})
    logs = settings.home / "logs"
    for name in ("featurizer", "scorer", "monitor", "trainer"):
        services.append(ServiceProcess(name, env, logs / f"{name}.log"))
    predictions = Collector(
        settings, domain.topics.predictions, codecs.for_topic(domain.topics.predictions)
    )
    step("waiting for the pipeline to answer a first event")
    first = publish_synthetic(
        settings, domain, codecs.for_topic(domain.topics.events), count=1, rate=1.0, seed=999
    )
    if predictions.wait_for(first, FIRST_ANSWER_TIMEOUT_S):
        print(f"no prediction within {FIRST_ANSWER_TIMEOUT_S:.0f} s; see {logs}", file=sys.stderr)
        return 1
    labelled = Collector(settings, domain.topics.labelled, codecs.for_topic(domain.topics.labelled))
    tail = Tail(settings, codecs)
    step(f"publishing payments at {rate:.0f}/s, each outcome {LABEL_DELAY_S:g} s later")
    stream = Stream(settings, domain, rate, seed=1)
    if not _warm_up(predictions):
        stream.stop()
        print(f"the champion does not serve within {WARMUP_TIMEOUT_S:.0f} s; see {logs}")
        return 1
    warm_at = stream.drifts.seen
    change = stream.drifts.begin(PATTERN, count)
    step(f"card testing (tiny fraudulent payments) appears {count} payments from now")
    ended = tail.follow(domain, LOOP_TIMEOUT_S)
    if ended is not None and ended["step"] == "promoted":
        step(f"serving {AFTER_PROMOTION_S:.0f} s more with the new champion")
        time.sleep(AFTER_PROMOTION_S)
    event_ids = stream.stop()
    missing = predictions.wait_for(event_ids, DRAIN_TIMEOUT_S)
    time.sleep(2.0)  # anything late or doubled shows up meanwhile; the last outcomes join
    predictions.close()
    labelled.close()
    tail.close()
    code = _summary(predictions, event_ids, missing)
    _loop_summary(tail, labelled, event_ids[warm_at : change.start], ended)
    print(f"  lineage             streamml models history {domain.name}; docs/trainer.md")
    print(f"  service logs        {logs}")
    promoted = ended is not None and ended["step"] == "promoted"
    return code if promoted else 1


def _warm_up(predictions: Collector) -> bool:
    """Until the champion serves nearly every event (the services have their partitions and the
    scorer its model)."""
    step("warming up: until the champion scores the stream")
    deadline = time.monotonic() + WARMUP_TIMEOUT_S
    while time.monotonic() < deadline:
        time.sleep(1.0)
        served = [r["served_by"] for r in predictions.latest(WARM_WINDOW)]
        if len(served) == WARM_WINDOW and served.count("champion") >= SERVING_SHARE * WARM_WINDOW:
            return True
    return False


class Tail:
    """Reads ``ml.alerts`` and ``ml.models.events`` from their beginning (the stack is fresh),
    printing each alert and each of the trainer's steps as it comes."""

    def __init__(self, settings: StackSettings, codecs: CodecFactory) -> None:
        self._codecs: dict[str, Codec] = {t: codecs.for_topic(t) for t in (ALERTS, MODEL_EVENTS)}
        self._consumer = Consumer(consumer_config(settings, f"streamml-demo-{time.time_ns()}"))
        self._consumer.subscribe([ALERTS, MODEL_EVENTS])
        self.alerts: list[Record] = []
        self.steps: list[Record] = []

    def follow(self, domain: Domain, timeout_s: float) -> Record | None:
        """Until the trainer ends a retrain (its last step), or the time is up (None)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for message in self._consumer.consume(100, 0.5):
                value, topic = message.value(), message.topic()
                if message.error() is not None or value is None or topic is None:
                    continue
                record = self._codecs[topic].decode(value)
                if topic == ALERTS and record["domain"] == domain.name:
                    self.alerts.append(record)
                    if len(self.alerts) <= 3 or record["kind"] == "concept_drift":
                        step(
                            f"alert: {record['kind']} on version {record['model_version']} "
                            f"({record['subject']} {record['statistic']} {record['value']:.3f})"
                        )
                elif topic == MODEL_EVENTS and record["step"] != "load":
                    if record["model_name"] != domain.model_name:
                        continue
                    self.steps.append(record)
                    step(f"trainer: {record['step']} v{record['version']}: {record['reason']}")
                    if record["step"] in ENDS:
                        return record
        return None

    def close(self) -> None:
        self._consumer.close()


def _accuracy(pairs: list[Record]) -> str:
    if not pairs:
        return "-"
    right = sum(p["prediction"]["decision"] == p["label"] for p in pairs)
    return f"{right / len(pairs):.1%} on {len(pairs)} outcomes"


def _loop_summary(
    tail: Tail, labelled: Collector, before_change: list[str], ended: Record | None
) -> None:
    print("  the loop")
    for alert in [a for a in tail.alerts if a["kind"] == "concept_drift"][:3]:
        baseline = "" if alert["baseline"] is None else f"{alert['baseline']:.1%} -> "
        print(
            f"    drift alert       concept drift on version {alert['model_version']}: "
            f"error rate {baseline}{alert['value']:.1%}"
        )
    for told in tail.steps:
        print(f"    {told['step']:<17} v{told['version']}")
    if ended is None:
        print(f"    no end within {LOOP_TIMEOUT_S:.0f} s; see the trainer's log")
        return
    champion = {
        e: r[0]
        for e, r in labelled.records.items()
        if r[0]["prediction"]["served_by"] == "champion"
    }
    retrained, ended_ms, early = ended["version"], int(ended["at"]), set(before_change)
    before = [p for e, p in champion.items() if e in early]
    after = [
        p
        for e, p in champion.items()
        if e not in early
        and p["prediction"]["model_version"] != retrained
        and p["event_time"] < ended_ms
    ]
    new = [
        p
        for p in champion.values()
        if p["prediction"]["model_version"] == retrained and p["event_time"] > ended_ms
    ]
    print(f"    accuracy before the change       {_accuracy(before)}")
    print(f"    after it, the old champion       {_accuracy(after)}")
    if ended["step"] == "promoted":
        print(f"    after the promotion, v{retrained:<10} {_accuracy(new)}")


def _summary(collector: Collector, event_ids: list[str], missing: set[str]) -> int:
    got = [collector.records[e] for e in event_ids if e in collector.records]
    doubled = sum(1 for records in got if len(records) > 1)
    latencies = sorted(
        collector.received_ms[e] - collector.records[e][0]["event_time"]
        for e in event_ids
        if e in collector.records
    )
    served = Counter((r[0]["model_version"], r[0]["served_by"]) for r in got)
    print()
    print("streamml demo: payments")
    print(f"  events in           {len(event_ids)}")
    print(f"  predictions out     {len(got)}  (missing {len(missing)}, duplicated {doubled})")
    if latencies:
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        p50 = statistics.median(latencies)
        print(f"  latency event->prediction  p50 {p50:.1f} ms  p99 {p99:.1f} ms")
    print(
        "  served by           "
        + ", ".join(f"version {v} ({s}): {n}" for (v, s), n in sorted(served.items()))
    )
    fallback = sum(n for (_, s), n in served.items() if s == "fallback")
    print(f"  from the fallback   {fallback} ({fallback / max(1, len(got)):.2%})")
    return 0 if not missing and not doubled else 1

"""The scorer alone on the embedded stack: predictions per CPU-second, and the latency it adds.

Method: a fresh broker and Redis; the bootstrap MLP is trained and promoted; every merchant's
online row is written (so no event falls back for a missing row).

1. Throughput: N feature vectors are published first; then the scorer starts, and a counting
   consumer (read_committed, no decoding) times from the first prediction to the N-th. The
   scorer process's CPU seconds over that span, all threads, give predictions per CPU-second.
2. Latency: vectors are then published at a steady rate (default 1,000/s), each stamped with
   its send time as event time. Two readers in this process see every vector twice: on the
   features topic itself (one broker hop, what a consumer without the scorer would get) and as
   a prediction (read_committed). Per event, the added latency is the prediction's arrival
   minus the vector's arrival: the scorer's consume, score, transaction and the second hop.
"""

from __future__ import annotations

import random
import shutil
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from confluent_kafka import Consumer, Producer

from services.bench.output import say
from services.bench.procstat import count_outputs, usage
from services.bench.scrape import histogram_mean, metric_totals
from services.bench.stats import percentile
from services.core import metrics as names
from services.core.declarations import Domain
from services.core.domains import load_domain
from services.core.kafka import consumer_config, producer_config
from services.core.serde import Codec, codecs_for
from services.core.settings import StackSettings
from services.featurestore.feast_objects import feature_view_name
from services.featurestore.redis_layout import layout_for, view_layouts
from services.featurestore.store import apply_declarations, open_store
from services.featurizer.online import OnlineBuffer, OnlineRow, OnlineWriter
from services.registry.stages import promote
from services.stack import local
from services.stack.processes import free_port
from services.stack.services import ServiceProcess, service_env
from services.trainer.publish import train_and_register

START_TIMEOUT_S = 120.0
MERCHANTS = 300
TRAIN_EVENTS = 20_000
APP_ID = "bench-scorer"


@dataclass(frozen=True)
class ScorerResult:
    events: int
    seconds: float
    predictions_per_second: float
    scorer_cpu_seconds: float
    predictions_per_cpu_second: float
    scorer_peak_rss_mib: float
    latency_rate_per_s: float
    latency_events: int
    hop_ms_p50: float
    hop_ms_p99: float
    end_to_end_ms_p50: float
    end_to_end_ms_p99: float
    added_ms_p50: float
    added_ms_p99: float
    added_ms_max: float
    served_by: dict[str, int]
    scorer_batches: int
    mean_batch_size: float
    mean_inference_ms: float
    mean_commit_ms: float
    settings: dict[str, str]


def run(
    base: StackSettings,
    *,
    events: int,
    cards: int,
    rate: float,
    latency_seconds: float,
    scorer_settings: dict[str, str],
) -> ScorerResult:
    home = base.home / "bench-scorer"
    shutil.rmtree(home, ignore_errors=True)
    with local.running_stack(base.model_copy(update={"home": home})) as settings:
        domain = load_domain(settings.features_dir, "payments")
        codecs = codecs_for(settings)
        say(f"training and promoting the bootstrap model ({TRAIN_EVENTS} events)")
        version = train_and_register(settings, domain, seed=7, events=TRAIN_EVENTS)
        promote(settings, codecs, domain.model_name, version)
        _write_merchants(settings, domain)
        codec = codecs.for_topic(domain.topics.features)
        vectors = VectorSource(domain, codec, cards)
        say(f"publishing {events} feature vectors over {cards} cards")
        vectors.publish(settings, events, rate=0)
        counter = Consumer(consumer_config(settings, "bench-scorer-counter"))
        counter.subscribe([domain.topics.predictions])
        port = free_port()
        env = service_env(
            settings,
            {
                **scorer_settings,
                "STREAMML_SCORER_APP_ID": APP_ID,
                "STREAMML_METRICS_PORT": str(port),
            },
        )
        scorer = ServiceProcess("scorer", env, home / "scorer.log")
        try:
            throughput = _throughput(counter, scorer, events)
            counter.close()
            say(f"latency: {rate:.0f} vectors/s for {latency_seconds:.0f} s")
            latency = _latency(settings, domain, vectors, rate, latency_seconds, codecs)
            inside = _scorer_means(port)
        finally:
            scorer.stop()
        return ScorerResult(**throughput, **latency, **inside, settings=scorer_settings)


class VectorSource:
    """Feature vectors with realistic values; every one a new event of one of ``cards`` cards."""

    def __init__(self, domain: Domain, codec: Codec, cards: int) -> None:
        self._domain = domain
        self._codec = codec
        self._cards = cards
        self._rng = random.Random(5)  # noqa: S311 -- synthetic data, seeded
        self._sent = 0

    def make(self, event_time_ms: int) -> dict[str, Any]:
        rng, self._sent = self._rng, self._sent + 1
        count_1h = rng.randrange(1, 6)
        return {
            "event_id": f"bench-{self._sent}",
            "card_id": f"card-{rng.randrange(self._cards)}",
            "merchant_id": f"merchant-{rng.randrange(MERCHANTS)}",
            "event_time": event_time_ms,
            "amount": round(rng.lognormvariate(3.5, 1.0), 2),
            "txn_count_5m": rng.randrange(1, 3),
            "txn_count_1h": count_1h,
            "txn_count_24h": count_1h + rng.randrange(0, 10),
            "amount_sum_1h": round(rng.uniform(10, 500), 2),
            "amount_mean_24h": round(rng.uniform(10, 120), 2),
            "amount_max_24h": round(rng.uniform(50, 900), 2),
            "seconds_since_last_txn": None if rng.random() < 0.1 else rng.uniform(5, 80_000),
        }

    def publish(self, settings: StackSettings, count: int, *, rate: float) -> dict[str, float]:
        """Publishes ``count`` vectors (``rate`` per second, or as fast as possible at 0);
        returns each one's send time (its event time, ms) by event id."""
        sent_at: dict[str, float] = {}
        producer = Producer(producer_config(settings, **{"linger.ms": 0 if rate else 5}))
        topic, started = self._domain.topics.features, time.monotonic()
        for i in range(count):
            if rate:
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            vector = self.make(int(time.time() * 1000))
            sent_at[vector["event_id"]] = float(vector["event_time"])
            producer.produce(
                topic, key=str(vector["card_id"]).encode(), value=self._codec.encode(vector)
            )
            producer.poll(0)
        producer.flush(30)
        return sent_at


def _write_merchants(settings: StackSettings, domain: Domain) -> None:
    apply_declarations(settings, [domain])
    writer = OnlineWriter(
        redis.Redis.from_url(settings.redis),
        layout_for(open_store(settings)),
        view_layouts([domain]),
    )
    buffer = OnlineBuffer()
    now = int(time.time() * 1000)
    view = feature_view_name(domain, "merchant")
    for i in range(MERCHANTS):
        buffer.add(view, OnlineRow(f"merchant-{i}", now, {"merchant_txn_count_1h": 1 + i % 40}))
    writer.write(buffer.take())


def _throughput(counter: Consumer, scorer: ServiceProcess, events: int) -> dict[str, Any]:
    counted = count_outputs(counter, scorer.process.pid, events, START_TIMEOUT_S, scorer.log_path)
    started, cpu_at_start = counted.started, counted.cpu_at_start
    seconds = time.monotonic() - started
    end = usage(scorer.process.pid)
    cpu = end.cpu_seconds - cpu_at_start
    return {
        "events": events,
        "seconds": round(seconds, 3),
        "predictions_per_second": round(events / seconds),
        "scorer_cpu_seconds": round(cpu, 2),
        "predictions_per_cpu_second": round(events / cpu) if cpu else 0,
        "scorer_peak_rss_mib": round(end.peak_rss_mib, 1),
    }


class Arrivals(threading.Thread):
    """Records when each event id arrives on a topic (wall clock, ms)."""

    def __init__(self, settings: StackSettings, topic: str, codec: Codec, group: str) -> None:
        super().__init__(daemon=True)
        self._consumer = Consumer(
            consumer_config(settings, group, **{"auto.offset.reset": "latest"})
        )
        self.assigned = threading.Event()
        # A callback, not assignment(): that call blocks while another thread is in consume().
        self._consumer.subscribe([topic], on_assign=lambda _c, _p: self.assigned.set())
        self._codec = codec
        self.at: dict[str, float] = {}
        self.served_by: dict[str, int] = {}
        self.running = True

    def run(self) -> None:
        while self.running:
            for message in self._consumer.consume(1000, 0.01):
                value = message.value()
                if message.error() is None and value is not None:
                    now = time.time() * 1000
                    record = self._codec.decode(value)
                    self.at[record["event_id"]] = now
                    if "served_by" in record:
                        by = record["served_by"]
                        self.served_by[by] = self.served_by.get(by, 0) + 1
        self._consumer.close()

    def ready(self) -> bool:
        return self.assigned.is_set()


def _latency(
    settings: StackSettings,
    domain: Domain,
    vectors: VectorSource,
    rate: float,
    seconds: float,
    codecs: Any,
) -> dict[str, Any]:
    topics = domain.topics
    hop = Arrivals(settings, topics.features, codecs.for_topic(topics.features), "bench-hop")
    out = Arrivals(settings, topics.predictions, codecs.for_topic(topics.predictions), "bench-out")
    for reader in (hop, out):
        reader.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not (hop.ready() and out.ready()) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    count = int(rate * seconds)
    sent_at = vectors.publish(settings, count, rate=rate)
    time.sleep(3.0)
    hop.running = out.running = False
    hop.join(5)
    out.join(5)
    both = [e for e in sent_at if e in hop.at and e in out.at]
    if len(both) < 0.99 * count:
        raise RuntimeError(f"only {len(both)} of {count} events seen on both topics")
    hops = sorted(hop.at[e] - sent_at[e] for e in both)
    totals = sorted(out.at[e] - sent_at[e] for e in both)
    added = sorted(out.at[e] - hop.at[e] for e in both)
    return {
        "latency_rate_per_s": rate,
        "latency_events": len(both),
        "hop_ms_p50": percentile(hops, 50, 2),
        "hop_ms_p99": percentile(hops, 99, 2),
        "end_to_end_ms_p50": percentile(totals, 50, 2),
        "end_to_end_ms_p99": percentile(totals, 99, 2),
        "added_ms_p50": percentile(added, 50, 2),
        "added_ms_p99": percentile(added, 99, 2),
        "added_ms_max": round(added[-1], 2),
        "served_by": out.served_by,
    }


def _scorer_means(port: int) -> dict[str, Any]:
    """Means over the whole run from the scorer's own histograms: where a batch's time goes."""
    totals = metric_totals(port, "streamml_scorer_")
    batches, batch = histogram_mean({}, totals, f"streamml_{names.SCORER_BATCH_SIZE}")
    return {
        "scorer_batches": batches,
        "mean_batch_size": batch,
        "mean_inference_ms": histogram_mean(
            {}, totals, f"streamml_{names.SCORER_INFERENCE_SECONDS}", 1000.0
        )[1],
        "mean_commit_ms": histogram_mean(
            {}, totals, f"streamml_{names.SCORER_COMMIT_SECONDS}", 1000.0
        )[1],
    }

"""The featurizer alone on the embedded stack: how many events a second it turns into vectors.

Method: a fresh broker and Redis; N synthetic transactions are published first; then the
featurizer starts and a counting consumer (no decoding) times from the first vector to the
N-th, and on until the featurizer has also processed every event it forwarded to itself
(merchant windows): its committed offsets there stop moving. CPU seconds of the featurizer
process over that span give events per CPU-second, the figure for "one core": the broker,
Redis and the counter run on the other core. With ``core`` the featurizer runs on that CPU alone
and everything else (broker, Redis, publisher, counter) on the others, so its events per
wall-clock second are one core's by construction.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from services.bench.output import say
from services.bench.procstat import Usage, count_outputs, usage
from services.core.domains import load_domain
from services.core.errors import ConfigError
from services.core.kafka import consumer_config, create_topics, partition_count
from services.core.serde import codecs_for
from services.core.settings import StackSettings
from services.featurizer.routes import internal_topics
from services.featurizer.settings import FeaturizerSettings
from services.producer.publish import publish_synthetic
from services.stack import local
from services.stack.services import ServiceProcess, service_env

START_TIMEOUT_S = 120.0
SETTLED_S = 2.0


@dataclass(frozen=True)
class FeaturizerResult:
    events: int
    cards: int
    seconds: float
    events_per_second: float
    featurizer_cpu_seconds: float
    events_per_cpu_second: float
    featurizer_peak_rss_mib: float
    featurizer_core: int | None  # the CPU it was pinned to, if any


def run(
    base: StackSettings, *, events: int, cards: int, core: int | None = None
) -> FeaturizerResult:
    home = base.home / "bench-featurizer"
    shutil.rmtree(home, ignore_errors=True)
    others = None if core is None else _other_cpus(core)
    with (
        this_thread_on(others),
        local.running_stack(base.model_copy(update={"home": home})) as settings,
    ):
        domain = load_domain(settings.features_dir, "payments")
        codec = codecs_for(settings).for_topic(domain.topics.events)
        say(f"publishing {events} transactions over {cards} cards")
        publish_synthetic(settings, domain, codec, count=events, rate=0, seed=3, cards=cards)
        counter = Consumer(consumer_config(settings, "bench-counter"))
        counter.subscribe([domain.topics.features])
        with this_thread_on(None if core is None else {core}):
            featurizer = ServiceProcess(
                "featurizer", service_env(settings), home / "featurizer.log"
            )
        app_id = FeaturizerSettings().featurizer_app_id
        partitions = partition_count(settings, domain.topics.events)
        create_topics(settings, internal_topics(domain, app_id, partitions))  # what it would
        forwarded = [domain.topics.by_entity(app_id, e.name) for e in domain.secondary_entities]
        progress = CommittedOffsets(settings, app_id, forwarded)
        try:
            return _measure(counter, featurizer, progress, events, cards, core)
        finally:
            featurizer.stop()
            counter.close()
            progress.close()


class CommittedOffsets:
    """The featurizer group's committed offsets on the topics it forwards to itself: the
    secondary entities' work goes on after the last vector, and it counts too."""

    def __init__(self, settings: StackSettings, group: str, topics: list[str]) -> None:
        self._consumer = Consumer(consumer_config(settings, group))
        metadata = self._consumer.list_topics(timeout=10)
        self._partitions = [
            TopicPartition(t, p) for t in topics for p in metadata.topics[t].partitions
        ]

    def total(self) -> int:
        if not self._partitions:
            return 0
        committed = self._consumer.committed(self._partitions, timeout=10)
        return sum(max(tp.offset, 0) for tp in committed)

    def close(self) -> None:
        self._consumer.close()


def _measure(
    counter: Consumer,
    featurizer: ServiceProcess,
    progress: CommittedOffsets,
    events: int,
    cards: int,
    core: int | None,
) -> FeaturizerResult:
    counted = count_outputs(
        counter, featurizer.process.pid, events, START_TIMEOUT_S, featurizer.log_path
    )
    finished, end = _secondary_done(progress, featurizer)
    seconds = finished - counted.started
    cpu = end.cpu_seconds - counted.cpu_at_start
    return FeaturizerResult(
        events=events,
        cards=cards,
        seconds=round(seconds, 3),
        events_per_second=round(events / seconds),
        featurizer_cpu_seconds=round(cpu, 2),
        events_per_cpu_second=round(events / cpu) if cpu else 0,
        featurizer_peak_rss_mib=round(end.peak_rss_mib, 1),
        featurizer_core=core,
    )


def _other_cpus(core: int) -> set[int]:
    allowed = os.sched_getaffinity(0)
    if core not in allowed or len(allowed) < 2:
        raise ConfigError(
            f"--core {core}: this process may use CPUs {sorted(allowed)}; the featurizer needs "
            "one of them to itself and the rest need at least one other"
        )
    return allowed - {core}


@contextmanager
def this_thread_on(cpus: set[int] | None) -> Iterator[None]:
    """This thread, and the processes and threads it starts meanwhile (they inherit its
    affinity), on ``cpus`` only (None: unchanged); this thread gets its own back afterwards."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _secondary_done(progress: CommittedOffsets, featurizer: ServiceProcess) -> tuple[float, Usage]:
    """When the forwarded events were all processed: the committed offsets stopped moving."""
    last, at, end = progress.total(), time.monotonic(), usage(featurizer.process.pid)
    while time.monotonic() - at < SETTLED_S:
        time.sleep(0.1)
        now = progress.total()
        if now != last:
            last, at, end = now, time.monotonic(), usage(featurizer.process.pid)
    return at, end

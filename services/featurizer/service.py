"""The featurizer's loop: consume a micro-batch, compute, publish it all in one transaction.

Each micro-batch's vectors, dead letters, forwards, window-changelog records and consumed
offsets are committed in one confluent-kafka transaction; the batch's online rows are written
to Redis before that transaction begins (a store that does not answer is waited for, up to
``featurizer_online_retry_s``, with no transaction open: read_committed readers of the topics
the featurizer writes are never held behind it). So after a crash the state restored from the
changelog is the state as of the last committed offsets: nothing is counted twice, no vector is
lost, and a read_committed consumer sees each vector once. A rewritten online row is the same row.

Why not a faust agent: faust's consumer path alone (aiokafka, per-message events and acks)
costs about 120 µs of CPU per record on this machine before any work is done (measured,
docs/featurizer.md), six times the 50 µs budget of 20,000 events/s on one core; and faust's
exactly-once mode fails on the embedded broker. The state keeps the faust table model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import redis
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import CollectorRegistry

from services.core.changelog import read_changelogs
from services.core.declarations import Domain
from services.core.errors import StackError
from services.core.kafka import (
    consume_batch,
    consumer_config,
    create_topics,
    partition_count,
    producer_config,
)
from services.core.lifecycle import StoppableLoop
from services.core.serde import CodecFactory
from services.core.transactions import Committed, TransactionalProducer, TransactionFailed
from services.featurestore.redis_layout import layout_for, redis_client, view_layouts
from services.featurizer.metrics import FeaturizerMetrics
from services.featurizer.online import WRITE_TIMEOUT_S, OnlineBuffer, OnlineWriter
from services.featurizer.routes import Route, build_routes, internal_topics
from services.featurizer.settings import FeaturizerSettings

log = logging.getLogger(__name__)


class Featurizer(StoppableLoop):
    def __init__(
        self,
        settings: FeaturizerSettings,
        domains: Sequence[Domain],
        codecs: CodecFactory,
        feature_store: Any,
        registry: CollectorRegistry,
    ) -> None:
        self._settings = settings
        self._metrics = FeaturizerMetrics.create(registry)
        self._online = OnlineBuffer()
        self._writer = OnlineWriter(
            redis_client(settings.redis, WRITE_TIMEOUT_S),
            layout_for(feature_store),
            view_layouts(domains),
        )
        app_id = settings.featurizer_app_id
        self._consumer = self._new_consumer()
        self._producer = TransactionalProducer(
            producer_config(
                settings,
                **{
                    "transactional.id": f"{app_id}-{settings.featurizer_instance}",
                    "linger.ms": settings.featurizer_linger_ms,
                    "queue.buffering.max.messages": 1_000_000,
                },
            ),
            self._consumer,
        )
        # A batch's records wait here until its online rows are written: no transaction is
        # open while the store is waited for, so read_committed consumers of the topics it
        # writes (the scorer) are never held behind it.
        self._outbox: list[tuple[str, bytes | None, bytes | None, int]] = []
        self._routes: dict[str, Route] = {}
        for domain in domains:
            partitions = partition_count(settings, domain.topics.events)
            created = create_topics(settings, internal_topics(domain, app_id, partitions))
            if created:
                log.info("created %s", ", ".join(created))
            routes = build_routes(domain, app_id, codecs, self._metrics, self._queue, partitions)
            for route in routes:
                self._routes[route.topic] = route
        self._parked: set[tuple[str, int]] = set()

    def run(self) -> None:
        settings = self._settings
        self._producer.init()
        self._subscribe(self._consumer)
        log.info("featurizer: consuming %s", ", ".join(self._routes))
        wait_s = settings.batch_wait(settings.featurizer_batch_wait_ms) / 1000
        try:
            while self._running:
                messages = consume_batch(self._consumer, settings.featurizer_batch_size, wait_s)
                if messages:
                    try:
                        self._process(messages)
                    except TransactionFailed as failure:
                        self._recover(failure)
        finally:
            self._consumer.close()
            self._producer.flush()

    def _process(self, messages: list[Any]) -> None:
        started = time.perf_counter()
        by_topic: dict[str, list[Any]] = {}
        offsets: dict[tuple[str, int], int] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                log.warning("consumer: %s", error)
                continue
            topic = message.topic()
            by_topic.setdefault(topic, []).append(message)
            offsets[(topic, message.partition())] = message.offset() + 1
        if not offsets:
            return
        # A batch that does not commit leaves the in-memory state ahead of the changelog: a
        # failed transaction is recovered from (_recover), any other error stops the process,
        # and its restart restores the state as of the last commit.
        self._outbox.clear()
        for topic, batch in by_topic.items():
            self._routes[topic].handle(batch, self._online)
        for topic, route in self._routes.items():
            table = route.table
            marks = {p: o for (t, p), o in offsets.items() if t == topic}
            for record in table.drain(marks):
                self._queue(table.topic, record.key, record.value, record.partition)
            evicted = table.take_evicted()
            if evicted:
                self._metrics.evicted.labels(table.domain, table.entity).inc(evicted)
        self._write_online()
        with self._producer.batch(TopicPartition(t, p, o) for (t, p), o in offsets.items()):
            send = self._producer.send
            for topic, key, value, partition in self._outbox:
                send(topic, key, value, partition)
            committing = time.perf_counter()
        self._outbox.clear()
        done = time.perf_counter()
        self._metrics.commit_seconds.observe(done - committing)
        self._metrics.batch_size.observe(len(messages))
        per_event = (done - started) / len(messages)
        for topic in by_topic:
            self._routes[topic].observe_time(per_event)

    def _queue(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int = -1
    ) -> None:
        self._outbox.append((topic, key, value, partition))

    def _write_online(self) -> None:
        """Writes the batch's online rows before its transaction commits. A store that does not
        answer is tried again, with backoff, for up to ``featurizer_online_retry_s``: the batch
        stays uncommitted meanwhile, so nothing is lost and nothing runs ahead of the store."""
        pending = self._online.take()
        if not pending:
            return
        started = time.perf_counter()
        deadline = time.monotonic() + self._settings.featurizer_online_retry_s
        retries = 0
        while True:
            try:
                rows = self._writer.write(pending)
                break
            except redis.RedisError as exc:
                pause_s = min(0.05 * 2**retries, 1.0)
                if time.monotonic() + pause_s > deadline or not self._running:
                    raise StackError(
                        f"writing {sum(len(r) for r in pending.values())} rows to the online "
                        f"store failed: {exc}. The batch is aborted; a restart processes it "
                        "again from the last committed offsets"
                    ) from exc
                if not retries:
                    log.warning("the online store did not answer (%s); trying again", exc)
                retries += 1
                self._metrics.write_retries.inc()
                time.sleep(pause_s)
        waited_s = time.perf_counter() - started
        if retries:
            log.warning("the online store answered again; the batch waited %.1f s", waited_s)
        self._metrics.write_seconds.observe(waited_s)
        self._metrics.write_rows.observe(rows)

    def _recover(self, failure: TransactionFailed) -> None:
        """The failed batch's changes are in memory only: they are all forgotten, and the new
        consumer's assignment restores every partition's windows as of its committed offset."""
        log.warning("%s; restoring the state of the last commit and consuming from there", failure)
        self._metrics.recoveries.inc()
        self._online.take()  # rows of the failed batch; its second run computes them again
        self._consumer = self._producer.recover(self._resubscribe, lambda: self._running)

    def _resubscribe(self) -> Consumer:
        """Called once the old consumer is closed (its partitions revoked, so parked)."""
        for route in self._routes.values():
            for number in route.table.partitions:
                route.table.drop(number)
        self._parked.clear()
        return self._subscribe(self._new_consumer())

    def _new_consumer(self) -> Consumer:
        return Consumer(consumer_config(self._settings, self._settings.featurizer_app_id))

    def _subscribe(self, consumer: Consumer) -> Consumer:
        consumer.subscribe(
            list(self._routes),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        return consumer

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assigned = {(tp.topic, tp.partition) for tp in partitions}
        kept = assigned & self._parked
        for topic, number in self._parked - assigned:
            self._routes[topic].table.drop(number)
        self._parked.clear()
        started = time.perf_counter()
        self._restore(self._committed(assigned - kept))
        log.info(
            "assigned %d partitions (%d kept, %d restored in %.2f s)",
            len(assigned),
            len(kept),
            len(assigned - kept),
            time.perf_counter() - started,
        )

    def _restore(self, committed: Committed) -> None:
        """Rebuilds the windows of the given source partitions from their changelogs, as of
        the given committed offsets (None: nothing committed yet)."""
        to_restore = {
            (self._routes[topic].table.topic, number): self._routes[topic]
            for topic, number in committed
        }
        changelogs = read_changelogs(
            self._settings, to_restore, self._settings.featurizer_restore_timeout_s
        )
        for (changelog, number), records in changelogs.items():
            route = to_restore[(changelog, number)]
            table = route.table
            restored = table.restore(number, records, committed[(route.topic, number)])
            self._metrics.restored.labels(table.domain, table.entity).inc(restored.entries)
            if restored.ignored:
                log.warning(
                    "%s [%d]: %d records after the last committed batch ignored (a transaction "
                    "that never committed); the next batch writes over them",
                    changelog,
                    number,
                    restored.ignored,
                )

    def _committed(self, partitions: set[tuple[str, int]]) -> Committed:
        """The group's committed offset of each source partition (None: none yet)."""
        if not partitions:
            return {}
        wanted = [TopicPartition(t, p) for t, p in partitions]
        found = self._consumer.committed(wanted, self._settings.featurizer_restore_timeout_s)
        return {(tp.topic, tp.partition): tp.offset if tp.offset >= 0 else None for tp in found}

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Every batch is committed before the next poll, so nothing is in flight. Keep the
        # windows: if the next assignment gives the same partitions back, nobody else has
        # touched them in between.
        self._parked = {(tp.topic, tp.partition) for tp in partitions}

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._routes[tp.topic].table.drop(tp.partition)
        self._parked.clear()
        log.warning(
            "lost %d partitions (session timed out); their state will be restored", len(partitions)
        )

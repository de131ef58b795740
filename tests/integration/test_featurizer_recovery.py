"""The featurizer under failure and scale-out: kill -9 mid-stream, two instances in one group."""

from __future__ import annotations

import random
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from services.core.changelog import read_changelogs
from services.core.deadletter import SourcePosition
from services.core.domains import load_domain
from services.core.errors import SerializationError
from services.core.kafka import TopicSpec, create_topics, partition_count, producer_config
from services.core.schemas import SchemaStore
from services.core.serde import Codec, CodecFactory
from services.core.settings import HISTORY_FETCH_WAIT_MS, StackSettings
from services.core.windows import EntityAggregator, EntityWindow, event_hash
from services.featurestore.store import open_store
from services.featurizer.processor import Accepted, EventProcessor
from services.featurizer.secondary import forward_key, forward_partition
from services.featurizer.state import EntryCodec, entry_key, tile_key
from services.stack.processes import free_port
from services.stack.services import ServiceProcess, service_env
from tests.integration.helpers import TopicReader, publish

pytestmark = pytest.mark.integration

EVENTS = 5000
EVENTS_TOPIC = "payments.transactions"
CARDS = 60
MERCHANTS = 20
HOUR_MS = 3_600_000
Vector = dict[str, object]


class Windows(dict[str, EntityWindow]):
    def put(self, key: str, window: EntityWindow) -> None:
        self[key] = window


def make_events(seed: int) -> list[Vector]:
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    prefix = uuid.uuid4().hex[:8]
    return [
        {
            "event_id": f"{prefix}-{i}",
            "card_id": f"kill-card-{prefix}-{rng.randrange(CARDS)}",
            "merchant_id": f"kill-m-{prefix}-{rng.randrange(MERCHANTS)}",
            "amount": round(rng.uniform(1, 400), 2),
            "currency": "EUR",
            # 42 minutes of events, some up to 20 minutes out of order (accepted, none late).
            "event_time": now
            - 2_700_000
            + i * 500
            - rng.choice((0, 0, 0, rng.randrange(1_200_000))),
        }
        for i in range(EVENTS)
    ]


def uninterrupted(
    events: list[Vector], processor: EventProcessor, codec: Codec
) -> dict[str, Vector]:
    """What one uninterrupted run gives: each card's events in the order it sent them."""
    expected: dict[str, Vector] = {}
    windows = Windows()
    for offset, event in enumerate(events):
        verdict = processor.process(
            None, codec.encode(event), SourcePosition("x", 0, offset), windows
        )
        assert isinstance(verdict, Accepted)
        expected[str(event["event_id"])] = verdict.vector
    return expected


def vectors_by_event(
    values: list[bytes], codec: Codec, wanted: set[str]
) -> dict[str, list[Vector]]:
    """This test's vectors among ``values``, by event id (other tests put foreign bytes on the
    shared topic too: the dead-letter tests, for one)."""
    published: dict[str, list[Vector]] = {}
    for value in values:
        try:
            vector = codec.decode(value)
        except SerializationError:
            continue
        if vector["event_id"] in wanted:
            published.setdefault(str(vector["event_id"]), []).append(vector)
    return published


class Scenario:
    def __init__(self, stack: StackSettings, seed: int) -> None:
        codecs = CodecFactory(SchemaStore.from_dir(stack.schemas_dir))
        domain = load_domain(stack.features_dir, "payments")
        self.stack = stack
        self.events_codec = codecs.for_topic("payments.transactions")
        self.vectors_codec = codecs.for_topic("payments.features")
        self.events = make_events(seed)
        self.wanted = {str(e["event_id"]) for e in self.events}
        self.expected = uninterrupted(
            self.events, EventProcessor(domain, self.events_codec), self.events_codec
        )

    def publish(self, events: list[Vector] | None = None) -> dict[str, tuple[int, int]]:
        """Publishes the events (default: all); returns each one's (partition, offset)."""
        chosen = self.events if events is None else events
        items = [(str(e["card_id"]).encode(), self.events_codec.encode(e)) for e in chosen]
        return {
            str(e["event_id"]): position
            for e, position in zip(chosen, publish(self.stack, EVENTS_TOPIC, items), strict=True)
        }

    def published(self, values: list[bytes]) -> dict[str, list[Vector]]:
        return vectors_by_event(values, self.vectors_codec, self.wanted)

    def complete(self, values: list[bytes]) -> bool:
        return set(self.published(values)) == self.wanted

    def merchant_counts_expected(self) -> dict[str, int]:
        """Each merchant's ``merchant_txn_count_1h`` as of its newest event, recomputed from the
        events alone: those in the 12 tiles of 5 minutes that end with the newest's."""
        times: dict[str, list[int]] = {}
        for event in self.events:
            times.setdefault(str(event["merchant_id"]), []).append(int(str(event["event_time"])))
        tile = HOUR_MS // 12
        return {
            m: sum(1 for t in ts if max(ts) // tile - t // tile < 12) for m, ts in times.items()
        }

    def merchant_counts_online(self) -> dict[str, int]:
        """What the Feast online store holds for this scenario's merchants."""
        merchants = sorted(self.merchant_counts_expected())
        online = open_store(self.stack).get_online_features(
            features=["payments_merchant_features:merchant_txn_count_1h"],
            entity_rows=[{"merchant_id": m} for m in merchants],
        )
        return dict(zip(merchants, online.to_dict()["merchant_txn_count_1h"], strict=True))

    def await_merchant_rows(self, timeout_s: float) -> dict[str, int]:
        """The online merchant counts once they equal the recomputation, or at the timeout.
        The merchant path runs after the card's (a forward topic), so it may still be busy."""
        deadline = time.monotonic() + timeout_s
        while (got := self.merchant_counts_online()) != self.merchant_counts_expected():
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        return got

    def assert_every_vector_as_uninterrupted(self, values: list[bytes], *, once: bool) -> None:
        """Every event has its vector, equal to an uninterrupted run's. ``once``: exactly one;
        else a copy is allowed, if equal: the embedded broker shows read_committed readers
        the records of a transaction aborted by a crash, and the batch then runs again."""
        published = self.published(values)
        assert set(published) == self.wanted, f"{len(self.wanted - set(published))} vectors lost"
        twice = [event_id for event_id, vectors in published.items() if len(vectors) > 1]
        assert not (once and twice), f"{len(twice)} vectors published twice, e.g. {twice[:3]}"
        for event_id, vectors in published.items():
            for vector in vectors:
                assert vector == pytest.approx(self.expected[event_id]), event_id


def test_a_featurizer_killed_mid_stream_resumes_without_losing_or_changing_a_value(
    stack: StackSettings, logs_dir: Path
) -> None:
    scenario = Scenario(stack, seed=11)
    reader = TopicReader(stack, "payments.features")
    # Hundreds of transactions whose records go out as they are made (no linger), so a kill
    # often lands inside one after some of its records reached the broker.
    env = service_env(
        stack, {"STREAMML_FEATURIZER_BATCH_SIZE": "50", "STREAMML_FEATURIZER_LINGER_MS": "0"}
    )
    reader.read_until(lambda values: False, 1.0)  # the reader joins while the featurizer starts
    published = False
    # Killed four times, each time while it may still work through what the last kill left.
    for kill, share in enumerate((0.15, 0.3, 0.45, 0.6)):
        victim = ServiceProcess("featurizer", env, logs_dir / f"featurizer-killed-{kill}.log")
        try:
            if not published:
                scenario.publish()
                published = True
            reader.read_until(
                lambda values, n=int(EVENTS * share): len(scenario.published(values)) >= n, 120
            )
            victim.kill()  # SIGKILL: no flush, no commit
            assert not scenario.complete(reader.values), "finished before it could be killed"
        finally:
            if victim.process.poll() is None:
                victim.kill()

    port = free_port()
    survivor = ServiceProcess(
        "featurizer",
        {**env, "STREAMML_METRICS_PORT": str(port)},
        logs_dir / "featurizer-restarted.log",
    )
    try:
        reader.read_until(scenario.complete, 180)
        reader.settle(2.0)
        merchants = scenario.await_merchant_rows(60)
        restored = metric(port, 'streamml_featurizer_restored_entries_total{domain="payments",')
    finally:
        assert survivor.stop() == 0
        reader.close()
    scenario.assert_every_vector_as_uninterrupted(reader.values, once=False)
    # Merchant windows are fed by forwards, which a crash can make the card route send again.
    assert merchants == scenario.merchant_counts_expected()
    assert restored > 0, "the restarted featurizer restored nothing from the changelog"


def test_records_of_a_transaction_that_never_committed_change_no_value(
    stack: StackSettings, logs_dir: Path
) -> None:
    """What a featurizer killed inside a transaction can leave, made on purpose: the embedded
    broker shows an aborted transaction's records to read_committed readers. Here the dead
    transaction holds a card-window entry of an event it never published a vector or forward
    for, and a forward of another event that it never recorded in the card windows. The next
    instance must publish the first event's vector and count the second event once."""
    app_id = "streamml-featurizer-leak"
    scenario = Scenario(stack, seed=13)
    domain = load_domain(stack.features_dir, "payments")
    codecs = CodecFactory(SchemaStore.from_dir(stack.schemas_dir))
    env = service_env(
        stack, {"STREAMML_FEATURIZER_APP_ID": app_id, "STREAMML_FEATURIZER_INSTANCE": "0"}
    )
    split = EVENTS * 3 // 5
    reader = TopicReader(stack, "payments.features")
    first = ServiceProcess("featurizer", env, logs_dir / "featurizer-before-leak.log")
    try:
        scenario.publish(scenario.events[:split])
        done = {str(e["event_id"]) for e in scenario.events[:split]}
        reader.read_until(lambda values: done <= set(scenario.published(values)), 120)
    finally:
        assert first.stop() == 0
    positions = scenario.publish(scenario.events[split:])

    # Two events of the second part, each of a card with later events in it.
    cards = [str(e["card_id"]) for e in scenario.events[split:]]
    lost, doubled = [
        e for i, e in enumerate(scenario.events[split:]) if cards[i] in cards[i + 1 :]
    ][:2]
    lost_card, lost_id = str(lost["card_id"]), str(lost["event_id"])
    lost_time = int(str(lost["event_time"]))
    aggregator = EntityAggregator(domain, domain.key_entity)
    entry = EntryCodec(codecs.store).encode(lost_time, ())
    # A tile record too: its 5-minute tile, as if 99 events had been counted in it.
    width = aggregator.resolutions[0].width_ms
    tile = EntryCodec(codecs.store).encode(lost_time // width, (99.0,) * aggregator.stride(0))
    merchant = str(doubled["merchant_id"]).encode()
    partitions = partition_count(stack, domain.topics.events)
    dead = Producer({"bootstrap.servers": stack.bootstrap, "transactional.id": f"{app_id}-0"})
    dead.init_transactions(30)
    dead.begin_transaction()
    changelog = domain.topics.windows_changelog(app_id, domain.key_entity)
    partition = positions[lost_id][0]
    dead.produce(changelog, entry, entry_key(lost_card, event_hash(lost_id)), partition)
    dead.produce(changelog, tile, tile_key(lost_card, 0, lost_time // width), partition)
    dead.produce(
        domain.topics.by_entity(app_id, "merchant"),
        scenario.events_codec.encode(doubled),
        forward_key(merchant, *positions[str(doubled["event_id"])]),
        forward_partition(merchant, partitions),
    )
    dead.flush(30)
    dead.abort_transaction(30)  # as the next instance's fencing would

    port = free_port()
    second = ServiceProcess(
        "featurizer",
        {**env, "STREAMML_METRICS_PORT": str(port)},
        logs_dir / "featurizer-after-leak.log",
    )
    try:
        reader.read_until(scenario.complete, 180)
        reader.settle(2.0)
        merchants = scenario.await_merchant_rows(60)
        again = metric(port, "streamml_featurizer_forwarded_again_total{")
    finally:
        assert second.stop() == 0
        reader.close()
    scenario.assert_every_vector_as_uninterrupted(reader.values, once=True)
    assert merchants == scenario.merchant_counts_expected()
    # Kafka hides the aborted forward from read_committed readers; the embedded broker shows it,
    # and the featurizer must recognise it as sent again.
    assert again == (1 if stack.embedded else 0), "the forward sent again was not recognised"


def test_two_featurizers_in_one_group_split_the_partitions_and_agree_with_one(
    stack: StackSettings, logs_dir: Path
) -> None:
    scenario = Scenario(stack, seed=12)
    ports = [free_port(), free_port()]
    instances = [
        ServiceProcess(
            "featurizer",
            service_env(
                stack,
                {
                    "STREAMML_METRICS_PORT": str(port),
                    "STREAMML_FEATURIZER_INSTANCE": str(i),
                    # A group of its own: the embedded broker leaves a group stuck when a
                    # member leaves it mid-rebalance, as the second one stopped here does.
                    "STREAMML_FEATURIZER_APP_ID": "streamml-featurizer-pair",
                },
            ),
            logs_dir / f"featurizer-{i}.log",
        )
        for i, port in enumerate(ports)
    ]
    reader = TopicReader(stack, "payments.features")
    try:
        before = [events_read(port, wait_s=120) for port in ports]
        reader.read_until(lambda values: False, 8.0)  # both instances join and split partitions
        scenario.publish()
        reader.read_until(scenario.complete, 180)
        counted = [events_read(port) - b for port, b in zip(ports, before, strict=True)]
        merchants = scenario.await_merchant_rows(60)
    finally:
        for instance in instances:
            assert instance.stop() == 0
        reader.close()
    assert all(c > 0 for c in counted) and sum(counted) >= EVENTS, f"read per instance: {counted}"
    scenario.assert_every_vector_as_uninterrupted(reader.values, once=True)
    # Each merchant's window lives in one partition, whichever instance reads it.
    assert merchants == scenario.merchant_counts_expected()


def events_read(port: int, wait_s: float = 0.0) -> float:
    """The instance's events counter; waits up to ``wait_s`` for it to start serving."""
    return metric(port, 'streamml_featurizer_events_total{domain="payments"}', wait_s)


def metric(port: int, prefix: str, wait_s: float = 0.0) -> float:
    """The sum of an instance's samples whose line starts with ``prefix``."""
    url = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            body: str = urllib.request.urlopen(url, timeout=5).read().decode()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    return sum(float(x.split()[-1]) for x in body.splitlines() if x.startswith(prefix))


def test_an_online_store_that_stays_away_stops_the_featurizer_and_loses_nothing(
    stack: StackSettings, logs_dir: Path
) -> None:
    """A batch whose online rows cannot be written, after its retries, is aborted whole; a
    restart redoes it. (A store that comes back in time: test_faults.py.)"""
    codecs = CodecFactory(SchemaStore.from_dir(stack.schemas_dir))
    events_codec = codecs.for_topic("payments.transactions")
    vectors_codec = codecs.for_topic("payments.features")
    prefix = uuid.uuid4().hex[:8]
    now = int(time.time() * 1000)
    events = [
        {
            "event_id": f"{prefix}-{i}",
            "card_id": f"outage-card-{prefix}-{i % 3}",
            "merchant_id": "outage-m",
            "amount": 10.0 + i,
            "currency": "EUR",
            "event_time": now - 60_000 + i,
        }
        for i in range(30)
    ]
    wanted = {str(e["event_id"]) for e in events}
    publish(
        stack,
        "payments.transactions",
        [(str(e["card_id"]).encode(), events_codec.encode(e)) for e in events],
    )
    group = {"STREAMML_FEATURIZER_APP_ID": f"streamml-featurizer-outage-{prefix}"}
    down = service_env(
        stack,
        {
            **group,
            "STREAMML_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "STREAMML_FEATURIZER_ONLINE_RETRY_S": "2",
        },
    )
    failing = ServiceProcess("featurizer", down, logs_dir / "featurizer-redis-down.log")
    assert failing.process.wait(timeout=120) == 2, "the featurizer kept running without Redis"
    assert "online store failed" in (logs_dir / "featurizer-redis-down.log").read_text()

    reader = TopicReader(stack, "payments.features")
    restarted = ServiceProcess("featurizer", service_env(stack, group), logs_dir / "f-redis-up.log")
    try:
        reader.read_until(lambda values: wanted <= set(event_ids(values, vectors_codec)), 120)
        reader.settle(2.0)
    finally:
        assert restarted.stop() == 0
        reader.close()
    ids = [i for i in event_ids(reader.values, vectors_codec) if i in wanted]
    assert sorted(ids) == sorted(wanted), "a vector is missing or was published twice"


def event_ids(values: list[bytes], codec: Codec) -> list[str]:
    """The event ids of the vectors among ``values`` (other tests put foreign bytes there too)."""
    ids = []
    for value in values:
        try:
            ids.append(str(codec.decode(value)["event_id"]))
        except SerializationError:
            continue
    return ids


def test_a_restore_reads_a_changelog_of_more_small_batches_than_one_short_fetch_can_list(
    stack: StackSettings,
) -> None:
    """The embedded broker lists every stored batch of a partition in each fetch, and a fetch
    that takes longer than its wait comes back empty: at the 2 ms hot-path wait, a reader stops
    for good at a few thousand batches. A changelog after a long run holds many more (one
    batch and one transaction marker per committed micro-batch); the restore must read it all."""
    topic = f"restore-history-{uuid.uuid4().hex[:8]}"
    create_topics(stack, [TopicSpec(topic, 1)])
    producer = Producer(producer_config(stack, **{"linger.ms": 0}))
    batches = 10_000
    for i in range(batches):
        producer.produce(topic, key=b"k%d" % i, value=b"v%d" % i)
        producer.flush()  # each its own stored batch, as a micro-batch's changelog write
    if stack.embedded:
        assert stack.fetch_wait < HISTORY_FETCH_WAIT_MS  # the hot path's wait is the short one
    records = read_changelogs(stack, [(topic, 0)], timeout_s=60)[(topic, 0)]
    assert records == [(b"k%d" % i, b"v%d" % i) for i in range(batches)]


def set_topic_config(stack: StackSettings, topic: str, name: str, value: str | None) -> None:
    """Sets (or with None, deletes back to the broker's default) one config of a topic."""
    operation = AlterConfigOpType.SET if value is not None else AlterConfigOpType.DELETE
    entry = ConfigEntry(name, value or "", incremental_operation=operation)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[entry])
    admin = AdminClient({"bootstrap.servers": stack.bootstrap})  # alive until answered
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(15)


def test_transactions_the_broker_refuses_are_recovered_from_without_a_restart(
    stack: StackSettings, logs_dir: Path
) -> None:
    """While the features topic refuses every record (as a lost partition leader would), each
    batch's transaction fails; the featurizer resumes from the last commit with a new consumer,
    restores its windows as of it, and tries again, in the same process. Once the topic takes
    records again every vector is there once, with the values of an uninterrupted run."""
    scenario = Scenario(stack, seed=23)
    first, rest = scenario.events[: EVENTS // 3], scenario.events[EVENTS // 3 :]
    port = free_port()
    env = service_env(
        stack,
        {
            "STREAMML_FEATURIZER_APP_ID": f"streamml-featurizer-refused-{uuid.uuid4().hex[:8]}",
            "STREAMML_METRICS_PORT": str(port),
        },
    )
    reader = TopicReader(stack, "payments.features")
    featurizer = ServiceProcess("featurizer", env, logs_dir / "featurizer-refused.log")
    recoveries = "streamml_featurizer_transaction_recoveries_total"
    try:
        scenario.publish(first)
        first_ids = {str(e["event_id"]) for e in first}
        reader.read_until(lambda values: first_ids <= set(scenario.published(values)), 120)
        assert metric(port, recoveries, wait_s=30) == 0
        # Too small for a batch of vectors (a vector is about 150 bytes), large enough for a
        # transaction marker (78): the failed transactions' aborts must still get written.
        set_topic_config(stack, "payments.features", "max.message.bytes", "150")
        try:
            scenario.publish(rest)
            deadline = time.monotonic() + 60
            while metric(port, recoveries) < 3 and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            set_topic_config(stack, "payments.features", "max.message.bytes", None)
        failed = metric(port, recoveries)
        assert failed >= 3, "the refused records failed no transaction"
        reader.read_until(scenario.complete, 180)
        reader.settle(2.0)
        merchants = scenario.await_merchant_rows(60)
        assert featurizer.process.poll() is None, "the featurizer stopped"
    finally:
        assert featurizer.stop() == 0
        reader.close()
    scenario.assert_every_vector_as_uninterrupted(reader.values, once=True)
    assert merchants == scenario.merchant_counts_expected()

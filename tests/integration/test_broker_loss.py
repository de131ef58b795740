"""A local three-broker Kafka cluster loses a broker mid-stream: nothing is lost or doubled.

The broker that leads partition 0 of the predictions topic is SIGKILLed halfway through a
1,000 events/s stream. The featurizer and the scorer run on, unrestarted, and an outside
read_committed consumer finds exactly one prediction for every transaction published.

The services' group and transactional ids are picked so that the same broker is also the
coordinator of both consumer groups and of both transactions: the hardest broker to lose, and
the one on which librdkafka's send_offsets_to_transaction can block past its timeout (a known
librdkafka defect, confluentinc/librdkafka#5511), which the services must get out of by
themselves.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from services.core.domains import load_domain
from services.core.schemas import SchemaStore
from services.core.serde import CodecFactory
from services.core.settings import StackSettings
from services.producer.publish import publish_synthetic
from services.stack import local
from services.stack.services import ServiceProcess, service_env
from tests.integration.helpers import TopicReader
from tests.outside import OutsideCodec

pytestmark = pytest.mark.integration

PREDICTIONS = OutsideCodec("payments.predictions.avsc")
RATE = 1_000.0
SECONDS = 12.0
OFFSETS, TRANSACTIONS = INTERNAL_TOPICS = ("__consumer_offsets", "__transaction_state")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackSettings]:
    home = tmp_path_factory.mktemp("three-brokers")
    settings = StackSettings(
        home=home, kafka_bootstrap=None, redis_url=None, broker="kafka", session_timeout_ms=10_000
    )
    with local.running_stack(settings, brokers=3) as stack:
        yield stack


def leader_of(stack: StackSettings, topic: str, partition: int) -> int:
    metadata = AdminClient({"bootstrap.servers": stack.bootstrap}).list_topics(topic, timeout=15)
    leader: int = metadata.topics[topic].partitions[partition].leader
    return leader


def create_internal_topics(stack: StackSettings) -> None:
    """A transactional producer's start creates the transaction-state topic, a group the
    offsets one."""
    producer = Producer({"bootstrap.servers": stack.bootstrap, "transactional.id": "probe"})
    producer.init_transactions(30)
    reader = TopicReader(stack, "payments.transactions")
    reader.settle(1.0)
    reader.close()


def java_hash(text: str) -> int:
    """java.lang.String.hashCode, which Kafka uses to place a group or a transactional id."""
    value = 0
    for unit in text.encode("utf-16-be").hex(" ", 2).split():
        value = (31 * value + int(unit, 16)) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def coordinator_partition(name: str, partitions: int) -> int:
    hashed = java_hash(name)
    return (0 if hashed == -(1 << 31) else abs(hashed)) % partitions


def coordinated_by(
    stack: StackSettings, broker: int, internal_topic: str, name: Callable[[int], str]
) -> str:
    """The first of name(0), name(1), ... whose coordinator (the leader of its partition of
    ``internal_topic``) is ``broker``."""
    metadata = AdminClient({"bootstrap.servers": stack.bootstrap}).list_topics(timeout=15)
    partitions = metadata.topics[internal_topic].partitions
    for number in range(1000):
        candidate = name(number)
        partition = coordinator_partition(candidate, len(partitions))
        if partitions[partition].leader == broker:
            return candidate
    raise AssertionError(f"no name is coordinated by broker {broker} on {internal_topic}")


def group_coordinator(stack: StackSettings, group: str) -> int:
    admin = AdminClient({"bootstrap.servers": stack.bootstrap})
    description = admin.describe_consumer_groups([group])[group].result(15)
    coordinator: int = description.coordinator.id
    return coordinator


def test_every_topic_is_replicated_three_times_with_two_in_sync_required(
    cluster: StackSettings,
) -> None:
    create_internal_topics(cluster)
    payments = load_domain(cluster.features_dir, "payments")
    wanted = [*payments.topics.data_topics(), "ml.models", "ml.models.events", *INTERNAL_TOPICS]
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    topics = admin.list_topics(timeout=15).topics
    for name in wanted:
        assert name in topics, name
        for number, partition in topics[name].partitions.items():
            assert len(partition.replicas) == 3, (name, number, partition.replicas)
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in wanted]
    for resource, future in admin.describe_configs(resources).items():
        assert future.result(15)["min.insync.replicas"].value == "2", resource


def test_a_broker_killed_mid_stream_loses_and_doubles_no_prediction(
    cluster: StackSettings,
) -> None:
    payments = load_domain(cluster.features_dir, "payments")
    codecs = CodecFactory(SchemaStore.from_dir(cluster.schemas_dir))
    create_internal_topics(cluster)
    victim = leader_of(cluster, payments.topics.predictions, 0)
    featurizer = coordinated_by(cluster, victim, OFFSETS, lambda n: f"featurizer-{n}")
    featurizer_instance = coordinated_by(
        cluster, victim, TRANSACTIONS, lambda n: f"{featurizer}-{n}"
    ).removeprefix(f"{featurizer}-")
    scorer_group = coordinated_by(cluster, victim, OFFSETS, lambda n: f"scorer-{n}-payments")
    scorer = scorer_group.removesuffix("-payments")
    scorer_instance = coordinated_by(
        cluster, victim, TRANSACTIONS, lambda n: f"{scorer_group}-{n}"
    ).removeprefix(f"{scorer_group}-")
    env = service_env(
        cluster,
        {
            "STREAMML_FEATURIZER_APP_ID": featurizer,
            "STREAMML_FEATURIZER_INSTANCE": featurizer_instance,
            "STREAMML_SCORER_APP_ID": scorer,
            "STREAMML_SCORER_INSTANCE": scorer_instance,
        },
    )
    logs = cluster.home / "logs"
    services = [
        ServiceProcess(name, env, logs / f"{name}.log") for name in ("featurizer", "scorer")
    ]
    reader = TopicReader(cluster, payments.topics.predictions)
    try:
        warm = publish_synthetic(
            cluster, payments, codecs.for_topic(payments.topics.events), count=1, rate=1, seed=5
        )
        reader.read_until(bool, 120)
        assert predicted_ids(reader.values) == set(warm), "the pipeline never answered"
        for group in (featurizer, scorer_group):
            assert group_coordinator(cluster, group) == victim, group

        victim_pid = int((cluster.home / "brokers" / f"{victim}.pid").read_text())
        killer = threading.Timer(SECONDS / 2, os.kill, (victim_pid, signal.SIGKILL))
        killer.start()
        sent = publish_synthetic(
            cluster,
            payments,
            codecs.for_topic(payments.topics.events),
            count=int(RATE * SECONDS),
            rate=RATE,
            seed=11,
        )
        killer.join()
        wanted = set(sent)
        reader.read_until(lambda values: wanted <= predicted_ids(values), 90)
        reader.settle(3.0)  # a doubled prediction would show up meanwhile
        counts = Counter(PREDICTIONS.decode(v)["event_id"] for v in reader.values)
        missing = wanted - set(counts)
        doubled = {e: n for e, n in counts.items() if n > 1}
        assert not doubled, f"{len(doubled)} predictions doubled"
        assert not missing, f"{len(missing)} of {len(wanted)} transactions got no prediction"
        assert leader_of(cluster, payments.topics.predictions, 0) != victim
        for service in services:
            assert service.process.poll() is None, f"{service.name} stopped: {service.log_path}"
    finally:
        reader.close()
        for service in services:
            if service.process.poll() is None:
                service.stop()


def predicted_ids(values: list[bytes]) -> set[str]:
    return {str(PREDICTIONS.decode(v)["event_id"]) for v in values}

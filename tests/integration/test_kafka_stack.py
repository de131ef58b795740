"""`streamml up` on Apache Kafka as a user runs it: data that survives, and clear set-up errors."""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from pydantic import SecretStr

from services.core.domains import load_domain
from services.core.schemas import SchemaStore
from services.core.serde import CodecFactory
from services.core.settings import StackSettings
from services.producer.publish import publish_synthetic
from services.stack.processes import LOOPBACK
from services.stack.services import ServiceProcess, service_env
from tests.integration.helpers import TopicReader, read_env, streamml
from tests.outside import OutsideCodec

pytestmark = pytest.mark.integration

TOPIC = "payments.outcomes"
PREDICTIONS = OutsideCodec("payments.predictions.avsc")


def produce_one(bootstrap: str, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce(TOPIC, value)
    assert producer.flush(30) == 0


def read_all(bootstrap: str, seconds: float = 5.0) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            # The embedded broker: a group join takes half the session timeout, a fetch its
            # whole wait.
            "session.timeout.ms": 6000,
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.subscribe([TOPIC])
    values: list[bytes] = []
    try:
        for _ in range(int(seconds * 10)):
            values += [m.value() for m in consumer.consume(100, 0.1) if m.error() is None]
    finally:
        consumer.close()
    return values


def up(home: Path, *args: str) -> str:
    result = streamml(home, "up", "--detach", *args)
    assert result.returncode == 0, result.stderr
    assert "Apache Kafka 4." in result.stdout and "KRaft" in result.stdout, result.stdout
    return read_env(home / "stack.env")["STREAMML_KAFKA_BOOTSTRAP"]


def down(home: Path, *args: str) -> None:
    result = streamml(home, "down", *args)
    assert result.returncode == 0, result.stderr


def test_records_survive_down_and_up_and_down_wipe_deletes_them(tmp_path: Path) -> None:
    home = tmp_path / "state"
    bootstrap = up(home)
    try:
        assert read_env(home / "stack.env")["STREAMML_EMBEDDED"] == "false"
        pid_file = home / "brokers" / "1.pid"
        assert int(pid_file.read_text()) > 0
        produce_one(bootstrap, b"published before down")
    finally:
        down(home)
    assert not pid_file.exists()

    bootstrap = up(home)
    try:
        assert read_all(bootstrap) == [b"published before down"]
    finally:
        down(home, "--wipe")
    # Wiped: the broker's data is gone (a later up starts empty, as every fresh up does).
    assert not (home / "kafka").exists() and not (home / "stack.env").exists()


def test_kafka_without_a_jdk_says_so_and_what_else_works(tmp_path: Path) -> None:
    result = streamml(
        tmp_path / "state",
        "up",
        "--detach",
        extra={"STREAMML_BROKER": "kafka", "JAVA_HOME": str(tmp_path / "no-jdk")},
    )
    assert result.returncode == 2
    assert "Apache Kafka needs a JDK 17+" in result.stderr
    assert "STREAMML_BROKER=embedded" in result.stderr and "Traceback" not in result.stderr


def test_unreachable_maven_central_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind((LOOPBACK, 0))
        port = closed.getsockname()[1]
    result = streamml(
        tmp_path / "state",
        "up",
        "--detach",
        extra={
            "STREAMML_BROKER": "kafka",
            "STREAMML_CACHE_DIR": str(tmp_path / "empty-cache"),
            "STREAMML_MAVEN_REPOSITORY": f"http://{LOOPBACK}:{port}/maven2",
        },
    )
    assert result.returncode == 2
    assert "could not fetch Apache Kafka's jars with Maven" in result.stderr
    assert "Connection refused" in result.stderr and "STREAMML_MAVEN_REPOSITORY" in result.stderr
    assert not (tmp_path / "state" / "stack.env").exists()


def test_a_kafka_node_that_dies_while_starting_is_reported_with_its_log(tmp_path: Path) -> None:
    home = tmp_path / "state"
    data = home / "kafka" / "node-1" / "data"
    data.mkdir(parents=True)
    (home / "kafka" / "cluster.json").write_text(json.dumps({"cluster_id": "x", "nodes": 1}))
    # Storage formatted for another node: Kafka refuses to start on it.
    (data / "meta.properties").write_text(
        "version=1\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\nnode.id=7\n"
        "directory.id=AAAAAAAAAAAAAAAAAAAAAA\n"
    )
    result = streamml(home, "up", "--detach", extra={"STREAMML_BROKER": "kafka"})
    assert result.returncode == 2, result.stdout
    assert "the Kafka node 1 exited with code" in result.stderr
    assert "kafka-1.log ends with" in result.stderr and "node" in result.stderr.split("ends")[-1]
    assert not (home / "stack.env").exists()


def test_data_of_another_broker_kind_or_size_is_refused_with_the_way_out(tmp_path: Path) -> None:
    home = tmp_path / "state"
    (home / "kafka").mkdir(parents=True)
    (home / "kafka" / "cluster.json").write_text(json.dumps({"cluster_id": "x", "nodes": 1}))
    embedded = streamml(home, "up", "--detach", extra={"STREAMML_BROKER": "embedded"})
    assert embedded.returncode == 2
    assert "holds the data of an Apache Kafka cluster" in embedded.stderr
    assert "streamml down --wipe" in embedded.stderr
    bigger = streamml(home, "up", "--detach", "--brokers", "3", extra={"STREAMML_BROKER": "kafka"})
    assert bigger.returncode == 2
    assert "1-node Kafka cluster, not 3" in bigger.stderr and "--wipe" in bigger.stderr


def test_the_embedded_broker_is_the_fallback_without_a_jdk_and_still_runs_the_pipeline(
    tmp_path: Path,
) -> None:
    """The smoke test that keeps the embedded broker working: `up` without a JDK, then a few
    transactions through the real featurizer and scorer, each predicted once."""
    home = tmp_path / "state"
    result = streamml(home, "up", "--detach", extra={"JAVA_HOME": str(tmp_path / "no-jdk")})
    assert result.returncode == 0, result.stderr
    try:
        assert "the embedded broker (Tansu" in result.stdout
        assert "no JDK 17+ found" in result.stderr and "keeps nothing on disk" in result.stderr
        env = read_env(home / "stack.env")
        assert env["STREAMML_EMBEDDED"] == "true"
        bootstrap = env["STREAMML_KAFKA_BOOTSTRAP"]
        produce_one(bootstrap, b"on the embedded broker")
        assert read_all(bootstrap, seconds=10.0) == [b"on the embedded broker"]
        settings = StackSettings(
            home=home,
            kafka_bootstrap=bootstrap,
            redis_url=SecretStr(env["STREAMML_REDIS_URL"]),
            embedded=True,
        )
        assert_pipeline_predicts_once(settings)
    finally:
        down(home)


def assert_pipeline_predicts_once(settings: StackSettings) -> None:
    payments = load_domain(settings.features_dir, "payments")
    codec = CodecFactory(SchemaStore.from_dir(settings.schemas_dir)).for_topic(
        payments.topics.events
    )
    services = [
        ServiceProcess(name, service_env(settings), settings.home / "logs" / f"{name}.log")
        for name in ("featurizer", "scorer")
    ]
    reader = TopicReader(settings, payments.topics.predictions)
    try:
        sent = set(publish_synthetic(settings, payments, codec, count=20, rate=20, seed=3))
        reader.read_until(lambda values: sent <= predicted(values), 120)
        reader.settle(2.0)
        got = [str(PREDICTIONS.decode(v)["event_id"]) for v in reader.values]
        assert sorted(got) == sorted(sent)
    finally:
        reader.close()
        for service in services:
            assert service.stop() == 0, service.log_path


def predicted(values: list[bytes]) -> set[str]:
    return {str(PREDICTIONS.decode(v)["event_id"]) for v in values}

"""The local Kafka cluster's configuration and the checks before it starts (no broker runs here)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from services.core.errors import StackError
from services.core.settings import StackSettings
from services.stack.brokers import choose_broker, client_config, local_scram, local_tls
from services.stack.kafka.cluster import new_cluster_id
from services.stack.kafka.config import (
    ClusterLayout,
    KafkaNode,
    NodePorts,
    Scram,
    node_properties,
    render_properties,
)
from services.stack.kafka.distribution import (
    cached_classpath,
    classpath_file,
    find_java,
    java_major,
    pinned_version,
    require_java,
)
from services.stack.kafka.tls import Tls, ensure_certificate


def layout(size: int, tmp_path: Path) -> ClusterLayout:
    nodes = tuple(
        KafkaNode(i, NodePorts(9000 + i, 9100 + i), tmp_path / f"node-{i}")
        for i in range(1, size + 1)
    )
    return ClusterLayout(nodes, partitions=4)


def test_one_node_keeps_one_copy_of_everything_internal_topics_included(tmp_path: Path) -> None:
    single = layout(1, tmp_path)
    props = node_properties(single, single.nodes[0])
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9101"
    for key in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "min.insync.replicas",
        "transaction.state.log.min.isr",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["num.partitions"] == "4"
    assert props["log.dirs"] == str(tmp_path / "node-1" / "data")


def test_three_nodes_replicate_three_times_and_need_two_in_sync(tmp_path: Path) -> None:
    cluster = layout(3, tmp_path)
    assert cluster.bootstrap == "127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003"
    for node in cluster.nodes:
        props = node_properties(cluster, node)
        assert props["node.id"] == str(node.node_id)
        assert props["controller.quorum.voters"] == (
            "1@127.0.0.1:9101,2@127.0.0.1:9102,3@127.0.0.1:9103"
        )
        assert props["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:{9000 + node.node_id}"
        assert props["default.replication.factor"] == "3"
        assert props["offsets.topic.replication.factor"] == "3"
        assert props["transaction.state.log.replication.factor"] == "3"
        assert props["min.insync.replicas"] == "2"
        assert props["transaction.state.log.min.isr"] == "2"


def test_properties_render_one_per_line() -> None:
    text = render_properties({"a.b": "1", "c": "x,y"})
    assert text.splitlines()[1:] == ["a.b=1", "c=x,y"]


def fake_java(tmp_path: Path, version_line: str) -> Path:
    home = tmp_path / "jdk"
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(0o755)
    return home


@pytest.mark.parametrize(
    ("line", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_402"', 8),
    ],
)
def test_the_java_version_is_read_as_java_prints_it(tmp_path: Path, line: str, major: int) -> None:
    assert java_major(str(fake_java(tmp_path, line) / "bin" / "java")) == major


def test_an_old_java_is_refused_with_what_to_do(tmp_path: Path) -> None:
    home = fake_java(tmp_path, 'java version "1.8.0_402"')
    with pytest.raises(StackError, match="Java 8; Apache Kafka 4 needs 17"):
        require_java(home)


def test_no_java_is_refused_with_the_choices_left(tmp_path: Path) -> None:
    with pytest.raises(StackError) as raised:
        require_java(tmp_path / "no-jdk-here")
    message = str(raised.value)
    assert "STREAMML_BROKER=embedded" in message and "STREAMML_KAFKA_BOOTSTRAP" in message


def test_auto_chooses_kafka_with_a_jdk_and_the_embedded_broker_without(tmp_path: Path) -> None:
    with_jdk = StackSettings(java_home=fake_java(tmp_path, 'openjdk version "17.0.15"'))
    assert choose_broker(with_jdk) == "kafka"
    assert choose_broker(StackSettings(java_home=tmp_path / "none")) == "embedded"
    chosen = StackSettings(broker="kafka", java_home=tmp_path / "none")
    assert choose_broker(chosen) == "kafka"  # and `up` then says there is no JDK


def test_a_cached_classpath_counts_only_while_every_jar_is_there(tmp_path: Path) -> None:
    assert cached_classpath(tmp_path) is None
    jars = [tmp_path / "a.jar", tmp_path / "b.jar"]
    for jar in jars:
        jar.write_bytes(b"")
    path = classpath_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(":".join(str(j) for j in jars))
    assert cached_classpath(tmp_path) == ":".join(str(j) for j in jars)
    jars[1].unlink()
    assert cached_classpath(tmp_path) is None


def test_the_pinned_version_is_a_kafka_4() -> None:
    assert pinned_version().startswith("4.")


def test_compose_runs_the_kafka_version_that_streamml_up_runs() -> None:
    compose = Path(__file__).resolve().parents[2] / "compose" / "docker-compose.yml"
    assert f"image: apache/kafka:{pinned_version()}\n" in compose.read_text()


def test_cluster_ids_are_kafka_shaped_and_never_look_like_an_option() -> None:
    ids = [new_cluster_id() for _ in range(5_000)]  # about 78 would begin with "-" by chance
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)


SCRAM_CLIENT = {
    "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanism": "SCRAM-SHA-256",
    "sasl.username": "svc",
    "sasl.password": "s3cret",
}


def test_the_clients_scram_settings_choose_the_local_clusters_user() -> None:
    assert local_scram({}) is None
    assert local_scram({"security.protocol": "plaintext"}) is None
    scram = local_scram(SCRAM_CLIENT)
    assert scram == Scram("SCRAM-SHA-256", "svc", "s3cret")
    assert "s3cret" not in repr(scram)
    assert scram.storage_argument == "SCRAM-SHA-256=[name=svc,password=s3cret]"


@pytest.mark.parametrize(
    ("client", "words"),
    [
        ({**SCRAM_CLIENT, "security.protocol": "SASL_SSL", "ssl.ca.location": "/c"}, "own cert"),
        ({**SCRAM_CLIENT, "sasl.mechanism": "PLAIN"}, "SCRAM-SHA-256, SCRAM-SHA-512"),
        ({**SCRAM_CLIENT, "sasl.password": ""}, "sasl.password"),
        ({**SCRAM_CLIENT, "security.protocol": "TLS"}, "PLAINTEXT, SASL_PLAINTEXT, SASL_SSL, SSL"),
    ],
)
def test_what_the_local_cluster_cannot_offer_is_a_clear_error(
    client: dict[str, str], words: str
) -> None:
    with pytest.raises(StackError, match=words):
        local_scram(client)
        local_tls(client)


def test_ssl_protocols_ask_for_tls_and_the_clients_are_told_the_certificate(
    tmp_path: Path,
) -> None:
    assert not local_tls(SCRAM_CLIENT) and not local_tls({})
    assert local_tls({"security.protocol": "ssl"})
    assert local_tls({**SCRAM_CLIENT, "security.protocol": "SASL_SSL"})
    base = StackSettings(home=tmp_path, kafka_bootstrap=None)
    tls_client = {**SCRAM_CLIENT, "security.protocol": "SASL_SSL"}
    started_here = base.model_copy(update={"kafka_client_config": tls_client})
    told = client_config(started_here)
    assert told == {**tls_client, "ssl.ca.location": str(tmp_path / "kafka/tls/broker.pem")}
    theirs = started_here.model_copy(update={"kafka_bootstrap": "kafka.example:9093"})
    assert client_config(theirs) == tls_client  # their cluster, their certificates


def test_with_tls_the_brokers_listener_takes_the_stacks_certificate(tmp_path: Path) -> None:
    single = layout(1, tmp_path)
    tls = Tls(tmp_path / "broker.p12", tmp_path / "broker.pem", "kspw")
    assert "kspw" not in repr(tls)
    both = ClusterLayout(single.nodes, 4, Scram("SCRAM-SHA-256", "svc", "pw"), tls)
    props = node_properties(both, both.nodes[0])
    assert props["listeners"] == "SASL_SSL://127.0.0.1:9001,CONTROLLER://127.0.0.1:9101"
    assert props["listener.security.protocol.map"] == "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL"
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    assert "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config" in props
    assert props["ssl.keystore.location"] == str(tls.keystore)
    assert props["ssl.keystore.password"] == props["ssl.key.password"] == "kspw"
    assert (props["ssl.truststore.type"], props["ssl.truststore.location"]) == (
        "PEM",
        str(tls.certificate),
    )
    assert both.client_config["security.protocol"] == "SASL_SSL"
    assert both.client_config["ssl.ca.location"] == str(tls.certificate)
    only_tls = ClusterLayout(single.nodes, 4, None, tls)
    assert node_properties(only_tls, only_tls.nodes[0])["listeners"].startswith("SSL://")
    assert only_tls.client_config == {
        "security.protocol": "SSL",
        "ssl.ca.location": str(tls.certificate),
    }


def test_with_scram_the_brokers_listener_takes_sasl_and_the_controllers_does_not(
    tmp_path: Path,
) -> None:
    single = layout(1, tmp_path)
    secured = ClusterLayout(single.nodes, 4, Scram("SCRAM-SHA-512", "svc", "pw"))
    props = node_properties(secured, secured.nodes[0])
    assert props["listeners"] == "SASL_PLAINTEXT://127.0.0.1:9001,CONTROLLER://127.0.0.1:9101"
    assert props["listener.security.protocol.map"] == (
        "CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT"
    )
    assert props["inter.broker.listener.name"] == "SASL_PLAINTEXT"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    login = props["listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"]
    assert 'username="svc" password="pw";' in login
    assert secured.client_config["sasl.mechanism"] == "SCRAM-SHA-512"
    plain = node_properties(single, single.nodes[0])
    assert plain["listeners"].startswith("PLAINTEXT://") and "sasl.enabled.mechanisms" not in plain


def test_the_stacks_certificate_is_made_once_for_127_0_0_1_and_kept(tmp_path: Path) -> None:
    java = find_java(None)
    assert java is not None, "the local Kafka (and its keytool) needs a JDK"
    made = ensure_certificate(tmp_path, java)
    assert made.keystore.stat().st_size > 0
    assert oct(made.keystore.parent.stat().st_mode & 0o777) == "0o700"
    pem = made.certificate.read_text()
    assert pem.startswith("-----BEGIN CERTIFICATE-----")
    context = ssl.create_default_context(cafile=str(made.certificate))  # a valid trust anchor
    assert context.cert_store_stats()["x509"] == 1
    assert ensure_certificate(tmp_path, java) == made  # the same files and password next time

"""A local KRaft cluster's layout and each node's ``server.properties``, as pure data.

Every node is broker and controller at once (combined mode) and the controllers form a static
quorum (``controller.quorum.voters``), so the ports can change from one ``up`` to the next.
Replication follows the cluster's size: one node keeps one copy of everything; three keep three
with ``min.insync.replicas=2``, internal topics (offsets, transaction state) included, so the
loss of any one broker loses no acknowledged record and stops no writer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.stack.kafka.tls import Tls

LOOPBACK = "127.0.0.1"
BROKER_LISTENER = "PLAINTEXT"
CONTROLLER_LISTENER = "CONTROLLER"
# Internal topics sized for one machine (Kafka's defaults are 50 partitions each).
INTERNAL_TOPIC_PARTITIONS = 8
# A killed broker is noticed (fenced, dropped from every ISR, its partitions given new leaders)
# after this long without a heartbeat; Kafka's default is 9 s.
BROKER_SESSION_TIMEOUT_MS = 3_000
BROKER_HEARTBEAT_MS = 500


SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
# The brokers' listener's protocol, by (SCRAM, TLS): librdkafka's and Kafka's names alike.
PROTOCOLS = {
    (False, False): BROKER_LISTENER,
    (True, False): "SASL_PLAINTEXT",
    (False, True): "SSL",
    (True, True): "SASL_SSL",
}


@dataclass(frozen=True)
class Scram:
    """SASL/SCRAM on the brokers' listener: the one user the clients (and the brokers among
    themselves) authenticate as. Clients without these credentials are refused."""

    mechanism: str
    username: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        if self.mechanism not in SCRAM_MECHANISMS:
            raise ValueError(f"SCRAM mechanism {self.mechanism!r}: one of {SCRAM_MECHANISMS}")

    @property
    def storage_argument(self) -> str:
        """The credential as ``kafka-storage format --add-scram`` takes it."""
        return f"{self.mechanism}=[name={self.username},password={self.password}]"


@dataclass(frozen=True)
class NodePorts:
    broker: int
    controller: int


@dataclass(frozen=True)
class KafkaNode:
    node_id: int
    ports: NodePorts
    directory: Path

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def properties_path(self) -> Path:
        return self.directory / "server.properties"

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.ports.broker}"


@dataclass(frozen=True)
class ClusterLayout:
    nodes: tuple[KafkaNode, ...]
    partitions: int
    scram: Scram | None = None
    tls: Tls | None = None

    @property
    def protocol(self) -> str:
        """The brokers' listener's security protocol."""
        return PROTOCOLS[(self.scram is not None, self.tls is not None)]

    @property
    def client_config(self) -> dict[str, str]:
        """What a client of this cluster needs besides ``bootstrap.servers``."""
        if self.protocol == BROKER_LISTENER:
            return {}
        config = {"security.protocol": self.protocol}
        if self.scram is not None:
            config |= {
                "sasl.mechanism": self.scram.mechanism,
                "sasl.username": self.scram.username,
                "sasl.password": self.scram.password,
            }
        if self.tls is not None:
            config["ssl.ca.location"] = str(self.tls.certificate)
        return config

    @property
    def size(self) -> int:
        return len(self.nodes)

    @property
    def replication(self) -> int:
        return min(self.size, 3)

    @property
    def min_insync(self) -> int:
        return max(1, self.replication - 1)

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def voters(self) -> str:
        return ",".join(f"{n.node_id}@{LOOPBACK}:{n.ports.controller}" for n in self.nodes)


def node_properties(layout: ClusterLayout, node: KafkaNode) -> dict[str, str]:
    """What one node runs with: its identity and listeners, and the cluster's shared settings.
    With SCRAM and/or TLS the brokers' listener (clients, and brokers among themselves) takes
    them; the controllers' stays on loopback without."""
    scram, tls = layout.scram, layout.tls
    name = layout.protocol
    broker = f"{name}://{node.bootstrap}"
    controller = f"{CONTROLLER_LISTENER}://{LOOPBACK}:{node.ports.controller}"
    properties = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": layout.voters,
        "listeners": f"{broker},{controller}",
        "advertised.listeners": broker,
        "controller.listener.names": CONTROLLER_LISTENER,
        "inter.broker.listener.name": name,
        "listener.security.protocol.map": f"{CONTROLLER_LISTENER}:PLAINTEXT,{name}:{name}",
        "log.dirs": str(node.data_dir),
    }
    if scram is not None:
        login = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{scram.username}" password="{scram.password}";'
        )
        properties |= {
            "sasl.enabled.mechanisms": scram.mechanism,
            "sasl.mechanism.inter.broker.protocol": scram.mechanism,
            f"listener.name.{name.lower()}.{scram.mechanism.lower()}.sasl.jaas.config": login,
        }
    if tls is not None:
        properties |= {
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(tls.keystore),
            "ssl.keystore.password": tls.password,
            "ssl.key.password": tls.password,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(tls.certificate),
        }
    return properties | shared_properties(layout)


def shared_properties(layout: ClusterLayout) -> dict[str, str]:
    replication, min_insync = str(layout.replication), str(layout.min_insync)
    internal = str(INTERNAL_TOPIC_PARTITIONS)
    return {
        "num.partitions": str(layout.partitions),
        "default.replication.factor": replication,
        "min.insync.replicas": min_insync,
        "offsets.topic.replication.factor": replication,
        "offsets.topic.num.partitions": internal,
        "transaction.state.log.replication.factor": replication,
        "transaction.state.log.min.isr": min_insync,
        "transaction.state.log.num.partitions": internal,
        "share.coordinator.state.topic.replication.factor": replication,
        "share.coordinator.state.topic.min.isr": min_insync,
        "unclean.leader.election.enable": "false",
        # One machine: no point waiting for more group members, and few threads.
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.replica.fetchers": "1",
        "background.threads": "4",
        "broker.session.timeout.ms": str(BROKER_SESSION_TIMEOUT_MS),
        "broker.heartbeat.interval.ms": str(BROKER_HEARTBEAT_MS),
    }


def render_properties(properties: Mapping[str, str]) -> str:
    header = "# Written by `streamml up`; rewritten at every start.\n"
    return header + "".join(f"{key}={value}\n" for key, value in properties.items())


LOG4J2_PROPERTIES = """\
# Written by `streamml up`. Warnings and errors, plus the lines that say which Kafka started.
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = STDOUT
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
logger.version.name = org.apache.kafka.common.utils
logger.version.level = INFO
"""


def jvm_options(heap_mb: int, logs_dir: Path, log4j_config: Path) -> list[str]:
    """What bin/kafka-run-class.sh and kafka-server-start.sh pass, with a bounded heap."""
    return [
        f"-Xms{min(heap_mb, 256)}m",
        f"-Xmx{heap_mb}m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={logs_dir}",
        f"-Dlog4j2.configurationFile={log4j_config}",
    ]

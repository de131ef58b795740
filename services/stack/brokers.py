"""Which broker a local stack runs, and starting it: Apache Kafka, or the embedded fallback.

``STREAMML_BROKER=auto`` (the default) runs Apache Kafka whenever a JDK 17+ is found and says in
one line what is lost when it falls back to the embedded broker.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from services.core.errors import StackError
from services.core.settings import StackSettings
from services.stack import tansu
from services.stack.kafka.cluster import ClusterRequest, kafka_data_dir, start_cluster
from services.stack.kafka.config import PROTOCOLS, SCRAM_MECHANISMS, Scram
from services.stack.kafka.distribution import JAVA_MIN_MAJOR, find_java, java_major, resolve
from services.stack.kafka.tls import certificate_path
from services.stack.processes import LOOPBACK, port_for

log = logging.getLogger(__name__)

BrokerKind = Literal["kafka", "embedded"]
EMBEDDED_LIMITS = (
    f"no JDK {JAVA_MIN_MAJOR}+ found, so the embedded broker (Tansu) runs instead of Apache "
    "Kafka: it keeps nothing on disk, has no replication, and slows down under a steady load "
    "(docs/operations.md); install a JDK for Kafka, or set STREAMML_BROKER=embedded to choose it"
)


@dataclass(frozen=True)
class StartedBroker:
    bootstrap: str
    processes: tuple[subprocess.Popen[bytes], ...]
    description: str
    embedded: bool


def choose_broker(settings: StackSettings) -> BrokerKind:
    if settings.broker != "auto":
        return settings.broker
    java = find_java(settings.java_home)
    if java is not None and java_major(java) >= JAVA_MIN_MAJOR:
        return "kafka"
    log.warning(EMBEDDED_LIMITS)
    return "embedded"


def start_broker(
    settings: StackSettings, *, detach: bool, port: int | None = None, brokers: int = 1
) -> StartedBroker:
    """Starts the chosen broker with its data under ``settings.home``."""
    if choose_broker(settings) == "embedded":
        return _start_embedded(settings, detach=detach, port=port, brokers=brokers)
    distribution = resolve(settings.cache_dir, settings.java_home, settings.maven_repository)
    request = ClusterRequest(
        home=settings.home,
        size=brokers,
        partitions=settings.topic_partitions,
        heap_mb=settings.kafka_heap_mb,
        jvm_options=tuple(shlex.split(settings.kafka_jvm_options)),
        first_port=port,
        scram=local_scram(settings.kafka_client_config),
        tls=local_tls(settings.kafka_client_config),
    )
    cluster = start_cluster(request, distribution, detach=detach)
    return StartedBroker(cluster.layout.bootstrap, cluster.processes, cluster.description, False)


def local_scram(client: dict[str, str]) -> Scram | None:
    """The SCRAM user the local Kafka is started with: the one the clients are configured to
    log in as (``STREAMML_KAFKA_CLIENT_CONFIG``), so one setting secures both ends. None when
    the clients do not use SASL; an error for what the local cluster cannot offer."""
    protocol = _protocol(client)
    if not protocol.startswith("SASL_"):
        return None
    mechanism = client.get("sasl.mechanism", "").upper()
    if mechanism not in SCRAM_MECHANISMS:
        raise StackError(
            f"the local Kafka offers SASL with SCRAM (one of {', '.join(SCRAM_MECHANISMS)}), "
            f"not {mechanism or '(no sasl.mechanism)'}. Point STREAMML_KAFKA_BOOTSTRAP at a "
            "cluster of yours for anything else"
        )
    username, password = client.get("sasl.username"), client.get("sasl.password")
    if not username or not password:
        raise StackError("SASL/SCRAM needs sasl.username and sasl.password in the client config")
    return Scram(mechanism, username, password)


def local_tls(client: dict[str, str]) -> bool:
    """Whether the local Kafka's listener takes TLS (``security.protocol`` SSL or SASL_SSL).
    It makes its own certificate, so the clients' config names none: the stack adds
    ``ssl.ca.location`` (``client_config``)."""
    if not _protocol(client).endswith("SSL"):
        return False
    given = sorted(k for k in client if k.startswith("ssl.") and k.endswith(".location"))
    if given:
        raise StackError(
            f"the local Kafka makes its own certificate and tells the clients where it is; "
            f"leave {', '.join(given)} out of STREAMML_KAFKA_CLIENT_CONFIG (or point "
            "STREAMML_KAFKA_BOOTSTRAP at a cluster of yours, whose certificates you hold)"
        )
    return True


def client_config(settings: StackSettings) -> dict[str, str]:
    """The client config for a Kafka this stack started: the user's, plus the certificate to
    trust when its listener takes TLS."""
    config = dict(settings.kafka_client_config)
    if not settings.kafka_bootstrap and local_tls(config):
        config["ssl.ca.location"] = str(certificate_path(kafka_data_dir(settings.home)))
    return config


def _protocol(client: dict[str, str]) -> str:
    protocol = client.get("security.protocol", "PLAINTEXT").upper()
    if protocol not in PROTOCOLS.values():
        raise StackError(
            f"security.protocol {protocol!r}: one of {', '.join(sorted(PROTOCOLS.values()))}"
        )
    return protocol


def _start_embedded(
    settings: StackSettings, *, detach: bool, port: int | None, brokers: int
) -> StartedBroker:
    if _protocol(settings.kafka_client_config) != "PLAINTEXT":
        raise StackError(
            "the embedded broker has neither SASL nor TLS; they need Apache Kafka (a JDK 17+, "
            "STREAMML_BROKER=kafka or auto)"
        )
    if brokers != 1:
        raise StackError(
            "the embedded broker is a single node; --brokers needs Apache Kafka (a JDK 17+, "
            "STREAMML_BROKER=kafka or auto)"
        )
    _refuse_kafka_data(settings.home)
    port = port_for(port, "broker")
    process = tansu.start_broker(port, settings.home / "logs" / "broker.log", detach=detach)
    description = "the embedded broker (Tansu; memory only, one node)"
    return StartedBroker(f"{LOOPBACK}:{port}", (process,), description, True)


def _refuse_kafka_data(home: Path) -> None:
    """The embedded broker keeps nothing on disk: starting it over Kafka's data would hide it."""
    if kafka_data_dir(home).exists():
        raise StackError(
            f"{home} holds the data of an Apache Kafka cluster ({kafka_data_dir(home)}), which "
            "the embedded broker cannot read: unset STREAMML_BROKER=embedded to run Kafka on it, "
            "or `streamml down --wipe` to delete it, or set STREAMML_HOME to another folder"
        )

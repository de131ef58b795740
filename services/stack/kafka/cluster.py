"""Starting a local KRaft cluster of one or more nodes under ``<home>/kafka``, and stopping it.

``<home>/kafka/cluster.json`` records the cluster's id and size, so the next ``up`` formats
nothing, finds the records of the last one, and refuses a layout the data was not made for.
Each node's process id is in ``<home>/brokers/<node-id>.pid`` while it runs.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

from services.core.errors import StackError
from services.stack.kafka.config import (
    LOG4J2_PROPERTIES,
    ClusterLayout,
    KafkaNode,
    NodePorts,
    Scram,
    jvm_options,
    node_properties,
    render_properties,
)
from services.stack.kafka.distribution import KafkaDistribution
from services.stack.kafka.tls import ensure_certificate
from services.stack.processes import (
    Watched,
    accepts_connections,
    free_port,
    port_for,
    spawn,
    stop_processes,
    tail,
    wait_for,
)

CLUSTER_FILE = "cluster.json"
KAFKA_DIR = "kafka"
PID_DIR = "brokers"
FORMAT_TIMEOUT_S = 120.0
# The first start of a JVM on a busy 2-core machine takes a while; later ones about 5 s.
READY_TIMEOUT_S = 90.0
MAX_NODES = 5


@dataclass(frozen=True)
class ClusterRequest:
    home: Path
    size: int
    partitions: int
    heap_mb: int
    jvm_options: tuple[str, ...] = ()
    first_port: int | None = None
    scram: Scram | None = None
    tls: bool = False  # the brokers' listener takes TLS, with the certificate of ``tls.py``


@dataclass(frozen=True)
class StartedCluster:
    layout: ClusterLayout
    processes: tuple[subprocess.Popen[bytes], ...]
    version: str

    @property
    def description(self) -> str:
        nodes = "1 node" if self.layout.size == 1 else f"{self.layout.size} nodes"
        return f"Apache Kafka {self.version} (KRaft, {nodes}, broker+controller each)"


def kafka_data_dir(home: Path) -> Path:
    return home / KAFKA_DIR


def start_cluster(
    request: ClusterRequest, distribution: KafkaDistribution, *, detach: bool
) -> StartedCluster:
    """Formats what is new, starts every node, waits until all brokers answer."""
    if not 1 <= request.size <= MAX_NODES:
        raise StackError(f"--brokers must be between 1 and {MAX_NODES}, not {request.size}")
    tls = None
    if request.tls:
        tls = ensure_certificate(kafka_data_dir(request.home), distribution.java)
    layout = ClusterLayout(_nodes(request), request.partitions, request.scram, tls)
    cluster_id = _cluster_id(request.home, request.size)
    log4j = kafka_data_dir(request.home) / "log4j2.properties"
    log4j.write_text(LOG4J2_PROPERTIES)
    for node in layout.nodes:
        node.directory.mkdir(parents=True, exist_ok=True)
        node.properties_path.write_text(render_properties(node_properties(layout, node)))
    _format(layout, cluster_id, distribution, request.home)
    logs = request.home / "logs"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for node in layout.nodes:
            argv = [
                distribution.java,
                *jvm_options(request.heap_mb, logs, log4j),
                *request.jvm_options,
                "-cp",
                distribution.classpath,
                "kafka.Kafka",
                str(node.properties_path),
            ]
            processes.append(spawn(argv, _log_path(request.home, node), detach=detach))
        watched = [
            Watched(p, f"Kafka node {n.node_id}", _log_path(request.home, n))
            for p, n in zip(processes, layout.nodes, strict=True)
        ]
        wait_for(lambda: _all_brokers_answer(layout), watched, "Kafka", READY_TIMEOUT_S)
    except BaseException:
        stop_processes(processes, timeout_s=0.0)
        raise
    _write_pids(request.home, layout, processes)
    version = _started_version(_log_path(request.home, layout.nodes[0]), distribution.version)
    return StartedCluster(layout, tuple(processes), version)


def forget_pids(home: Path) -> None:
    for pid_file in (home / PID_DIR).glob("*.pid"):
        pid_file.unlink(missing_ok=True)


def _cluster_id(home: Path, size: int) -> str:
    """The id of the cluster whose data is here, or a new one (recorded) when there is none."""
    record = kafka_data_dir(home) / CLUSTER_FILE
    try:
        existing = json.loads(record.read_text())
    except FileNotFoundError:
        existing = None
    except ValueError as exc:
        raise StackError(
            f"{record} is unreadable ({exc}); `streamml down --wipe` starts anew"
        ) from exc
    if existing is not None:
        if existing.get("nodes") != size:
            raise StackError(
                f"{kafka_data_dir(home)} holds the data of a {existing.get('nodes')}-node Kafka "
                f"cluster, not {size}: run `streamml up --brokers {existing.get('nodes')}`, or "
                "`streamml down --wipe` to delete that data and start anew"
            )
        return str(existing["cluster_id"])
    cluster_id = new_cluster_id()
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"cluster_id": cluster_id, "nodes": size}))
    return cluster_id


def new_cluster_id() -> str:
    """A random id as Kafka writes one (22 url-safe base64 characters); like Kafka's own
    ``Uuid.randomUuid``, never one that begins with "-", which the storage tool's command line
    would take for an option."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _nodes(request: ClusterRequest) -> tuple[KafkaNode, ...]:
    nodes = []
    for node_id in range(1, request.size + 1):
        broker = port_for(request.first_port if node_id == 1 else None, "broker")
        directory = kafka_data_dir(request.home) / f"node-{node_id}"
        nodes.append(KafkaNode(node_id, NodePorts(broker, free_port()), directory))
    return tuple(nodes)


def _format(
    layout: ClusterLayout, cluster_id: str, distribution: KafkaDistribution, home: Path
) -> None:
    """Formats the nodes that hold no data yet, all at once (what bin/kafka-storage.sh does)."""
    pending = [n for n in layout.nodes if not (n.data_dir / "meta.properties").exists()]
    runs = [
        (
            node,
            subprocess.Popen(
                [
                    distribution.java,
                    "-Xmx256m",
                    "-cp",
                    distribution.classpath,
                    "kafka.tools.StorageTool",
                    "format",
                    "--cluster-id",
                    cluster_id,
                    "--config",
                    str(node.properties_path),
                    *(["--add-scram", layout.scram.storage_argument] if layout.scram else []),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ),
        )
        for node in pending
    ]
    for node, run in runs:
        output, _ = run.communicate(timeout=FORMAT_TIMEOUT_S)
        if run.returncode != 0:
            lines = "\n".join(output.strip().splitlines()[-10:])
            raise StackError(
                f"formatting Kafka node {node.node_id}'s storage in {node.data_dir} failed "
                f"(exit {run.returncode}):\n{lines}\n`streamml down --wipe` deletes that data"
            )


def _all_brokers_answer(layout: ClusterLayout) -> bool:
    if not all(accepts_connections(node.ports.broker) for node in layout.nodes):
        return False
    admin = AdminClient({"bootstrap.servers": layout.bootstrap, **layout.client_config})
    try:
        metadata = admin.list_topics(timeout=1.0)
    except Exception:  # any client error means: not ready yet
        return False
    return len(metadata.brokers) == layout.size


def _log_path(home: Path, node: KafkaNode) -> Path:
    return home / "logs" / f"kafka-{node.node_id}.log"


def _write_pids(
    home: Path, layout: ClusterLayout, processes: list[subprocess.Popen[bytes]]
) -> None:
    pid_dir = home / PID_DIR
    pid_dir.mkdir(parents=True, exist_ok=True)
    for node, process in zip(layout.nodes, processes, strict=True):
        (pid_dir / f"{node.node_id}.pid").write_text(f"{process.pid}\n")


def _started_version(log_path: Path, pinned: str) -> str:
    """The version the broker logged at start (AppInfoParser), else the pinned one."""
    found = re.findall(r"Kafka version: (\S+)", tail(log_path, 400))
    return found[-1] if found else pinned

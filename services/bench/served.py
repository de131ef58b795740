"""What the peers share: the model they are given (its card beside the ONNX file), the
prediction record they publish, their runners' one process and the wait for it to consume."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.core.declarations import Domain
from services.core.errors import StackError
from services.core.serde import Record
from services.models.runtimes import OnnxModel
from services.registry.artifacts import CARD_FILE
from services.registry.versions import CHAMPION, now_ms
from services.stack.processes import tail
from services.stack.services import ServiceProcess

POLL_S = 0.2


def model_card(model_path: Path) -> dict[str, Any]:
    """The model card beside the artifact, or {} when there is none."""
    path = model_path.parent / CARD_FILE
    if not path.exists():
        return {}
    card: dict[str, Any] = json.loads(path.read_text())
    return card


def served_model(model_path: Path, domain: Domain, threads: int) -> tuple[OnnxModel, str]:
    """The ONNX model, run as our scorer runs it (threads, no spinning) so that it costs the
    same, with its inputs by name from its card; and the model's name."""
    card = model_card(model_path)
    names = tuple(card["feature_names"]) if card else domain.model_inputs
    model = OnnxModel(model_path.read_bytes(), names, threads)
    return model, str(card.get("model_name", domain.model_name))


class PeerProcess:
    """A runner's one process (``_worker``, set by its ``start``), named ``process_name`` for
    the benchmark's CPU and memory figures."""

    process_name = "peer"
    _worker: ServiceProcess | None = None

    @property
    def metrics_ports(self) -> dict[str, int]:
        """None: a peer serves no Prometheus metrics, as its tutorials' apps would not."""
        return {}

    @property
    def pids(self) -> dict[str, int]:
        return {self.process_name: self._worker.process.pid} if self._worker is not None else {}

    def stop(self) -> None:
        """SIGTERM (the peer commits and exits), SIGKILL if that takes too long."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None


def prediction(
    event: Record, model: tuple[str, str], score: float, threshold: float, **extra: Any
) -> Record:
    """A ``payments.predictions`` record for ``event``, scored by ``model`` (name, version)."""
    return {
        "event_id": event["event_id"],
        "card_id": event["card_id"],
        "model_name": model[0],
        "model_version": model[1],
        "score": score,
        "decision": score >= threshold,
        "served_by": CHAMPION,
        "event_time": event["event_time"],
        "predicted_at": now_ms(),
        **extra,
    }


def wait_consuming(
    name: str,
    worker: ServiceProcess,
    consuming: Callable[[], bool],
    timeout_s: float,
    stop: Callable[[], None],
) -> None:
    """Until ``consuming()``; raises ``StackError``, naming the log, when the process exits or
    ``timeout_s`` passes (then it is stopped first)."""
    deadline = time.monotonic() + timeout_s
    while not consuming():
        log = worker.log_path
        if worker.process.poll() is not None:
            raise StackError(
                f"{name} exited with code {worker.process.returncode} before consuming; "
                f"its log {log} ends with:\n{tail(log)}"
            )
        if time.monotonic() > deadline:
            stop()
            raise StackError(
                f"{name} was not consuming within {timeout_s:.0f} s; its log {log} ends "
                f"with:\n{tail(log)}"
            )
        time.sleep(POLL_S)

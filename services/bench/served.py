"""What the peers share: the model card beside the ONNX file they are given, the prediction
record they publish, and the runners' wait for their process to consume."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.core.errors import StackError
from services.core.serde import Record
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

"""How a running service tells a local Prometheus where to scrape it: file-based discovery.

``streamml up --observability`` starts Prometheus watching ``<home>/observability/targets/``.
Each service that serves ``/metrics`` writes ``<job>-<pid>.json`` there (its address, its
job) once it listens, and removes it when it exits; a service killed outright leaves its file,
and Prometheus then sees that target down (the ``StreammlServiceDown`` alert). Without that
folder (no observability stack) nothing is written.
"""

from __future__ import annotations

import atexit
import json
import os
from pathlib import Path

TARGETS_DIR = Path("observability") / "targets"
_ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104  (scraped at)


def announce(home: Path, job: str, host: str, port: int) -> Path | None:
    """Writes this process's scrape target under ``home``; None when no Prometheus watches."""
    folder = home / TARGETS_DIR
    if not folder.is_dir():
        return None
    address = _ANY_ADDRESS.get(host, host)
    target = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    pid = os.getpid()
    path = folder / f"{job}-{pid}.json"
    written = path.with_suffix(".tmp")
    written.write_text(json.dumps([{"targets": [target], "labels": {"job": job, "pid": str(pid)}}]))
    written.replace(path)
    atexit.register(path.unlink, missing_ok=True)
    return path

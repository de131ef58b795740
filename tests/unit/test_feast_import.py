"""Importing our Feast layer must not switch Prometheus to multiprocess mode, as feast does."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import os
import services.featurestore.store
import feast.metrics
from prometheus_client import values
leaked = sorted(k for k in os.environ if k.startswith("PROMETHEUS_MULTIPROC"))
print(values.ValueClass.__name__, leaked)
"""


def test_feast_leaves_prometheus_in_process_and_the_environment_clean() -> None:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("PROMETHEUS")}
    out = subprocess.run(
        [sys.executable, "-c", CHECK],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    assert out == ["MutexValue", "[]"]

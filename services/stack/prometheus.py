"""``streamml up --observability``: Prometheus from the machine's packages, scraping every
running streamml service and evaluating compose/alerts.yml.

Services are found by file: each writes its address under ``<home>/observability/targets/``
when it starts (``services/core/targets.py``), so a service started after ``up``, on any port,
is scraped within seconds. Prometheus listens on loopback; its data lives under
``<home>/observability/data`` and is kept across ``down`` and ``up`` like Kafka's.
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from services.core.errors import StackError
from services.core.paths import default_compose_dir
from services.core.targets import TARGETS_DIR
from services.stack.processes import LOOPBACK, port_for, spawn, wait_until

OBSERVABILITY_DIR = "observability"
SCRAPE_INTERVAL = "5s"
RULES_FILE = "alerts.yml"


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise StackError(
            "--observability needs Prometheus and there is no prometheus on PATH; install "
            "Debian's package (apt-get install prometheus) or leave --observability out"
        )
    return found


def write_config(home: Path, port: int) -> Path:
    """Prometheus's configuration under ``home``: the targets folder, the alert rules."""
    folder = home / OBSERVABILITY_DIR
    (home / TARGETS_DIR).mkdir(parents=True, exist_ok=True)
    rules = folder / RULES_FILE
    shutil.copy(default_compose_dir() / RULES_FILE, rules)
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                # Each target file names its job (featurizer, scorer, ...): it wins over this.
                "job_name": "streamml",
                "file_sd_configs": [
                    {"files": [str(home / TARGETS_DIR / "*.json")], "refresh_interval": "5s"}
                ],
            },
            {"job_name": "prometheus", "static_configs": [{"targets": [f"{LOOPBACK}:{port}"]}]},
        ],
    }
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_prometheus(
    home: Path, port: int | None, log_path: Path, *, detach: bool
) -> tuple[subprocess.Popen[bytes], str]:
    """Starts Prometheus and returns it with its URL once it answers ``/-/ready``."""
    binary = prometheus_binary()
    chosen = port_for(port, "Prometheus")
    config = write_config(home, chosen)
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={home / OBSERVABILITY_DIR / 'data'}",
        f"--web.listen-address={LOOPBACK}:{chosen}",
        "--storage.tsdb.retention.time=7d",
    ]
    process = spawn(argv, log_path, detach=detach)
    url = f"http://{LOOPBACK}:{chosen}"
    wait_until(lambda: _ready(url), process, "Prometheus", log_path)
    return process, url


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=0.5) as answer:  # noqa: S310
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False

"""The Grafana dashboard in compose/ asks only for metrics the services declare, and every
service that serves metrics is scraped."""

from __future__ import annotations

import json
import re
from pathlib import Path

from services.core import metrics

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def declared() -> set[str]:
    return {
        f"{metrics.NAMESPACE}_{value}"
        for name, value in vars(metrics).items()
        if name.isupper() and isinstance(value, str) and name != "NAMESPACE"
    }


def test_every_panel_queries_a_declared_metric() -> None:
    dashboard = json.loads((COMPOSE / "grafana" / "dashboards" / "streamml.json").read_text())
    queried = {
        re.sub("|".join(f"{s}$" for s in SUFFIXES), "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"streamml_[a-z0-9_]+", target["expr"])
    }
    assert any(name.startswith("streamml_monitor_") for name in queried)
    assert queried - declared() == set()


def test_prometheus_scrapes_every_service_compose_runs() -> None:
    scraped = set(re.findall(r"- names: \[(\w+)\]", (COMPOSE / "prometheus.yml").read_text()))
    commands = re.findall(
        r'command: \["run", "(\w+)"', (COMPOSE / "docker-compose.yml").read_text()
    )
    assert set(commands) == {"featurizer", "scorer", "monitor", "trainer"}
    assert set(commands) <= scraped

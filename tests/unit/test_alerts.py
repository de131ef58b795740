"""compose/'s alert rules and Grafana dashboards, checked with Prometheus's own promtool
(Debian's ``prometheus`` package): the rules load, each fires in its unit test and stays
quiet on healthy series, and every query parses and names only metrics the code exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.core import metrics

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
RULES = COMPOSE / "alerts.yml"
RULE_TESTS = COMPOSE / "alerts_test.yml"
DASHBOARDS = sorted((COMPOSE / "grafana" / "dashboards").glob("*.json"))
_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: install Debian's prometheus package (.ci/run does)"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, check=False)


def exported_metrics() -> set[str]:
    """Every metric name the code defines (services/core/metrics.py is their one place)."""
    names = {
        value
        for name, value in vars(metrics).items()
        if name.isupper() and isinstance(value, str) and name != "NAMESPACE"
    }
    return {f"{metrics.NAMESPACE}_{name}" for name in names}


def named_metrics(expr: str) -> set[str]:
    found = set(re.findall(r"\bstreamml_[a-z0-9_]+", expr))
    return {next((m[: -len(s)] for s in _SUFFIXES if m.endswith(s)), m) for m in found}


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_rules_load_in_prometheus() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


def test_each_alert_fires_in_its_unit_test_and_stays_quiet_when_healthy() -> None:
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", ()):
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in rules()}
    assert fires == alerts, f"alerts no test sees firing: {sorted(alerts - fires)}"
    assert quiet == alerts, f"alerts no test sees quiet: {sorted(alerts - quiet)}"


def test_what_an_operator_must_hear_about_has_a_rule() -> None:
    wanted = {
        "StreammlDriftAlertRaised",
        "StreammlConsumerLagGrowing",
        "StreammlFallbackShareHigh",
        "StreammlDeadLettersFlowing",
        "StreammlNoPredictionsWhileEventsArrive",
        "StreammlServiceDown",
    }
    assert {rule["alert"] for rule in rules()} == wanted
    for rule in rules():
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule


def test_the_rules_name_only_metrics_the_code_exports() -> None:
    exported = exported_metrics()
    for rule in rules():
        assert named_metrics(rule["expr"]) <= exported, rule["alert"]


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda p: p.name)
def test_every_dashboard_query_parses_and_names_exported_metrics(
    dashboard: Path, tmp_path: Path
) -> None:
    panels = json.loads(dashboard.read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", ()) if t.get("expr")]
    assert exprs, f"{dashboard.name} has no queries"
    exported = exported_metrics()
    for expr in exprs:
        assert named_metrics(expr), expr
        assert named_metrics(expr) <= exported, expr
    # promtool parses expressions where rules hold them: one recording rule per query.
    recorded = [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]
    as_rules = tmp_path / "dashboard_rules.yml"
    as_rules.write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": recorded}]}))
    checked = promtool("check", "rules", str(as_rules))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_metric_name_check_would_catch_a_misspelling() -> None:
    assert not named_metrics("rate(streamml_scorer_predictons_total[1m])") <= exported_metrics()
    assert named_metrics("rate(streamml_scorer_predictions_total[1m])") <= exported_metrics()

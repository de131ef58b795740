"""`streamml up --observability`: a real Prometheus (Debian's package) scrapes each running
service, answers PromQL over the predictions rate, and has compose/alerts.yml loaded."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from services.core.settings import StackSettings
from services.core.targets import TARGETS_DIR
from services.stack.services import ServiceProcess, service_env
from tests.integration.helpers import publish, read_env, streamml
from tests.outside import OutsideCodec

pytestmark = pytest.mark.integration

TRANSACTIONS = OutsideCodec("payments.transactions.avsc")
SERVICES = ("featurizer", "scorer", "monitor")


def query(prometheus: str, path: str, **params: str) -> Any:
    url = f"{prometheus}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as answer:
        body = json.loads(answer.read())
    assert body["status"] == "success", body
    return body["data"]


def wait_for(what: str, check: Any, timeout_s: float = 90) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout_s} s (last: {last})")


def test_prometheus_scrapes_every_service_and_answers_the_predictions_rate(
    tmp_path: Path,
) -> None:
    home = tmp_path / "state"
    up = streamml(home, "up", "--detach", "--observability")
    assert up.returncode == 0, up.stderr
    found = re.search(r"^Prometheus (http://127\.0\.0\.1:\d+)", up.stdout, re.MULTILINE)
    assert found, up.stdout
    prometheus = found.group(1)
    env = read_env(home / "stack.env")
    stack = StackSettings(
        home=home,
        kafka_bootstrap=env["STREAMML_KAFKA_BOOTSTRAP"],
        redis_url=SecretStr(env["STREAMML_REDIS_URL"]),
    )
    running: list[ServiceProcess] = []
    try:
        for name in SERVICES:
            args = ("--domain", "payments") if name == "monitor" else ()
            running.append(
                ServiceProcess(name, service_env(stack), home / "logs" / f"{name}.log", *args)
            )

        # Each service announces itself; Prometheus finds it by file and scrapes it.
        def targets_up() -> set[str]:
            active = query(prometheus, "/api/v1/targets")["activeTargets"]
            return {t["labels"]["job"] for t in active if t["health"] == "up"}

        wait_for("every service scraped", lambda: set(SERVICES) <= targets_up())
        files = sorted(p.name.split("-")[0] for p in (home / TARGETS_DIR).glob("*.json"))
        assert files == sorted(SERVICES)

        sent: list[int] = []

        def publish_wave() -> None:
            """30 transactions: the load arrives in waves, so the counters rise between
            scrapes (a counter first seen at 300 has no rate yet)."""
            now, first = int(time.time() * 1000), len(sent)
            wave = [
                {
                    "event_id": f"obs-{first + i}",
                    "card_id": f"obs-card-{(first + i) % 9}",
                    "merchant_id": "obs-m",
                    "amount": 10.0 + i,
                    "currency": "EUR",
                    "event_time": now + i,
                }
                for i in range(30)
            ]
            items = [(str(e["card_id"]).encode(), TRANSACTIONS.encode(e)) for e in wave]
            publish(stack, "payments.transactions", items)
            sent.extend(range(len(wave)))

        def predictions_rate() -> float:
            publish_wave()
            result = query(
                prometheus,
                "/api/v1/query",
                query="sum(rate(streamml_scorer_predictions_total[30s]))",
            )["result"]
            return float(result[0]["value"][1]) if result else 0.0

        assert wait_for("a predictions rate above 0", predictions_rate, 120) > 0
        total = query(prometheus, "/api/v1/query", query="sum(streamml_scorer_predictions_total)")
        assert float(total["result"][0]["value"][1]) > 0

        groups = query(prometheus, "/api/v1/rules")["groups"]
        loaded = {rule["name"] for group in groups for rule in group["rules"]}
        assert "StreammlServiceDown" in loaded and "StreammlFallbackShareHigh" in loaded

        # `streamml status` shows the same services, their lag, the models and the alerts.
        groups = ("streamml-featurizer", "streamml-scorer-payments", "streamml-monitor")

        def status_of_all() -> Any:
            shown = streamml(home, "status")
            assert shown.returncode == 0, shown.stderr
            listed = [x.strip() for x in shown.stdout.splitlines()]
            return shown if all(any(x.startswith(g) for x in listed) for g in groups) else None

        status = wait_for("status lists the three services", status_of_all, 60)
        assert f"Prometheus  {prometheus}" in status.stdout
        for group in groups:
            line = next(x for x in status.stdout.splitlines() if x.strip().startswith(group))
            assert "1 running" in line, status.stdout
        assert "payments: payments-fraud: champion none" in status.stdout
        assert "firing in Prometheus" in status.stdout
        as_json = json.loads(streamml(home, "status", "--json").stdout)
        lag = {g["group"]: g["lag"] for g in as_json["groups"]}
        assert lag["streamml-scorer-payments"] >= 0 and as_json["alerts"] == []

        # A service that stops cleanly takes its target file with it.
        running[-1].stop()
        assert not list((home / TARGETS_DIR).glob("monitor-*.json"))
    finally:
        for service in running:
            if service.process.poll() is None:
                service.stop()
        down = streamml(home, "down")
    assert down.returncode == 0, down.stderr
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{prometheus}/-/ready", timeout=2)

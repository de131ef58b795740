"""``streamml status``'s figures: each consumer group's state, members and lag, each domain's
serving models, the alerts raised lately, and what a local Prometheus has firing."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]

from services.core.declarations import Domain
from services.core.history import read_history
from services.core.kafka import admin_client
from services.core.serde import codecs_for
from services.core.settings import StackSettings
from services.core.topics import ALERTS
from services.registry.versions import read_registry
from services.stack.local import read_state

_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class GroupStatus:
    group: str
    state: str
    members: int
    lag: int
    topics: tuple[str, ...]


def stack_status(
    settings: StackSettings, domains: list[Domain], alerts_hours: float
) -> dict[str, Any]:
    """Everything ``streamml status`` shows, as one JSON-able dict."""
    state = read_state(settings.home)
    report: dict[str, Any] = {
        "kafka": settings.bootstrap,
        "broker": state.broker if state else "not started by `streamml up`",
        "prometheus": state.prometheus_url if state else None,
        "groups": [asdict(g) for g in consumer_groups(settings)],
        "models": serving_models(settings, domains),
        "alerts": recent_alerts(settings, alerts_hours),
    }
    if report["prometheus"]:
        report["firing"] = firing_alerts(report["prometheus"])
    return report


def consumer_groups(settings: StackSettings) -> list[GroupStatus]:
    """Every consumer group with committed offsets: its state, members and total lag."""
    admin = admin_client(settings)
    listed = admin.list_consumer_groups(request_timeout=_TIMEOUT_S).result().valid
    ids = sorted(g.group_id for g in listed)
    if not ids:
        return []
    described = {
        gid: future.result()
        for gid, future in admin.describe_consumer_groups(ids, request_timeout=_TIMEOUT_S).items()
    }
    found: list[GroupStatus] = []
    for gid in ids:
        future = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(gid)])[gid]
        committed = [tp for tp in future.result().topic_partitions if tp.offset >= 0]
        if not committed:
            continue
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        wanted = {TopicPartition(tp.topic, tp.partition): latest for tp in committed}
        ends = {
            (tp.topic, tp.partition): result.result().offset
            for tp, result in admin.list_offsets(wanted, request_timeout=_TIMEOUT_S).items()
        }
        lag = sum(max(ends[(tp.topic, tp.partition)] - tp.offset, 0) for tp in committed)
        description = described[gid]
        found.append(
            GroupStatus(
                gid,
                str(getattr(description.state, "name", description.state)).lower(),
                len(description.members),
                lag,
                tuple(sorted({tp.topic for tp in committed})),
            )
        )
    return found


def serving_models(settings: StackSettings, domains: list[Domain]) -> list[dict[str, Any]]:
    registry = read_registry(settings, codecs_for(settings))
    models = []
    for domain in domains:
        name = domain.model_name
        champion, canary, shadow = (
            registry.champion(name),
            registry.canary(name),
            registry.shadow(name),
        )
        models.append(
            {
                "domain": domain.name,
                "model": name,
                "champion": champion.version if champion else None,
                "canary": canary.version if canary else None,
                "canary_share": canary.traffic_share if canary else None,
                "shadow": shadow.version if shadow else None,
                "versions": len(registry.versions(name)),
            }
        )
    return models


def recent_alerts(settings: StackSettings, hours: float) -> list[dict[str, Any]]:
    since_ms = (time.time() - hours * 3600) * 1000
    return [a for a in read_history(settings, ALERTS) if epoch_ms(a["raised_at"]) >= since_ms]


def firing_alerts(prometheus: str) -> list[dict[str, Any]] | str:
    """Prometheus's firing alerts, or why they could not be read."""
    try:
        with urllib.request.urlopen(f"{prometheus}/api/v1/alerts", timeout=5) as answer:  # noqa: S310
            alerts = json.loads(answer.read())["data"]["alerts"]
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        return f"Prometheus did not answer: {exc}"
    return [
        {"alert": a["labels"].get("alertname"), "labels": a["labels"]}
        for a in alerts
        if a.get("state") == "firing"
    ]


def epoch_ms(value: Any) -> float:
    return value.timestamp() * 1000 if isinstance(value, datetime) else float(value)


def show(report: dict[str, Any], hours: float, out: TextIO) -> None:
    """``report`` as ``streamml status`` prints it."""
    print(f"Kafka       {report['kafka']} ({report['broker']})", file=out)
    prometheus = report["prometheus"] or "not started (streamml up --observability)"
    print(f"Prometheus  {prometheus}", file=out)
    _show_groups(report["groups"], out)
    _show_models(report["models"], out)
    _show_alerts(report["alerts"], hours, out)
    if "firing" in report:
        _show_firing(report["firing"], out)


def _show_groups(groups: list[dict[str, Any]], out: TextIO) -> None:
    print("\nservices (consumer groups)", file=out)
    if not groups:
        print("  none has committed offsets yet", file=out)
    width = max((len(g["group"]) for g in groups), default=5)
    for g in groups:
        running = f"{g['members']} running" if g["members"] else "none running"
        print(
            f"  {g['group']:<{width}}  {g['state']:<12} {running:<11} lag {g['lag']:>9,}  "
            f"({', '.join(g['topics'])})",
            file=out,
        )


def _show_models(models: list[dict[str, Any]], out: TextIO) -> None:
    print("\nmodels", file=out)
    for m in models:
        parts = [f"champion {m['champion'] or 'none (the heuristic serves)'}"]
        if m["canary"]:
            parts.append(f"canary {m['canary']} on {m['canary_share']:.0%} of keys")
        if m["shadow"]:
            parts.append(f"shadow {m['shadow']}")
        line = f"{m['domain']}: {m['model']}: {', '.join(parts)} ({m['versions']} versions)"
        print(f"  {line}", file=out)


def _show_alerts(alerts: list[dict[str, Any]], hours: float, out: TextIO) -> None:
    print(f"\nalerts raised in the last {hours:g} h (ml.alerts)", file=out)
    if not alerts:
        print("  none", file=out)
    for a in alerts:
        raised = datetime.fromtimestamp(epoch_ms(a["raised_at"]) / 1000, tz=UTC)
        at = raised.strftime("%Y-%m-%d %H:%M")
        print(
            f"  {at}  {a['kind']:<17} {a['domain']}  version {a['model_version']}  "
            f"{a['subject']}: {a['statistic']} {a['value']:.3g} > {a['threshold']:.3g}",
            file=out,
        )


def _show_firing(firing: list[dict[str, Any]] | str, out: TextIO) -> None:
    print("\nfiring in Prometheus", file=out)
    if isinstance(firing, str):
        print(f"  {firing}", file=out)
    elif not firing:
        print("  none", file=out)
    for f in firing if isinstance(firing, list) else ():
        labels = ", ".join(f"{k}={v}" for k, v in f["labels"].items() if k != "alertname")
        print(f"  {f['alert']} ({labels})", file=out)

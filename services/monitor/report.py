"""``streamml monitor report``: the monitor's published figures, read from
``<domain>.monitoring`` (so it works while the monitor runs, and after it stopped)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from services.core.declarations import Domain
from services.core.domains import load_domain
from services.core.history import read_history
from services.core.serde import Record
from services.core.settings import StackSettings, load_settings
from services.core.topics import ALERTS
from services.monitor.quality import ALL, DRIFT, TOTAL, WINDOW

FIGURES = ("joined", "accuracy", "auc", "logloss", "precision", "recall")


def report(domain_name: str, *, as_json: bool, plot: Path | None, out: TextIO) -> int:
    """Prints the latest figures per model version; returns 1 when none are published yet."""
    settings = load_settings(StackSettings)
    domain = load_domain(settings.features_dir, domain_name)
    history = read_history(settings, domain.topics.monitoring)
    summary = summarize(domain.name, history)
    summary["alerts"] = [a for a in read_history(settings, ALERTS) if a["domain"] == domain.name]
    if as_json:
        print(json.dumps(summary, indent=2), file=out)
    else:
        print(render(summary, domain), file=out)
    if plot is not None:
        draw(history, summary["alerts"], plot, domain.name)
        print(f"plot: {plot}", file=out)
    return 0 if summary["versions"] else 1


def summarize(domain: str, history: Iterable[Record]) -> dict[str, Any]:
    """The newest figure of every key, shaped per (model version, served_by)."""
    latest: dict[tuple[str, str, str, str], Record] = {}
    for record in history:
        latest[
            (record["model_version"], record["served_by"], record["segment"], record["scope"])
        ] = record
    versions = []
    for (version, served_by, segment, scope), record in sorted(latest.items()):
        if segment != ALL or scope != TOTAL:
            continue
        window = latest.get((version, served_by, ALL, WINDOW))
        segments = [
            {"segment": s, **{f: r[f] for f in FIGURES}}
            for (v, b, s, sc), r in sorted(latest.items())
            if v == version and b == served_by and s != ALL and sc == TOTAL
        ]
        versions.append(
            {
                "model_version": version,
                "served_by": served_by,
                **{f: record[f] for f in FIGURES},
                "predictions": record["predictions"],
                "coverage": record["coverage"],
                "label_delay_p50_ms": record["label_delay_p50_ms"],
                "label_delay_p95_ms": record["label_delay_p95_ms"],
                "window": None if window is None else {f: window[f] for f in FIGURES},
                "segments": segments,
            }
        )
    drift = [
        {"model_version": v, "subject": s, "psi": r["psi"], "ks": r["ks"], "values": r["joined"]}
        for (v, _, s, sc), r in sorted(latest.items())
        if sc == DRIFT
    ]
    newest = max((int(r["snapshot_at"]) for r in latest.values()), default=None)
    return {"domain": domain, "snapshot_at": newest, "versions": versions, "drift": drift}


def render(summary: dict[str, Any], domain: Domain) -> str:
    if not summary["versions"]:
        return (
            f"{domain.topics.monitoring}: no figures yet (is `streamml run monitor --domain "
            f"{domain.name}` running, and have outcomes arrived?)"
        )
    lines = [f"{summary['domain']}: quality since each version started serving (window: latest)"]
    lines.append("version  served_by  joined  coverage  accuracy  auc     logloss  window acc/auc")
    for v in summary["versions"]:
        window = v["window"] or {}
        lines.append(
            f"{v['model_version']:<8} {v['served_by']:<10} {v['joined']:>6}  "
            f"{_shown(v['coverage']):>8}  {_shown(v['accuracy']):>8}  {_shown(v['auc']):<6}  "
            f"{_shown(v['logloss']):<7}  {_shown(window.get('accuracy'))}/"
            f"{_shown(window.get('auc'))}"
        )
        for s in v["segments"]:
            lines.append(
                f"  {s['segment']:<24} joined {s['joined']:>6}  accuracy {_shown(s['accuracy'])}"
                f"  auc {_shown(s['auc'])}"
            )
    alerts = summary.get("alerts", [])
    lines.append(f"alerts: {len(alerts)}" + (" (latest 10)" if len(alerts) > 10 else ""))
    for a in alerts[-10:]:
        baseline = "" if a["baseline"] is None else f"{a['baseline']:.3f} -> "
        lines.append(
            f"  {a['kind']} {a['model_version']} ({a['served_by']}) {a['subject']} "
            f"{a['statistic']}: {baseline}{a['value']:.3f}  [{a['alert_id']}]"
        )
    drift = summary.get("drift", [])
    lines.append("drift against the training reference: " + ("" if drift else "none measured yet"))
    for d in drift:
        lines.append(
            f"  {d['subject']:<24} psi {_shown(d['psi'])}  ks {_shown(d['ks'])}  "
            f"(version {d['model_version']}, {d['values']} live values)"
        )
    return "\n".join(lines)


def draw(history: list[Record], alerts: list[Record], path: Path, domain: str) -> None:
    """Two panels over time: the window's error rate (1 - accuracy) per version and served_by,
    and the PSI of every drift subject; each alert a vertical line on both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    errors: dict[str, tuple[list[float], list[float]]] = {}
    psis: dict[str, tuple[list[float], list[float]]] = {}
    for r in history:
        at = int(r["snapshot_at"]) / 1000
        if r["scope"] == DRIFT and r["psi"] is not None:
            times, values = psis.setdefault(str(r["segment"]), ([], []))
            times.append(at)
            values.append(float(r["psi"]))
        elif r["segment"] == ALL and r["scope"] == WINDOW and r["accuracy"] is not None:
            times, values = errors.setdefault(f"{r['model_version']} ({r['served_by']})", ([], []))
            times.append(at)
            values.append(1 - float(r["accuracy"]))
    start = min((int(r["snapshot_at"]) / 1000 for r in history), default=0.0)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for axes, series, label in ((top, errors, "error rate (window)"), (bottom, psis, "PSI")):
        for name, (times, values) in sorted(series.items()):
            axes.plot([t - start for t in times], values, marker=".", label=name)
        for alert in alerts:
            axes.axvline(int(alert["raised_at"]) / 1000 - start, color="red", alpha=0.5, lw=1)
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
        if series:
            axes.legend(fontsize="small")
    bottom.set_xlabel("seconds since the first snapshot (red: alerts)")
    top.set_title(f"{domain}: error rate and drift over time")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"

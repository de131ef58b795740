"""What ``streamml bench`` writes: the table (markdown, also into docs/benchmarks.md between
markers), the plot (PNG, latency against offered rate for every system) and the ratios."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from services.bench import pipeline
from services.bench.pipeline import SystemResult
from services.core.errors import ConfigError
from services.core.settings import StackSettings

DOCS_START = "<!-- streamml bench: start (written by `streamml bench`; edits here are lost) -->"
DOCS_END = "<!-- streamml bench: end -->"
OURS = "streamml"
PEER = "peer"
LATENCY_RATE = 1_000.0  # the offered rate whose latency the summary compares


def table(results: Sequence[SystemResult]) -> str:
    """One row per step of every system, then the sustained figures and their ratio."""
    rows = [
        "| system | offered/s | throughput/s | kept up | p50 ms | p95 ms | p99 ms | max ms "
        "| to vector p50 / p99 ms | sent | missing | duplicated | CPU s per process "
        "| batches x mean size, mean commit ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for step in result.steps:
            cpu = ", ".join(f"{n} {s:g}" for n, s in sorted(step.cpu_seconds.items()))
            rows.append(
                f"| {result.system} | {step.offered_per_s:,.0f} | {step.throughput_per_s:,.0f} "
                f"| {'yes' if step.kept_up else 'no'} | {step.latency_ms_p50:g} "
                f"| {step.latency_ms_p95:g} | {step.latency_ms_p99:g} | {step.latency_ms_max:g} "
                f"| {_pair(step.vector_ms_p50, step.vector_ms_p99)} | {step.sent:,} "
                f"| {step.missing:,} | {step.duplicated:,} | {cpu} | {_stages(step.stages)} |"
            )
    lines = ["\n".join(rows), ""]
    for result in results:
        rss = ", ".join(f"{n} {m:g}" for n, m in sorted(result.peak_rss_mib.items()))
        lines.append(
            f"- **{result.system}**: sustained {result.sustained_per_s:,.0f} events/s "
            f"({result.cards:,} cards, {result.partitions} partitions, on "
            f"{result.broker or 'an unnamed broker'}; kept up: done within 1 s + "
            f"{result.keep_up_allowance_ms:g} ms, its settled warm-up p99); peak RSS MiB: {rss}."
        )
    for other in (r.system for r in results if r.system != OURS):
        ratio = throughput_ratio(results, other)
        if ratio is not None:
            lines.append(f"- **Ratio**: streamml sustains {ratio:,.1f} times {other}'s throughput.")
    for result in results:
        at = next((s for s in result.steps if s.offered_per_s == LATENCY_RATE), None)
        if at is not None:
            lines.append(
                f"- **{result.system} at {LATENCY_RATE:,.0f} events/s**: p50 "
                f"{at.latency_ms_p50:g} ms, p99 {at.latency_ms_p99:g} ms"
                f"{'' if at.kept_up else ' (fell behind)'}."
            )
    return "\n".join(lines) + "\n"


def _stages(stages: dict[str, float]) -> str:
    """'featurizer 120 x 8.3, 12.1 ms; scorer ...' from a step's per-service figures."""
    services = sorted({name.split("_", 1)[0] for name in stages})
    if not services:
        return "n/a"
    return "; ".join(
        f"{s} {stages[f'{s}_batches']:g} x {stages[f'{s}_mean_batch']:g}, "
        f"{stages[f'{s}_mean_commit_ms']:g} ms"
        for s in services
    )


def _pair(p50: float | None, p99: float | None) -> str:
    return "n/a" if p50 is None or p99 is None else f"{p50:g} / {p99:g}"


def throughput_ratio(results: Sequence[SystemResult], other: str = PEER) -> float | None:
    """Our sustained rate over ``other``'s (None when either is missing or it sustained none)."""
    by_name = {r.system: r for r in results}
    if OURS not in by_name or other not in by_name or not by_name[other].sustained_per_s:
        return None
    return by_name[OURS].sustained_per_s / by_name[other].sustained_per_s


def machine() -> str:
    cores = len(os.sched_getaffinity(0))
    return f"{platform.node()}: {cores} cores, Python {platform.python_version()}"


def docs_section(results: Sequence[SystemResult], command: str) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{DOCS_START}\n\nLast run: {when}, `{command}`, on {machine()}.\n\n"
        f"{table(results)}\n{DOCS_END}"
    )


def write_docs(path: Path, section: str) -> None:
    """Replaces the marked section of ``path`` (appends it when there is none)."""
    text = path.read_text() if path.exists() else ""
    if DOCS_START in text and DOCS_END in text:
        before, rest = text.split(DOCS_START, 1)
        after = rest.split(DOCS_END, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def plot(results: Sequence[SystemResult], path: Path) -> None:
    """Latency percentiles against offered rate, one colour per system, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    for result, colour in zip(results, ("tab:blue", "tab:red", "tab:green"), strict=False):
        rates = [s.offered_per_s for s in result.steps]
        for field, style in (("latency_ms_p50", "-"), ("latency_ms_p99", "--")):
            values = [max(getattr(s, field), 0.1) for s in result.steps]
            label = f"{result.system} {field.rsplit('_', 1)[1]}"
            axes.plot(rates, values, style, marker="o", color=colour, label=label)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("offered events/s")
    axes.set_ylabel("event time to prediction received, ms")
    axes.set_title("streamml bench: latency against offered rate")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def run_and_report(
    *,
    systems: Sequence[str],
    partitions: int | None,
    quick: bool,
    cards: int,
    rates: Sequence[float] | None,
    step_seconds: float | None,
    service_settings: dict[str, str],
    warm_up_s: float | None,
    json_path: Path,
    plot_path: Path,
    docs_path: Path | None,
) -> list[SystemResult]:
    """``streamml bench``: each system's ladder on a fresh stack, then the JSON, the plot, the
    table printed (and written into ``docs_path`` between its markers when given)."""
    unknown = set(systems) - set(pipeline.FULL)
    if unknown or not systems:
        raise ConfigError(
            f"--systems: {sorted(unknown)} unknown; choose from {sorted(pipeline.FULL)}"
        )
    base = StackSettings()
    if partitions is not None:
        base = base.model_copy(update={"topic_partitions": partitions})
    results = pipeline.run(
        base,
        systems=systems,
        quick=quick,
        cards=cards,
        rates=rates,
        step_seconds=step_seconds,
        service_settings=service_settings,
        warm_up_s=warm_up_s,
    )
    pipeline.write_json(results, json_path)
    plot(results, plot_path)
    command = "streamml bench" + (" --quick" if quick else "")
    if docs_path is not None:
        write_docs(docs_path, docs_section(results, command))
    print(table(results))
    print(f"raw figures: {json_path}; plot: {plot_path}")
    return results

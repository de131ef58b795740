"""A service's Prometheus metrics, read over HTTP, summed over their label sets."""

from __future__ import annotations

import urllib.request


def metric_totals(port: int, prefix: str) -> dict[str, float]:
    """Every sample whose name starts with ``prefix``, by name, summed over labels
    (histograms give ``<name>_sum`` and ``<name>_count``, buckets included)."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    totals: dict[str, float] = {}
    for line in body.splitlines():
        if line.startswith(prefix):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


def histogram_mean(
    before: dict[str, float], after: dict[str, float], name: str, scale: float = 1.0
) -> tuple[int, float]:
    """(observations, mean value x ``scale``) of histogram ``name`` between two readings."""
    count = after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)
    total = after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0)
    return int(count), round(total / count * scale, 3) if count else 0.0

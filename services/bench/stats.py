"""Summary figures the benchmarks report."""

from __future__ import annotations


def percentile(ordered: list[float], p: float, digits: int) -> float:
    """The ``p``-th percentile of sorted values (nearest rank), rounded; 0.0 when empty."""
    if not ordered:
        return 0.0
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))], digits)

"""A model's training reference: per input (and for its score) the bin edges of the training
data's deciles and how many training values fell in each bin. Written into the model card at
training; the monitor compares live windows with it (PSI, KS).

Bins: ``(-inf, e1), [e1, e2), ..., [ek, +inf)`` with ``e1 < ... < ek`` the distinct inner
deciles, so a value outside the training range still lands in an end bin. Missing values
(None, NaN) are not binned: they are counted apart.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

BINS = 10
SMOOTHING = 1e-4  # an empty bin's share, so that PSI stays finite


def histogram_of(values: npt.ArrayLike, bins: int = BINS) -> dict[str, list[float] | list[int]]:
    """``{"edges": [...], "counts": [...]}`` of the finite values."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return {"edges": [], "counts": [0]}
    inner = np.quantile(finite, [i / bins for i in range(1, bins)])
    edges = sorted({float(e) for e in inner})
    counts = [0] * (len(edges) + 1)
    for value in finite:
        counts[bisect.bisect_right(edges, float(value))] += 1
    return {"edges": edges, "counts": counts}


def reference_of(columns: Mapping[str, npt.ArrayLike], scores: npt.ArrayLike) -> dict[str, Any]:
    """The card's ``reference``: every column's histogram, and the score's."""
    return {
        "bins": BINS,
        "features": {name: histogram_of(values) for name, values in columns.items()},
        "score": histogram_of(scores),
    }


def count_into(edges: list[float], values: Iterable[float | None]) -> list[int]:
    """Live values counted into the reference's bins (missing values left out)."""
    counts = [0] * (len(edges) + 1)
    for value in values:
        if value is None or not math.isfinite(value):
            continue
        counts[bisect.bisect_right(edges, value)] += 1
    return counts


def psi(reference: list[int], live: list[int]) -> float:
    """Population stability index: sum over bins of (live - ref) * ln(live / ref), in shares."""
    ref_total, live_total = sum(reference), sum(live)
    if not ref_total or not live_total:
        return 0.0
    value = 0.0
    for r, v in zip(reference, live, strict=True):
        p = max(r / ref_total, SMOOTHING)
        q = max(v / live_total, SMOOTHING)
        value += (q - p) * math.log(q / p)
    return value


def ks(reference: list[int], live: list[int]) -> float:
    """Kolmogorov-Smirnov distance of the two distributions at the bin edges."""
    ref_total, live_total = sum(reference), sum(live)
    if not ref_total or not live_total:
        return 0.0
    distance, ref_cdf, live_cdf = 0.0, 0.0, 0.0
    for r, v in zip(reference, live, strict=True):
        ref_cdf += r / ref_total
        live_cdf += v / live_total
        distance = max(distance, abs(ref_cdf - live_cdf))
    return distance

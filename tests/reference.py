"""A rule the brute-force feature references share (tests/unit/conftest.py for payments,
test_second_domain.py for rides): written once, read from the tiled windows' contract."""

from __future__ import annotations

from collections.abc import Iterable


def previous_time(earlier: Iterable[int], newest: int | None, t: int, span_ms: int) -> int | None:
    """The time seconds-since-last counts from, for an event at ``t``: the latest earlier time
    at or before ``t`` within the duplicate span before the entity's ``newest``, else the latest
    outside the span if that is not after ``t`` (older times are kept only as one latest)."""
    if newest is None:
        return None
    times = list(earlier)
    recent = [x for x in times if newest - span_ms < x <= t]
    if recent:
        return max(recent)
    gone = [x for x in times if x <= newest - span_ms]
    return max(gone) if gone and max(gone) <= t else None

"""Reading a ``<domain>.labelled`` record (the monitor's join) as a model's input and label.

A labelled record holds the vector from ``<domain>.features`` and the prediction, whose
``online_features`` are what the scorer read from the online store for it: together, the
model's whole input as it was served. The scorer's online learners and the trainer both take
their rows from here, so they read the join the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.core.declarations import Domain

# The predictions' field with the online-only features as the model was given them.
ONLINE_FEATURES_FIELD = "online_features"


def labelled_input(
    domain: Domain, labelled: Mapping[str, Any], names: tuple[str, ...]
) -> list[float] | None:
    """The row a model with inputs ``names`` was given for a labelled pair, in ``names`` order
    (nulls as the declaration fills them); None when the record lacks an input: no vector (it
    reached the monitor after the join's time-to-live) or no online features (no row)."""
    vector = labelled.get("features")
    if vector is None:
        return None
    online = labelled["prediction"].get(ONLINE_FEATURES_FIELD) or {}
    try:
        return domain.input_row({**vector, **online}, names)
    except KeyError:
        return None

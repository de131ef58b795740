"""The ``<domain>.labelled`` record of one joined event: the vector and the prediction as they
were served, the outcome, and when the truth arrived. The one join in the system: quality,
concept drift, online learning and training datasets all read it."""

from __future__ import annotations

from services.core.declarations import Domain
from services.core.serde import Record
from services.monitor.join import Joined
from services.monitor.parts import PartReader


def labelled_record(
    domain: Domain, joined: Joined, reader: PartReader, joined_at_ms: int
) -> tuple[bytes | None, Record]:
    """(key, value) of the labelled record: keyed like the prediction (the entity key)."""
    prediction = reader.decode(joined.prediction)
    outcome = reader.decode(joined.outcome)
    features = None if joined.features is None else reader.decode(joined.features)
    return joined.prediction.key, {
        "event_id": joined.prediction.event_id,
        domain.key_field: prediction[domain.key_field],
        "event_time": prediction["event_time"],
        "label": outcome[domain.label_field],
        "features": features,
        "prediction": prediction,
        "outcome": outcome,
        "outcome_at": joined.outcome.time_ms,
        "joined_at": joined_at_ms,
    }

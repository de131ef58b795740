"""The rides domain, declared only for tests: drivers' trips, rider complaints as outcomes.

It shares nothing with payments but the platform: another entity (driver, keyed by driver_id),
other fields, its own names for the event id and time (trip_id, pickup_time), other windows.
Its features and predictions schemas are generated from this file and schemas/rides.trips.avsc.
"""

from datetime import timedelta

from services.core.declarations import (
    Aggregation,
    Domain,
    Entity,
    Feature,
    Heuristic,
    finite_at_least,
    non_empty,
)

DRIVER = Entity(name="driver", key_field="driver_id")

MINUTES_10 = timedelta(minutes=10)
HOUR = timedelta(hours=1)

DOMAIN = Domain(
    name="rides",
    events_name="trips",
    entities=(DRIVER,),
    key_entity="driver",
    features=(
        Feature("trips_10m", "driver", Aggregation.COUNT, MINUTES_10),
        Feature("fare_sum_1h", "driver", Aggregation.SUM, HOUR, "fare"),
        Feature("fare_mean_1h", "driver", Aggregation.MEAN, HOUR, "fare"),
        Feature("distance_max_1h", "driver", Aggregation.MAX, HOUR, "distance_km"),
        Feature("seconds_since_last_trip", "driver", Aggregation.SECONDS_SINCE_LAST, fill=3_600.0),
    ),
    passthrough=("distance_km", "fare"),
    checks=(
        non_empty("trip_id"),
        non_empty("city"),
        finite_at_least("distance_km", 0.0),
        finite_at_least("fare", 0.0),
    ),
    # Riders complain after long, expensive trips of drivers who chain many trips in a row.
    heuristic=Heuristic(
        weights={"trips_10m": 0.4, "fare": 0.02, "distance_max_1h": 0.05},
        bias=-3.0,
    ),
    label_field="is_complaint",
    model_name="rides-complaints",
    event_id_field="trip_id",
    event_time_field="pickup_time",
    allowed_lateness=timedelta(minutes=30),
)

"""Training rows from the feature log: Feast's point-in-time join over the parquet part files.

For each row (``card_id``, ``event_timestamp``) of an entity dataframe, Feast returns the
features of the newest logged vector of that card with ``event_time <= event_timestamp`` and
no older than the feature view's ttl (the domain's retention). The logged vectors are the
ones the scorer served, so a training row for an event equals the vector it was served with.

The entity timestamp column is ``event_timestamp``, Feast's own name for it: the log's column
is ``event_time``, and an entity column of that name would be renamed and guessed at by Feast.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from services.core.declarations import Domain
from services.core.errors import ConfigError
from services.core.settings import StackSettings
from services.featurelog.parts import PART_PREFIX, PART_SUFFIX, log_dir
from services.featurestore.feast_objects import feature_view_name
from services.featurestore.store import open_store

ENTITY_TIMESTAMP = "event_timestamp"
_UTC_NS = "datetime64[ns, UTC]"


def training_rows(settings: StackSettings, domain: Domain, entity_df: pd.DataFrame) -> pd.DataFrame:
    """``entity_df`` with one column per feature of the key entity added, row for row.

    Needs columns ``<key field>`` (payments: ``card_id``) and ``event_timestamp`` (aware, or
    naive meaning UTC); other columns, the row order and the index are kept. Where no logged
    vector qualifies, the features are null (``pd.NA``): integer features come back as
    ``Int64`` and the others as ``Float64``, so a null never turns into 0 or NaN silently.
    """
    key = domain.key_field
    features = domain.features_of(domain.key_entity)
    names = [f.name for f in features]
    _check_columns(entity_df, key, names)
    directory = log_dir(settings, domain)
    if next(directory.glob(f"{PART_PREFIX}*{PART_SUFFIX}"), None) is None:
        raise ConfigError(
            f"the feature log {directory} has no part files yet: "
            f"run `streamml feature-log run --domain {domain.name}`"
        )
    query = entity_df[[key, ENTITY_TIMESTAMP]].copy()
    query[ENTITY_TIMESTAMP] = _utc(query[ENTITY_TIMESTAMP])
    view = feature_view_name(domain, domain.key_entity)
    found = pd.DataFrame(columns=[key, ENTITY_TIMESTAMP, *names])
    if len(query):
        found = _historical(settings, [f"{view}:{n}" for n in names], query.drop_duplicates())
    found[ENTITY_TIMESTAMP] = _utc(found[ENTITY_TIMESTAMP])
    # Feast leaves out an entity row whose card has vectors but none qualifying, and it
    # reorders rows: a left join onto the query gives every row back, in order.
    joined = query.merge(
        found[[key, ENTITY_TIMESTAMP, *names]],
        on=[key, ENTITY_TIMESTAMP],
        how="left",
        validate="many_to_one",
    )
    result = entity_df.copy()
    for feature in features:
        values = joined[feature.name].astype("Int64" if feature.is_integer else "Float64")
        result[feature.name] = values.array  # positional: the join kept the row order
    return result


def _check_columns(entity_df: pd.DataFrame, key: str, names: list[str]) -> None:
    missing = [c for c in (key, ENTITY_TIMESTAMP) if c not in entity_df.columns]
    if missing:
        raise ValueError(f"the entity dataframe needs the columns {missing}")
    clashing = [n for n in names if n in entity_df.columns]
    if clashing:
        raise ValueError(f"the entity dataframe already has feature columns {clashing}")


def _utc(column: pd.Series) -> pd.Series:
    return pd.to_datetime(column, utc=True).astype(_UTC_NS)


def _historical(settings: StackSettings, refs: list[str], query: pd.DataFrame) -> Any:
    # Opting in to pandas' future behaviour silences a FutureWarning dask raises inside Feast.
    with pd.option_context("future.no_silent_downcasting", True):
        job = open_store(settings).get_historical_features(entity_df=query, features=refs)
        return job.to_df()

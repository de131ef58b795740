"""The schemas a domain's declaration implies: ``<domain>.features`` and ``<domain>.predictions``.

A domain is declared once (``features/domains/<domain>.py``) with its events schema beside it
(``schemas/<domain>.<events>.avsc``, written by the team that produces the events). The feature
log and the predictions carry nothing the declaration does not say, so their schemas are derived
here rather than written by hand: ``streamml schemas generate`` writes them and
``streamml schemas generate --check`` fails when a committed file differs from its derivation.

Field types of the event's own fields (id, time, entity keys, passthrough) come from the events
schema; feature types from the aggregation: a count is a ``long``, seconds-since-last is
``["null", "double"]`` (null for an entity's first event), every other aggregate a ``double``.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

from services.core.declarations import Aggregation, Domain, Feature
from services.core.errors import ConfigError
from services.core.labelled import ONLINE_FEATURES_FIELD
from services.core.topics import schema_subject
from services.core.windows import TILES_PER_WINDOW

Schema = dict[str, Any]

NAMESPACE = "streamml"
FEATURES_RECORD = "FeatureVector"
PREDICTIONS_RECORD = "Prediction"
LABELLED_RECORD = "LabelledPrediction"
ONLINE_FEATURES_RECORD = "OnlineFeatures"
TIMESTAMP_MILLIS: Mapping[str, str] = {"type": "long", "logicalType": "timestamp-millis"}
# Who served a prediction: the registry's champion (or a canary or shadow), or the heuristic.
SERVED_BY: Mapping[str, Any] = {
    "type": "enum",
    "name": "ServedBy",
    "namespace": NAMESPACE,
    "symbols": ["champion", "canary", "shadow", "fallback"],
    "default": "fallback",
}
_NUMERIC = frozenset({"int", "long", "float", "double"})
_FIELD_KEYS = ("name", "type", "default", "doc")
_FROM_EVENT = ("name", "type", "default")


@dataclass(frozen=True)
class GeneratedSchema:
    """One derived schema and the file it belongs in."""

    path: Path
    schema: Schema

    @property
    def text(self) -> str:
        return render(self.schema)

    def is_current(self) -> bool:
        """True when the file on disk holds exactly this schema, formatted as ``render`` does."""
        try:
            return self.path.read_text(encoding="utf-8") == self.text
        except FileNotFoundError:
            return False

    def write(self) -> bool:
        """Writes the file unless it is already current; returns whether it wrote."""
        if self.is_current():
            return False
        self.path.write_text(self.text, encoding="utf-8")
        return True


def generated_schemas(domain: Domain, schemas_dir: Path) -> list[GeneratedSchema]:
    """The features and predictions schemas of ``domain``, from its events schema in the
    folder, and the labelled schema when the domain's outcomes schema is there too."""
    events = read_events_schema(domain, schemas_dir)
    topics = domain.topics
    generated = [
        GeneratedSchema(schemas_dir / f"{topics.features}.avsc", features_schema(domain, events)),
        GeneratedSchema(
            schemas_dir / f"{schema_subject(topics.predictions)}.avsc",
            predictions_schema(domain, events),
        ),
    ]
    outcomes = schemas_dir / f"{topics.outcomes}.avsc"
    if outcomes.is_file():
        generated.append(
            GeneratedSchema(
                schemas_dir / f"{topics.labelled}.avsc",
                labelled_schema(domain, events, _read_record_schema(outcomes)),
            )
        )
    return generated


def generate(domains: list[Domain], schemas_dir: Path, *, check: bool, out: TextIO) -> int:
    """``streamml schemas generate``: writes each domain's derived schemas (or, with ``check``,
    writes nothing and names each file that differs); returns the exit code, 1 when stale."""
    generated = [g for domain in domains for g in generated_schemas(domain, schemas_dir)]
    if check:
        stale = [g for g in generated if not g.is_current()]
        for g in stale:
            print(f"{g.path} differs from what its declaration generates", file=sys.stderr)
        if stale:
            print("run `streamml schemas generate` and commit the result", file=sys.stderr)
            return 1
        print(f"{len(generated)} generated schemas are up to date", file=out)
        return 0
    for g in generated:
        print(f"{'wrote' if g.write() else 'unchanged'} {g.path}", file=out)
    return 0


def read_events_schema(domain: Domain, schemas_dir: Path) -> Schema:
    path = schemas_dir / f"{schema_subject(domain.topics.events)}.avsc"
    if not path.is_file():
        raise ConfigError(
            f"domain {domain.name!r} has no events schema: write {path} first "
            "(the features and predictions schemas are derived from it)"
        )
    return _read_record_schema(path)


def _read_record_schema(path: Path) -> Schema:
    try:
        source: Schema = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{path} is not JSON: {exc}") from exc
    if source.get("type") != "record" or not isinstance(source.get("fields"), list):
        raise ConfigError(f"{path} must be an Avro record schema")
    return source


def features_schema(domain: Domain, events: Schema) -> Schema:
    """One accepted event's feature vector: id, keys, time, passthrough, then the features."""
    fields = _event_fields(domain, events)
    _check_declaration(domain, fields)
    noun = _event_noun(events)
    own = [
        domain.event_id_field,
        *dict.fromkeys(e.key_field for e in domain.entities),
        domain.event_time_field,
        *domain.passthrough,
    ]
    return {
        "type": "record",
        "name": FEATURES_RECORD,
        "namespace": f"{NAMESPACE}.{domain.name}",
        "doc": f"One accepted {noun}'s features as of that {noun} (the feature log). "
        f"Key: {domain.key_field}.",
        "fields": [_copied(fields[name]) for name in own]
        + [_feature_field(domain, f, noun) for f in domain.vector_features],
    }


def predictions_schema(domain: Domain, events: Schema) -> Schema:
    """Exactly one prediction per accepted event, keyed like the event."""
    fields = _event_fields(domain, events)
    _check_declaration(domain, fields)
    noun = _event_noun(events)
    event_id = _renamed(fields[domain.event_id_field], "event_id", noun)
    event_time = _renamed(fields[domain.event_time_field], "event_time", noun)
    return {
        "type": "record",
        "name": PREDICTIONS_RECORD,
        "namespace": f"{NAMESPACE}.{domain.name}",
        "doc": f"Exactly one per {noun} {domain.event_id_field}. Key: {domain.key_field} (UTF-8).",
        "fields": [
            event_id,
            _copied(fields[domain.key_field]),
            {"name": "model_name", "type": "string"},
            {
                "name": "model_version",
                "type": "string",
                "doc": '"heuristic" when served_by is fallback.',
            },
            {"name": "score", "type": "double", "doc": f"{_probability_of(domain)}, in [0, 1]."},
            {"name": "decision", "type": "boolean", "doc": "score >= the scorer's threshold."},
            {"name": "served_by", "type": copy.deepcopy(dict(SERVED_BY))},
            event_time,
            {"name": "predicted_at", "type": dict(TIMESTAMP_MILLIS)},
            *_online_features_field(domain, noun),
        ],
    }


def _online_features_field(domain: Domain, noun: str) -> list[Schema]:
    """The features the scorer read from the online store (not in the vector), as the model
    was given them: with the vector they make the model's whole input, which the monitor's
    ``<domain>.labelled`` needs for learning. None for a domain without such features."""
    if not domain.online_features:
        return []
    record = {
        "type": "record",
        "name": ONLINE_FEATURES_RECORD,
        "namespace": f"{NAMESPACE}.{domain.name}",
        "fields": [_feature_field(domain, f, noun) for f in domain.online_features],
    }
    return [
        {
            "name": ONLINE_FEATURES_FIELD,
            "type": ["null", record],
            "default": None,
            "doc": "The features read from the online store for this prediction (those not in "
            "<domain>.features), as they were given to the model; null when they could not be "
            "read (no row, or a stale one: the heuristic scored the event).",
        }
    ]


def labelled_schema(domain: Domain, events: Schema, outcomes: Schema) -> Schema:
    """One event the monitor joined: the vector and prediction as served, and the outcome."""
    fields = _event_fields(domain, events)
    outcome_fields = {f["name"]: f for f in outcomes["fields"]}
    for name in (domain.event_id_field, domain.label_field):
        if name not in outcome_fields:
            raise ConfigError(f"{domain.name}: the outcomes schema has no field {name!r}")
    if _base_type(outcome_fields[domain.label_field]["type"]) != "boolean":
        raise ConfigError(f"{domain.name}: the outcome's {domain.label_field} must be a boolean")
    noun = _event_noun(events)
    return {
        "type": "record",
        "name": LABELLED_RECORD,
        "namespace": f"{NAMESPACE}.{domain.name}",
        "doc": f"One {noun} joined by the monitor: the vector and the prediction as they were "
        "served and the outcome learned later. Exactly one per "
        f"{domain.event_id_field} that got both a prediction and an outcome. "
        f"Key: {domain.key_field} (UTF-8).",
        "fields": [
            {"name": "event_id", "type": "string", "doc": f"The {noun}'s {domain.event_id_field}."},
            _copied(fields[domain.key_field]),
            {"name": "event_time", "type": dict(TIMESTAMP_MILLIS)},
            {"name": "label", "type": "boolean", "doc": f"The outcome's {domain.label_field}."},
            {
                "name": "features",
                "type": ["null", features_schema(domain, events)],
                "doc": "The vector as scored (<domain>.features); null only when it had not "
                "reached the monitor within the join's time-to-live.",
            },
            {"name": "prediction", "type": predictions_schema(domain, events)},
            {"name": "outcome", "type": copy.deepcopy(outcomes)},
            {
                "name": "outcome_at",
                "type": dict(TIMESTAMP_MILLIS),
                "doc": "When the outcome was published (its record's timestamp); minus "
                "event_time: the label delay.",
            },
            {"name": "joined_at", "type": dict(TIMESTAMP_MILLIS)},
        ],
    }


def render(schema: Schema) -> str:
    """Stable text for a schema file: one top-level key per line, one field per line."""
    lines = []
    for key, value in schema.items():
        if key == "fields":
            inner = ",\n".join(f"    {_compact(f)}" for f in value)
            lines.append(f'  "fields": [\n{inner}\n  ]')
        else:
            lines.append(f"  {_compact(key)}: {_compact(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def window_text(window: timedelta) -> str:
    """``5m``, ``1h``, ``24h``, ``30s``, ``250ms``: the largest unit that divides the window."""
    ms = round(window.total_seconds() * 1000)
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _event_fields(domain: Domain, events: Schema) -> dict[str, Schema]:
    return {f["name"]: f for f in events["fields"]}


def _check_declaration(domain: Domain, fields: Mapping[str, Schema]) -> None:
    """The declaration must name fields its events schema has, numeric where it computes."""
    wanted = {
        "event id field": [domain.event_id_field],
        "event time field": [domain.event_time_field],
        "entity key": [e.key_field for e in domain.entities],
        "passthrough field": list(domain.passthrough),
        "feature source field": [f.source_field for f in domain.features if f.source_field],
        "checked field": [c.field_name for c in domain.checks],
    }
    problems = [
        f"{role} {name!r} is not in the events schema"
        for role, names in wanted.items()
        for name in names
        if name not in fields
    ]
    numeric = [*domain.passthrough, *wanted["feature source field"]]
    problems += [
        f"{name!r} is a model input or aggregated, so it must be numeric, "
        f"but the events schema says {fields[name]['type']!r}"
        for name in dict.fromkeys(numeric)
        if name in fields and _base_type(fields[name]["type"]) not in _NUMERIC
    ]
    if problems:
        raise ConfigError(
            f"domain {domain.name!r} does not match {domain.topics.events}.avsc: "
            + "; ".join(problems)
        )


def _base_type(avro_type: Any) -> Any:
    return avro_type.get("type") if isinstance(avro_type, dict) else avro_type


def _copied(event_field: Schema) -> Schema:
    """An event field as the feature log carries it: its name, type and default, no doc."""
    return {k: copy.deepcopy(event_field[k]) for k in _FROM_EVENT if k in event_field}


def _renamed(event_field: Schema, name: str, noun: str) -> Schema:
    """The prediction's fixed ``event_id``/``event_time`` fields carry the event's own."""
    out = _copied(event_field)
    original = out["name"]
    out["name"] = name
    if original != name:
        out["doc"] = f"The {noun}'s {original}."
    return out


def _feature_field(domain: Domain, feature: Feature, noun: str) -> Schema:
    field: Schema = {"name": feature.name}
    if feature.is_integer:
        field["type"] = "long"
    elif feature.nullable:
        field["type"] = ["null", "double"]
        field["default"] = None
    else:
        field["type"] = "double"
    field["doc"] = _feature_doc(domain, feature, noun)
    return {k: field[k] for k in _FIELD_KEYS if k in field}


def _feature_doc(domain: Domain, feature: Feature, noun: str) -> str:
    entity = feature.entity.replace("_", " ")
    if feature.aggregation is Aggregation.SECONDS_SINCE_LAST:
        return f"Seconds since the {entity}'s latest earlier {noun}; null for its first."
    events = domain.events_name.replace("_", " ")
    window = "" if feature.window is None else window_text(feature.window)
    tile = "" if feature.window is None else window_text(feature.window / TILES_PER_WINDOW)
    scope = (
        f"{entity}'s {events} in the last {window}: those in t's {tile} tile and the "
        f"{TILES_PER_WINDOW - 1} before it."
    )
    if feature.aggregation is Aggregation.COUNT:
        return scope[0].upper() + scope[1:]
    what = {
        Aggregation.SUM: "Sum of",
        Aggregation.MEAN: "Mean of",
        Aggregation.MAX: "Largest",
    }[feature.aggregation]
    return f"{what} {feature.source_field} over the {scope}"


def _event_noun(events: Schema) -> str:
    """``Transaction`` -> ``transaction``; ``RideRequest`` -> ``ride request``."""
    name = str(events.get("name", "event")).rsplit(".", 1)[-1]
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).lower()


def _probability_of(domain: Domain) -> str:
    label = domain.label_field
    if label.startswith("is_"):
        return f"Probability of {label[3:].replace('_', ' ')}"
    return f"Probability that {label} is true"

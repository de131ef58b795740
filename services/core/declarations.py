"""The vocabulary a domain is declared in (``features/<domain>.py``).

One declaration per feature: the featurizer computes from it, the Feast feature views are
derived from it, the model's input order comes from it. Adding a domain means a schema in
``schemas/`` and a declaration in ``features/``; no service code.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from functools import cached_property
from typing import Any

from services.core.topics import DomainTopics


class Aggregation(StrEnum):
    """How a feature summarises an entity's events in its window."""

    COUNT = "count"
    SUM = "sum"
    MEAN = "mean"
    MAX = "max"
    SECONDS_SINCE_LAST = "seconds_since_last"


@dataclass(frozen=True)
class Entity:
    """Something features are kept for, named by one field of the event (its join key)."""

    name: str
    key_field: str


@dataclass(frozen=True)
class Feature:
    """One windowed aggregate of one entity: over its events of the last ``window`` before t,
    counted by tiles (``services/core/windows.py``)."""

    name: str
    entity: str
    aggregation: Aggregation
    window: timedelta | None = None
    source_field: str | None = None
    in_vector: bool = True
    # The value when the entity had no event in the window: a card's first event, a merchant
    # never seen before, one whose online row is older than the window. 0 suits counts and
    # sums; declare it for the others (seconds since the last event: a long gap).
    fill: float = 0.0

    @property
    def window_ms(self) -> int | None:
        return None if self.window is None else int(self.window.total_seconds() * 1000)

    @property
    def nullable(self) -> bool:
        return self.aggregation is Aggregation.SECONDS_SINCE_LAST

    @property
    def is_integer(self) -> bool:
        return self.aggregation is Aggregation.COUNT


@dataclass(frozen=True)
class Check:
    """A data check on one field of an accepted event; failing it sends the event to the DLQ."""

    field_name: str
    rule: str
    predicate: Callable[[Any], bool] = field(compare=False)

    def passes(self, value: Any) -> bool:
        try:
            return bool(self.predicate(value))
        except (TypeError, ValueError):
            return False


def non_empty(name: str) -> Check:
    return Check(name, "non-empty", lambda v: isinstance(v, str) and v.strip() != "")


def finite_at_least(name: str, low: float) -> Check:
    return Check(name, f"finite and >= {low}", lambda v: math.isfinite(v) and v >= low)


def matches(name: str, pattern: str) -> Check:
    compiled = re.compile(pattern)
    return Check(name, f"matches {pattern}", lambda v: compiled.fullmatch(v) is not None)


@dataclass(frozen=True)
class Heuristic:
    """The declared baseline: sigmoid(bias + sum(weight * input)). Scores when no model can."""

    weights: Mapping[str, float]
    bias: float

    def score(self, inputs: Mapping[str, float | None]) -> float:
        z = self.bias + sum(w * float(inputs.get(k) or 0.0) for k, w in self.weights.items())
        return 1.0 / (1.0 + math.exp(-max(min(z, 60.0), -60.0)))


@dataclass(frozen=True)
class Segment:
    """Bands of a vector field, each measured on its own: ``edges`` (0, 50, 200) make the bands
    ``amount<50``, ``amount 50-200`` and ``amount>=200`` (a value below the first edge is in
    the first band)."""

    field_name: str
    edges: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.edges) < 2 or list(self.edges) != sorted(set(self.edges)):
            raise ValueError(f"segment {self.field_name}: edges must rise, at least two")

    def band_of(self, value: float | None) -> str | None:
        """The band's name, or None for a missing value."""
        if value is None or math.isnan(value):
            return None
        name, edges = self.field_name, self.edges
        if value < edges[1]:
            return f"{name}<{edges[1]:g}"
        for low, high in itertools.pairwise(edges[1:]):
            if value < high:
                return f"{name} {low:g}-{high:g}"
        return f"{name}>={edges[-1]:g}"


DETECTORS = ("adwin", "ddm", "page_hinkley")


@dataclass(frozen=True)
class ConceptDrift:
    """River's detector on each model version's stream of errors (decision != label)."""

    detector: str = "adwin"  # adwin (default), ddm or page_hinkley
    # ADWIN's confidence: a smaller delta needs stronger evidence (river's default, 0.002).
    adwin_delta: float = 0.002
    page_hinkley_threshold: float = 50.0  # river's default
    # DDM's pairs before it may fire (river's default, 30, fires on the noise of a low rate).
    ddm_warm_start: int = 1_000
    # After an alarm, a fresh detector reads on, its alarms held for this many pairs (one drift,
    # one alarm); a drift found meanwhile is raised when the hold ends.
    cooldown_pairs: int = 2_000
    # Event times of the latest pairs kept per version, to place a change point.
    recent_pairs: int = 20_000
    # A rise still there this long (event time) after its alarm asks for retraining once more:
    # a detector sees a change, not a level, and a first retrain that came too early to learn
    # the new concept (its gate failed) would otherwise leave the drift unanswered for good.
    persists_for: timedelta = timedelta(minutes=5)

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"concept drift detector {self.detector!r}: one of {DETECTORS}")
        if self.cooldown_pairs < 0 or self.recent_pairs < 4:
            raise ValueError("cooldown_pairs must be >= 0 and recent_pairs >= 4")


@dataclass(frozen=True)
class DataDrift:
    """Live vectors (and scores) against the serving model's training reference."""

    window_vectors: int = 5_000  # the live window compared with the reference
    check_every: int = 1_000  # vectors between two comparisons
    # PSI 0.1-0.2 is usually read as a moderate shift, above 0.2 as a significant one.
    psi_threshold: float = 0.2
    ks_threshold: float = 0.15
    # After an alert, checks in a row back under both thresholds before a subject re-arms.
    cooldown_checks: int = 5
    # A data drift still there this long (in event time) after its alert asks for retraining.
    persists_for: timedelta = timedelta(minutes=5)

    def __post_init__(self) -> None:
        if self.window_vectors < 100 or not 0 < self.check_every <= self.window_vectors:
            raise ValueError("window_vectors must be >= 100 and check_every in (0, window]")


@dataclass(frozen=True)
class QualityFloor:
    """Quality alerts: a version whose window figures fall past a floor raises one alert."""

    # The window's accuracy and AUC below these, or its log loss above, alert (None: off).
    min_accuracy: float | None = None
    min_auc: float | None = 0.6  # barely better than ranking by chance
    max_logloss: float | None = None
    # A window with fewer labelled pairs than this is not judged (its figures are noise).
    min_pairs: int = 500
    # After an alert, snapshots in a row back within the floor before the figure re-arms.
    rearm_snapshots: int = 3


@dataclass(frozen=True)
class Monitoring:
    """How the monitor watches a domain; every field has a default, so a domain that declares
    nothing is monitored too."""

    # How long, in event time, a prediction waits for its outcome (and an outcome for its
    # prediction) before it counts as unlabelled (unmatched): long enough for the slowest
    # truth to arrive, short enough that the join's state stays bounded.
    join_ttl: timedelta = timedelta(hours=24)
    # The most events each partition of the join holds at once (about 1 KiB each); past it the
    # oldest leave early, as if their TTL had passed, and are counted as evicted.
    join_max_entries: int = 1_000_000
    # How long, in event time, a joined event's marker keeps copies of its parts from joining
    # again: as long as a producer retries a record (librdkafka's delivery.timeout.ms). Kept
    # for the whole join_ttl, the markers held about 0.7 KB per event for 24 h.
    done_ttl: timedelta = timedelta(minutes=5)
    # Quality is also measured per band of these vector fields (payments: amount bands).
    segments: tuple[Segment, ...] = ()
    # The sliding window of quality figures: the latest this many pairs of each version.
    quality_window_pairs: int = 5_000
    concept: ConceptDrift = field(default_factory=ConceptDrift)
    data: DataDrift = field(default_factory=DataDrift)
    quality: QualityFloor = field(default_factory=QualityFloor)

    def __post_init__(self) -> None:
        if self.quality_window_pairs < 1:
            raise ValueError("quality_window_pairs must be at least 1")
        if self.join_ttl <= timedelta(0):
            raise ValueError(f"join_ttl must be positive, not {self.join_ttl}")
        if self.done_ttl <= timedelta(0):
            raise ValueError(f"done_ttl must be positive, not {self.done_ttl}")
        if self.join_max_entries < 1:
            raise ValueError(f"join_max_entries must be at least 1, not {self.join_max_entries}")


@dataclass(frozen=True)
class Gate:
    """When a retrained candidate may take traffic: compared with the champion on the recent
    holdout (rows later than it trained on) and on the domain's golden set (docs/trainer.md)."""

    # The candidate's holdout AUC must exceed the champion's by more than this.
    holdout_auc_gain: float = 0.0
    # The candidate's golden-set AUC may be below the champion's by at most this.
    golden_auc_margin: float = 0.05
    # Below this AUC on either set a candidate fails, champion or not.
    min_auc: float = 0.6

    def __post_init__(self) -> None:
        if self.golden_auc_margin < 0 or not 0.0 <= self.min_auc <= 1.0:
            raise ValueError("golden_auc_margin must be >= 0 and min_auc in [0, 1]")


@dataclass(frozen=True)
class Retraining:
    """How the trainer answers a retraining request: wait, train, gate, canary, decide."""

    # A folder under features/ with the golden set's rows.parquet and manifest.json (None: the
    # gate has no golden rule).
    golden_set: str | None = None
    # Labelled pairs with event time after the change point before training starts.
    min_labelled: int = 2_000
    max_wait: timedelta = timedelta(hours=6)  # then the request is abandoned
    # A second candidate also learns this much history before the change point (patterns that
    # still hold); the one better on the recent holdout goes on. timedelta(0): never.
    before_change: timedelta = timedelta(hours=1)
    # After a retrain ends, requests for this long are answered by it (one drift, one retrain).
    cooldown: timedelta = timedelta(minutes=30)
    canary_share: float = 0.2  # of the entity keys, by the scorer's sticky hash
    # Joined outcomes of the canary (and of the champion, since the canary started) before
    # they are compared.
    canary_min_pairs: int = 500
    # Rolled back when its accuracy is below the champion's, over the same time, by more.
    canary_accuracy_margin: float = 0.01
    canary_max_wait: timedelta = timedelta(hours=6)  # then rolled back
    gate: Gate = field(default_factory=Gate)

    def __post_init__(self) -> None:
        if not 0.0 < self.canary_share <= 1.0:
            raise ValueError(f"canary_share must be in (0, 1], not {self.canary_share}")
        if self.min_labelled < 1 or self.canary_min_pairs < 1:
            raise ValueError("min_labelled and canary_min_pairs must be at least 1")


@dataclass(frozen=True)
class Domain:
    """Everything the platform needs to know about one stream of events."""

    name: str
    events_name: str
    entities: tuple[Entity, ...]
    key_entity: str
    features: tuple[Feature, ...]
    passthrough: tuple[str, ...]
    checks: tuple[Check, ...]
    heuristic: Heuristic
    label_field: str
    model_name: str
    event_id_field: str = "event_id"
    event_time_field: str = "event_time"
    allowed_lateness: timedelta = timedelta(hours=1)
    # An event whose id an entity's events of this last span of event time carry is a
    # duplicate; a copy that arrives after its original left the span counts again. 5 min is
    # librdkafka's delivery.timeout.ms: the longest a producer retries a record.
    duplicate_span: timedelta = timedelta(minutes=5)
    max_future: timedelta = timedelta(minutes=10)
    max_past: timedelta = timedelta(days=7)
    monitoring: Monitoring = field(default_factory=Monitoring)
    retraining: Retraining = field(default_factory=Retraining)

    def __post_init__(self) -> None:
        names = [f.name for f in self.features] + list(self.passthrough)
        if len(names) != len(set(names)):
            raise ValueError(f"{self.name}: a feature name is declared twice: {names}")
        known = {e.name for e in self.entities}
        unknown = {f.entity for f in self.features} - known
        if unknown or self.key_entity not in known:
            raise ValueError(f"{self.name}: features name unknown entities {unknown}")

    @cached_property
    def topics(self) -> DomainTopics:
        return DomainTopics.for_domain(self.name, self.events_name)

    @cached_property
    def key_field(self) -> str:
        return self.entity(self.key_entity).key_field

    def entity(self, name: str) -> Entity:
        return next(e for e in self.entities if e.name == name)

    def features_of(self, entity: str) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.entity == entity)

    @cached_property
    def featurized_entities(self) -> tuple[Entity, ...]:
        """The entities that have features, in declaration order: one feature view each."""
        return tuple(e for e in self.entities if self.features_of(e.name))

    @cached_property
    def secondary_entities(self) -> tuple[Entity, ...]:
        """Entities other than the key one that have features: kept in their own partitions."""
        return tuple(e for e in self.featurized_entities if e.name != self.key_entity)

    @cached_property
    def vector_features(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.in_vector)

    @cached_property
    def online_features(self) -> tuple[Feature, ...]:
        """Features kept only in the online store (payments: the merchant's): a scorer reads
        them per micro-batch, since the per-event vector does not carry them."""
        return tuple(f for f in self.features if not f.in_vector)

    @cached_property
    def model_inputs(self) -> tuple[str, ...]:
        """The model's input columns, in order: the event's own fields, the vector's
        features, then the features read from the online store."""
        return (
            self.passthrough
            + tuple(f.name for f in self.vector_features)
            + tuple(f.name for f in self.online_features)
        )

    def input_row(self, vector: Mapping[str, Any], names: tuple[str, ...]) -> list[float]:
        """A vector's model inputs in ``names`` order; nulls become the feature's ``fill``."""
        fills = self._fills
        return [float(fills.get(n, 0.0) if vector[n] is None else vector[n]) for n in names]

    @cached_property
    def _fills(self) -> dict[str, float]:
        return {f.name: f.fill for f in self.features}

    @property
    def feature_ttl(self) -> timedelta:
        """How old an entity's online row may be, against the time of the event it serves:
        the Feast feature views' ``ttl``, and the scorer's staleness limit."""
        return self.retention

    @property
    def retention(self) -> timedelta:
        """How far back an entity's windows reach: an entity idle for longer has no state."""
        longest = max((f.window for f in self.features if f.window), default=timedelta(0))
        return longest + self.allowed_lateness

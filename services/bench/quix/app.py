"""The Quix Streams peer: the payments pipeline as one Quix Streams 3.x ``Application``.

It runs in its own virtualenv (``venv.py``); the runner (``runner.py``) starts it. The graph::

    payments.transactions (key: card)
      └─ card features: one stateful apply per event (state store: the card's last 24 h)
           ├─ payments.features (the vector, Avro, as ours)
           ├─ Feast sink: the card's row, once per checkpoint
           └─ group_by merchant (repartition topic)
                └─ hopping window 1 h / 5 min, Count (state store): this event's window
                     ├─ Feast sink: the merchant's row, once per checkpoint
                     └─ ONNX model on the event's inputs → payments.predictions

Exactly-once (Kafka transactions), ``commit_interval`` from the runner. The card's windows are
one stateful function and not three chained sliding windows: chained, a window emits once per
open window an out-of-order event falls into (so one event became several records downstream)
and its cost grows with the card's events in the window (62 events/s on a busy card, against
2,300 for the state store; measured with ``StreamingDataFrame.test``, docs/benchmarks.md).
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from quixstreams import Application, State
from quixstreams.dataframe.windows import Count, Last
from quixstreams.models import Deserializer, SerializationContext, Serializer
from quixstreams.models.serializers.exceptions import SerializationError as QuixSerializationError
from quixstreams.sinks import BatchingSink, SinkBatch

from services.bench.peer.feast_repo import apply_repo, view_name
from services.bench.quix.names import APP_ID, DOMAIN, PROJECT
from services.bench.served import prediction, served_model
from services.core.declarations import Aggregation, Domain, Feature
from services.core.domains import load_domain
from services.core.errors import SerializationError
from services.core.schemas import SchemaStore
from services.core.serde import Codec, CodecFactory, Record
from services.core.topics import schema_subject
from services.core.windows import TILES_PER_WINDOW
from services.featurestore.feast_objects import TIMESTAMP_FIELD
from services.scorer.settings import ScorerSettings

log = logging.getLogger(__name__)

# How late an event may come and still be counted: as long as the window. Less, and a backlog
# (a restart, a burst) drops events, since Quix reads one partition's run of events before the
# next's and the merchant's stream sees event times go back by minutes.
GRACE = timedelta(hours=1)


@dataclass(frozen=True)
class QuixConfig:
    home: Path
    model_path: Path
    model_version: str
    commit_interval_s: float


class AvroIn(Deserializer):  # type: ignore[misc]
    """Our Avro codec (single-object encoding) as a Quix deserializer: decoding costs the same."""

    def __init__(self, codec: Codec) -> None:
        super().__init__()
        self._codec = codec

    def __call__(self, value: bytes, ctx: SerializationContext) -> Record:
        try:
            return self._codec.decode(value)
        except SerializationError as exc:
            raise QuixSerializationError(str(exc)) from exc


class AvroOut(Serializer):  # type: ignore[misc]
    def __init__(self, codec: Codec) -> None:
        self._codec = codec

    def __call__(self, value: Record, ctx: SerializationContext) -> bytes:
        return self._codec.encode(value)


class FeastSink(BatchingSink):  # type: ignore[misc]
    """A feature view's rows, written at each checkpoint: one per entity, its newest (Feast's
    Redis store skips a row not newer than the stored one, also within one write)."""

    def __init__(self, store: Any, view: str, key_field: str, names: list[str]) -> None:
        super().__init__()
        self._store, self._view, self._key, self._names = store, view, key_field, names

    def write(self, batch: SinkBatch) -> None:
        newest: dict[str, Record] = {}
        for item in batch:
            row = item.value
            kept = newest.get(row[self._key])
            if kept is None or row["event_time"] >= kept["event_time"]:
                newest[row[self._key]] = row
        frame = pd.DataFrame(
            [
                {
                    self._key: key,
                    **{n: row[n] for n in self._names},
                    TIMESTAMP_FIELD: pd.Timestamp(row["event_time"], unit="ms", tz="UTC"),
                }
                for key, row in newest.items()
            ]
        )
        if not frame.empty:
            self._store.write_to_online_store(self._view, frame)


class CardFeatures:
    """The card's declared features as of each event, from its events of the longest window
    (plus the grace) kept in the state store, sorted by event time."""

    def __init__(self, features: tuple[Feature, ...]) -> None:
        self._features = features
        windows = [f.window for f in features if f.window is not None]
        self._keep_ms = int((max(windows) + GRACE).total_seconds() * 1000)

    def __call__(self, event: Record, state: State) -> Record:
        at, amount = int(event["event_time"]), float(event["amount"])
        history: list[list[Any]] = state.get("h") or []
        newest = state.get("newest")
        place = bisect.bisect_right(history, at, key=lambda r: r[0])
        if place:
            previous: float | None = history[place - 1][0]
        else:  # the card's history is older than the longest window: its newest time is kept
            previous = newest if newest is not None and newest <= at else None
        history.insert(place, [at, amount])
        row = dict(event)
        for feature in self._features:
            row[feature.name] = self._value(feature, history, place, at, previous)
        newest = at if newest is None else max(newest, at)
        start = bisect.bisect_left(history, newest - self._keep_ms, key=lambda r: r[0])
        state.set("h", history[start:])
        state.set("newest", newest)
        return row

    @staticmethod
    def _value(
        feature: Feature, history: list[list[Any]], place: int, at: int, previous: float | None
    ) -> float | int | None:
        if feature.aggregation == Aggregation.SECONDS_SINCE_LAST:
            return None if previous is None else max(at - previous, 0) / 1000.0
        assert feature.window is not None
        first = bisect.bisect_left(
            history, at - feature.window.total_seconds() * 1000, key=lambda r: r[0]
        )
        amounts = [float(r[1]) for r in history[first : place + 1]]
        if feature.aggregation == Aggregation.COUNT:
            return len(amounts)
        if feature.aggregation == Aggregation.SUM:
            return float(sum(amounts))
        if feature.aggregation == Aggregation.MEAN:
            return sum(amounts) / len(amounts)
        if feature.aggregation == Aggregation.MAX:
            return max(amounts)
        raise ValueError(f"the Quix peer does not compute {feature.aggregation}")


class Scorer:
    """One ONNX Runtime call per event, on the same inputs as our scorer's."""

    def __init__(self, domain: Domain, config: QuixConfig, settings: ScorerSettings) -> None:
        self._model, self._model_name = served_model(
            config.model_path, domain, settings.scorer_threads
        )
        self._version = config.model_version
        self._threshold = settings.scorer_threshold
        self._domain = domain
        self._online = [f.name for f in domain.online_features]

    def predict(self, window: Record) -> Record:
        event = window["event"]
        values = {**event, **{name: window[name] for name in self._online}}
        row = self._domain.input_row(values, self._model.feature_names)
        score = float(self._model.predict(np.array([row], dtype=np.float32))[0])
        return prediction(
            event,
            (self._model_name, self._version),
            score,
            self._threshold,
            online_features={name: window[name] for name in self._online},
        )


def skip_undecodable(exc: Exception, _message: Any, logger: logging.Logger) -> bool:
    """A record that does not decode is logged and skipped, not a crash (as the faust peer)."""
    if isinstance(exc, QuixSerializationError):
        logger.warning("skipped a record that does not decode: %s", exc)
        return True
    return False


def build_app(settings: ScorerSettings, config: QuixConfig) -> Application:
    domain = load_domain(settings.features_dir, DOMAIN)
    schemas = SchemaStore.from_dir(settings.schemas_dir)
    codecs = CodecFactory(schemas)
    store = apply_repo(settings, config.home, domain, PROJECT)
    app = Application(
        broker_address=settings.bootstrap,
        consumer_group=APP_ID,
        processing_guarantee="exactly-once",
        commit_interval=config.commit_interval_s,
        auto_offset_reset="earliest",
        state_dir=str(config.home / "state"),
        consumer_extra_config={
            "fetch.wait.max.ms": settings.fetch_wait,
            "session.timeout.ms": settings.session_timeout,
        },
        on_consumer_error=skip_undecodable,
        on_processing_error=skip_undecodable,
        loglevel="INFO",
    )
    topics = domain.topics
    events = app.topic(
        topics.events,
        key_deserializer="bytes",
        value_deserializer=AvroIn(codecs.for_topic(topics.events)),
        timestamp_extractor=lambda value, _headers, _ts, _type: int(value["event_time"]),
    )
    card_fields = [f.name for f in domain.features_of(domain.key_entity)]
    vector_fields = [
        f["name"] for f in schemas.current(schema_subject(topics.features)).source["fields"]
    ]
    card_key = domain.key_field

    cards = app.dataframe(events).apply(
        CardFeatures(domain.features_of(domain.key_entity)), stateful=True
    )
    cards.apply(lambda row: {n: row[n] for n in vector_fields}).to_topic(
        _out(app, topics.features, codecs), key=lambda row: str(row[card_key]).encode()
    )
    cards.sink(FeastSink(store, view_name(domain.key_entity), card_key, card_fields))

    (merchant,) = domain.secondary_entities
    (count,) = domain.features_of(merchant.name)  # payments: the merchant's 1 h count
    if count.aggregation != Aggregation.COUNT or count.window is None:
        raise ValueError(f"the Quix peer counts a merchant's events in a window, not {count}")
    # Our tiles' semantics (services/core/windows.py): the event's 5-minute tile and the 11
    # before it, that is the hopping window (1 h, step 5 min) that ends with the event's tile.
    # Each event updates 12 such windows; this event's is the one ending with its tile, and
    # Last() (processing order) carries the event itself on to the scorer.
    step_ms = int(count.window.total_seconds() * 1000) // TILES_PER_WINDOW
    windowed = (
        cards.group_by(merchant.key_field)
        .hopping_window(count.window, step_ms=step_ms, grace_ms=GRACE, name=count.name)
        .agg(**{count.name: Count()}, event=Last())
        .current()
        .filter(lambda w: w["end"] == (int(w["event"]["event_time"]) // step_ms + 1) * step_ms)
    )
    windowed.apply(
        lambda w: {
            merchant.key_field: w["event"][merchant.key_field],
            "event_time": w["event"]["event_time"],
            count.name: w[count.name],
        }
    ).sink(FeastSink(store, view_name(merchant.name), merchant.key_field, [count.name]))
    scorer = Scorer(domain, config, settings)
    windowed.apply(scorer.predict).to_topic(
        _out(app, topics.predictions, codecs), key=lambda p: str(p["card_id"]).encode()
    )
    return app


def _out(app: Application, topic: str, codecs: CodecFactory) -> Any:
    return app.topic(
        topic, key_serializer="bytes", value_serializer=AvroOut(codecs.for_topic(topic))
    )

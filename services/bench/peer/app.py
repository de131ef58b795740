"""The peer as one faust app with one agent per stage, each taking one event at a time.

- ``features`` consumes ``payments.transactions``, counts in faust ``Table``s (tumbling windows
  read with ``.current()``, as in the faust user guide's tables and windowing chapter,
  https://faust-streaming.github.io/faust/userguide/tables.html), pushes the card's and the
  merchant's current features to Feast (``FeatureStore.push``, one single-row DataFrame each),
  then sends the event on to its own topic.
- ``score`` consumes that topic, reads the card's and the merchant's features back
  (``FeatureStore.get_online_features``, one entity row), builds the model's input row and runs
  ONNX Runtime on it, then sends the prediction to ``payments.predictions``.

The merchant table is updated from the card-keyed stream: right for the single worker a tutorial
runs (every partition's state is in one process), not for several, where faust's answer is a
``group_by`` repartition topic and a second agent. That shortcut only makes the peer faster.
Windows follow the records' Kafka timestamps (faust's default, ``relative_to_stream``), which our
producers set at send time, close to ``event_time``; ``seconds_since_last_txn`` uses event times.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import faust
import numpy as np
import pandas as pd

from services.bench.peer.feast_repo import apply_repo, push_source_name, view_name
from services.bench.served import prediction, served_model
from services.core.declarations import Domain
from services.core.domains import load_domain
from services.core.errors import ConfigError, SerializationError
from services.core.kafka import TopicSpec, create_topics, partition_count
from services.core.schemas import SchemaStore
from services.core.serde import Codec, CodecFactory, Record
from services.integrations.faust_transport import broker_url
from services.scorer.settings import ScorerSettings

log = logging.getLogger(__name__)

DOMAIN = "payments"
APP_ID = "streamml-peer"  # also the faust consumer group
SCORING_TOPIC = "peer.payments.scoring"
READY_FILE = "peer-ready.json"
CARD, MERCHANT = "card", "merchant"


@dataclass(frozen=True)
class PeerConfig:
    """What the runner tells the worker: where its files go and which model it serves."""

    home: Path
    model_path: Path
    model_version: str

    @property
    def ready_file(self) -> Path:
        return self.home / READY_FILE


class PeerApp(faust.App):
    """faust.App that writes the partitions it consumes to a file once a rebalance is over,
    so that the runner knows when the peer is consuming (faust itself only logs it)."""

    ready_file: Path

    def on_rebalance_end(self) -> None:
        super().on_rebalance_end()
        assigned: dict[str, list[int]] = {}
        for tp in self.consumer.assignment():
            assigned.setdefault(tp.topic, []).append(tp.partition)
        written = self.ready_file.with_suffix(".tmp")
        written.write_text(json.dumps(assigned))
        written.replace(self.ready_file)


def build_app(settings: ScorerSettings, config: PeerConfig) -> PeerApp:
    """Creates the peer's topic and Feast repo, loads the model, and wires the two agents."""
    domain = load_domain(settings.features_dir, DOMAIN)
    partitions = partition_count(settings, domain.topics.events)
    create_topics(settings, [TopicSpec(SCORING_TOPIC, partitions)])
    store = apply_repo(settings, config.home, domain)
    app = PeerApp(
        APP_ID,
        broker=broker_url(settings.bootstrap, settings.fetch_wait),
        store="memory://",
        datadir=str(config.home / "faust"),
        topic_partitions=partitions,  # faust declares its changelog topics with this count
        broker_session_timeout=settings.session_timeout / 1000,
        broker_heartbeat_interval=settings.session_timeout / 6000,
        web_enabled=False,  # no HTTP port to collide with; it serves nothing the peer needs
        autodiscover=False,
    )
    app.ready_file = config.ready_file
    codecs = CodecFactory(SchemaStore.from_dir(settings.schemas_dir))
    stage = Stage(app, codecs.for_topic(domain.topics.events), partitions)
    _features_agent(stage, domain, Counters(app, domain), store)
    scorer = Scorer(domain, store, config, settings)
    _score_agent(stage, domain, scorer, codecs.for_topic(domain.topics.predictions))
    create_topics(settings, _changelogs(app, partitions))
    return app


def _changelogs(app: PeerApp, partitions: int) -> list[TopicSpec]:
    """The tables' changelog topics, made before faust starts, as faust would make them. faust
    creates them itself at start-up, but in one full test run a table checked its changelog
    before the new topic was in the worker's metadata ("has 0 partitions"), its agent crashed
    with PartitionsMismatch at each restart, and the peer predicted nothing."""
    specs = []
    for table in app.tables.values():
        topic = table.changelog_topic
        flags = (("compact", topic.compacting), ("delete", topic.deleting))
        policy = ",".join(name for name, on in flags if on)
        config = {"cleanup.policy": policy} if policy else {}
        if topic.retention:
            config["retention.ms"] = str(int(float(topic.retention) * 1000))
        specs.append(TopicSpec(topic.get_topic_name(), partitions, config))
    return specs


@dataclass(frozen=True)
class Stage:
    """What both agents share: the app, the transactions codec, the partition count."""

    app: PeerApp
    transactions: Codec
    partitions: int

    def topic(self, name: str) -> Any:
        return self.app.topic(
            name, value_type=bytes, value_serializer="raw", partitions=self.partitions
        )


def _features_agent(stage: Stage, domain: Domain, counters: Counters, store: Any) -> None:
    scoring = stage.topic(SCORING_TOPIC)
    card_push, merchant_push = push_source_name(CARD), push_source_name(MERCHANT)

    async def features(stream: Any) -> None:
        async for raw in stream:
            try:
                event = stage.transactions.decode(raw)
            except SerializationError as exc:
                log.warning("skipped a record that does not decode: %s", exc)
                continue
            card_row, merchant_row = counters.update(event)
            store.push(card_push, pd.DataFrame([card_row]))
            store.push(merchant_push, pd.DataFrame([merchant_row]))
            await scoring.send(key=event[domain.key_field], value=raw)

    stage.app.agent(stage.topic(domain.topics.events), name="features")(features)


def _score_agent(stage: Stage, domain: Domain, scorer: Scorer, predictions: Codec) -> None:
    out = stage.topic(domain.topics.predictions)

    async def score(stream: Any) -> None:
        async for raw in stream:
            event = stage.transactions.decode(raw)  # stage 1 decoded these bytes already
            prediction = scorer.predict(event)
            await out.send(key=event[domain.key_field], value=predictions.encode(prediction))

    stage.app.agent(stage.topic(SCORING_TOPIC), name="score")(score)


class Counters:
    """Stage 1's state: one faust table per windowed aggregate, keyed by card or merchant."""

    def __init__(self, app: faust.App, domain: Domain) -> None:
        def windowed(name: str, default: type, window_of: str) -> Any:
            size = _window(domain, window_of)
            return app.Table(name, default=default).tumbling(size, expires=size)

        self.count_5m = windowed("card-count-5m", int, "txn_count_5m")
        self.count_1h = windowed("card-count-1h", int, "txn_count_1h")
        self.count_24h = windowed("card-count-24h", int, "txn_count_24h")
        self.sum_1h = windowed("card-amount-sum-1h", float, "amount_sum_1h")
        self.sum_24h = windowed("card-amount-sum-24h", float, "amount_mean_24h")
        self.max_24h = windowed("card-amount-max-24h", float, "amount_max_24h")
        self.merchant_count_1h = windowed("merchant-count-1h", int, "merchant_txn_count_1h")
        self.last_seen = app.Table("card-last-event-time")

    def update(self, event: Record) -> tuple[Record, Record]:
        """Counts the event in; the card's and the merchant's rows to push, as of it."""
        card, merchant = event["card_id"], event["merchant_id"]
        amount, at_ms = float(event["amount"]), int(event["event_time"])
        for count in (self.count_5m, self.count_1h, self.count_24h):
            count[card] += 1
        self.sum_1h[card] += amount
        self.sum_24h[card] += amount
        self.max_24h[card] = max(self.max_24h[card].current(), amount)
        self.merchant_count_1h[merchant] += 1
        previous = self.last_seen.get(card)
        self.last_seen[card] = at_ms if previous is None else max(previous, at_ms)
        at = datetime.fromtimestamp(at_ms / 1000, UTC)
        card_row = {
            "card_id": card,
            "event_time": at,
            "txn_count_5m": self.count_5m[card].current(),
            "txn_count_1h": self.count_1h[card].current(),
            "txn_count_24h": self.count_24h[card].current(),
            "amount_sum_1h": self.sum_1h[card].current(),
            "amount_mean_24h": self.sum_24h[card].current() / self.count_24h[card].current(),
            "amount_max_24h": self.max_24h[card].current(),
            "seconds_since_last_txn": None if previous is None else max(at_ms - previous, 0) / 1e3,
        }
        merchant_row = {
            "merchant_id": merchant,
            "event_time": at,
            "merchant_txn_count_1h": self.merchant_count_1h[merchant].current(),
        }
        return card_row, merchant_row


def _window(domain: Domain, feature: str) -> timedelta:
    window = next(f.window for f in domain.features if f.name == feature)
    if window is None:
        raise ConfigError(f"{feature} is declared without a window; the peer counts in windows")
    return window


class Scorer:
    """Stage 2's per-event work: the online features, the model's input row, one ORT call."""

    def __init__(
        self, domain: Domain, store: Any, config: PeerConfig, settings: ScorerSettings
    ) -> None:
        self._model, self._model_name = served_model(
            config.model_path, domain, settings.scorer_threads
        )
        self._version = config.model_version
        self._threshold = settings.scorer_threshold
        self._domain = domain
        self._store = store
        by_name = {f.name: f for f in domain.features}
        self._refs = [
            f"{view_name(by_name[n].entity)}:{n}" for n in self._model.feature_names if n in by_name
        ]
        self._keys = [e.key_field for e in domain.featurized_entities]

    def predict(self, event: Record) -> Record:
        entity_row = {key: event[key] for key in self._keys}
        online = self._store.get_online_features(
            features=self._refs, entity_rows=[entity_row]
        ).to_dict()
        values = {name: column[0] for name, column in online.items()}
        values.update({name: event[name] for name in self._domain.passthrough})
        row = self._domain.input_row(values, self._model.feature_names)
        score = float(self._model.predict(np.array([row], dtype=np.float32))[0])
        return prediction(event, (self._model_name, self._version), score, self._threshold)

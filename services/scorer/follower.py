"""Follows ``ml.models`` between micro-batches and hands over a new line-up when it changes.

Each role (champion, canary, shadow) is loaded when the registry puts a version in it: the
artifact's sha256 is checked, the model is warmed up, and only then does the new line-up
replace the old one, between two micro-batches. A version that cannot be loaded is refused:
a record on ``ml.models.events`` and a metric say why, and the role keeps what it had (the
champion) or stays empty (canary, shadow). Every outcome is recorded on ``ml.models.events``.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from services.core.declarations import Domain
from services.core.errors import ModelError
from services.core.kafka import background_consumer_config, producer_config
from services.core.serde import CodecFactory
from services.core.settings import StackSettings
from services.core.topics import MODEL_EVENTS, MODELS
from services.registry.artifacts import ModelStore
from services.registry.versions import CANARY, CHAMPION, SHADOW, ModelVersion, RegistryView, now_ms
from services.scorer.metrics import ScorerMetrics
from services.scorer.serving import Lineup, Serving, heuristic_serving, load_serving

log = logging.getLogger(__name__)

LOADED = "loaded"
REFUSED = "refused"
FLUSH_TIMEOUT_S = 5.0


class RegistryFollower:
    def __init__(
        self,
        settings: StackSettings,
        domain: Domain,
        codecs: CodecFactory,
        store: ModelStore,
        threads: int,
        metrics: ScorerMetrics,
        instance: str,
    ) -> None:
        self._domain = domain
        self._codec = codecs.for_topic(MODELS)
        self._events_codec = codecs.for_topic(MODEL_EVENTS)
        self._store = store
        self._threads = threads
        self._metrics = metrics
        self._instance = instance
        self._view = RegistryView(())
        self.lineup = Lineup(heuristic_serving(domain))
        self._refused: set[tuple[str, str, str]] = set()  # (role, version, sha256)
        self._consumer = Consumer(background_consumer_config(settings, None))
        self._consumer.assign([TopicPartition(MODELS, 0, OFFSET_BEGINNING)])
        self._events = Producer(producer_config(settings))

    def poll(self) -> Lineup | None:
        """Reads what arrived; returns the new line-up when a role changed and loaded."""
        changed = False
        for message in self._consumer.consume(num_messages=100, timeout=0):
            value = message.value()
            if message.error() is not None or value is None:
                continue
            try:
                self._view.apply(ModelVersion.from_record(self._codec.decode(value)))
                changed = True
            except Exception:
                log.exception("unreadable record at %s offset %s", MODELS, message.offset())
        if not changed:
            return None
        lineup = self._next_lineup()
        if lineup == self.lineup:
            return None
        self.lineup = lineup
        log.info("serving: %s", lineup.describe())
        return lineup

    def _next_lineup(self) -> Lineup:
        name, current = self._domain.model_name, self.lineup
        champion = self._resolve(CHAMPION, self._view.champion(name), current.champion)
        canary_record = self._view.canary(name)
        canary = self._resolve(CANARY, canary_record, current.canary)
        shadow = self._resolve(SHADOW, self._view.shadow(name), current.shadow)
        return Lineup(
            champion=champion or heuristic_serving(self._domain),
            canary=canary,
            canary_share=canary_record.traffic_share if canary and canary_record else 0.0,
            shadow=shadow,
        )

    def _resolve(
        self, role: str, record: ModelVersion | None, current: Serving | None
    ) -> Serving | None:
        """The serving for ``role``: the one loaded if unchanged, a new one if it loads."""
        if record is None:
            return None
        if current is not None and current.is_model and _same(current, record):
            return replace(current, served_by=role) if current.served_by != role else current
        if (role, record.version, record.sha256) in self._refused:
            return current if role == CHAMPION else None
        try:
            serving = load_serving(record, self._store, self._threads, role)
        except ModelError as exc:
            self._refused.add((role, record.version, record.sha256))
            self._record(record, role, REFUSED, str(exc))
            keeps = current.version if role == CHAMPION and current else "nothing"
            log.error("refusing %s as %s: %s; the %s keeps %s", record.key, role, exc, role, keeps)
            return current if role == CHAMPION else None
        self._record(record, role, LOADED, "")
        log.info("loaded %s as %s (sha256 %s)", record.key, role, record.sha256[:12])
        return serving

    def _record(self, record: ModelVersion, role: str, outcome: str, reason: str) -> None:
        self._metrics.model_loads.labels(self._domain.name, outcome).inc()
        event = {
            "model_name": record.model_name,
            "version": record.version,
            "role": role,
            "outcome": outcome,
            "reason": reason,
            "sha256": record.sha256,
            "service": f"scorer/{self._instance}",
            "at": now_ms(),
            "step": "load",
            "request_id": "",
            "dataset_id": record.dataset_id,
            "figures": {},
        }
        self._events.produce(
            MODEL_EVENTS, key=record.key.encode(), value=self._events_codec.encode(event)
        )
        self._events.poll(0)

    def close(self) -> None:
        self._consumer.close()
        left = self._events.flush(FLUSH_TIMEOUT_S)
        if left:
            log.warning("%d model event records were not delivered", left)


def _same(serving: Serving, record: ModelVersion) -> bool:
    return serving.version == record.version and serving.sha256 == record.sha256

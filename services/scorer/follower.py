"""Follows ``ml.models`` between micro-batches and hands over a newly promoted champion."""

from __future__ import annotations

import logging

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from services.core.declarations import Domain
from services.core.errors import ModelError
from services.core.kafka import consumer_config
from services.core.modelstore import ModelStore
from services.core.registry import ModelVersion, RegistryView
from services.core.serde import CodecFactory
from services.core.settings import StackSettings
from services.core.topics import MODELS
from services.scorer.metrics import ScorerMetrics
from services.scorer.serving import Serving, load_serving

log = logging.getLogger(__name__)


class RegistryFollower:
    def __init__(
        self,
        settings: StackSettings,
        domain: Domain,
        codecs: CodecFactory,
        store: ModelStore,
        threads: int,
        metrics: ScorerMetrics,
    ) -> None:
        self._domain = domain
        self._codec = codecs.for_topic(MODELS)
        self._store = store
        self._threads = threads
        self._metrics = metrics
        self._view = RegistryView(())
        self._serving_version: str | None = None
        self._refused: set[tuple[str, str]] = set()
        self._consumer = Consumer(consumer_config(settings, None))
        self._consumer.assign([TopicPartition(MODELS, 0, OFFSET_BEGINNING)])

    def poll(self) -> Serving | None:
        """Reads what arrived; returns a loaded new champion when one was promoted."""
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
        return self._maybe_load() if changed else None

    def _maybe_load(self) -> Serving | None:
        champion = self._view.champion(self._domain.model_name)
        if champion is None or champion.version == self._serving_version:
            return None
        if (champion.version, champion.sha256) in self._refused:
            return None
        try:
            serving = load_serving(champion, self._store, self._threads)
        except ModelError as exc:
            self._refused.add((champion.version, champion.sha256))
            self._metrics.model_loads.labels(self._domain.name, "refused").inc()
            log.error("refusing %s: %s; the current model keeps serving", champion.key, exc)
            return None
        self._serving_version = champion.version
        self._metrics.model_loads.labels(self._domain.name, "loaded").inc()
        log.info("loaded %s (sha256 %s) as champion", champion.key, champion.sha256[:12])
        return serving

    def close(self) -> None:
        self._consumer.close()

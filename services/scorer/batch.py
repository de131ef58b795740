"""Scoring feature vectors: one call per model per micro-batch, and never an event dropped.

``VectorScorer`` is the one way a vector becomes a prediction, shared by the stream, the HTTP
endpoint and ``score-batch`` so the three agree by construction. ``BatchScorer`` adds what the
stream needs around it: decoding, dead letters and deduplication by event id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.core.deadletter import SourcePosition, dead_letter
from services.core.declarations import Domain
from services.core.errors import SerializationError
from services.core.labelled import ONLINE_FEATURES_FIELD
from services.core.serde import Codec, Record
from services.models.runtimes import Matrix, Scores
from services.scorer.dedup import RecentIds
from services.scorer.online import (
    MISSING_FEATURE,
    ONLINE_STORE,
    OnlineFeatureReader,
    OnlineStoreUnavailable,
)
from services.scorer.serving import Lineup, Serving, heuristic_serving

log = logging.getLogger(__name__)

SERVICE = "scorer"
NO_MODEL = "no_model"
MODEL_ERROR = "model_error"
MODEL_TIMEOUT = "model_timeout"
NON_FINITE_SCORE = "non_finite_score"
# After the online store failed, batches are scored without it for this long before it is
# asked again: a store that hangs costs at most one read timeout per interval.
STORE_RETRY_S = 0.5


@dataclass(frozen=True, slots=True)
class Incoming:
    key: bytes | None
    value: bytes | None
    source: SourcePosition


@dataclass
class Scored:
    """Predictions (in input order) and shadow predictions of some vectors."""

    predictions: list[tuple[bytes, Record]] = field(default_factory=list)
    shadow: list[tuple[bytes, Record]] = field(default_factory=list)
    fallback_causes: dict[str, int] = field(default_factory=dict)

    def count_fallback(self, cause: str, n: int) -> None:
        self.fallback_causes[cause] = self.fallback_causes.get(cause, 0) + n


@dataclass
class BatchResult(Scored):
    dead_letters: list[tuple[bytes | None, Record, str]] = field(default_factory=list)
    duplicates: int = 0


def now_ms() -> int:
    return int(time.time() * 1000)


class ModelCaller:
    """Runs a model on a batch with a time limit; a model that overruns is given up on (its
    thread is left to finish) and the batch goes to the heuristic."""

    def __init__(self, timeout_ms: int) -> None:
        self._timeout_s = timeout_ms / 1000 if timeout_ms > 0 else None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="model")

    def predict(self, serving: Serving, rows: Matrix) -> Scores:
        if self._timeout_s is None:
            return serving.runtime.predict(rows)
        future = self._pool.submit(serving.runtime.predict, rows)
        try:
            return future.result(self._timeout_s)
        except FutureTimeout:
            # The stuck call keeps its thread; later batches get a fresh one.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="model")
            raise

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class VectorScorer:
    """Feature vectors in, one prediction each out, by the line-up's routing."""

    def __init__(
        self,
        domain: Domain,
        threshold: float,
        online: OnlineFeatureReader | None,
        caller: ModelCaller,
        *,
        scores_when_store_down: bool = False,
        store_retry_s: float = STORE_RETRY_S,
    ) -> None:
        """``scores_when_store_down``: an unreadable online store sends the vectors that need
        it to the heuristic (cause ``online_store``; the stream never stops) instead of raising
        ``OnlineStoreUnavailable`` (an HTTP caller is told, and may retry)."""
        self._domain = domain
        self._threshold = threshold
        self._online = online
        self._caller = caller
        self._fallback = heuristic_serving(domain)
        self._scores_when_store_down = scores_when_store_down
        self._store_down_since: float | None = None
        self._store_next_try = 0.0
        self._store_retry_s = store_retry_s
        self._online_names = frozenset(online.feature_names) if online else frozenset()
        self._online_casts: dict[str, Callable[[Any], float | int]] = {
            f.name: int if f.is_integer else float
            for f in domain.online_features
            if f.name in self._online_names
        }

    def score(self, keyed: Sequence[tuple[bytes, Record]], lineup: Lineup) -> Scored:
        """``keyed``: (entity key bytes, vector). Vectors get their online features added."""
        result = Scored()
        if not keyed:
            return result
        vectors = [v for _, v in keyed]
        unread = self._enrich(vectors)  # the whole batch's online features, or why not
        used: list[Serving] = [self._fallback] * len(keyed)
        scores: list[float] = [0.0] * len(keyed)
        groups, fallback_rows = self._assign(keyed, unread, lineup, result)
        for serving, rows in groups.values():
            got = self._run(serving, [vectors[i] for i in rows], result)
            if got is None:
                fallback_rows += rows
                continue
            for i, score in zip(rows, got, strict=True):
                scores[i], used[i] = score, serving
        if fallback_rows:
            fallback_rows.sort()
            matrix = self._matrix(self._fallback, [vectors[i] for i in fallback_rows])
            for i, score in zip(fallback_rows, self._fallback.runtime.predict(matrix), strict=True):
                scores[i] = float(score)
        predicted_at = now_ms()
        result.predictions = [
            (key, self._prediction(vector, used[i], scores[i], predicted_at, unread))
            for i, (key, vector) in enumerate(keyed)
        ]
        if lineup.shadow is not None:
            self._shadow(keyed, unread, lineup.shadow, predicted_at, result)
        return result

    def _assign(
        self,
        keyed: Sequence[tuple[bytes, Record]],
        unread: str | None,
        lineup: Lineup,
        result: Scored,
    ) -> tuple[dict[int, tuple[Serving, list[int]]], list[int]]:
        """Which model scores each vector (by key), and which go to the heuristic and why."""
        groups: dict[int, tuple[Serving, list[int]]] = {}
        fallback_rows: list[int] = []
        for i, (key, _) in enumerate(keyed):
            serving = lineup.route(key)
            if not serving.is_model:
                fallback_rows.append(i)
                result.count_fallback(NO_MODEL, 1)
                continue
            if unread is not None and self._needs_online(serving):
                fallback_rows.append(i)
                result.count_fallback(unread, 1)
            else:
                groups.setdefault(id(serving), (serving, []))[1].append(i)
        return groups, fallback_rows

    def _enrich(self, vectors: list[Record]) -> str | None:
        """Adds the online features; ``online_store`` when they could not be read."""
        if self._online is None:
            return None
        now = time.monotonic()
        if self._store_down_since is not None and now < self._store_next_try:
            return ONLINE_STORE  # a store that just failed is not asked again at once
        try:
            self._online.enrich(vectors)
        except OnlineStoreUnavailable as exc:
            if not self._scores_when_store_down:
                raise
            self._store_next_try = now + self._store_retry_s
            if self._store_down_since is None:
                self._store_down_since = now
                log.error("%s; the heuristic scores until it answers again", exc)
            return ONLINE_STORE
        if self._store_down_since is not None:
            down_s = time.monotonic() - self._store_down_since
            log.warning("the online store answers again after %.1f s", down_s)
            self._store_down_since = None
        return None

    def _needs_online(self, serving: Serving) -> bool:
        return not self._online_names.isdisjoint(serving.runtime.feature_names)

    def _run(self, serving: Serving, vectors: list[Record], result: Scored) -> list[float] | None:
        """The model's scores, or None (counted by cause) when the heuristic must score them."""
        try:
            matrix = self._matrix(serving, vectors)
            scores = self._caller.predict(serving, matrix)
            if np.isfinite(scores).all():
                listed: list[float] = scores.tolist()
                return listed
            cause = NON_FINITE_SCORE
        except KeyError:  # a vector without an input the model needs
            cause = MISSING_FEATURE
        except FutureTimeout:
            log.error(
                "model %s overran its time limit; the heuristic scores the batch", serving.version
            )
            cause = MODEL_TIMEOUT
        except Exception:
            log.exception("model %s failed on a batch; the heuristic scores it", serving.version)
            cause = MODEL_ERROR
        result.count_fallback(cause, len(vectors))
        return None

    def _shadow(
        self,
        keyed: Sequence[tuple[bytes, Record]],
        unread: str | None,
        shadow: Serving,
        predicted_at: int,
        result: Scored,
    ) -> None:
        """The shadow scores what it can; it never changes what consumers get."""
        ready = keyed if unread is None or not self._needs_online(shadow) else []
        if not ready:
            return
        try:
            matrix = self._matrix(shadow, [v for _, v in ready])
            scores = self._caller.predict(shadow, matrix)
        except Exception:
            log.exception(
                "shadow model %s failed on a batch; no shadow predictions", shadow.version
            )
            return
        result.shadow = [
            (key, self._prediction(vector, shadow, float(score), predicted_at, None))
            for (key, vector), score in zip(ready, scores.tolist(), strict=True)
            if np.isfinite(score)
        ]

    def _prediction(
        self, vector: Record, used: Serving, score: float, at_ms: int, problem: str | None
    ) -> Record:
        domain = self._domain
        prediction = {
            "event_id": vector[domain.event_id_field],
            domain.key_field: vector[domain.key_field],
            "model_name": used.model_name,
            "model_version": used.version,
            "score": float(score),
            "decision": bool(score >= self._threshold),
            "served_by": used.served_by,
            "event_time": vector[domain.event_time_field],
            "predicted_at": at_ms,
        }
        if self._online_casts:  # what was read, so the monitor's join has the whole input
            prediction[ONLINE_FEATURES_FIELD] = self._online_values(vector, problem)
        return prediction

    def _online_values(self, vector: Record, problem: str | None) -> Record | None:
        if problem is not None:
            return None
        values = {name: vector.get(name) for name in self._online_casts}
        if any(v is None for v in values.values()):
            return None
        return {name: cast(values[name]) for name, cast in self._online_casts.items()}

    def _matrix(self, serving: Serving, vectors: list[Record]) -> Matrix:
        names = serving.runtime.feature_names
        return np.array([self._domain.input_row(v, names) for v in vectors], dtype=np.float32)


class BatchScorer:
    """One consumed micro-batch: decode, drop already-predicted events, score the rest."""

    def __init__(
        self, domain: Domain, codec: Codec, vectors: VectorScorer, seen: RecentIds
    ) -> None:
        self._domain = domain
        self._codec = codec
        self._vectors = vectors
        self.seen = seen

    def score(self, batch: list[Incoming], lineup: Lineup) -> BatchResult:
        result = BatchResult()
        keyed: list[tuple[bytes, Record]] = []
        in_batch: set[str] = set()
        for item in batch:
            vector = self._decode(item, result)
            if vector is None:
                continue
            event_id = str(vector[self._domain.event_id_field])
            if event_id in self.seen or event_id in in_batch:
                result.duplicates += 1
                continue
            in_batch.add(event_id)
            keyed.append((item.key or str(vector[self._domain.key_field]).encode(), vector))
        scored = self._vectors.score(keyed, lineup)
        result.predictions, result.shadow = scored.predictions, scored.shadow
        result.fallback_causes = scored.fallback_causes
        return result

    def remember(self, result: BatchResult) -> None:
        """Called once the batch's predictions are committed."""
        for _, prediction in result.predictions:
            self.seen.add(prediction["event_id"])

    def _decode(self, item: Incoming, result: BatchResult) -> Record | None:
        def refuse(reason: str, detail: str) -> None:
            letter = dead_letter(
                reason=reason,
                detail=detail,
                key=item.key,
                value=item.value,
                source=item.source,
                service=SERVICE,
                failed_at_ms=now_ms(),
            )
            result.dead_letters.append((item.key, letter, reason))

        if item.value is None:
            refuse("undecodable", "the record has no value")
            return None
        try:
            return self._codec.decode(item.value)
        except SerializationError as exc:
            refuse(exc.reason, str(exc))
            return None

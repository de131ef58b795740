"""Turning one micro-batch of feature records into predictions (no Kafka here)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from services.core.deadletter import SourcePosition, dead_letter
from services.core.declarations import Domain
from services.core.errors import SerializationError
from services.core.serde import Codec, Record
from services.scorer.dedup import RecentIds
from services.scorer.runtimes import Matrix
from services.scorer.serving import FALLBACK, Serving

log = logging.getLogger(__name__)

SERVICE = "scorer"


@dataclass(frozen=True, slots=True)
class Incoming:
    key: bytes | None
    value: bytes | None
    source: SourcePosition


@dataclass
class BatchResult:
    predictions: list[tuple[bytes, Record]] = field(default_factory=list)
    dead_letters: list[tuple[bytes | None, Record, str]] = field(default_factory=list)
    duplicates: int = 0
    fallback_causes: dict[str, int] = field(default_factory=dict)


def now_ms() -> int:
    return int(time.time() * 1000)


class BatchScorer:
    def __init__(self, domain: Domain, codec: Codec, threshold: float, seen: RecentIds) -> None:
        self._domain = domain
        self._codec = codec
        self._threshold = threshold
        self._seen = seen

    def score(self, batch: list[Incoming], serving: Serving, fallback: Serving) -> BatchResult:
        result = BatchResult()
        vectors: list[tuple[bytes, Record]] = []
        in_batch: set[str] = set()
        for item in batch:
            vector = self._decode(item, result)
            if vector is None:
                continue
            event_id = str(vector[self._domain.event_id_field])
            if event_id in self._seen or event_id in in_batch:
                result.duplicates += 1
                continue
            in_batch.add(event_id)
            vectors.append((item.key or str(vector[self._domain.key_field]).encode(), vector))
        if vectors:
            self._predict(vectors, serving, fallback, result)
        return result

    def remember(self, result: BatchResult) -> None:
        """Called once the batch's predictions are committed."""
        for _, prediction in result.predictions:
            self._seen.add(prediction["event_id"])

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

    def _predict(
        self,
        vectors: list[tuple[bytes, Record]],
        serving: Serving,
        fallback: Serving,
        result: BatchResult,
    ) -> None:
        scores, used = self._run(serving, fallback, [v for _, v in vectors], result)
        predicted_at = now_ms()
        domain = self._domain
        for (key, vector), score in zip(vectors, scores, strict=True):
            result.predictions.append(
                (
                    key,
                    {
                        "event_id": vector[domain.event_id_field],
                        domain.key_field: vector[domain.key_field],
                        "model_name": used.model_name,
                        "model_version": used.version,
                        "score": float(score),
                        "decision": bool(score >= self._threshold),
                        "served_by": used.served_by,
                        "event_time": vector[domain.event_time_field],
                        "predicted_at": predicted_at,
                    },
                )
            )

    def _run(
        self, serving: Serving, fallback: Serving, vectors: list[Record], result: BatchResult
    ) -> tuple[list[float], Serving]:
        if serving.served_by != FALLBACK:
            try:
                rows = self._matrix(serving, vectors)
                scores = serving.runtime.predict(rows)
                if np.isfinite(scores).all():
                    return scores.tolist(), serving
                cause = "non_finite_score"
            except KeyError:
                cause = "missing_feature"
            except Exception:
                log.exception(
                    "model %s failed on a batch; the heuristic scores it", serving.version
                )
                cause = "model_error"
            result.fallback_causes[cause] = result.fallback_causes.get(cause, 0) + len(vectors)
        else:
            result.fallback_causes["no_model"] = len(vectors)
        return fallback.runtime.predict(self._matrix(fallback, vectors)).tolist(), fallback

    def _matrix(self, serving: Serving, vectors: list[Record]) -> Matrix:
        names = serving.runtime.feature_names
        return np.array([self._domain.input_row(v, names) for v in vectors], dtype=np.float32)

"""Online learning from outcomes: test-then-train for a ``river`` model, and its snapshots.

The scorer scores a micro-batch, then ``remember``s each event's input row under its
``event_id``. When ``<domain>.outcomes`` records arrive (decoded: event_id, is_fraud,
observed_at), ``learn`` looks each event up: a remembered event is first *tested* (scored by
the current model, which has not seen its label) for the progressive metrics, then *learned*,
and its row is forgotten so it is learned once. So every prediction the scorer publishes was
made before its label was learned, and so is every progressive metric.

What is not learned, and counted instead:

- ``unknown``: the event was never remembered, or was evicted (memory holds the most recent
  ``memory_rows`` events), or the learner restarted since. An outcome that arrives *before* its
  event was scored is also unknown: it is not kept for later. Outcomes normally come hours or
  days after the payment; keeping early ones would need a second bounded buffer and would
  break the test-then-train order for no measured gain.
- ``duplicate``: the event was already learned (the learned ids are kept, as bounded as the
  rows). A duplicate older than that bound counts as unknown.

No Kafka here: the scorer feeds records in and exports the counts; snapshots go to the model
store as new versions, which the scorer may register. Memory, learned ids and progressive
metrics live only in this process: after a restart, outcomes for events scored before it are
unknown, and a re-delivered outcome cannot be told from a first one.

Not thread-safe by itself: call it from one thread (``RiverModel`` has its own lock, so the
scorer may predict with the model on another).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from services.core.serde import Record
from services.models.river import ARTIFACT_FILE, KIND, RiverModel
from services.models.runtimes import Matrix
from services.registry.artifacts import ModelStore, StoredSnapshot
from services.registry.versions import CANDIDATE, ModelVersion, now_ms

DEFAULT_MEMORY_ROWS = 200_000
DEFAULT_SNAPSHOT_EVERY_S = 600.0
DEFAULT_SNAPSHOT_EVERY_ROWS = 50_000
METRIC_WINDOW = 5_000  # progressive metrics are over the last this many learned rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LearnCounts:
    """What became of outcomes: learned, for an unknown event, for an already learned one."""

    learned: int = 0
    unknown: int = 0
    duplicate: int = 0

    def __add__(self, other: LearnCounts) -> LearnCounts:
        return LearnCounts(
            self.learned + other.learned,
            self.unknown + other.unknown,
            self.duplicate + other.duplicate,
        )


class OnlineLearner:
    """Remembers scored rows, learns them once when their outcome comes, says when to snapshot.

    ``model_name``/``version`` name the registered version the model was loaded from; after
    each saved snapshot ``version`` is the snapshot's, so snapshots form a chain of parents.
    Times (``now``) are seconds on any monotonic clock, the same one for every call.
    """

    def __init__(
        self,
        model: RiverModel,
        *,
        model_name: str,
        version: str,
        now: float,
        memory_rows: int = DEFAULT_MEMORY_ROWS,
        snapshot_every_s: float = DEFAULT_SNAPSHOT_EVERY_S,
        snapshot_every_rows: int = DEFAULT_SNAPSHOT_EVERY_ROWS,
    ) -> None:
        if memory_rows < 1 or snapshot_every_rows < 1 or not snapshot_every_s > 0:
            raise ValueError("memory_rows, snapshot_every_rows and snapshot_every_s must be > 0")
        from river import metrics

        self.model = model
        self.model_name = model_name
        self.version = version
        self.memory_rows = memory_rows
        self.snapshot_every_s = snapshot_every_s
        self.snapshot_every_rows = snapshot_every_rows
        self._rows: OrderedDict[str, Matrix] = OrderedDict()
        self._learned_ids: OrderedDict[str, None] = OrderedDict()
        self._totals = LearnCounts()
        self._evicted = 0
        self._since_snapshot = 0
        self._last_snapshot_at = now
        # (is fraud, log loss) of the last METRIC_WINDOW tested rows, and the same rows' AUC.
        self._tested: deque[tuple[bool, float]] = deque(maxlen=METRIC_WINDOW)
        rolling_auc: Any = metrics.RollingROCAUC  # river's own annotations are partial
        self._auc: Any = rolling_auc(window_size=METRIC_WINDOW)

    @property
    def totals(self) -> LearnCounts:
        """Counts over the learner's life (``learn`` returns each call's own)."""
        return self._totals

    @property
    def evicted(self) -> int:
        """Remembered rows dropped, oldest first, to stay within ``memory_rows``."""
        return self._evicted

    @property
    def remembered(self) -> int:
        """Rows waiting for their outcome now."""
        return len(self._rows)

    @property
    def rows_since_snapshot(self) -> int:
        return self._since_snapshot

    def remember(self, event_ids: Sequence[str], rows: Matrix) -> None:
        """Keeps each scored event's row until its outcome comes (or it is evicted).

        An event already remembered keeps its first row; an event already learned is ignored.
        """
        if len(event_ids) != len(rows):
            raise ValueError(f"{len(event_ids)} event ids but {len(rows)} rows")
        width = len(self.model.feature_names)
        if rows.ndim != 2 or rows.shape[1] != width:
            raise ValueError(f"expected rows of {width} inputs, got shape {rows.shape}")
        for event_id, row in zip(event_ids, rows, strict=True):
            if event_id in self._rows or event_id in self._learned_ids:
                continue
            self._rows[event_id] = row.astype(np.float32, copy=True)  # not a view of the batch
        overflow = len(self._rows) - self.memory_rows
        for _ in range(max(0, overflow)):
            self._rows.popitem(last=False)
        self._evicted += max(0, overflow)

    def learn(self, outcomes: Iterable[Record]) -> LearnCounts:
        """Test-then-train on the outcomes' remembered events, in the order given."""
        rows: list[Matrix] = []
        labels: list[bool] = []
        unknown = duplicate = 0
        for outcome in outcomes:
            event_id = str(outcome["event_id"])
            row = self._rows.pop(event_id, None)
            if row is None:
                if event_id in self._learned_ids:
                    duplicate += 1
                else:
                    unknown += 1
                continue
            self._learned_ids[event_id] = None
            rows.append(row)
            labels.append(bool(outcome["is_fraud"]))
        if rows:
            matrix = np.stack(rows)
            tested = self.model.predict(matrix)  # before the labels are learned
            for label, score in zip(labels, tested.tolist(), strict=True):
                self._tested.append((label, _log_loss(label, score)))
                self._auc.update(label, score)
            self.model.learn(matrix, labels)
        while len(self._learned_ids) > self.memory_rows:
            self._learned_ids.popitem(last=False)
        self._since_snapshot += len(rows)
        counts = LearnCounts(len(rows), unknown, duplicate)
        self._totals += counts
        return counts

    def progressive_metrics(self) -> dict[str, float]:
        """Log loss and ROC AUC of the test-before-learn scores of the last learned rows.

        NaN until there is something to measure (AUC needs both classes in the window).
        """
        tested = self._tested
        positives = sum(label for label, _ in tested)
        log_loss = sum(loss for _, loss in tested) / len(tested) if tested else math.nan
        both = 0 < positives < len(tested)
        return {
            "progressive_log_loss": log_loss,
            "progressive_auc": float(self._auc.get()) if both else math.nan,
        }

    def snapshot_due(self, now: float) -> bool:
        """Something was learned since the last snapshot, and enough time or rows have passed."""
        if self._since_snapshot == 0:
            return False
        elapsed = now - self._last_snapshot_at
        return self._since_snapshot >= self.snapshot_every_rows or elapsed >= self.snapshot_every_s

    def snapshot_bytes(self) -> bytes:
        """The model's artifact as of now (does not count as a snapshot: see ``mark_snapshot``)."""
        return self.model.to_bytes()

    def mark_snapshot(self, now: float, version: str) -> None:
        """Records that a snapshot was stored as ``version``: the cadence restarts from here."""
        self._since_snapshot = 0
        self._last_snapshot_at = now
        self.version = version

    def save_snapshot(self, store: ModelStore, now: float) -> StoredSnapshot:
        """Stores the model as the next version of ``model_name``, parent ``version``.

        The card is the parent's, plus an ``online`` section (rows learned, progressive
        metrics); its ``metrics`` stay the holdout metrics of the trained ancestor. On failure
        (ModelError, OSError) nothing is marked, so the next ``snapshot_due`` asks again.
        """
        data = self.snapshot_bytes()
        online = {
            "rows_learned": self.model.rows_learned,
            "rows_learned_since_parent": self._since_snapshot,
            "outcomes": {
                "learned": self._totals.learned,
                "unknown": self._totals.unknown,
                "duplicate": self._totals.duplicate,
            },
            "evicted": self._evicted,
            "memory_rows": self.memory_rows,
            "metric_window": METRIC_WINDOW,
            **{k: _json_float(v) for k, v in self.progressive_metrics().items()},
        }
        updates = {"kind": KIND, "online": online, "created_at": datetime.now(UTC).isoformat()}
        saved = store.save_snapshot(
            self.model_name, self.version, data, updates, artifact_file=ARTIFACT_FILE
        )
        self.mark_snapshot(now, saved.version)
        log.info(
            "snapshot of %s v%s saved as v%s (%d rows learned in all)",
            self.model_name,
            saved.parent_version,
            saved.version,
            self.model.rows_learned,
        )
        return saved


def snapshot_record(
    parent: ModelVersion,
    saved: StoredSnapshot,
    metrics: dict[str, float],
    *,
    stage: str = CANDIDATE,
) -> ModelVersion:
    """The registry record announcing a snapshot: the parent's, with the new artifact.

    Non-finite metrics are left out (the registry's metrics are plain floats).
    """
    now = now_ms()
    return replace(
        parent.staged(stage),  # also resets what is stage-specific (a canary's share)
        version=saved.version,
        kind=KIND,
        artifact_uri=saved.artifact.uri,
        sha256=saved.artifact.sha256,
        metrics={**parent.metrics, **{k: v for k, v in metrics.items() if math.isfinite(v)}},
        created_at=now,
        updated_at=now,
    )


def _log_loss(label: bool, score: float) -> float:
    p = min(max(score, 1e-7), 1.0 - 1e-7)
    return -math.log(p if label else 1.0 - p)


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None

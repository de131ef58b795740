"""Online learning from the monitor's join: test-then-train for a ``river`` model, snapshots.

The monitor joins each prediction with its outcome and publishes the pair once on
``<domain>.labelled``: the vector and the online features as the model was given them, and the
label. The scorer turns each record into an ``Example`` (the row in the model's input order,
or none when the record lacks an input) and ``learn`` *tests* it (scores it with the current
model, which has not seen its label) for the progressive metrics, then *learns* it. So every
progressive metric is of a score made before the label was learned. Any model learns from every
joined pair, whichever model served the prediction: the label is what teaches.

What is not learned, and counted instead:

- ``duplicate``: the event was already learned (the learned ids are kept, the most recent
  ``memory_rows``). The monitor publishes each pair once; a second monitor, or one started
  afresh, publishes them again.
- ``incomplete``: the record has no vector (it reached the monitor after the join's time-to-live)
  or lacks an input the model needs (the online store had no row for it when it was scored).

Where the learner is in ``<domain>.labelled`` (the next offset per partition) goes into each
snapshot's card with the model state it produced, so a scorer restarted on a snapshot resumes
exactly after the last pair that snapshot learned: nothing learned twice, nothing skipped.
What is learned after the last snapshot is learned again after a restart, from that snapshot.

No Kafka here: the scorer feeds examples in and exports the counts; snapshots go to the model
store as new versions, which the scorer may register. Not thread-safe by itself: call it from
one thread (``RiverModel`` has its own lock, so the scorer may predict on another).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from services.models.river import ARTIFACT_FILE, KIND, RiverModel
from services.models.runtimes import Matrix
from services.registry.artifacts import ModelStore, StoredSnapshot
from services.registry.versions import CANDIDATE, ModelVersion, now_ms

DEFAULT_MEMORY_ROWS = 200_000  # learned event ids kept to refuse a second learning
DEFAULT_SNAPSHOT_EVERY_S = 600.0
DEFAULT_SNAPSHOT_EVERY_ROWS = 50_000
METRIC_WINDOW = 5_000  # progressive metrics are over the last this many learned rows
ONLINE_KEY = "online"  # the card's section about online learning
POSITIONS_KEY = "labelled_positions"  # in it: next offset per partition of <domain>.labelled

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LearnCounts:
    """What became of labelled pairs: learned, already learned, lacking an input."""

    learned: int = 0
    duplicate: int = 0
    incomplete: int = 0

    def __add__(self, other: LearnCounts) -> LearnCounts:
        return LearnCounts(
            self.learned + other.learned,
            self.duplicate + other.duplicate,
            self.incomplete + other.incomplete,
        )


@dataclass(frozen=True, slots=True)
class Example:
    """One ``<domain>.labelled`` record as a learner takes it: where it was read (partition,
    offset), the event, the model's input row (None when the record lacks one) and the label."""

    partition: int
    offset: int
    event_id: str
    row: Matrix | None
    label: bool


class OnlineLearner:
    """Learns each labelled event once, tested first; knows where it is in the topic; says when
    to snapshot.

    ``model_name``/``version`` name the registered version the model was loaded from; after
    each saved snapshot ``version`` is the snapshot's, so snapshots form a chain of parents.
    ``positions``: the next offset to read per partition of ``<domain>.labelled``.
    Times (``now``) are seconds on any monotonic clock, the same one for every call.
    """

    def __init__(
        self,
        model: RiverModel,
        *,
        model_name: str,
        version: str,
        now: float,
        positions: Mapping[int, int] | None = None,
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
        self.positions: dict[int, int] = dict(positions or {})
        self._learned_ids: OrderedDict[str, None] = OrderedDict()
        self._totals = LearnCounts()
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
    def rows_since_snapshot(self) -> int:
        return self._since_snapshot

    def passed(self, partition: int, offset: int) -> None:
        """The record at ``offset`` was read (learned or not): resume after it."""
        self.positions[partition] = max(self.positions.get(partition, 0), offset + 1)

    def learn(self, examples: Iterable[Example]) -> LearnCounts:
        """Test-then-train on the examples, in the order given; moves ``positions`` past them."""
        width = len(self.model.feature_names)
        rows: list[Matrix] = []
        labels: list[bool] = []
        duplicate = incomplete = 0
        for example in examples:
            self.passed(example.partition, example.offset)
            if example.row is None:
                incomplete += 1
                continue
            if example.row.shape != (width,):
                raise ValueError(f"expected rows of {width} inputs, got shape {example.row.shape}")
            if example.event_id in self._learned_ids:
                duplicate += 1
                continue
            self._learned_ids[example.event_id] = None
            rows.append(example.row)
            labels.append(example.label)
        if rows:
            matrix = np.stack(rows).astype(np.float32, copy=False)
            tested = self.model.predict(matrix)  # before the labels are learned
            for label, score in zip(labels, tested.tolist(), strict=True):
                self._tested.append((label, _log_loss(label, score)))
                self._auc.update(label, score)
            self.model.learn(matrix, labels)
        while len(self._learned_ids) > self.memory_rows:
            self._learned_ids.popitem(last=False)
        self._since_snapshot += len(rows)
        counts = LearnCounts(len(rows), duplicate, incomplete)
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
            "labelled": {
                "learned": self._totals.learned,
                "duplicate": self._totals.duplicate,
                "incomplete": self._totals.incomplete,
            },
            # Where to resume in <domain>.labelled to go on from this state (see the module doc).
            POSITIONS_KEY: {str(p): offset for p, offset in sorted(self.positions.items())},
            "memory_rows": self.memory_rows,
            "metric_window": METRIC_WINDOW,
            **{k: _json_float(v) for k, v in self.progressive_metrics().items()},
        }
        updates = {"kind": KIND, ONLINE_KEY: online, "created_at": datetime.now(UTC).isoformat()}
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


def resume_positions(card: Mapping[str, Any]) -> dict[int, int]:
    """Where a version's snapshot left ``<domain>.labelled`` (empty for a trained version)."""
    online = card.get(ONLINE_KEY)
    positions = online.get(POSITIONS_KEY) if isinstance(online, Mapping) else None
    if not isinstance(positions, Mapping):
        return {}
    return {int(p): int(offset) for p, offset in positions.items()}


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

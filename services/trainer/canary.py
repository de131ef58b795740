"""Watching a canary's live figures on ``<domain>.monitoring`` and deciding its fate.

The monitor publishes, per model version and served_by, its figures since the version started
serving (scope ``total``, segment ``all``). The canary's totals cover exactly its trial. The
champion's cover its whole life, so its figures over the trial are its totals now minus its
first totals published after the canary started: both are then judged on the same stretch of
time, on the keys each was given by the scorer's sticky hash.

Accuracy and log loss are sums over pairs, so they subtract exactly; AUC does not, and is not
used here (the gate judged it before the canary started).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition

from services.core.declarations import Domain, Retraining
from services.core.errors import StackError
from services.core.kafka import background_consumer_config
from services.core.serde import CodecFactory, Record
from services.core.settings import StackSettings

ALL, TOTAL = "all", "total"  # the monitor's segment and scope names (schemas/monitoring.avsc)
CANARY, CHAMPION = "canary", "champion"
METADATA_TIMEOUT_S = 10.0
SEEK_SLACK_MS = 60_000  # record timestamps vs snapshot_at: seek a little earlier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Totals:
    joined: int = 0
    correct: float = 0.0
    logloss_sum: float = 0.0

    @classmethod
    def of(cls, snapshot: Record) -> Totals:
        joined = int(snapshot["joined"])
        accuracy, logloss = snapshot["accuracy"], snapshot["logloss"]
        return cls(
            joined,
            0.0 if accuracy is None else accuracy * joined,
            0.0 if logloss is None else logloss * joined,
        )

    def minus(self, earlier: Totals) -> Totals:
        return Totals(
            self.joined - earlier.joined,
            self.correct - earlier.correct,
            self.logloss_sum - earlier.logloss_sum,
        )

    @property
    def accuracy(self) -> float:
        return self.correct / self.joined if self.joined else 0.0

    @property
    def logloss(self) -> float:
        return self.logloss_sum / self.joined if self.joined else 0.0


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str
    figures: dict[str, float]


def judge_canary(rules: Retraining, canary: Totals, champion: Totals) -> Verdict | None:
    """Pure: None while either side has fewer than ``canary_min_pairs`` joined outcomes; then
    promote unless the canary's accuracy is below the champion's by more than the margin."""
    if canary.joined < rules.canary_min_pairs or champion.joined < rules.canary_min_pairs:
        return None
    figures = {
        "canary_joined": float(canary.joined),
        "canary_accuracy": canary.accuracy,
        "canary_logloss": canary.logloss,
        "champion_joined": float(champion.joined),
        "champion_accuracy": champion.accuracy,
        "champion_logloss": champion.logloss,
    }
    gap = canary.accuracy - champion.accuracy
    worse = gap < -rules.canary_accuracy_margin
    reason = (
        f"canary accuracy {canary.accuracy:.4f} on {canary.joined} outcomes vs the champion's "
        f"{champion.accuracy:.4f} on {champion.joined} over the same time: {gap:+.4f}, "
        f"{'worse than' if worse else 'within'} the allowed {rules.canary_accuracy_margin:.4f}"
    )
    return Verdict(not worse, reason, figures)


class CanaryWatch:
    """Reads the monitor's snapshots from when the canary started."""

    def __init__(
        self,
        settings: StackSettings,
        domain: Domain,
        codecs: CodecFactory,
        *,
        canary: str,
        champion: str,
        started_ms: int,
    ) -> None:
        self._topic = domain.topics.monitoring
        self._codec = codecs.for_topic(self._topic)
        self._canary, self._champion, self._started = canary, champion, started_ms
        self.canary = Totals()
        self._champion_first: Totals | None = None
        self._champion_now = Totals()
        self._consumer = Consumer(background_consumer_config(settings, None))
        try:
            partitions = self._consumer.list_topics(self._topic, timeout=METADATA_TIMEOUT_S)
            wanted = [
                TopicPartition(self._topic, p, started_ms - SEEK_SLACK_MS)
                for p in partitions.topics[self._topic].partitions
            ]
            positions = self._consumer.offsets_for_times(wanted, timeout=METADATA_TIMEOUT_S)
        except KafkaException as exc:
            self._consumer.close()
            raise StackError(f"cannot read {self._topic}: {exc}") from exc
        # A partition with nothing since then reports -1 (its end): read from the end.
        self._consumer.assign(positions)

    @property
    def champion(self) -> Totals:
        """The champion's totals since its first snapshot after the canary started."""
        first = self._champion_first or self._champion_now
        return self._champion_now.minus(first)

    def poll(self) -> None:
        for message in self._consumer.consume(1000, 0.5):
            value = message.value()
            if message.error() is not None or value is None:
                continue
            try:
                snapshot = self._codec.decode(value)
            except Exception as exc:  # a record we cannot read is not a figure: say so, go on
                log.warning("undecodable %s record: %s", self._topic, exc)
                continue
            self._take(snapshot)

    def _take(self, snapshot: Record) -> None:
        if snapshot["segment"] != ALL or str(snapshot["scope"]) != TOTAL:
            return
        if int(snapshot["snapshot_at"]) < self._started:
            return
        version, served_by = snapshot["model_version"], str(snapshot["served_by"])
        if (version, served_by) == (self._canary, CANARY):
            self.canary = Totals.of(snapshot)
        elif (version, served_by) == (self._champion, CHAMPION):
            self._champion_now = Totals.of(snapshot)
            if self._champion_first is None:
                self._champion_first = self._champion_now

    def close(self) -> None:
        self._consumer.close()

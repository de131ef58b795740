"""One retraining request answered, step by step (docs/trainer.md):

wait for enough labelled pairs after the change point → build the dataset from
``<domain>.labelled`` → train and register a candidate → gate it against the champion → put it on
canary → watch the live figures → promote it, or roll it back.

Every step is told on ``ml.models.events`` (``journal.py``) before the next begins. A stop
request (SIGTERM) leaves a waiting step where it is; the restarted trainer resumes from the
journal and the registry (``service.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.core.declarations import Domain
from services.core.errors import ConfigError, ModelError, StackError
from services.core.serde import CodecFactory, Record
from services.registry.artifacts import ModelStore
from services.registry.stages import end_trial, promote, stage_trial
from services.registry.versions import CANARY, CANDIDATE, CHAMPION, ModelVersion, read_registry
from services.trainer.canary import CanaryWatch, judge_canary
from services.trainer.from_history import (
    Fit,
    HistoryTraining,
    fit_on_history,
    holdout_start,
    save_fit,
)
from services.trainer.gate import GOLDEN, HOLDOUT, aucs, judge
from services.trainer.golden import GoldenSet, load_golden
from services.trainer.history import Bound, read_history
from services.trainer.journal import Journal, Step, Told
from services.trainer.metrics import TrainerMetrics
from services.trainer.publish import register
from services.trainer.settings import TrainerSettings
from services.trainer.waiting import LabelledCount

PROGRESS_EVERY_S = 10.0
LATEST_EVENT = "event_time_max_ms"  # a dataset_built figure: its latest event time
REGISTRY_CHECK_EVERY_S = 5.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """A record of ``ml.retrain.requests``."""

    request_id: str
    domain: str
    model_version: str
    reason: str
    change_point: int | None
    requested_at: int

    @classmethod
    def of(cls, record: Record) -> Request:
        point = record["change_point"]
        return cls(
            str(record["request_id"]),
            str(record["domain"]),
            str(record["model_version"]),
            str(record["reason"]),
            None if point is None else int(point),
            int(record["requested_at"]),
        )

    @property
    def since_ms(self) -> int:
        """Train on what came after the change point (after the request, when none is known)."""
        return self.requested_at if self.change_point is None else self.change_point


@dataclass
class Context:
    """What every retrain of one domain works with."""

    settings: TrainerSettings
    domain: Domain
    codecs: CodecFactory
    journal: Journal
    metrics: TrainerMetrics
    stopping: Callable[[], bool]
    told: list[Told] = field(default_factory=list)  # every step, read back at start and since

    @property
    def store(self) -> ModelStore:
        return ModelStore(self.settings.models_dir)

    def champion(self) -> ModelVersion | None:
        return read_registry(self.settings, self.codecs).champion(self.domain.model_name)

    def version(self, version: str) -> ModelVersion | None:
        view = read_registry(self.settings, self.codecs)
        return next(
            (v for v in view.versions(self.domain.model_name) if v.version == version), None
        )


class Retrain:
    """Answers one request; each public method returns the step that ended it, or None when
    the trainer was asked to stop first (the request stays open, to be resumed)."""

    def __init__(self, context: Context, request: Request) -> None:
        self._c = context
        self._request = request
        self._rules = context.domain.retraining

    def tell(self, step: Step, version: str, reason: str, **fields: Any) -> Told:
        told = self._c.journal.tell(step, version, self._request.request_id, reason, **fields)
        self._c.told.append(told)
        self._c.metrics.steps.labels(self._c.domain.name, step.value).inc()
        log.info("%s %s@%s: %s", step.value, self._c.domain.model_name, version, reason)
        return told

    def run(self, resumed_from: Step | None = None) -> Told | None:
        request = self._request
        champion = self._c.champion()
        note = f" (resumed: a restart found it at {resumed_from.value})" if resumed_from else ""
        role = CHAMPION if champion and champion.version == request.model_version else CANDIDATE
        self.tell(Step.REQUESTED, request.model_version, request.reason + note, role=role)
        until = self._wait_for_labelled()
        if until is None or isinstance(until, Told):
            return until
        try:
            golden = load_golden(self._c.settings.features_dir, self._c.domain)
            done = self._train(until, role, golden)
        except (ConfigError, StackError) as exc:
            return self.tell(Step.ABANDONED, request.model_version, str(exc), role=role)
        register(self._c.settings, done.trained)
        candidate = self._c.version(done.trained.version)
        if candidate is None:
            raise StackError(f"version {done.trained.version} was registered but is not read back")
        holdout = done.trained.metrics
        self.tell(
            Step.TRAINED,
            candidate.version,
            f"trained on {len(done.history.dataset) - len(done.holdout)} rows, recent holdout "
            f"of {len(done.holdout)}: AUC {holdout['auc']:.4f}; "
            + "; ".join(c["summary"] for c in done.compared),
            role=CANDIDATE,
            sha256=candidate.sha256,
            dataset_id=candidate.dataset_id,
            figures={k: v for k, v in holdout.items() if isinstance(v, float)},
        )
        return self._gate(candidate, done.holdout, golden, champion)

    def _train(self, until: dict[int, int], role: str, golden: GoldenSet | None) -> HistoryTraining:
        """Fits on the pairs since the change point and, when the declaration allows, on those
        with some history before it too; saves the one better on the same recent holdout (the
        latest rows after the change point), the other's figures in its card."""
        request, settings, domain = self._request, self._c.settings, self._c.domain
        started = time.perf_counter()
        before = self._rules.before_change
        windows = [(request.since_ms, "since the change point")]
        if before.total_seconds() > 0:
            since = request.since_ms - int(before.total_seconds() * 1000)
            windows.append((since, f"also {before} before the change point"))
        fits: list[tuple[Fit, str]] = []
        cut_ms: int | None = None
        for since_ms, what in windows:
            history = read_history(
                settings, domain, Bound(time_ms=since_ms), Bound(offsets=until), progress=log.info
            )
            if fits and len(history.dataset) == len(fits[0][0].history.dataset):
                break  # nothing before the change point: the same dataset
            manifest = history.manifest
            skipped = {f"skipped_{k}": float(v) for k, v in manifest["skipped"].items()}
            self.tell(
                Step.DATASET_BUILT,
                request.model_version,
                f"{manifest['rows']} rows {what} (event time from {_iso(since_ms)}) in "
                f"{manifest['topic']} up to offsets {until}",
                role=role,
                dataset_id=history.dataset.dataset_id,
                figures={
                    "rows": float(manifest["rows"]),
                    LATEST_EVENT: float(manifest["event_time_max_ms"] or 0),
                    **skipped,
                },
            )
            cut_ms = holdout_start(history) if cut_ms is None else cut_ms
            fit = fit_on_history(
                history,
                seed=settings.trainer_seed,
                epochs=settings.trainer_epochs,
                holdout_from_ms=cut_ms,
                shuffle_labels=settings.trainer_shuffle_labels,
            )
            fits.append((fit, what))
        best, _ = max(fits, key=lambda f: f[0].metrics["auc"])  # the first on a tie
        compared = [
            {
                "dataset_id": fit.history.dataset.dataset_id,
                "rows": len(fit.history.dataset),
                "holdout_auc": fit.metrics["auc"],
                "chosen": fit is best,
                "summary": f"{what}: {len(fit.history.dataset)} rows, recent-holdout AUC "
                f"{fit.metrics['auc']:.4f}{' (chosen)' if fit is best else ''}",
            }
            for fit, what in fits
        ]
        return save_fit(
            settings,
            domain,
            best,
            seed=settings.trainer_seed,
            epochs=settings.trainer_epochs,
            golden=golden,
            started=started,
            compared=compared,
        )

    def _wait_for_labelled(self) -> dict[int, int] | Told | None:
        """The labelled topic's ends once ``min_labelled`` pairs after the change point exist;
        the abandoned step when they do not come in time; None when stopping."""
        request, rules = self._request, self._rules
        counter = LabelledCount(self._c.settings, self._c.domain, self._c.codecs, request.since_ms)
        gauge = self._c.metrics.labelled_waiting.labels(self._c.domain.name)
        deadline = time.monotonic() + rules.max_wait.total_seconds()
        said = time.monotonic()
        try:
            while (count := counter.poll()) < rules.min_labelled:
                gauge.set(count)
                if self._c.stopping():
                    return None
                if time.monotonic() > deadline:
                    return self.tell(
                        Step.ABANDONED,
                        request.model_version,
                        f"only {count} of the {rules.min_labelled} labelled pairs needed after "
                        f"{_iso(request.since_ms)} came within {rules.max_wait}",
                        role=CHAMPION,
                    )
                if time.monotonic() - said > PROGRESS_EVERY_S:
                    said = time.monotonic()
                    log.info("waiting: %d of %d labelled pairs", count, rules.min_labelled)
                time.sleep(self._c.settings.trainer_poll_s)
            gauge.set(count)
            return counter.ends()
        finally:
            counter.close()

    def _gate(
        self,
        candidate: ModelVersion,
        holdout: Any,
        golden: GoldenSet | None,
        champion: ModelVersion | None,
    ) -> Told | None:
        sets = {HOLDOUT: holdout, **({GOLDEN: golden.dataset} if golden else {})}
        store = self._c.store
        candidate_aucs = aucs(store, candidate, sets)
        champion_aucs = None
        if champion is not None:
            try:
                champion_aucs = aucs(store, champion, sets)
            except ModelError as exc:  # a champion that cannot be run is not a bar to clear
                log.error("the champion %s cannot be scored for the gate: %s", champion.key, exc)
        result = judge(self._rules.gate, candidate_aucs, champion_aucs)
        store.update_card(
            candidate.model_name,
            candidate.version,
            {
                "gate": {
                    **result.to_card(),
                    "champion": champion.version if champion else None,
                    "golden_set": golden.version if golden else None,
                    "rules": vars(self._rules.gate),
                }
            },
        )
        step = Step.GATE_PASSED if result.passed else Step.GATE_FAILED
        told = self.tell(
            step,
            candidate.version,
            "; ".join(result.reasons),
            role=CANDIDATE,
            sha256=candidate.sha256,
            dataset_id=candidate.dataset_id,
            figures=result.figures,
        )
        if not result.passed:
            return told
        return self.start_canary(candidate, champion)

    def start_canary(self, candidate: ModelVersion, champion: ModelVersion | None) -> Told | None:
        settings, codecs, model = self._c.settings, self._c.codecs, candidate.model_name
        fields = {"sha256": candidate.sha256, "dataset_id": candidate.dataset_id}
        if champion is None:
            promote(settings, codecs, model, candidate.version)
            return self.tell(
                Step.PROMOTED,
                candidate.version,
                "no champion served: the gate's floor was the bar, there is nothing to compare "
                "a canary with",
                role=CHAMPION,
                **fields,
            )
        share = self._rules.canary_share
        stage_trial(settings, codecs, model, candidate.version, CANARY, share)
        told = self.tell(
            Step.CANARY_STARTED,
            candidate.version,
            f"scoring {share:.0%} of the keys beside the champion {champion.version}",
            role=CANARY,
            figures={"traffic_share": share},
            **fields,
        )
        return self.watch(candidate, champion.version, told.at)

    def watch(self, candidate: ModelVersion, champion: str, started_ms: int) -> Told | None:
        """Until the canary's and the champion's live figures decide, or time runs out."""
        rules, version = self._rules, candidate.version
        fields = {"sha256": candidate.sha256, "dataset_id": candidate.dataset_id}
        deadline_ms = started_ms + int(rules.canary_max_wait.total_seconds() * 1000)
        watch = CanaryWatch(
            self._c.settings,
            self._c.domain,
            self._c.codecs,
            canary=version,
            champion=champion,
            started_ms=started_ms,
        )
        checked = said = time.monotonic()
        try:
            while not self._c.stopping():
                watch.poll()
                verdict = judge_canary(rules, watch.canary, watch.champion)
                if verdict is not None:
                    return self._decide(candidate, verdict.promote, verdict.reason, verdict.figures)
                if time.time() * 1000 > deadline_ms:
                    reason = (
                        f"only {watch.canary.joined} canary and {watch.champion.joined} champion "
                        f"outcomes of the {rules.canary_min_pairs} needed came within "
                        f"{rules.canary_max_wait}"
                    )
                    return self._decide(candidate, False, reason, {})
                if time.monotonic() - checked > REGISTRY_CHECK_EVERY_S:
                    checked = time.monotonic()
                    now = self._c.version(version)
                    if now is None or now.stage != CANARY:
                        stage = "gone" if now is None else now.stage
                        return self.tell(
                            Step.ABANDONED,
                            version,
                            f"the canary was ended outside the trainer (now {stage})",
                            role=stage,
                            **fields,
                        )
                if time.monotonic() - said > PROGRESS_EVERY_S:
                    said = time.monotonic()
                    log.info(
                        "canary %s: %d outcomes (accuracy %.4f); champion %d (%.4f)",
                        version,
                        watch.canary.joined,
                        watch.canary.accuracy,
                        watch.champion.joined,
                        watch.champion.accuracy,
                    )
                time.sleep(self._c.settings.trainer_poll_s)
            return None
        finally:
            watch.close()

    def _decide(
        self, candidate: ModelVersion, promote_it: bool, reason: str, figures: dict[str, float]
    ) -> Told:
        settings, codecs, model = self._c.settings, self._c.codecs, candidate.model_name
        fields: dict[str, Any] = {
            "sha256": candidate.sha256,
            "dataset_id": candidate.dataset_id,
            "figures": figures,
        }
        if promote_it:
            promote(settings, codecs, model, candidate.version)
            return self.tell(Step.PROMOTED, candidate.version, reason, role=CHAMPION, **fields)
        end_trial(settings, codecs, model, CANARY)
        return self.tell(Step.ROLLED_BACK, candidate.version, reason, role=CANDIDATE, **fields)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")

"""``streamml run trainer``: answers ``ml.retrain.requests`` for one domain, one at a time.

A request is committed on ``ml.retrain.requests`` only once its retrain has ended (promoted,
rolled back, gate failed, abandoned) or it was skipped, so a trainer killed in any step gets
the request again on restart. What was already done is read back from ``ml.models.events``
and the registry (docs/trainer.md, "Crashes"):

- the journal already ends the request: it is committed, nothing is redone;
- the candidate is (or was) on canary: the watch resumes, or the registry's answer (promoted,
  or ended) is told;
- an earlier step: the retrain starts again from the beginning (a dataset read from the same
  offsets gets the same id; a candidate trained before the crash stays a candidate).

One drift, one retrain: a request about a version that is not the serving champion is skipped,
and so is one made before the last retrain ended or within the declared cooldown after it.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from confluent_kafka import Consumer, KafkaException, Message
from prometheus_client import CollectorRegistry

from services.core.declarations import Domain
from services.core.errors import ConfigError, ModelError
from services.core.kafka import consumer_config
from services.core.lifecycle import StoppableLoop
from services.core.serde import CodecFactory
from services.core.topics import RETRAIN_REQUESTS
from services.registry.versions import CANARY, CANDIDATE, CHAMPION
from services.trainer.journal import FINAL, JUDGED, Journal, Step, Told, read_journal
from services.trainer.journal import trainer_steps as steps_of
from services.trainer.metrics import TrainerMetrics
from services.trainer.retrain import LATEST_EVENT, Context, Request, Retrain
from services.trainer.settings import TrainerSettings

log = logging.getLogger(__name__)

# How a request was answered (the trainer_requests metric's label).
RETRAINED, SKIPPED, ALREADY_ANSWERED, OTHER_DOMAIN = (
    "retrained",
    "skipped",
    "already_answered",
    "other_domain",
)


class Trainer(StoppableLoop):
    stopping = "leaving the open retrain where it is (a restart resumes it)"

    def __init__(
        self,
        settings: TrainerSettings,
        domain: Domain,
        codecs: CodecFactory,
        registry: CollectorRegistry,
    ) -> None:
        self._settings, self._domain, self._codecs = settings, domain, codecs
        self._metrics = TrainerMetrics.create(registry)
        self._journal = Journal(settings, codecs, domain.model_name, settings.trainer_instance)
        self._context = Context(
            settings, domain, codecs, self._journal, self._metrics, lambda: not self._running
        )

    def run(self) -> None:
        self._context.told[:] = steps_of(
            read_journal(self._settings, self._codecs, self._domain.model_name)
        )
        group = f"{self._settings.trainer_app_id}.{self._domain.name}"
        # A retrain takes minutes between polls; the group must not give the request away.
        consumer = Consumer(
            consumer_config(self._settings, group, **{"max.poll.interval.ms": 86_400_000})
        )
        codec = self._codecs.for_topic(RETRAIN_REQUESTS)
        consumer.subscribe([RETRAIN_REQUESTS])
        log.info(
            "trainer for %s: answering %s (group %s)", self._domain.name, RETRAIN_REQUESTS, group
        )
        try:
            while self._running:
                message = consumer.poll(self._settings.trainer_poll_s)
                value = None if message is None else message.value()
                if message is None or message.error() is not None or value is None:
                    continue
                try:
                    request = Request.of(codec.decode(value))
                except Exception as exc:  # unreadable: nothing to answer; say so and go on
                    log.error("a %s record cannot be read, skipped: %s", RETRAIN_REQUESTS, exc)
                    self._commit(consumer, message)
                    continue
                answer = self._answer(request)
                if answer is None:
                    break  # stopping mid-retrain: leave the request uncommitted
                self._metrics.requests.labels(self._domain.name, answer).inc()
                self._commit(consumer, message)
        finally:
            consumer.close()
            self._journal.close()

    def _answer(self, request: Request) -> str | None:
        if request.domain != self._domain.name:
            return OTHER_DOMAIN
        told = [s for s in self._context.told if s.request_id == request.request_id]
        if told and told[-1].step in FINAL:
            return ALREADY_ANSWERED
        self._metrics.busy.labels(self._domain.name).set(1)
        try:
            retrain = Retrain(self._context, request)
            if told:
                ended = self._resume(retrain, told[-1])
            else:
                skip = self._why_skip(request)
                if skip is not None:
                    retrain.tell(Step.SKIPPED, request.model_version, skip, role="")
                    return SKIPPED
                ended = retrain.run()
        except (ModelError, ConfigError, ValueError) as exc:
            # A request that cannot be answered must not stop every later one (a restart
            # would meet it again): it is abandoned, with the error as its reason.
            log.exception("request %s cannot be answered", request.request_id)
            ended = retrain.tell(Step.ABANDONED, request.model_version, f"error: {exc}", role="")
        finally:
            self._metrics.busy.labels(self._domain.name).set(0)
        if ended is None:
            return None
        return RETRAINED

    def _resume(self, retrain: Retrain, last: Told) -> Told | None:
        """A request the journal shows begun and not ended: pick it up where the registry is."""
        version = self._context.version(last.version)
        if last.step not in (Step.GATE_PASSED, Step.CANARY_STARTED) or version is None:
            log.info("request %s starts again (a restart found it at %s)", last.request_id, last)
            return retrain.run(resumed_from=last.step)
        if version.stage == CHAMPION:
            return retrain.tell(
                Step.PROMOTED,
                version.version,
                "a restart found it promoted (the trainer stopped before telling)",
                role=CHAMPION,
                sha256=version.sha256,
                dataset_id=version.dataset_id,
            )
        staged = version.stage in (CANDIDATE, CANARY)
        if last.step is Step.GATE_PASSED and staged:  # passed, perhaps staged, not yet told
            return retrain.start_canary(version, self._context.champion())
        if last.step is Step.CANARY_STARTED and version.stage == CANARY:
            champion = self._context.champion()
            if champion is not None:
                log.info("resuming the watch of canary %s", version.key)
                return retrain.watch(version, champion.version, last.at)
        return retrain.tell(
            Step.ABANDONED,
            version.version,
            f"a restart found its trial ended outside the trainer (now {version.stage})",
            role=version.stage,
        )

    def _why_skip(self, request: Request) -> str | None:
        champion = self._context.champion()
        return why_skip(
            request,
            self._context.told,
            self._domain.retraining.cooldown,
            None if champion is None else champion.version,
        )

    @staticmethod
    def _commit(consumer: Consumer, message: Message) -> None:
        try:
            consumer.commit(message=message, asynchronous=False)
        except KafkaException as exc:  # redelivered later: the journal says it was answered
            log.warning("could not commit a %s offset: %s", RETRAIN_REQUESTS, exc)


def why_skip(
    request: Request, told: list[Told], cooldown: timedelta, champion: str | None
) -> str | None:
    """Why ``request`` is not answered (None: it is): one drift, one retrain.

    Skipped: a request made before the last judged retrain ended or within ``cooldown`` after
    it, and one about a version that is not the serving ``champion``. After a failed gate the
    drift is still there, so a request whose change point is later than every event the
    failed candidate learned from (it brings what that one could not have seen) is answered
    despite the cooldown."""
    judged = [s for s in told if s.step in JUDGED]
    if judged and not _news_after_failure(judged[-1], request, told):
        last = judged[-1]
        if request.requested_at < last.at + int(cooldown.total_seconds() * 1000):
            return (
                f"answered by retrain {last.request_id}, which ended ({last.step.value} "
                f"{last.version}) within the cooldown of {cooldown} of this request"
            )
    if champion is None or champion != request.model_version:
        serving = "no champion" if champion is None else f"the champion is {champion}"
        return f"it is about version {request.model_version}, and {serving}"
    return None


def _news_after_failure(last: Told, request: Request, told: list[Told]) -> bool:
    if last.step is not Step.GATE_FAILED or request.change_point is None:
        return False
    built = [
        s.figures.get(LATEST_EVENT, 0.0)
        for s in told
        if s.request_id == last.request_id and s.step is Step.DATASET_BUILT
    ]
    return bool(built) and request.change_point > max(built)

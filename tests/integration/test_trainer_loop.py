"""The loop closes by itself, on real parts: featurizer, scorer, monitor and trainer running as
services against the session's Kafka and Redis, nobody touching them.

The domain is ``loop``, the payments declaration under another name (its own topics, model and
registry entries, so no other test's records or champion are in the way), with retraining
rules sized for a test: fewer labelled pairs before training, half the keys on canary.

1. The champion serves a stream whose outcomes follow the generator's rule; then card testing
   appears (tiny payments that are fraud, ``--drift pattern@N``). The monitor sees the errors
   jump and asks for retraining; the trainer waits for enough labelled pairs after the change
   point, trains, gates, canaries and promotes; the new champion's accuracy on the last events
   is back within 2 points of the old champion's before the change. One drift, one retrain.
   The promoted version's card leads to its dataset, and the same offsets give the same id.
2. A trainer whose candidates learn shuffled labels, killed while waiting and restarted: the
   restart resumes the request, the gate stops the candidate, the champion never stops serving.
3. A trainer killed while it watched a canary that is worse live: the restart resumes the watch
   and rolls the canary back.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from services.core.domains import load_domain
from services.core.kafka import create_topics, topic_specs
from services.core.paths import default_features_dir, default_schemas_dir
from services.core.serde import codecs_for
from services.core.settings import StackSettings
from services.featurestore.store import apply_declarations
from services.producer.drift import PATTERN, Drift, Drifts
from services.producer.publish import Outcomes, publish_synthetic
from services.registry.artifacts import ModelStore
from services.registry.stages import promote, stage_trial
from services.registry.versions import CHAMPION, read_registry
from services.schematools.schemagen import generate
from services.stack.services import ServiceProcess, service_env
from services.trainer.history import Bound, read_history
from services.trainer.journal import Journal, Step
from services.trainer.publish import train_and_register
from tests.integration.helpers import TopicReader, publish
from tests.outside import OutsideCodec

pytestmark = pytest.mark.integration

MODEL = "loop-fraud"
RATE = 400.0
CHANGE_AT = 4_000  # events after the warm-up before card testing appears
AFTER_PROMOTION_S = 8.0  # events served by the new champion, to measure it on
LOOP_TIMEOUT_S = 240.0
RETRAINING = (
    'Retraining(golden_set="golden/payments/v1", min_labelled=1_500, canary_share=0.5, '
    "canary_min_pairs=300, cooldown=timedelta(seconds=10), max_wait=timedelta(minutes=4), "
    "before_change=timedelta(minutes=2), "
    "canary_max_wait=timedelta(minutes=4))"
)
EVENTS = OutsideCodec("ml.models.events.avsc")
REQUESTS = OutsideCodec("ml.retrain.requests.avsc")


@dataclass
class Loop:
    settings: StackSettings
    schemas: Path
    logs: Path
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    stream: Stream | None = None  # from the warm-up on

    def start(self, name: str, **env: str) -> None:
        args = () if name == "featurizer" else ("--domain", "loop")
        variables = service_env(self.settings, {"STREAMML_MONITOR_SNAPSHOT_EVERY_S": "1", **env})
        log = self.logs / f"loop-{name}.log"
        self.services[name] = ServiceProcess(name, variables, log, *args)

    def codec(self, subject: str) -> OutsideCodec:
        return OutsideCodec(f"{subject}.avsc", self.schemas)


def write_loop_domain(features: Path, schemas: Path) -> None:
    """The payments declaration as domain ``loop``, its schemas generated beside the platform's."""
    source = default_features_dir()
    for name in ("feature_store.yaml", "repo.py"):
        shutil.copy(source / name, features / name)
    shutil.copytree(source / "golden", features / "golden")
    (features / "domains").mkdir()
    text = (source / "domains" / "payments.py").read_text()
    declared = 'retraining=Retraining(golden_set="golden/payments/v1")'
    assert declared in text
    text = text.replace('name="payments"', 'name="loop"').replace("payments-fraud", MODEL)
    # A concept drift still there 30 s after its alarm asks again: the first retrain may come
    # too early to learn the new pattern, and the loop must not wait on a detector that sees
    # changes, not levels.
    monitoring = "monitoring=Monitoring("
    assert monitoring in text
    text = text.replace(
        monitoring, f"{monitoring}concept=ConceptDrift(persists_for=timedelta(seconds=30)), "
    ).replace("    Monitoring,\n", "    ConceptDrift,\n    Monitoring,\n")
    (features / "domains" / "loop.py").write_text(
        text.replace(declared, f"retraining={RETRAINING}")
    )
    for path in default_schemas_dir().glob("*.avsc"):
        if not path.name.startswith("payments."):
            shutil.copy(path, schemas / path.name)
    for subject in ("transactions", "outcomes"):
        shutil.copy(
            default_schemas_dir() / f"payments.{subject}.avsc", schemas / f"loop.{subject}.avsc"
        )
    domain = load_domain(features, "loop")
    assert generate([domain], schemas, check=False, out=sys.stderr) == 0


@pytest.fixture(scope="module")
def loop(
    stack: StackSettings, tmp_path_factory: pytest.TempPathFactory, logs_dir: Path
) -> Iterator[Loop]:
    features, schemas = (
        tmp_path_factory.mktemp("loop-features"),
        tmp_path_factory.mktemp("loop-schemas"),
    )
    write_loop_domain(features, schemas)
    settings = stack.model_copy(
        update={
            "home": tmp_path_factory.mktemp("loop-home"),
            "features_dir": features,
            "schemas_dir": schemas,
        }
    )
    domain = load_domain(features, "loop")
    create_topics(settings, topic_specs(settings, [domain]))
    apply_declarations(settings, [domain])
    version = train_and_register(settings, domain, seed=7, events=20_000)
    promote(settings, codecs_for(settings), MODEL, version)
    running = Loop(settings, schemas, logs_dir)
    try:
        for name in ("featurizer", "scorer", "monitor", "trainer"):
            running.start(name)
        running.stream = warm_up(running)
        yield running
    finally:
        if running.stream is not None:
            running.stream.stop()
        for service in running.services.values():
            if service.process.poll() is None:
                service.stop()


class Stream:
    """Synthetic payments with their outcomes, paced, in a thread, until stopped."""

    def __init__(self, loop: Loop, *, seed: int, drift: str | None) -> None:
        domain = load_domain(loop.settings.features_dir, "loop")
        codecs = codecs_for(loop.settings)
        self._stop = threading.Event()
        self.event_ids: list[str] = []
        self.drifts = Drifts([Drift.parse(drift)] if drift else [], seed)

        def run() -> None:
            self.event_ids = publish_synthetic(
                loop.settings,
                domain,
                codecs.for_topic(domain.topics.events),
                count=10_000_000,
                rate=RATE,
                seed=seed,
                outcomes=Outcomes(codecs.for_topic(domain.topics.outcomes), 0.5),
                drifts=self.drifts,
                stop=self._stop.is_set,
            )

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(60)
        return self.event_ids


def warm_up(loop: Loop) -> Stream:
    """Starts the stream and waits until the champion scores nearly every event (the services
    are assigned and serving): a drift before that would change nothing the monitor watches on
    the champion."""
    codec = loop.codec("loop.predictions")
    reader = TopicReader(loop.settings, "loop.predictions")
    stream = Stream(loop, seed=10, drift=None)

    def warm(values: list[bytes]) -> bool:
        last = [codec.decode(v)["served_by"] for v in values[-400:]]
        return len(last) == 400 and last.count("champion") >= 380

    try:
        reader.read_until(warm, 120)
        assert warm(reader.values), f"the champion does not serve; see {loop.logs}"
    except BaseException:
        stream.stop()
        raise
    finally:
        reader.close()
    return stream


class Steps:
    """The trainer's steps for the loop model, read from ml.models.events as anyone would."""

    def __init__(self, settings: StackSettings) -> None:
        self._reader = TopicReader(settings, "ml.models.events")

    def close(self) -> None:
        self._reader.close()

    def all(self) -> list[dict[str, Any]]:
        decoded = (EVENTS.decode(v) for v in self._reader.values)
        return [r for r in decoded if r["model_name"] == MODEL and r["step"] != "load"]

    def wait_for(
        self, check: Callable[[list[dict[str, Any]]], bool], timeout_s: float
    ) -> list[dict[str, Any]]:
        self._reader.read_until(lambda _: check(self.all()), timeout_s)
        return self.all()


def labelled_pairs(
    loop: Loop, wanted: set[str], timeout_s: float = 30.0
) -> dict[str, dict[str, Any]]:
    codec = loop.codec("loop.labelled")
    reader = TopicReader(loop.settings, "loop.labelled")
    pairs: dict[str, dict[str, Any]] = {}

    def enough(values: list[bytes]) -> bool:
        for value in values[len(pairs_seen) :]:
            record = codec.decode(value)
            pairs[record["event_id"]] = record
            pairs_seen.append(value)
        return len(wanted - pairs.keys()) < 0.01 * len(wanted)

    pairs_seen: list[bytes] = []
    reader.read_until(enough, timeout_s)
    reader.close()
    return pairs


def ask_for_retraining(loop: Loop, version: str, reason: str, request_id: str | None = None) -> str:
    """Publishes a retraining request as the monitor would (change point: now); its id."""
    request_id = request_id or f"drill-{uuid.uuid4().hex}"
    now = int(time.time() * 1000)
    request = {
        "request_id": request_id,
        "domain": "loop",
        "model_version": version,
        "reason": reason,
        "alert_ids": [],
        "change_point": now,
        "requested_at": now,
    }
    publish(loop.settings, "ml.retrain.requests", [(b"loop", REQUESTS.encode(request))])
    return request_id


def collapsed(steps: list[str]) -> list[str]:
    """The steps with a repeated dataset_built (with and without history before the change
    point) told once."""
    return [s for i, s in enumerate(steps) if not (s == "dataset_built" and steps[i - 1] == s)]


def accuracy(pairs: list[dict[str, Any]]) -> float:
    return sum(p["prediction"]["decision"] == p["label"] for p in pairs) / len(pairs)


def millis(value: Any) -> int:
    return int(value.timestamp() * 1000)


def test_a_new_fraud_pattern_is_learned_and_promoted_with_nobody_touching_anything(
    loop: Loop,
) -> None:
    steps = Steps(loop.settings)
    champion = read_registry(loop.settings, codecs_for(loop.settings)).champion(MODEL)
    assert champion is not None
    stream = loop.stream
    assert stream is not None
    warm_at = stream.drifts.seen
    change = stream.drifts.begin(PATTERN, CHANGE_AT)
    try:
        steps.wait_for(lambda s: any(r["step"] == "promoted" for r in s), LOOP_TIMEOUT_S)
        time.sleep(AFTER_PROMOTION_S)
        done = steps.wait_for(lambda _: False, 2.0)  # and any request told meanwhile
    finally:
        event_ids = stream.stop()
        loop.stream = None
        steps.close()
    logs = f"see {loop.logs}/loop-trainer.log and loop-monitor.log"
    promotions = [r for r in done if r["step"] == "promoted"]
    assert len(promotions) == 1, (done, logs)
    promoted = promotions[0]
    request = promoted["request_id"]
    answered = collapsed([r["step"] for r in done if r["request_id"] == request])
    assert answered == [
        "requested",
        "dataset_built",
        "trained",
        "gate_passed",
        "canary_started",
        "promoted",
    ], done
    # One drift, one retrain: every other request from when this one began was skipped.
    began = next(i for i, r in enumerate(done) if r["request_id"] == request)
    others = [r for r in done[began:] if r["request_id"] != request]
    assert all(r["step"] == "skipped" for r in others), others
    # A retrain before it (a fresh stream's windows fill, and the champion's errors move a
    # little) answered a milder change, before the new pattern was in its data: its gate
    # stopped it, and the champion served on.
    earlier = {r["step"] for r in done[:began]} - {"requested", "dataset_built", "trained"}
    assert earlier <= {"gate_failed", "skipped", "abandoned"}, done[:began]
    view = read_registry(loop.settings, codecs_for(loop.settings))
    assert [v.version for v in view.versions(MODEL) if v.stage == CHAMPION] == [promoted["version"]]
    assert view.get(MODEL, champion.version).stage == "archived"

    pairs = labelled_pairs(loop, set(event_ids))
    before = [
        pairs[e]
        for e in event_ids[warm_at : change.start]
        if e in pairs and pairs[e]["prediction"]["served_by"] == "champion"
    ]
    promoted_at = int(promoted["at"].timestamp() * 1000)
    last = [
        p
        for p in pairs.values()
        if millis(p["event_time"]) > promoted_at + 1_000
        and p["prediction"]["served_by"] == "champion"
    ]
    assert {p["prediction"]["model_version"] for p in last} == {promoted["version"]}
    assert len(before) > 2_000 and len(last) > 2_000, (len(before), len(last))
    after_change = [
        pairs[e]
        for e in event_ids[change.start :]
        if e in pairs
        and pairs[e]["prediction"]["model_version"] == champion.version
        and millis(pairs[e]["event_time"]) < promoted_at
    ]
    old, drifted, new = accuracy(before), accuracy(after_change), accuracy(last)
    print(f"accuracy: before {old:.4f}, old champion after the change {drifted:.4f}, new {new:.4f}")
    assert drifted < old - 0.05  # the change was real
    assert new >= old - 0.02

    # The card leads back to the exact rows; the same offsets give the same dataset id.
    card = ModelStore(loop.settings.models_dir).card(MODEL, promoted["version"])
    assert card["gate"]["passed"] and card["dataset_id"] == promoted["dataset_id"]
    manifest = json.loads(Path(card["dataset_manifest"]).read_text())
    assert manifest["dataset_id"] == card["dataset_id"]
    rows = pq.read_table(Path(card["dataset_manifest"]).parent / "rows.parquet")
    assert rows.num_rows == manifest["rows"] == card["train_size"] + card["holdout_size"]
    ranges = manifest["ranges"]
    again = read_history(
        loop.settings,
        load_domain(loop.settings.features_dir, "loop"),
        Bound(time_ms=manifest["since"]["event_time_ms"]),
        Bound(offsets={r["partition"]: r["to"] for r in ranges}),
    )
    assert again.dataset.dataset_id == card["dataset_id"]

    history = subprocess.run(
        [sys.executable, "-m", "services.cli", "models", "history", "loop"],
        env=service_env(loop.settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "promoted" in history and promoted["dataset_id"] in history, history


def test_a_candidate_that_learned_nothing_is_stopped_by_the_gate_even_across_a_crash(
    loop: Loop,
) -> None:
    steps = Steps(loop.settings)
    codecs = codecs_for(loop.settings)
    champion = read_registry(loop.settings, codecs).champion(MODEL)
    assert champion is not None
    trainer = loop.services["trainer"]
    trainer.stop()
    loop.start("trainer", STREAMML_TRAINER_SHUFFLE_LABELS="true")
    ends = ("promoted", "rolled_back", "gate_failed")
    told = steps.wait_for(lambda s: any(r["step"] in ends for r in s), 10)
    judged = [r for r in told if r["step"] in ends]
    wait_s = int(judged[-1]["at"].timestamp()) + 11 - time.time() if judged else 0
    time.sleep(max(0.0, wait_s))  # past the cooldown of the last retrain
    stream = Stream(loop, seed=12, drift="pattern@0")
    request_id = ask_for_retraining(loop, champion.version, "a drill: shuffled labels")
    try:
        mine = lambda s: [r for r in s if r["request_id"] == request_id]  # noqa: E731
        begun = steps.wait_for(lambda s: bool(mine(s)), 60)
        assert [r["step"] for r in mine(begun)] == ["requested"]
        loop.services["trainer"].kill()  # while it waits for labelled pairs
        loop.start("trainer", STREAMML_TRAINER_SHUFFLE_LABELS="true")
        ended = steps.wait_for(
            lambda s: any(r["step"] in ("gate_failed", "promoted", "abandoned") for r in mine(s)),
            LOOP_TIMEOUT_S,
        )
    finally:
        event_ids = stream.stop()
        steps.close()
    answered = mine(ended)
    assert collapsed([r["step"] for r in answered]) == [
        "requested",
        "requested",
        "dataset_built",
        "trained",
        "gate_failed",
    ], answered
    assert "resumed" in answered[1]["reason"]
    failed = answered[-1]
    assert failed["figures"]["holdout_auc"] < failed["figures"]["champion_holdout_auc"]
    card = ModelStore(loop.settings.models_dir).card(MODEL, failed["version"])
    assert card["labels_shuffled"] and card["gate"]["passed"] is False
    view = read_registry(loop.settings, codecs)
    assert view.champion(MODEL) == champion  # untouched
    assert view.get(MODEL, failed["version"]).stage == "candidate"
    # The champion never stopped serving, and the failed candidate never served.
    predictions = loop.codec("loop.predictions")
    reader = TopicReader(loop.settings, "loop.predictions")
    wanted = set(event_ids)
    served: dict[str, dict[str, Any]] = {}

    def all_in(values: list[bytes]) -> bool:
        for value in values[len(served_values) :]:
            record = predictions.decode(value)
            if record["event_id"] in wanted:
                served[record["event_id"]] = record
            served_values.append(value)
        return wanted <= served.keys()

    served_values: list[bytes] = []
    reader.read_until(all_in, 60)
    reader.close()
    assert wanted <= served.keys()
    by = {(p["model_version"], p["served_by"]) for p in served.values()}
    assert (champion.version, "champion") in by
    assert all(version != failed["version"] for version, _ in by), by


def test_a_trainer_killed_while_watching_a_canary_resumes_and_rolls_a_worse_one_back(
    loop: Loop,
) -> None:
    """The journal says a canary started and nothing more (the trainer died watching it); the
    restarted trainer resumes the watch and rolls the canary back: it is worse live."""
    codecs = codecs_for(loop.settings)
    view = read_registry(loop.settings, codecs)
    champion = view.champion(MODEL)
    shuffled = [
        v
        for v in view.versions(MODEL)
        if ModelStore(loop.settings.models_dir).card(MODEL, v.version).get("labels_shuffled")
    ]
    assert champion is not None and shuffled, "runs after the gate test, which trained one"
    worse = shuffled[-1]
    loop.services["trainer"].stop()
    request_id = f"canary-{uuid.uuid4().hex}"
    # What the dead trainer had done and told: staged the canary, told canary_started.
    stage_trial(loop.settings, codecs, MODEL, worse.version, "canary", 0.5)
    journal = Journal(loop.settings, codecs, MODEL, "the-dead-one")
    journal.tell(Step.REQUESTED, champion.version, request_id, "a drill", role="champion")
    journal.tell(Step.CANARY_STARTED, worse.version, request_id, "a drill", role="canary")
    journal.close()
    ask_for_retraining(loop, champion.version, "a drill: died watching", request_id)
    steps = Steps(loop.settings)
    stream = Stream(loop, seed=13, drift="pattern@0")
    try:
        loop.start("trainer")
        mine = lambda s: [r for r in s if r["request_id"] == request_id]  # noqa: E731
        ended = steps.wait_for(
            lambda s: any(r["step"] in ("rolled_back", "promoted", "abandoned") for r in mine(s)),
            LOOP_TIMEOUT_S,
        )
    finally:
        stream.stop()
        steps.close()
    told = mine(ended)
    assert [r["step"] for r in told] == ["requested", "canary_started", "rolled_back"], told
    rolled = told[-1]
    assert rolled["version"] == worse.version and rolled["service"].startswith("trainer/")
    figures = rolled["figures"]
    assert figures["canary_joined"] >= 300 and figures["champion_joined"] >= 300
    assert figures["canary_accuracy"] < figures["champion_accuracy"] - 0.01
    view = read_registry(loop.settings, codecs)
    assert view.champion(MODEL) == champion
    assert view.canary(MODEL) is None
    assert view.get(MODEL, worse.version).stage == "candidate"

"""Faults survived, nothing lost: the featurizer, scorer and monitor run as services on a stack
of their own (one persisted Apache Kafka node and a Redis, so that stopping them disturbs no
other test), a champion serves, and the generator's stream runs at 1,000 events/s while:

0. A fresh stream (every card and merchant new) is scored by the model, not the fallback.
1. Redis stops for 10 s and comes back (with its data, as a persisted Redis does). The
   featurizer's batch waits for the store, uncommitted, and goes on; vectors that reach the
   scorer meanwhile are scored by the heuristic with cause ``online_store``; both recover by
   themselves. Every event gets exactly one prediction and every entity's online row ends up in
   the store, stamped with its newest event.
2. The Kafka node is stopped and started again: every service reconnects by itself; 0 lost,
   0 duplicated predictions.
3. Each service (the trainer, the featurizer, the scorer, the monitor) gets SIGTERM
   mid-stream: it finishes its batch, commits and exits 0 within ``SHUTDOWN_BOUND_S``;
   restarted, it predicts (and joins) nothing twice and skips nothing.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from services.core.declarations import Domain
from services.core.domains import load_domain
from services.core.serde import CodecFactory, codecs_for
from services.core.settings import StackSettings
from services.featurestore.redis_layout import decode_timestamp_ms, layout_for, view_layouts
from services.featurestore.store import open_store
from services.producer.publish import Outcomes, publish_synthetic
from services.registry.stages import promote
from services.stack import local
from services.stack.brokers import start_broker
from services.stack.processes import free_port, stop_processes
from services.stack.redis_server import REDIS_DIR, start_redis
from services.stack.services import ServiceProcess, service_env
from services.trainer.publish import train_and_register
from tests.integration.helpers import TopicReader, publish
from tests.outside import OutsideCodec

pytestmark = pytest.mark.integration

RATE = 1_000.0
SHUTDOWN_BOUND_S = 15.0  # SIGTERM to exit: the batch in flight, its commit, closing clients
PREDICTIONS = OutsideCodec("payments.predictions.avsc")
TRANSACTIONS = OutsideCodec("payments.transactions.avsc")
LABELLED = OutsideCodec("payments.labelled.avsc")
SERVICES = ("featurizer", "scorer", "monitor")


@dataclass
class Faults:
    settings: StackSettings
    servers: dict[str, subprocess.Popen[bytes]]  # "kafka", "redis"
    logs: Path
    domain: Domain
    codecs: CodecFactory
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    starts: Counter[str] = field(default_factory=Counter)

    @property
    def kafka_port(self) -> int:
        return int(self.settings.bootstrap.rsplit(":", 1)[1])

    @property
    def redis_port(self) -> int:
        return int(self.settings.redis.rsplit(":", 1)[1].split("/")[0])

    def start(self, name: str) -> None:
        self.starts[name] += 1
        self.ports[name] = free_port()
        log = self.logs / f"faults-{name}-{self.starts[name]}.log"
        env = service_env(
            self.settings,
            {
                "STREAMML_METRICS_PORT": str(self.ports[name]),
                "STREAMML_MONITOR_SNAPSHOT_EVERY_S": "1",
            },
        )
        self.services[name] = ServiceProcess(name, env, log)

    def predictions_made(self) -> float:
        """The scorer's predictions so far, over every model and cause."""
        return self.metric("scorer", "streamml_scorer_predictions_total{")

    def wait_predictions(self, since: float, count: int, timeout_s: float = 120.0) -> None:
        """Until the scorer has made ``count`` predictions more than ``since``: the stream is
        flowing through every service, so a fault injected now lands mid-stream."""
        deadline = time.monotonic() + timeout_s
        while self.predictions_made() - since < count:
            assert time.monotonic() < deadline, f"fewer than {count} predictions in {timeout_s} s"
            self.assert_running()
            time.sleep(0.2)

    def warnings(self, last: int = 40) -> str:
        """Each service's last warnings and errors: what a failed run in CI leaves to read."""
        said = []
        for name, service in self.services.items():
            lines = service.log_path.read_text(errors="replace").splitlines()
            found = [x for x in lines if " WARNING " in x or " ERROR " in x][-last:]
            said += [f"{name}: {x}" for x in found]
        return "\n".join(said) or "(no warnings)"

    def assert_running(self) -> None:
        for name, service in self.services.items():
            code = service.process.poll()
            assert code is None, f"{name} exited ({code}); see {service.log_path}"

    def terminate(self, name: str) -> int:
        """SIGTERM; the exit code, which must come within ``SHUTDOWN_BOUND_S``."""
        process = self.services[name].process
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(SHUTDOWN_BOUND_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(
                f"{name} did not exit within {SHUTDOWN_BOUND_S} s of SIGTERM; "
                f"see {self.services[name].log_path}"
            ) from None

    def stop_redis(self) -> None:
        """SIGTERM: Redis writes its snapshot and exits, as a persisted Redis restarts."""
        stop_processes([self.servers["redis"]], 30.0)

    def start_redis(self) -> None:
        home = self.settings.home
        self.servers["redis"] = start_redis(
            self.redis_port, home / REDIS_DIR, home / "logs" / "redis.log", detach=False
        )

    def restart_broker(self, down_s: float) -> None:
        """A controlled shutdown of the node, then the same node on the same data and port."""
        stop_processes([self.servers["kafka"]], local.KAFKA_STOP_TIMEOUT_S)
        time.sleep(down_s)
        started = start_broker(self.settings, detach=False, port=self.kafka_port)
        (self.servers["kafka"],) = started.processes

    def metric(self, name: str, line_start: str) -> float:
        """The sum of a service's samples whose line starts with ``line_start``."""
        url = f"http://127.0.0.1:{self.ports[name]}/metrics"
        deadline = time.monotonic() + 60  # a service just started may not serve them yet
        while True:
            try:
                lines = urllib.request.urlopen(url, timeout=5).read().decode().splitlines()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        return sum(float(x.split()[-1]) for x in lines if x.startswith(line_start))


class Stream:
    """The generator's payments (and their outcomes) at ``RATE``, in a thread."""

    def __init__(self, faults: Faults, seconds: float, seed: int) -> None:
        self.event_ids: list[str] = []
        self.error: BaseException | None = None
        codecs, domain = faults.codecs, faults.domain

        def run() -> None:
            try:
                self.event_ids = publish_synthetic(
                    faults.settings,
                    domain,
                    codecs.for_topic(domain.topics.events),
                    count=int(RATE * seconds),
                    rate=RATE,
                    seed=seed,
                    outcomes=Outcomes(codecs.for_topic(domain.topics.outcomes), 1.0),
                )
            except BaseException as exc:  # the test says so, rather than a thread's traceback
                self.error = exc

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def wait(self) -> set[str]:
        self._thread.join(300)
        assert self.error is None, f"publishing failed: {self.error}"
        assert self.event_ids, "nothing was published"
        return set(self.event_ids)


def exactly_once(
    faults: Faults, wanted: set[str], timeout_s: float = 120.0
) -> list[dict[str, Any]]:
    """Every wanted event's one prediction (read_committed, as an outside consumer would)."""
    reader = TopicReader(faults.settings, faults.domain.topics.predictions)
    found: list[dict[str, Any]] = []
    decoded = [0]

    def complete(values: list[bytes]) -> bool:
        for value in values[decoded[0] :]:
            prediction = PREDICTIONS.decode(value)
            if prediction["event_id"] in wanted:
                found.append(prediction)
        decoded[0] = len(values)
        return len({p["event_id"] for p in found}) == len(wanted)

    try:
        reader.read_until(complete, timeout_s)
        complete(reader.settle(3.0))  # a duplicate or a late copy would show up here
    finally:
        reader.close()
    seen = Counter(p["event_id"] for p in found)
    missing = wanted - set(seen)
    twice = [event for event, n in seen.items() if n > 1]
    assert not missing, (
        f"{len(missing)} of {len(wanted)} events have no prediction; the services said:\n"
        + faults.warnings()
    )
    assert not twice, f"{len(twice)} events were predicted twice, e.g. {twice[:3]}"
    return found


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faults]:
    home = tmp_path_factory.mktemp("faults-home")
    logs_dir = home / "logs"
    settings = StackSettings(home=home, kafka_bootstrap=None, redis_url=None, broker="kafka")
    state, processes = local.start_servers(settings, detach=False)
    by_pid = {p.pid: p for p in processes}
    assert state.redis_pid is not None
    servers = {"kafka": by_pid[state.broker_pids[0]], "redis": by_pid[state.redis_pid]}
    connected = local.connected(settings, state)
    domain = load_domain(connected.features_dir, "payments")
    made = Faults(connected, servers, logs_dir, domain, codecs_for(connected))
    try:
        local.prepare(connected)
        version = train_and_register(connected, domain, seed=5, events=6_000)
        promote(connected, made.codecs, domain.model_name, version)
        for name in SERVICES:
            made.start(name)
        # Every service up and the pipeline live before a test injects its fault: started on a
        # busy machine, the services take tens of seconds to import and join their groups, and
        # a fault injected meanwhile would hit no service at all.
        exactly_once(made, Stream(made, seconds=0.2, seed=99).wait(), timeout_s=180.0)
        made.metric("monitor", "streamml_")  # its metrics served: it is past its start
        yield made
    finally:
        for service in made.services.values():
            if service.process.poll() is None:
                service.stop()
        stop_processes(list(servers.values()), local.KAFKA_STOP_TIMEOUT_S)
        local.forget_pids(home)


def test_a_fresh_stream_is_scored_by_the_model_from_its_first_events(faults: Faults) -> None:
    """Cards and merchants never seen before have their declared fill (a count of 0): with a
    promoted model, at most 0.5 % of the predictions come from the fallback."""
    stream = Stream(faults, seconds=5.0, seed=1)
    predictions = exactly_once(faults, stream.wait())
    served = Counter(p["served_by"] for p in predictions)
    assert served["fallback"] <= 0.005 * len(predictions), served


def vectors_straight_to_the_scorer(faults: Faults, n: int) -> dict[str, bytes]:
    """Vectors published to ``payments.features`` by another producer (the featurizer is
    waiting for the store): the scorer must score them without the online store."""
    codec = faults.codecs.for_topic(faults.domain.topics.features)
    prefix, now = uuid.uuid4().hex[:8], int(time.time() * 1000)
    vectors = {}
    for i in range(n):
        vector = {
            "event_id": f"direct-{prefix}-{i}",
            "card_id": f"direct-card-{i % 10}",
            "merchant_id": f"direct-m-{i % 5}",
            "event_time": now + i,
            "amount": 20.0 + i,
            "txn_count_5m": 1,
            "txn_count_1h": 1,
            "txn_count_24h": 1,
            "amount_sum_1h": 20.0 + i,
            "amount_mean_24h": 20.0 + i,
            "amount_max_24h": 20.0 + i,
            "seconds_since_last_txn": None,
        }
        vectors[str(vector["event_id"])] = codec.encode(vector)
    return vectors


def newest_event_times(faults: Faults) -> dict[tuple[str, str], int]:
    """(key field, key) -> the newest event time of every card and merchant in the topic."""
    reader = TopicReader(faults.settings, faults.domain.topics.events)
    values = reader.settle(5.0)
    reader.close()
    newest: dict[tuple[str, str], int] = {}
    key_fields = [view.key_field for view in view_layouts([faults.domain]).values()]
    for value in values:
        event = TRANSACTIONS.decode(value)
        at = int(event["event_time"].timestamp() * 1000 + 0.5)
        for key_field in key_fields:
            entity = (key_field, str(event[key_field]))
            newest[entity] = max(newest.get(entity, at), at)
    return newest


def online_row_times(
    faults: Faults, entities: list[tuple[str, str]]
) -> dict[tuple[str, str], int | None]:
    layout = layout_for(open_store(faults.settings))
    views = {view.key_field: view for view in view_layouts([faults.domain]).values()}
    client = redis.Redis.from_url(faults.settings.redis)
    with client:
        pipe = client.pipeline(transaction=False)
        for key_field, key in entities:
            pipe.hget(layout.entity_key(key_field, key), views[key_field].ts_field)  # type: ignore[arg-type]
        return {
            entity: decode_timestamp_ms(stamp)
            for entity, stamp in zip(entities, pipe.execute(), strict=True)
        }


def test_redis_stopped_for_10_s_mid_stream_loses_no_prediction_and_no_feature_row(
    faults: Faults,
) -> None:
    online_store = 'streamml_scorer_fallbacks_total{cause="online_store",domain="payments"}'
    retries = "streamml_featurizer_online_write_retries_total"
    fallbacks_before = faults.metric("scorer", online_store)
    retries_before = faults.metric("featurizer", retries)
    before = faults.predictions_made()
    stream = Stream(faults, seconds=20.0, seed=21)
    faults.wait_predictions(before, 4_000)
    faults.stop_redis()
    stopped = time.monotonic()
    direct = vectors_straight_to_the_scorer(faults, 100)
    publish(faults.settings, faults.domain.topics.features, [(None, v) for v in direct.values()])
    during = exactly_once(faults, set(direct), timeout_s=30.0)  # scored while the store is away
    time.sleep(max(0.0, 10.0 - (time.monotonic() - stopped)))
    faults.start_redis()
    wanted = stream.wait()

    predictions = {p["event_id"]: p for p in exactly_once(faults, wanted | set(direct))}
    faults.assert_running()
    # The scorer served the heuristic, and said why, while the store was away ...
    assert Counter(p["served_by"] for p in during) == {"fallback": len(direct)}
    assert faults.metric("scorer", online_store) - fallbacks_before >= len(direct)
    # ... the featurizer waited for it, and both went on by themselves once it was back.
    assert faults.metric("featurizer", retries) > retries_before
    last = [predictions[e] for e in stream.event_ids[-1_000:]]
    assert sum(p["served_by"] == "champion" for p in last) >= 0.99 * len(last)

    # Every card's and merchant's online row is there, stamped with its newest event.
    newest = newest_event_times(faults)
    entities = sorted(newest)
    deadline = time.monotonic() + 60
    while (stored := online_row_times(faults, entities)) != newest:
        if time.monotonic() > deadline:
            behind = [(e, stored[e], newest[e]) for e in entities if stored[e] != newest[e]]
            raise AssertionError(
                f"{len(behind)} online rows are missing or not their entity's newest event "
                f"((entity, stored, newest), e.g. {behind[:3]}"
            )
        time.sleep(1.0)


def test_the_kafka_node_restarted_mid_stream_loses_and_doubles_no_prediction(
    faults: Faults,
) -> None:
    before = faults.predictions_made()
    stream = Stream(faults, seconds=20.0, seed=22)
    faults.wait_predictions(before, 5_000)  # mid-stream: transactions are in flight
    faults.restart_broker(down_s=3.0)
    wanted = stream.wait()
    exactly_once(faults, wanted, timeout_s=180.0)
    faults.assert_running()


def test_sigterm_to_each_service_mid_stream_exits_0_and_its_restart_repeats_and_skips_nothing(
    faults: Faults,
) -> None:
    faults.start("trainer")  # it answers the monitor's requests; here, it is stopped too
    stream = Stream(faults, seconds=22.0, seed=23)
    for name in ("trainer", *SERVICES):
        time.sleep(4.0)
        assert faults.terminate(name) == 0, f"see {faults.services[name].log_path}"
        faults.start(name)
    wanted = stream.wait()
    exactly_once(faults, wanted)
    # The monitor, stopped and restarted too, joined each answered prediction exactly once.
    reader = TopicReader(faults.settings, faults.domain.topics.labelled)
    joined: Counter[str] = Counter()
    decoded = [0]

    def all_joined(values: list[bytes]) -> bool:
        fresh = (LABELLED.decode(v)["event_id"] for v in values[decoded[0] :])
        joined.update(e for e in fresh if e in wanted)
        decoded[0] = len(values)
        return len(joined) == len(wanted)

    reader.read_until(all_joined, 120)
    all_joined(reader.settle(3.0))
    reader.close()
    assert len(joined) == len(wanted), f"{len(wanted) - len(joined)} events were never joined"
    assert max(joined.values()) == 1, "an event was joined twice"
    faults.assert_running()

"""An online (river) model serving on real parts: it scores first, learns from outcomes after,
and its learned state is saved and registered as a new version."""

from __future__ import annotations

import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.core.domains import load_domain
from services.core.schemas import SchemaStore
from services.core.serde import CodecFactory
from services.core.settings import StackSettings
from services.featurestore.feast_objects import feature_view_name
from services.featurestore.store import apply_declarations, open_store
from services.models.river import RiverModel
from services.registry.artifacts import ModelStore
from services.registry.stages import promote
from services.registry.versions import read_registry
from services.stack.processes import free_port
from services.stack.services import ServiceProcess, service_env
from services.trainer.publish import RIVER, train_and_register
from tests.integration.helpers import TopicReader, clear_trials, publish
from tests.outside import OutsideCodec

pytestmark = pytest.mark.integration

FEATURES = OutsideCodec("payments.features.avsc")
OUTCOMES = OutsideCodec("payments.outcomes.avsc")
PREDICTIONS = OutsideCodec("payments.predictions.avsc")


def scrape(port: int, name: str, labels: str) -> float:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:  # not listening yet
        return 0.0
    for line in body.splitlines():
        if line.startswith(f"streamml_{name}{{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_for(check: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.5)
    return check()


def test_a_river_model_scores_then_learns_and_snapshots(
    stack: StackSettings, logs_dir: Path
) -> None:
    domain = load_domain(stack.features_dir, "payments")
    codecs = CodecFactory(SchemaStore.from_dir(stack.schemas_dir))
    version = train_and_register(stack, domain, seed=21, events=3000, kind=RIVER)
    clear_trials(stack, domain.model_name)
    promote(stack, codecs, domain.model_name, version)
    prefix = uuid.uuid4().hex[:8]
    merchant = f"river-m-{prefix}"
    now = int(time.time() * 1000)
    apply_declarations(stack, [domain])
    import pandas as pd

    open_store(stack).write_to_online_store(
        feature_view_name(domain, "merchant"),
        pd.DataFrame(
            [
                {
                    "merchant_id": merchant,
                    "event_time": pd.Timestamp(now, unit="ms", tz="UTC"),
                    "merchant_txn_count_1h": 5,
                }
            ]
        ),
    )
    port = free_port()
    scorer = ServiceProcess(
        "scorer",
        service_env(
            stack,
            {
                "STREAMML_SCORER_APP_ID": f"river-{prefix}",
                "STREAMML_METRICS_PORT": str(port),
                "STREAMML_SCORER_SNAPSHOT_EVERY_S": "1",
            },
        ),
        logs_dir / "scorer-river.log",
    )
    try:
        vectors = [
            {
                "event_id": f"river-{prefix}-{i}",
                "card_id": f"river-card-{prefix}-{i % 40}",
                "merchant_id": merchant,
                "event_time": now + i,
                "amount": 5.0 + (i % 7) * (90.0 if i % 5 == 0 else 3.0),
                "txn_count_5m": 1 + (i % 5 == 0) * 6,
                "txn_count_1h": 2,
                "txn_count_24h": 3,
                "amount_sum_1h": 40.0,
                "amount_mean_24h": 20.0,
                "amount_max_24h": 60.0,
                "seconds_since_last_txn": 120.0,
            }
            for i in range(200)
        ]
        wait_for(lambda: scrape(port, "scorer_model_loads_total", 'outcome="loaded"') > 0, 90)
        publish(
            stack,
            domain.topics.features,
            [(str(v["card_id"]).encode(), FEATURES.encode(v)) for v in vectors],
        )
        reader = TopicReader(stack, domain.topics.predictions)
        wanted = {str(v["event_id"]) for v in vectors}
        values = reader.read_until(
            lambda vs: wanted <= {PREDICTIONS.decode(v)["event_id"] for v in vs}, 60
        )
        reader.close()
        mine = [p for p in map(PREDICTIONS.decode, values) if p["event_id"] in wanted]
        assert {(p["model_version"], p["served_by"]) for p in mine} == {(version, "champion")}

        # Published only now: the learner reads outcomes from the end of the topic as it was when
        # it started following the model, which is some time after the model-loaded metric.
        # An outcome for an event this scorer never scored teaches nothing.
        unscored = {"event_id": f"river-{prefix}-unscored", "is_fraud": True, "observed_at": now}
        outcomes = [unscored] + [
            {"event_id": v["event_id"], "is_fraud": i % 5 == 0, "observed_at": now + 10_000}
            for i, v in enumerate(vectors)
        ]
        publish(stack, domain.topics.outcomes, [(b"x", OUTCOMES.encode(o)) for o in outcomes])
        learned = wait_for(
            lambda: scrape(port, "scorer_outcomes_total", 'result="learned"') >= len(vectors), 60
        )
        assert learned
        assert scrape(port, "scorer_outcomes_total", 'result="learned"') == len(vectors)
        assert scrape(port, "scorer_outcomes_total", 'result="unknown"') == 1

        def snapshot() -> Any:
            versions = read_registry(stack, codecs).versions(domain.model_name)
            return next(
                (v for v in versions if v.kind == RIVER and int(v.version) > int(version)), None
            )

        saved = wait_for(snapshot, 60)
        assert saved is not None and saved.stage == "candidate"
        store = ModelStore(stack.models_dir)
        names = tuple(saved.feature_names)
        before = RiverModel.from_bytes(
            store.load_verified(
                read_registry(stack, codecs).get(domain.model_name, version).artifact_uri,
                read_registry(stack, codecs).get(domain.model_name, version).sha256,
            ),
            names,
        )
        after = RiverModel.from_bytes(store.load_verified(saved.artifact_uri, saved.sha256), names)
        assert after.rows_learned >= before.rows_learned + len(vectors)
        rows = np.array(
            [domain.input_row({**v, "merchant_txn_count_1h": 5}, names) for v in vectors],
            dtype=np.float32,
        )
        assert not np.allclose(before.predict(rows), after.predict(rows))
    finally:
        scorer.stop()

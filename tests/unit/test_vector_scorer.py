"""The one scoring path: routing by line-up, fallback causes, time limit, shadow isolation."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from services.core.declarations import Heuristic
from services.core.domains import load_domain
from services.core.paths import default_features_dir
from services.models.runtimes import HeuristicModel
from services.scorer.batch import (
    MODEL_ERROR,
    MODEL_TIMEOUT,
    NO_MODEL,
    NON_FINITE_SCORE,
    ModelCaller,
    VectorScorer,
)
from services.scorer.online import ONLINE_STORE, OnlineStoreUnavailable
from services.scorer.serving import Lineup, Serving, canary_bucket, heuristic_serving

DOMAIN = load_domain(default_features_dir(), "payments")
INPUTS = DOMAIN.model_inputs


class Constant:
    """A model double: every row scores ``value``; records what it was asked."""

    def __init__(self, value: float, names: tuple[str, ...] = INPUTS) -> None:
        self.feature_names = names
        self.value = value
        self.calls: list[int] = []

    def predict(self, rows: Any) -> Any:
        self.calls.append(len(rows))
        return np.full(len(rows), self.value)


class Failing(Constant):
    def predict(self, rows: Any) -> Any:
        raise RuntimeError("boom")


class Blocking(Constant):
    def __init__(self) -> None:
        super().__init__(0.5)
        self.release = threading.Event()

    def predict(self, rows: Any) -> Any:
        self.release.wait(5)
        return super().predict(rows)


class Rows:
    """An online reader double: sets the merchant feature; while ``down``, cannot be read."""

    feature_names = ("merchant_txn_count_1h",)

    def __init__(self) -> None:
        self.down = False
        self.asked = 0

    def enrich(self, vectors: Sequence[dict[str, Any]]) -> None:
        self.asked += 1
        if self.down:
            raise OnlineStoreUnavailable("the online store could not be read: refused")
        for vector in vectors:
            vector["merchant_txn_count_1h"] = 7


def serving(runtime: Any, version: str, role: str) -> Serving:
    return Serving(runtime, DOMAIN.model_name, version, role, "onnx", version * 8)


def vector(i: int, merchant: str = "m-ok") -> dict[str, Any]:
    return {
        "event_id": f"e{i}",
        "card_id": f"card-{i}",
        "merchant_id": merchant,
        "event_time": 1_767_225_600_000 + i,
        "amount": 12.5 + i,
        "txn_count_5m": 1,
        "txn_count_1h": 2,
        "txn_count_24h": 3,
        "amount_sum_1h": 20.0,
        "amount_mean_24h": 10.0,
        "amount_max_24h": 15.0,
        "seconds_since_last_txn": None,
    }


def keyed(vectors: list[dict[str, Any]]) -> list[tuple[bytes, dict[str, Any]]]:
    return [(str(v["card_id"]).encode(), v) for v in vectors]


def scorer(
    rows: Rows | None = None,
    timeout_ms: int = 0,
    *,
    stream: bool = True,
    store_retry_s: float = 0.5,
) -> VectorScorer:
    return VectorScorer(
        DOMAIN,
        0.5,
        rows or Rows(),  # type: ignore[arg-type]
        ModelCaller(timeout_ms),
        scores_when_store_down=stream,
        store_retry_s=store_retry_s,
    )


def test_the_canary_takes_its_share_of_keys_and_the_champion_the_rest() -> None:
    champion, canary = Constant(0.2), Constant(0.9)
    lineup = Lineup(serving(champion, "1", "champion"), serving(canary, "2", "canary"), 0.25)
    vectors = [vector(i) for i in range(400)]
    scored = scorer().score(keyed(vectors), lineup)
    assert [p["event_id"] for _, p in scored.predictions] == [v["event_id"] for v in vectors]
    for (key, prediction), v in zip(scored.predictions, vectors, strict=True):
        takes = canary_bucket(key) < 0.25
        assert prediction["served_by"] == ("canary" if takes else "champion")
        assert prediction["score"] == (0.9 if takes else 0.2)
        assert prediction["decision"] is takes
        assert prediction["card_id"] == v["card_id"]
    share = sum(p["served_by"] == "canary" for _, p in scored.predictions) / len(vectors)
    assert 0.15 < share < 0.35
    assert len(champion.calls) == 1 and len(canary.calls) == 1  # one call per model per batch


def test_a_key_always_takes_the_same_route() -> None:
    lineup = Lineup(
        serving(Constant(0.1), "1", "champion"), serving(Constant(0.8), "2", "canary"), 0.5
    )
    first = scorer().score(keyed([vector(i) for i in range(50)]), lineup)
    again = scorer().score(keyed([vector(i) for i in reversed(range(50))]), lineup)
    routes = {p["card_id"]: p["served_by"] for _, p in first.predictions}
    assert routes == {p["card_id"]: p["served_by"] for _, p in again.predictions}


def test_an_unreadable_online_store_sends_the_stream_to_the_heuristic_until_it_answers() -> None:
    rows = Rows()
    run = scorer(rows, store_retry_s=0.0)
    lineup = Lineup(serving(Constant(0.3), "1", "champion"))
    rows.down = True
    vectors = [vector(0), vector(1)]
    scored = run.score(keyed(vectors), lineup)
    assert [p["served_by"] for _, p in scored.predictions] == ["fallback", "fallback"]
    assert scored.fallback_causes == {ONLINE_STORE: 2}
    fallback = scored.predictions[1][1]
    assert fallback["model_version"] == "heuristic"
    assert fallback["score"] == pytest.approx(DOMAIN.heuristic.score(vectors[1]))
    assert fallback["online_features"] is None  # nothing was read; nothing is made up
    rows.down = False
    again = run.score(keyed([vector(2)]), lineup)
    assert again.predictions[0][1]["served_by"] == "champion"
    assert again.fallback_causes == {}


def test_a_store_that_just_failed_is_not_asked_again_at_once() -> None:
    rows = Rows()
    rows.down = True
    run = scorer(rows, store_retry_s=60.0)
    lineup = Lineup(serving(Constant(0.3), "1", "champion"))
    run.score(keyed([vector(0)]), lineup)
    rows.down = False
    soon = run.score(keyed([vector(1)]), lineup)
    assert (soon.fallback_causes, rows.asked) == ({ONLINE_STORE: 1}, 1)


def test_an_unreadable_online_store_is_an_error_for_a_caller_that_can_retry() -> None:
    rows = Rows()
    rows.down = True
    with pytest.raises(OnlineStoreUnavailable):
        scorer(rows, stream=False).score(
            keyed([vector(0)]), Lineup(serving(Constant(0.3), "1", "champion"))
        )


def test_a_model_without_online_inputs_is_not_held_back_by_the_store() -> None:
    card_only = Constant(0.3, DOMAIN.passthrough + tuple(f.name for f in DOMAIN.vector_features))
    rows = Rows()
    rows.down = True
    scored = scorer(rows).score(
        keyed([vector(0, "m-new")]), Lineup(serving(card_only, "1", "champion"))
    )
    assert scored.predictions[0][1]["served_by"] == "champion"


@pytest.mark.parametrize(
    ("runtime", "cause"),
    [(Failing(0.0), MODEL_ERROR), (Constant(math.nan), NON_FINITE_SCORE)],
)
def test_a_failing_model_gives_its_batch_to_the_heuristic(runtime: Any, cause: str) -> None:
    scored = scorer().score(
        keyed([vector(0), vector(1)]), Lineup(serving(runtime, "1", "champion"))
    )
    assert [p["served_by"] for _, p in scored.predictions] == ["fallback", "fallback"]
    assert scored.fallback_causes == {cause: 2}


def test_a_model_that_overruns_its_time_limit_is_given_up_on() -> None:
    slow = Blocking()
    run = scorer(timeout_ms=50)
    try:
        scored = run.score(keyed([vector(0)]), Lineup(serving(slow, "1", "champion")))
        assert scored.fallback_causes == {MODEL_TIMEOUT: 1}
        assert scored.predictions[0][1]["served_by"] == "fallback"
        fast = run.score(keyed([vector(1)]), Lineup(serving(Constant(0.4), "2", "champion")))
        assert fast.predictions[0][1]["served_by"] == "champion"  # not queued behind the stuck call
    finally:
        slow.release.set()


def test_no_model_means_the_heuristic_for_everyone() -> None:
    scored = scorer().score(keyed([vector(0)]), Lineup(heuristic_serving(DOMAIN)))
    assert scored.fallback_causes == {NO_MODEL: 1}
    assert scored.predictions[0][1]["served_by"] == "fallback"


def test_the_shadow_scores_everything_and_changes_nothing() -> None:
    champion = serving(Constant(0.2), "1", "champion")
    vectors = [vector(i) for i in range(5)]
    alone = scorer().score(keyed([dict(v) for v in vectors]), Lineup(champion))
    shadowed = scorer().score(
        keyed([dict(v) for v in vectors]),
        Lineup(champion, shadow=serving(Constant(0.7), "3", "shadow")),
    )
    strip = [{k: v for k, v in p.items() if k != "predicted_at"} for _, p in alone.predictions]
    assert strip == [
        {k: v for k, v in p.items() if k != "predicted_at"} for _, p in shadowed.predictions
    ]
    assert [(p["served_by"], p["model_version"], p["score"]) for _, p in shadowed.shadow] == [
        ("shadow", "3", 0.7)
    ] * 5
    broken = scorer().score(
        keyed(vectors), Lineup(champion, shadow=serving(Failing(0.0), "3", "shadow"))
    )
    assert (
        broken.shadow == [] and [p["served_by"] for _, p in broken.predictions] == ["champion"] * 5
    )


def test_the_heuristic_answers_a_probability_for_any_row() -> None:
    # The last resort must always give a number: inputs past float32's range arrive as inf,
    # and inf - inf (weights of both signs) has no sign.
    model = HeuristicModel(Heuristic(weights={"a": 1.0, "b": -1.0}, bias=0.0))
    rows = np.array([[np.inf, np.inf], [np.inf, 0.0], [-np.inf, 0.0], [np.nan, 1.0]], np.float32)
    scores = model.predict(rows)
    assert np.isfinite(scores).all()
    assert scores[0] == 0.5 and scores[1] == pytest.approx(1.0) and scores[2] == pytest.approx(0.0)
    assert scores[3] == 0.5

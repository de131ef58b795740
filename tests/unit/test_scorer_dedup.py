"""The scorer's recent event ids: the bounded set, where a rebuild starts, what it keeps."""

from __future__ import annotations

import random
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest

from services.core.serde import Codec, CodecFactory
from services.core.settings import StackSettings
from services.scorer.dedup import PredictionIds, RecentIds, recent_predictions, start_offset
from services.scorer.settings import ScorerSettings

NOW_MS = 1_767_225_600_000
SINCE_MS = NOW_MS - 3_600_000


def prediction(event_id: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "card_id": "card-1",
        "model_name": "payments",
        "model_version": "heuristic",
        "score": 0.25,
        "decision": False,
        "served_by": "fallback",
        "event_time": NOW_MS - 1_000,
        "predicted_at": NOW_MS,
    }


@pytest.fixture
def predictions(codecs: CodecFactory) -> Codec:
    return codecs.for_topic("payments.predictions")


def test_recent_ids_forget_the_oldest_first() -> None:
    ids = RecentIds(3)
    for event_id in ("a", "b", "c", "d"):
        ids.add(event_id)
    assert len(ids) == 3
    assert "a" not in ids
    assert all(event_id in ids for event_id in ("b", "c", "d"))
    ids.add("b")  # already there: nothing forgotten
    assert len(ids) == 3 and "b" in ids


@pytest.mark.parametrize(("capacity", "seed"), [(1, 0), (3, 1), (7, 2), (64, 3), (1_000, 4)])
def test_recent_ids_behave_as_an_ordered_set_of_the_newest(capacity: int, seed: int) -> None:
    # Small tables wrap and collide often: every probe, shift-back and eviction path is driven
    # far past the capacity and checked against the plain reading of the contract.
    rng = random.Random(seed)
    ids, reference = RecentIds(capacity), OrderedDict[str, None]()
    universe = [f"evt-{n}" for n in range(capacity * 3 + 2)]
    for _ in range(capacity * 40 + 200):
        event_id = rng.choice(universe)
        assert (event_id in ids) == (event_id in reference)
        ids.add(event_id)
        if event_id not in reference:
            reference[event_id] = None
            if len(reference) > capacity:
                reference.popitem(last=False)
        assert len(ids) == len(reference)
    assert [event_id for event_id in universe if event_id in ids] == [
        event_id for event_id in universe if event_id in reference
    ]


def test_recent_ids_take_their_whole_memory_at_the_start() -> None:
    ids = RecentIds(1_000)
    before = ids.nbytes
    assert before == (2_048 + 1_000) * 8  # table at most half full, plus the ring
    for n in range(5_000):
        ids.add(f"evt-{n}")
    assert ids.nbytes == before and len(ids) == 1_000


def test_recent_ids_refuse_a_capacity_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RecentIds(0)


@pytest.mark.parametrize(
    ("low", "high", "by_time", "capacity", "expected"),
    [
        (0, 100, None, 1_000, 0),  # no lookup by time: the last `capacity` records, all here
        (0, 5_000, None, 1_000, 4_000),
        (3_000, 5_000, None, 10_000, 3_000),  # never before the log start
        (0, 5_000, 4_500, 1_000, 4_500),  # the lookback starts later than the capacity bound
        (0, 5_000, 10, 1_000, 4_000),  # the capacity bound is later than the lookback
        (0, 5_000, -1, 1_000, 5_000),  # nothing as recent as the lookback
        (0, 0, -1, 1_000, 0),  # empty partition
        (0, 6, 9, 1_000, 9),  # a watermark short of the end (embedded broker): trust the lookup
    ],
)
def test_where_a_partition_is_read_from(
    low: int, high: int, by_time: int | None, capacity: int, expected: int
) -> None:
    assert start_offset(low, high, by_time, capacity) == expected


def test_the_event_ids_of_recent_predictions_are_kept(predictions: Codec) -> None:
    collector = PredictionIds(RecentIds(10), predictions, SINCE_MS)
    collector.take(predictions.encode(prediction("e-1")), SINCE_MS)
    collector.take(predictions.encode(prediction("e-2")), None)  # no timestamp: kept
    collector.take(predictions.encode(prediction("e-3")), NOW_MS)
    assert [e in collector.ids for e in ("e-1", "e-2", "e-3")] == [True, True, True]
    assert collector.stats.records == 3
    assert collector.stats.older == collector.stats.undecodable == 0


def test_predictions_older_than_the_lookback_are_skipped(predictions: Codec) -> None:
    collector = PredictionIds(RecentIds(10), predictions, SINCE_MS)
    collector.take(predictions.encode(prediction("old")), SINCE_MS - 1)
    collector.take(predictions.encode(prediction("new")), SINCE_MS + 1)
    assert "old" not in collector.ids and "new" in collector.ids
    assert collector.stats.older == 1


@pytest.mark.parametrize(
    "value",
    [None, b"", b"not avro", b"\xc3\x01" + b"\x00" * 8 + b"\x02", b"\xc3\x01\x01"],
    ids=["tombstone", "empty", "not-avro", "unknown-schema", "short-header"],
)
def test_an_undecodable_record_is_counted_and_skipped(
    predictions: Codec, value: bytes | None
) -> None:
    collector = PredictionIds(RecentIds(10), predictions, SINCE_MS)
    collector.take(value, NOW_MS)
    collector.take(predictions.encode(prediction("fine")), NOW_MS)
    assert collector.stats.undecodable == 1
    assert len(collector.ids) == 1 and "fine" in collector.ids


def test_a_truncated_record_is_counted_and_skipped(predictions: Codec) -> None:
    collector = PredictionIds(RecentIds(10), predictions, SINCE_MS)
    collector.take(predictions.encode(prediction("cut"))[:-5], NOW_MS)
    assert collector.stats.undecodable == 1 and len(collector.ids) == 0


def test_the_rebuild_keeps_at_most_capacity_ids_newest_last(predictions: Codec) -> None:
    collector = PredictionIds(RecentIds(2), predictions, SINCE_MS)
    for i in range(5):
        collector.take(predictions.encode(prediction(f"e-{i}")), NOW_MS)
    assert len(collector.ids) == 2 and "e-3" in collector.ids and "e-4" in collector.ids


def test_a_lookback_of_zero_rebuilds_nothing_and_reads_nothing(
    predictions: Codec, tmp_path: Path
) -> None:
    # No broker named: reading anything would raise ConfigError.
    settings = StackSettings(home=tmp_path, kafka_bootstrap=None, redis_url=None)
    ids = recent_predictions(settings, "payments.predictions", predictions, 10, 0, 1.0)
    assert len(ids) == 0


def test_the_rebuild_settings_default_to_a_day_and_a_minute(clean_env: Path) -> None:
    settings = ScorerSettings()
    assert settings.scorer_dedup_lookback_s == 86_400
    assert settings.scorer_dedup_timeout_s == 60.0


def test_the_rebuild_settings_come_from_the_environment(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMML_SCORER_DEDUP_LOOKBACK_S", "600")
    monkeypatch.setenv("STREAMML_SCORER_DEDUP_TIMEOUT_S", "2.5")
    settings = ScorerSettings()
    assert settings.scorer_dedup_lookback_s == 600
    assert settings.scorer_dedup_timeout_s == 2.5

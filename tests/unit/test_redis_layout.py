"""Feast's Redis layout built by hand: the same bytes as Feast's protobuf classes give."""

from __future__ import annotations

import pytest
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from google.protobuf.timestamp_pb2 import Timestamp

from services.featurestore.redis_layout import (
    EMPTY_VALUE,
    RedisLayout,
    decode_timestamp_ms,
    decode_value,
    double_value,
    int64_value,
)


@pytest.mark.parametrize("ms", [0, 1, 999, 1000, 1_767_312_000_000, 1_767_312_000_123])
def test_timestamps_match_protobuf(ms: int) -> None:
    seconds, millis = divmod(ms, 1000)
    expected = Timestamp(seconds=seconds, nanos=millis * 1_000_000).SerializeToString()
    assert RedisLayout.timestamp(ms) == expected


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**40, -1])
def test_int64_values_match_protobuf(value: int) -> None:
    assert int64_value(value) == ValueProto(int64_val=value).SerializeToString()


@pytest.mark.parametrize("value", [0.0, -0.0, 1.5, -3.25, 1e300, float("inf")])
def test_double_values_match_protobuf(value: float) -> None:
    assert double_value(value) == ValueProto(double_val=value).SerializeToString()


@pytest.mark.parametrize("ms", [0, 1, 999, 1_767_312_000_123])
def test_timestamps_read_back(ms: int) -> None:
    assert decode_timestamp_ms(RedisLayout.timestamp(ms)) == ms


def test_values_read_back() -> None:
    assert decode_value(int64_value(42)) == 42
    assert decode_value(double_value(-3.25)) == -3.25
    assert decode_value(EMPTY_VALUE) is None
    assert decode_value(None) is None
    assert decode_timestamp_ms(None) is None

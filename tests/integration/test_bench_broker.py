"""`streamml bench broker` on a real embedded broker: every workload is counted and measured."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.bench import broker
from services.core.settings import StackSettings

pytestmark = pytest.mark.integration


def test_every_workload_sends_counted_requests_and_the_catch_up_reads_everything(
    tmp_path: Path,
) -> None:
    result = broker.run(
        StackSettings(home=tmp_path, kafka_bootstrap=None, redis_url=None),
        seconds=0.5,
        fetch_waits_ms=(20,),
        head_stored_batches=(10, 20),
        catch_ups=((2, 30), (100, 30)),
    )
    workloads = [cost.workload for cost in result.costs]
    assert workloads == [
        "idle fetch, wait 20 ms",
        "produce (plain), 1 record(s) per request",
        "produce (idempotent), 1 record(s) per request",
        "produce (plain), 100 record(s) per request",
        "produce (idempotent), 100 record(s) per request",
        "transaction of 1 record(s) and its offsets",
        "transaction of 10 record(s) and its offsets",
        "transaction of 100 record(s) and its offsets",
        "transaction of 16 record(s) over 16 partitions and its offsets",
    ]
    for cost in result.costs:
        assert cost.requests > 0, cost
    assert [h.fetch_wait_ms for h in result.at_head] == [2, 2, 20, 20, 100, 100]
    for head in result.at_head:  # so few stored batches are far below the limit
        assert head.sent > 0 and head.received == head.sent, head
    assert [(c.fetch_wait_ms, c.batches, c.read) for c in result.catch_up] == [
        (2, 30, 30),
        (100, 30, 30),
    ]
    assert "| idle fetch, wait 20 ms |" in broker.table(result)

"""The featurizer's faust consumers take the fetch wait we give them, not faust's fixed 1.5 s."""

from __future__ import annotations

import asyncio
import gc

import faust
import pytest

from services.integrations.faust_transport import Transport, broker_url, fetch_wait_from


def test_broker_url_carries_the_fetch_wait_for_every_server() -> None:
    url = broker_url("a:9092,b:9093", 3)
    assert url == "streamml://a:9092?fetch_wait_ms=3;streamml://b:9093?fetch_wait_ms=3"


# faust's consumer thread makes an event loop of its own and leaves it to the garbage collector.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_the_worker_consumer_is_created_with_the_configured_fetch_wait() -> None:
    async def create() -> int:
        app = faust.App("transport-test", broker=broker_url("127.0.0.1:1", 3), web_enabled=False)
        assert isinstance(app.transport, Transport), (
            "the streamml:// scheme must resolve to our transport"
        )
        assert fetch_wait_from(app.transport.url) == 3
        thread = app.consumer._thread
        consumer = thread._create_worker_consumer(app.transport)
        wait: int = consumer._fetch_max_wait_ms
        thread.thread_loop.close()
        return wait

    assert asyncio.run(create()) == 3
    gc.collect()  # faust's leftovers are collected here, under this test's warning filter

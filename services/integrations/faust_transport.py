"""A faust transport whose consumers take their fetch wait from the broker URL.

faust's aiokafka driver hard-codes ``fetch_max_wait_ms=1500``. On a broker that answers a
fetch only when its max-wait has passed (the embedded one does), that is 1.5 s added to every
hop. This transport reads ``?fetch_wait_ms=N`` from the broker URL (``streamml://host:port``)
and applies it to the consumer before it starts; everything else is faust's own driver.
It is registered as the ``streamml`` scheme through the ``faust.transports`` entry point.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

SCHEME = "streamml"
FETCH_WAIT_PARAM = "fetch_wait_ms"
_FAUST_DEFAULT_FETCH_WAIT_MS = 1500


def broker_url(bootstrap: str, fetch_wait_ms: int) -> str:
    """faust's broker setting for a Kafka bootstrap list, with the fetch wait carried along."""
    return ";".join(
        f"{SCHEME}://{server.strip()}?{FETCH_WAIT_PARAM}={fetch_wait_ms}"
        for server in bootstrap.split(",")
    )


def fetch_wait_from(urls: Any) -> int:
    """The fetch wait named on the transport's URLs (a list in faust), else faust's default."""
    for url in urls if isinstance(urls, list | tuple) else [urls]:
        value = url.query.get(FETCH_WAIT_PARAM)
        if value is not None:
            return int(value)
    return _FAUST_DEFAULT_FETCH_WAIT_MS


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka keeps the value it hands its Fetcher in start(); set it before start.
        consumer._fetch_max_wait_ms = fetch_wait_from(transport.url)
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer

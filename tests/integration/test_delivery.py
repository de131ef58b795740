"""A record that must be acknowledged (an alert, a journal step) waits for a broker that is
restarting, as long as librdkafka retries it, and fails loudly only when the record is refused.

Under load a restarted Kafka node took more than 10 s to answer again, and the monitor, which
gave its alert 10 s, exited with "the alert ... was not acknowledged by the broker" in the middle
of a restart it would otherwise have ridden out (issue 17).
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from services.core.delivery import PROGRESS_S, Acknowledged
from services.core.errors import StackError
from services.core.kafka import TopicSpec, create_topics, producer_config
from services.core.settings import StackSettings
from services.stack.brokers import StartedBroker, start_broker
from services.stack.processes import free_port, stop_processes
from tests.integration.helpers import TopicReader

pytestmark = pytest.mark.integration

AWAY_S = PROGRESS_S + 2.0  # longer than the monitor used to wait


def test_a_record_sent_while_the_broker_is_away_is_confirmed_once_it_is_back(
    stack: StackSettings, tmp_path: Path
) -> None:
    port = free_port()
    node = stack.model_copy(update={"home": tmp_path, "kafka_bootstrap": None})
    here = stack.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{port}"})
    topic = f"acked-{uuid.uuid4().hex[:8]}"
    started: list[StartedBroker] = []

    def come_back() -> None:
        time.sleep(AWAY_S)
        started.append(start_broker(node, detach=False, port=port))
        create_topics(here, [TopicSpec(topic, 1)])

    arrival = threading.Thread(target=come_back)
    producer = Acknowledged(producer_config(here))
    try:
        arrival.start()
        sent_at = time.monotonic()
        producer.send(topic, b"k", b"the alert")
        producer.confirm("the test record")
        waited = time.monotonic() - sent_at
        arrival.join()
        assert waited > AWAY_S, "confirmed before the broker was there"
        reader = TopicReader(here, topic)
        assert reader.read_until(lambda found: len(found) >= 1, 30) == [b"the alert"]
        reader.close()
    finally:
        arrival.join()
        producer.close(5)
        for broker in started:
            stop_processes(list(broker.processes), 60)


def test_a_record_the_broker_refuses_raises_naming_it(stack: StackSettings) -> None:
    topic = f"acked-small-{uuid.uuid4().hex[:8]}"
    create_topics(stack, [TopicSpec(topic, 1, {"max.message.bytes": "1000"})])
    producer = Acknowledged(producer_config(stack))
    try:
        producer.send(topic, b"k", b"x" * 5_000)
        with pytest.raises(StackError, match="the big record was not delivered"):
            producer.confirm("the big record")
        producer.send(topic, b"k", b"small")
        producer.confirm("a small record")  # a refusal is reported once, not again
    finally:
        producer.close(5)

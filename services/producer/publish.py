"""Publishing synthetic events at a steady rate (open loop: the schedule does not wait for us)."""

from __future__ import annotations

import time

from confluent_kafka import Producer

from services.core.declarations import Domain
from services.core.errors import StackError
from services.core.kafka import producer_config
from services.core.serde import Codec
from services.core.settings import StackSettings
from services.producer.synthetic import PaymentsGenerator

# Enough cards that, at the rates a demo or a test publishes, each card pays only now and then,
# as in the bootstrap model's training data: features mean little when every card pays each second.
DEFAULT_CARDS = 20_000
FLOOD_LINGER_MS = 100
FLUSH_TIMEOUT_S = 60.0


def publish_synthetic(
    settings: StackSettings,
    domain: Domain,
    codec: Codec,
    *,
    count: int,
    rate: float,
    seed: int,
    cards: int = DEFAULT_CARDS,
) -> list[str]:
    """Publishes ``count`` transactions; with ``rate`` > 0 each is stamped with its send time.

    Raises StackError when the broker has not acknowledged them all within ``FLUSH_TIMEOUT_S``.
    """
    # Paced, each event goes out at once. Flooding (rate 0), events are gathered into large
    # batches: the embedded broker's fetches slow down with the number of batches in a
    # partition, and a flood of 1 ms batches made later fetches stall for minutes.
    linger_ms = 1 if rate > 0 else FLOOD_LINGER_MS
    producer = Producer(producer_config(settings, **{"linger.ms": linger_ms}))
    generator = PaymentsGenerator(seed=seed, cards=cards, rate_per_s=rate if rate > 0 else 10_000.0)
    started = time.monotonic()
    event_ids: list[str] = []
    for i, item in enumerate(generator.events(count)):
        record = item.record
        if rate > 0:
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            record = dict(record, event_time=int(time.time() * 1000))
        producer.produce(
            domain.topics.events,
            key=str(record[domain.key_field]).encode(),
            value=codec.encode(record),
        )
        producer.poll(0)
        event_ids.append(str(record[domain.event_id_field]))
    left = producer.flush(FLUSH_TIMEOUT_S)
    if left:
        raise StackError(
            f"{left} of {count} transactions were not acknowledged by the broker at "
            f"{settings.bootstrap} within {FLUSH_TIMEOUT_S:.0f} s"
        )
    return event_ids

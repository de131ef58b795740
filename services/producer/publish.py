"""Publishing synthetic events at a steady rate (open loop: the schedule does not wait for us),
and, when asked, each event's outcome (the generator's own truth) a label delay later."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Producer

from services.core.declarations import Domain
from services.core.domains import load_domain
from services.core.errors import ConfigError, StackError
from services.core.kafka import producer_config
from services.core.serde import Codec, codecs_for
from services.core.settings import StackSettings, load_settings
from services.producer.drift import Drift, Drifts
from services.producer.synthetic import PaymentsGenerator

# Enough cards that, at the rates a demo or a test publishes, each card pays only now and then,
# as in the bootstrap model's training data: features mean little when every card pays each second.
DEFAULT_CARDS = 20_000
FLOOD_LINGER_MS = 100
FLUSH_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Outcomes:
    """Publish each event's outcome to ``<domain>.outcomes``, ``label_delay_s`` after the event
    (paced runs wait for the last ones; a flood publishes them right after the events, their
    ``observed_at`` still the event's time plus the delay)."""

    codec: Codec
    label_delay_s: float = 0.0


def publish_synthetic(
    settings: StackSettings,
    domain: Domain,
    codec: Codec,
    *,
    count: int,
    rate: float,
    seed: int,
    cards: int = DEFAULT_CARDS,
    outcomes: Outcomes | None = None,
    drifts: list[Drift] | Drifts | None = None,
    stop: Callable[[], bool] | None = None,
) -> list[str]:
    """Publishes ``count`` transactions; with ``rate`` > 0 each is stamped with its send time.
    With ``outcomes``, each transaction's outcome follows it. ``stop`` ends the stream early
    when it returns True (a long paced stream while something else is watched); ``drifts``
    may be a ``Drifts`` the caller keeps, to begin one while the stream runs.

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
    due: deque[tuple[float, bytes, bytes]] = deque()  # (monotonic time due, key, value)

    def publish_due(until: float) -> None:
        while due and due[0][0] <= until:
            _, key, value = due.popleft()
            producer.produce(domain.topics.outcomes, key=key, value=value)

    drifted = drifts if isinstance(drifts, Drifts) else Drifts(drifts or [], seed)
    for i, item in enumerate(generator.events(count)):
        if stop is not None and stop():
            break
        record, is_fraud = drifted.apply(i, item.record, item.is_fraud)
        if rate > 0:
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            record = dict(record, event_time=int(time.time() * 1000))
        key = str(record[domain.key_field]).encode()
        producer.produce(domain.topics.events, key=key, value=codec.encode(record))
        if outcomes is not None:
            delay_s = outcomes.label_delay_s
            outcome = {
                domain.event_id_field: record[domain.event_id_field],
                domain.label_field: is_fraud,
                "observed_at": int(record[domain.event_time_field] + delay_s * 1000),
            }
            due.append((time.monotonic() + delay_s, key, outcomes.codec.encode(outcome)))
            publish_due(time.monotonic() if rate > 0 else float("inf"))
        producer.poll(0)
        event_ids.append(str(record[domain.event_id_field]))
    while due:
        time.sleep(max(0.0, min(due[0][0] - time.monotonic(), 0.1)))
        publish_due(time.monotonic())
        producer.poll(0)
    left = producer.flush(FLUSH_TIMEOUT_S)
    if left:
        raise StackError(
            f"{left} records ({count} transactions and their outcomes if asked) were not "
            f"acknowledged by the broker at "
            f"{settings.bootstrap} within {FLUSH_TIMEOUT_S:.0f} s"
        )
    return event_ids


def produce(
    domain_name: str,
    *,
    count: int,
    rate: float,
    seed: int,
    cards: int,
    outcomes: bool,
    label_delay_s: float,
    drifts: list[str] | None = None,
) -> str:
    """``streamml produce``: synthetic events (and their outcomes) on the stack the settings
    name; returns what was published, for a person."""
    if label_delay_s < 0:
        raise ConfigError("--label-delay must be at least 0")
    settings = load_settings(StackSettings)
    domain = load_domain(settings.features_dir, domain_name)
    codecs = codecs_for(settings)
    following = Outcomes(codecs.for_topic(domain.topics.outcomes), label_delay_s)
    started = time.monotonic()
    publish_synthetic(
        settings,
        domain,
        codecs.for_topic(domain.topics.events),
        count=count,
        rate=rate,
        seed=seed,
        cards=cards,
        outcomes=following if outcomes else None,
        drifts=[Drift.parse(d) for d in drifts or ()],
    )
    also = f" and their outcomes to {domain.topics.outcomes}" if outcomes else ""
    return (
        f"published {count} events to {domain.topics.events}{also} "
        f"in {time.monotonic() - started:.1f} s"
    )

"""The open-loop load generator of ``streamml bench``: a process of its own.

Open loop: event ``i`` of a step is due at ``start + i / rate`` whatever the pipeline does,
and its ``event_time`` is that due time, not the time it was actually sent. A generator that
falls behind therefore shows as latency, instead of hiding it (no coordinated omission). The
events are encoded before the step starts, so encoding costs nothing on the clock. With an
outcomes topic (the soak), each event's outcome follows it ``label_delay_s`` later, on the same
schedule: what a team that learns the truth later would publish, for the monitor to join.

One process per step: ``python -m services.bench.loadgen '<StepPlan as JSON>'`` prints one JSON
line, a ``StepSent``: how many events it sent, when they were due, and how late its last send
was against the schedule.
"""

from __future__ import annotations

import heapq
import json
import os
import random
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from confluent_kafka import Producer

from services.bench.procstat import usage
from services.core.schemas import SchemaStore
from services.core.serde import Codec, CodecFactory

MERCHANTS = 300
CURRENCIES = ("EUR", "EUR", "EUR", "USD", "GBP")
LINGER_MS = 5  # librdkafka's default; 1-2 ms makes so many small batches that the broker slows
SEND_SLICE_S = 0.001  # the sender wakes at most this late for the next due event
ENCODE_HEADROOM_S = 0.5
ENCODE_S_PER_EVENT = 30e-6
FRAUD_SHARE = 0.02  # of the outcomes, for the monitor's quality figures


@dataclass(frozen=True)
class StepPlan:
    bootstrap: str
    schemas_dir: str
    topic: str
    cards: int
    seed: int
    run_id: str  # in every event id, so the measurement knows its own events
    step: int
    rate: float  # events per second
    seconds: float
    outcomes_topic: str = ""  # empty: no outcomes
    label_delay_s: float = 30.0

    @classmethod
    def from_json(cls, text: str) -> StepPlan:
        return cls(**json.loads(text))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @property
    def count(self) -> int:
        return max(1, round(self.rate * self.seconds))


@dataclass(frozen=True)
class StepSent:
    step: int
    sent: int
    first_due_unix_s: float
    last_due_unix_s: float
    send_lag_s: float  # how long after its due time the last event was handed to the producer
    undelivered: int
    peak_rss_mib: float  # this process's own (VmHWM: rusage would count the parent it forked from)

    @classmethod
    def from_json(cls, text: str) -> StepSent:
        return cls(**json.loads(text))


def event_id(run_id: str, step: int, index: int) -> str:
    return f"{run_id}-{step}-{index}"


def parse_event_id(value: str) -> tuple[str, int, int] | None:
    """(run id, step, index) of an event id made here, else None."""
    parts = value.rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return parts[0], int(parts[1]), int(parts[2])


def encoded_events(plan: StepPlan, start_unix_s: float, codec: Codec) -> list[tuple[bytes, bytes]]:
    """(key, value) of every event of the step, each with its due time as event time."""
    rng = random.Random(plan.seed * 1_000 + plan.step)  # noqa: S311 -- synthetic data, seeded
    events = []
    for i in range(plan.count):
        card = f"card-{rng.randrange(plan.cards)}"
        event = {
            "event_id": event_id(plan.run_id, plan.step, i),
            "card_id": card,
            "merchant_id": f"merchant-{min(int(rng.paretovariate(1.2)), MERCHANTS) - 1}",
            "amount": round(rng.lognormvariate(3.5, 1.0), 2),
            "currency": rng.choice(CURRENCIES),
            "event_time": round((start_unix_s + i / plan.rate) * 1000),
        }
        events.append((card.encode(), codec.encode(event)))
    return events


def encoded_outcomes(
    plan: StepPlan, start_unix_s: float, events: list[tuple[bytes, bytes]], codec: Codec
) -> list[tuple[bytes, bytes]]:
    """(key, value) of each event's outcome: observed ``label_delay_s`` after the event."""
    rng = random.Random(plan.seed * 1_000 + plan.step + 1)  # noqa: S311 -- synthetic, seeded
    outcomes = []
    for i, (key, _) in enumerate(events):
        observed = round((start_unix_s + i / plan.rate + plan.label_delay_s) * 1000)
        outcome = {
            "event_id": event_id(plan.run_id, plan.step, i),
            "is_fraud": rng.random() < FRAUD_SHARE,
            "observed_at": observed,
        }
        outcomes.append((key, codec.encode(outcome)))
    return outcomes


Scheduled = tuple[float, int, str, bytes, bytes]  # due, order, topic, key, value


def schedule(
    plan: StepPlan,
    start_unix_s: float,
    events: list[tuple[bytes, bytes]],
    outcomes: list[tuple[bytes, bytes]],
) -> Iterable[Scheduled]:
    """The events at their due times and the outcomes ``label_delay_s`` after theirs, merged."""
    rate = plan.rate
    timed = [(start_unix_s + i / rate, i, plan.topic, k, v) for i, (k, v) in enumerate(events)]
    if not outcomes:
        return timed
    delay = start_unix_s + plan.label_delay_s
    later = [(delay + i / rate, i, plan.outcomes_topic, k, v) for i, (k, v) in enumerate(outcomes)]
    return heapq.merge(timed, later)


def send(
    producer: Producer,
    plan: StepPlan,
    start_unix_s: float,
    events: list[tuple[bytes, bytes]],
    outcomes: list[tuple[bytes, bytes]] | None = None,
) -> StepSent:
    lag = 0.0
    for due, _, topic, key, value in schedule(plan, start_unix_s, events, outcomes or []):
        wait = due - time.time()
        if wait > SEND_SLICE_S:
            time.sleep(wait)
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.001)
        producer.poll(0)
        if topic == plan.topic:
            lag = max(0.0, time.time() - due)
    undelivered = producer.flush(30)
    last_due = start_unix_s + (len(events) - 1) / plan.rate
    peak = usage(os.getpid()).peak_rss_mib
    return StepSent(
        plan.step, len(events) - undelivered, start_unix_s, last_due, lag, undelivered, peak
    )


def main(argv: list[str]) -> int:
    plan = StepPlan.from_json(argv[0])
    codec = CodecFactory(SchemaStore.from_dir(Path(plan.schemas_dir))).for_topic(plan.topic)
    producer = Producer(
        {"bootstrap.servers": plan.bootstrap, "linger.ms": LINGER_MS, "acks": "all"}
    )
    # Encoding takes about 15 µs an event: start once it is surely done.
    records = plan.count * (2 if plan.outcomes_topic else 1)
    start = time.time() + ENCODE_HEADROOM_S + records * ENCODE_S_PER_EVENT
    events = encoded_events(plan, start, codec)
    outcomes = []
    if plan.outcomes_topic:
        factory = CodecFactory(SchemaStore.from_dir(Path(plan.schemas_dir)))
        outcomes = encoded_outcomes(plan, start, events, factory.for_topic(plan.outcomes_topic))
    print(json.dumps(asdict(send(producer, plan, start, events, outcomes))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

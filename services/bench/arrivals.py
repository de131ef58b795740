"""Where ``streamml bench`` measures: a read_committed consumer of the predictions topic.

A background thread reads all the time and stamps each batch of records with its receipt
time (the batch is what had arrived with its first record), so latency is receipt minus the
event's own ``event_time`` (its due time, set by the load generator). Records of other runs
are skipped by their event ids.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import Consumer

from services.bench.loadgen import parse_event_id
from services.core.errors import SerializationError
from services.core.kafka import consume_batch, consumer_config
from services.core.serde import Codec
from services.core.settings import StackSettings

_BATCH = 5_000


@dataclass
class StepArrivals:
    """What arrived of one step's events: how often each index, and each first arrival's
    latency in milliseconds, whole and to the scorer's ``predicted_at`` stamp."""

    expected: int
    seen: bytearray = field(init=False)
    latencies_ms: list[float] = field(default_factory=list)
    # event time to predicted_at: the featurizer and the scorer, not the scorer's commit nor
    # this reader (same order as latencies_ms)
    scored_ms: list[float] = field(default_factory=list)
    last_arrival_unix_s: float = 0.0
    served_by: Counter[str] = field(default_factory=Counter)  # first arrivals, by who scored

    def __post_init__(self) -> None:
        self.seen = bytearray(self.expected)

    @property
    def arrived(self) -> int:
        return self.expected - self.seen.count(0)

    @property
    def duplicated(self) -> int:
        return sum(1 for n in self.seen if n > 1)


class Arrivals:
    """Counts the predictions of one run's events, per step, as they arrive."""

    def __init__(self, settings: StackSettings, topic: str, codec: Codec, run_id: str) -> None:
        self._codec = codec
        self._run_id = run_id
        self._consumer = Consumer(consumer_config(settings, f"streamml-bench-{run_id}"))
        self._consumer.subscribe([topic])
        self._steps: dict[int, StepArrivals] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.foreign = 0  # records of other runs or undecodable ones
        self._thread = threading.Thread(target=self._read, name="bench-arrivals", daemon=True)
        self._thread.start()

    def expect(self, step: int, count: int) -> StepArrivals:
        with self._lock:
            arrivals = self._steps[step] = StepArrivals(count)
        return arrivals

    def _read(self) -> None:
        while not self._stopped.is_set():
            # The batch is what had arrived when its first record did (no fill window), so its
            # stamp is that record's receipt time.
            messages = consume_batch(self._consumer, _BATCH, 0.0)
            if not messages:
                continue
            now = time.time()
            with self._lock:
                for message in messages:
                    if message.error() is None:
                        self._count(message.value(), now)

    def _count(self, value: bytes | None, now: float) -> None:
        try:
            record = self._codec.decode(value or b"")
        except SerializationError:
            self.foreign += 1
            return
        parsed = parse_event_id(str(record["event_id"]))
        arrivals = self._steps.get(parsed[1]) if parsed and parsed[0] == self._run_id else None
        if parsed is None or arrivals is None or parsed[2] >= arrivals.expected:
            self.foreign += 1
            return
        index = parsed[2]
        if arrivals.seen[index] == 0:
            event_time = int(record["event_time"])
            arrivals.latencies_ms.append(now * 1000 - event_time)
            arrivals.scored_ms.append(float(record["predicted_at"]) - event_time)
            arrivals.last_arrival_unix_s = now
            arrivals.served_by[str(record.get("served_by"))] += 1
        arrivals.seen[index] = min(arrivals.seen[index] + 1, 255)

    def wait(self, step: int, timeout_s: float) -> bool:
        """Until every event of the step has arrived (True) or the timeout (False)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                arrivals = self._steps[step]
                if arrivals.arrived == arrivals.expected:
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    def latencies_since(self, step: int, start: int) -> tuple[list[float], list[float], int]:
        """The latencies of the step's first arrivals from index ``start`` on (whole, and to
        the scorer's stamp), and where the next call starts (a long run reads them in slices,
        not whole)."""
        with self._lock:
            arrivals = self._steps[step]
            end = len(arrivals.latencies_ms)
            return arrivals.latencies_ms[start:end], arrivals.scored_ms[start:end], end

    def snapshot(self, step: int) -> StepArrivals:
        with self._lock:
            arrivals = self._steps[step]
            copy = StepArrivals(arrivals.expected)
            copy.seen[:] = arrivals.seen
            copy.latencies_ms = list(arrivals.latencies_ms)
            copy.scored_ms = list(arrivals.scored_ms)
            copy.last_arrival_unix_s = arrivals.last_arrival_unix_s
            copy.served_by = Counter(arrivals.served_by)
            return copy

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(5)
        self._consumer.close()

"""The other end of ``produce``: a topic's records decoded with their schema, as JSON lines."""

from __future__ import annotations

import json
import time
from typing import TextIO

from confluent_kafka import Consumer

from services.core.kafka import consumer_config
from services.core.serde import codecs_for
from services.core.settings import StackSettings

POLL_S = 0.2


def print_records(
    settings: StackSettings, topic: str, out: TextIO, *, count: int | None, idle_timeout_s: float
) -> int:
    """Writes ``topic``'s committed records to ``out`` from the start, one JSON object a line
    (bytes as hex), until ``count`` records or ``idle_timeout_s`` without one; returns how
    many were written."""
    codec = codecs_for(settings).for_topic(topic)
    consumer = Consumer(consumer_config(settings, f"streamml-consume-{time.time_ns()}"))
    consumer.subscribe([topic])
    seen, idle_since = 0, time.monotonic()
    try:
        while count is None or seen < count:
            message = consumer.poll(POLL_S)
            value = None if message is None else message.value()
            if message is None or message.error() is not None or value is None:
                if time.monotonic() - idle_since > idle_timeout_s:
                    break
                continue
            idle_since = time.monotonic()
            print(json.dumps(codec.decode(value), default=_bytes_as_hex), file=out)
            seen += 1
    finally:
        consumer.close()
    return seen


def _bytes_as_hex(value: object) -> str:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(type(value).__name__)

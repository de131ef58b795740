"""Publishes payment transactions to streamml and reads its predictions back, from Python, with
only confluent-kafka, fastavro, PyYAML and docs/asyncapi.yaml (no streamml import).

    python integrate.py publish <bootstrap> <asyncapi.yaml> <n> <prefix>
    python integrate.py read <bootstrap> <asyncapi.yaml> <prefix> <n>

``publish`` sends n transactions with event ids <prefix>-0 .. <prefix>-(n-1); ``read`` prints
one JSON line per prediction whose event id starts with <prefix>, until it has n of them (exit 1
if they do not all come within two minutes). The Avro schema of each topic is the message
payload in the AsyncAPI document; the wire format is Avro single-object encoding.
"""

from __future__ import annotations

import io
import json
import sys
import time
import uuid
from typing import Any

import yaml
from confluent_kafka import Consumer, Producer
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

TRANSACTIONS = "payments.transactions"  # key: card_id
PREDICTIONS = "payments.predictions"  # key: card_id


def schema_of(document: dict[str, Any], topic: str) -> dict[str, Any]:
    """The Avro schema of ``topic``'s messages in the AsyncAPI document."""
    channel = next(c for c in document["channels"].values() if c["address"] == topic)
    (reference,) = channel["messages"].values()
    message = document["components"]["messages"][reference["$ref"].rsplit("/", 1)[1]]
    schema: dict[str, Any] = message["payload"]["schema"]
    return schema


def header_of(schema: dict[str, Any]) -> bytes:
    """C3 01 and the 8-byte CRC-64-AVRO fingerprint of the schema's canonical form."""
    canonical = to_parsing_canonical_form(parse_schema(schema))
    return b"\xc3\x01" + bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


def publish(bootstrap: str, document: dict[str, Any], n: int, prefix: str) -> None:
    schema = schema_of(document, TRANSACTIONS)
    parsed, header = parse_schema(schema), header_of(schema)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    now_ms = int(time.time() * 1000)
    for i in range(n):
        card = f"python-card-{i % 7}"
        body = io.BytesIO()
        schemaless_writer(
            body,
            parsed,
            {
                "event_id": f"{prefix}-{i}",
                "card_id": card,
                "merchant_id": f"python-merchant-{i % 3}",
                "amount": 10.0 + i,
                "currency": "EUR",
                "event_time": now_ms + i,
            },
        )
        producer.produce(TRANSACTIONS, key=card.encode(), value=header + body.getvalue())
    if producer.flush(30) != 0:
        raise SystemExit("some transactions were not delivered")
    print(f"published {n} transactions to {TRANSACTIONS}", file=sys.stderr)


def read(bootstrap: str, document: dict[str, Any], prefix: str, n: int) -> int:
    schema = schema_of(document, PREDICTIONS)
    parsed, header = parse_schema(schema), header_of(schema)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"python-reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            # Predictions are published in Kafka transactions: read only committed ones.
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([PREDICTIONS])
    seen: set[str] = set()
    deadline = time.monotonic() + 120
    try:
        while len(seen) < n and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            value = message.value() or b""
            if value[:10] != header:
                continue  # written with another version of the schema: not this example's
            prediction = schemaless_reader(io.BytesIO(value[10:]), parsed)
            event_id = str(prediction["event_id"])
            if event_id.startswith(f"{prefix}-") and event_id not in seen:
                seen.add(event_id)
                shown = {k: prediction[k] for k in ("event_id", "score", "decision")}
                print(json.dumps({**shown, "model_version": prediction["model_version"]}))
    finally:
        consumer.close()
    print(f"read {len(seen)} of {n} predictions", file=sys.stderr)
    return 0 if len(seen) == n else 1


def main(argv: list[str]) -> int:
    action, bootstrap, path = argv[:3]
    with open(path) as source:
        document = yaml.safe_load(source)
    if action == "publish":
        publish(bootstrap, document, int(argv[3]), argv[4])
        return 0
    return read(bootstrap, document, argv[3], int(argv[4]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

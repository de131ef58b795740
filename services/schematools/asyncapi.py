"""The AsyncAPI 3 document of every topic: ``streamml schemas asyncapi``.

One channel per topic a team may publish to or read: each declared domain's data topics and
DLQs, and the platform topics. Each channel's message carries its Avro schema from
``schemas/`` (inlined, schema format Avro 1.9.0), its key, and the wire format; operations say
who sends and who receives it (our services by name, "producers" and "consumers" for other
teams). Services' own internal topics (changelogs, re-keyed copies) are left out: nobody else
should read or write them (docs/topics.md).

The document is generated, checked in at ``docs/asyncapi.yaml``, and ``--check`` fails when the
committed file differs from what the declarations and schemas give.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from services.core.declarations import Domain
from services.core.schemas import SchemaStore
from services.core.topics import (
    ALERTS,
    MODEL_EVENTS,
    MODELS,
    RETRAIN_REQUESTS,
    DomainTopics,
    schema_subject,
)

AVRO_FORMAT = "application/vnd.apache.avro;version=1.9.0"
CONTENT_TYPE = "application/octet-stream"
WIRE_FORMAT = (
    "Avro single-object encoding: C3 01, the 8-byte CRC-64-AVRO fingerprint of the writer "
    "schema's canonical form (little-endian), then the Avro binary body. With a schema "
    "registry configured (STREAMML_SCHEMA_REGISTRY_URL), the Confluent wire format instead."
)
PRODUCERS = "producers"  # another team's code that publishes to the topic
CONSUMERS = "consumers"  # another team's code that reads it


@dataclass(frozen=True)
class Contract:
    """One topic's contract: how to find its name, its key, who writes and who reads it."""

    topic: Callable[[DomainTopics], str]
    key: str
    summary: str
    senders: tuple[str, ...]
    receivers: tuple[str, ...]


def _domain_contracts(domain: Domain) -> list[Contract]:
    key = f"{domain.key_field} (UTF-8)"
    dlq_key = "the original record's key, unchanged"
    return [
        Contract(
            lambda t: t.events,
            key,
            f"{domain.name} events, as the teams that own them publish them",
            (PRODUCERS,),
            ("featurizer",),
        ),
        Contract(
            lambda t: t.outcomes,
            f"any ({domain.key_field} by convention): the monitor re-keys by event id",
            "what each event turned out to be, published when it is known",
            (PRODUCERS,),
            ("monitor",),
        ),
        Contract(
            lambda t: t.features,
            key,
            "each accepted event's feature vector, as of that event",
            ("featurizer",),
            ("scorer", "monitor", "featurelog", CONSUMERS),
        ),
        Contract(
            lambda t: t.predictions,
            key,
            "exactly one prediction per event",
            ("scorer",),
            ("monitor", CONSUMERS),
        ),
        Contract(
            lambda t: t.shadow_predictions,
            key,
            "shadow models' predictions, to compare offline: never acted on",
            ("scorer",),
            (CONSUMERS,),
        ),
        Contract(
            lambda t: t.labelled,
            key,
            "each predicted event joined with its outcome and the vector as scored",
            ("monitor",),
            ("scorer", "trainer", CONSUMERS),
        ),
        Contract(
            lambda t: t.monitoring,
            "<version>|<served_by>|<segment>|<scope>",
            "snapshots of the quality figures per model version and segment",
            ("monitor",),
            ("trainer", CONSUMERS),
        ),
        Contract(
            lambda t: t.events_dlq,
            dlq_key,
            "events the featurizer could not use, with the reason",
            ("featurizer",),
            (CONSUMERS,),
        ),
        Contract(
            lambda t: t.features_dlq,
            dlq_key,
            "feature vectors the scorer or the feature log could not use, with the reason",
            ("scorer", "featurelog"),
            (CONSUMERS,),
        ),
        Contract(
            lambda t: t.outcomes_dlq,
            dlq_key,
            "outcomes the monitor could not use, with the reason",
            ("monitor",),
            (CONSUMERS,),
        ),
    ]


_PLATFORM = [
    Contract(
        lambda t: MODELS,
        "<model_name>@<version>",
        "model versions and their stages (compacted)",
        ("trainer", "cli"),
        ("scorer", "monitor", "trainer", CONSUMERS),
    ),
    Contract(
        lambda t: MODEL_EVENTS,
        "<model_name>@<version>",
        "each step of a model version's life: loads, retrain steps, promotions, rollbacks",
        ("scorer", "trainer"),
        ("trainer", CONSUMERS),
    ),
    Contract(
        lambda t: ALERTS,
        "<domain>|<model_version>|<kind>",
        "drift and quality alerts",
        ("monitor",),
        (CONSUMERS,),
    ),
    Contract(
        lambda t: RETRAIN_REQUESTS,
        "the domain",
        "requests to retrain a domain's model",
        ("monitor",),
        ("trainer",),
    ),
]


def asyncapi_document(domains: Sequence[Domain], schemas: SchemaStore, version: str) -> Any:
    """The AsyncAPI 3.1.0 document of ``domains``' topics and the platform's."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    placed: list[tuple[str, Contract]] = []
    for domain in sorted(domains, key=lambda d: d.name):
        placed += [(c.topic(domain.topics), c) for c in _domain_contracts(domain)]
    placed += [(c.topic(DomainTopics("", "")), c) for c in _PLATFORM]
    for topic, contract in placed:
        subject = schema_subject(topic)
        message_id = _identifier(subject)
        if message_id not in messages:
            messages[message_id] = _message(subject, schemas)
        channel_id = _identifier(topic)
        channels[channel_id] = {
            "address": topic,
            "title": topic,
            "description": f"{contract.summary}. Key: {contract.key}.",
            "messages": {message_id: {"$ref": f"#/components/messages/{message_id}"}},
            "bindings": {"kafka": {"bindingVersion": "0.5.0", "topic": topic}},
        }
        for action, parties in (("send", contract.senders), ("receive", contract.receivers)):
            for party in parties:
                operations[f"{party}-{action}-{channel_id}"] = {
                    "action": action,
                    "channel": {"$ref": f"#/channels/{channel_id}"},
                    "summary": _who(party, action, topic),
                    "messages": [{"$ref": f"#/channels/{channel_id}/messages/{message_id}"}],
                    "tags": [{"name": party}],
                }
    return {
        "asyncapi": "3.1.0",
        "info": {
            "title": "streamml topics",
            "version": version,
            "description": (
                "Every topic a team publishes to or reads from: its key, its Avro schema "
                "(schemas/*.avsc) and who sends and receives it. " + WIRE_FORMAT
            ),
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "local": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "streamml up's Apache Kafka (its address is in .streamml/stack.env)",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def _message(subject: str, schemas: SchemaStore) -> dict[str, Any]:
    schema = schemas.current(subject)
    return {
        "name": subject,
        "title": f"{subject} (schemas/{subject}.avsc)",
        "contentType": CONTENT_TYPE,
        "description": WIRE_FORMAT,
        "payload": {"schemaFormat": AVRO_FORMAT, "schema": schema.source},
        "bindings": {"kafka": {"bindingVersion": "0.5.0", "key": {"type": "string"}}},
    }


def _who(party: str, action: str, topic: str) -> str:
    verb = "publish to" if action == "send" else "read"
    if party == PRODUCERS:
        return f"Your producers {verb} {topic}"
    if party == CONSUMERS:
        return f"Your consumers may {verb} {topic}"
    return f"streamml's {party} {'publishes to' if action == 'send' else 'reads'} {topic}"


def _identifier(name: str) -> str:
    return name.replace(".", "_").replace("-", "_")


def render(document: Any) -> str:
    header = "# Generated by `streamml schemas asyncapi`; do not edit (docs/integrating.md).\n"
    body: str = yaml.safe_dump(json.loads(json.dumps(document)), sort_keys=False, width=100)
    return header + body


def write_asyncapi(
    domains: Sequence[Domain],
    schemas_dir: Path,
    out_path: Path,
    version: str,
    *,
    check: bool,
    out: TextIO,
) -> int:
    """Writes the document to ``out_path``; with ``check``, writes nothing and returns 1 when
    the file differs from the generated document."""
    text = render(asyncapi_document(domains, SchemaStore.from_dir(schemas_dir), version))
    current = out_path.read_text() if out_path.exists() else None
    if check:
        if current == text:
            print(f"{out_path}: up to date", file=out)
            return 0
        print(f"{out_path}: stale; run `streamml schemas asyncapi` and commit it", file=out)
        return 1
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text)
    print(f"wrote {out_path} ({len(text.splitlines())} lines)", file=out)
    return 0

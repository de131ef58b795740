"""The fuzz targets (see ``services/bench/fuzz.py``): each takes one input and raises only
when the code under test misbehaves."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.core.deadletter import SourcePosition
from services.core.declarations import Domain
from services.core.domains import load_domain
from services.core.errors import SerializationError
from services.core.paths import default_features_dir, default_schemas_dir
from services.core.schemas import SchemaStore
from services.core.serde import SINGLE_OBJECT_MAGIC, CodecFactory, SingleObjectCodec
from services.core.topics import schema_subject
from services.featurizer.processor import EventProcessor
from services.featurizer.state import WindowTable
from services.scorer.batch import ModelCaller, VectorScorer
from services.scorer.http.api import ScoringApi
from services.scorer.serving import Lineup, Serving
from services.scorer.vectors import VectorSpec

RESET_STATE_AT = 10_000  # entities in the featurizer's state before a fresh one (bounded memory)


def avro_target(schemas: SchemaStore, domain: Domain) -> Callable[[bytes], None]:
    codecs = [SingleObjectCodec(schemas.current(s), schemas) for s in sorted(schemas.subjects())]
    events_topic = domain.topics.events
    events_header = (
        SINGLE_OBJECT_MAGIC + schemas.current(schema_subject(events_topic)).fingerprint_bytes
    )
    processor = EventProcessor(domain, CodecFactory(schemas).for_topic(events_topic))
    position = SourcePosition(events_topic, 0, 0)
    tables: list[WindowTable] = []

    def one(data: bytes) -> None:
        if not data:
            return
        codec = codecs[data[0] % len(codecs)]
        header = SINGLE_OBJECT_MAGIC + codec.schema.fingerprint_bytes
        with contextlib.suppress(SerializationError):
            codec.decode(header + data[1:] if data[0] & 0x80 else data[1:])
        if not tables or len(tables[-1].partition(0).windows) > RESET_STATE_AT:
            tables[:] = [WindowTable(domain, domain.key_entity, schemas, "fuzz")]
        event = events_header + data[1:] if data[0] & 0x40 else data
        processor.process(data[1:9] or None, event, position, tables[-1].partition(0))

    return one


@dataclass
class _Service:
    """What the HTTP endpoint needs of a scorer: a champion that sums its inputs."""

    vectors: VectorScorer
    lineup: Lineup

    def ready(self) -> bool:
        return True


class _Summing:
    def __init__(self, names: tuple[str, ...]) -> None:
        self.feature_names = names

    def predict(self, rows: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            result: np.ndarray = 1.0 / (1.0 + np.exp(-rows.sum(axis=1) / 1000.0))
        return result


def _scoring_api(schemas_dir: Path, domain: Domain) -> ScoringApi:
    from prometheus_client import CollectorRegistry

    champion = Serving(_Summing(domain.model_inputs), domain.model_name, "1", "champion", "onnx")
    scorer = VectorScorer(domain, 0.5, None, ModelCaller(0))
    spec = VectorSpec.for_domain(domain, schemas_dir)
    return ScoringApi(_Service(scorer, Lineup(champion)), spec, CollectorRegistry())


def _checked(status: int, body: bytes) -> None:
    assert status < 500, (status, body[:500])
    json.loads(body)


def http_target(schemas_dir: Path, domain: Domain) -> Callable[[bytes], None]:
    """``POST /v1/score/{domain}``'s body."""
    api = _scoring_api(schemas_dir, domain)

    def one(data: bytes) -> None:
        response = api.score(domain.name, data)
        _checked(response.status, response.body)

    return one


def v2_target(schemas_dir: Path, domain: Domain) -> Callable[[bytes], None]:
    """``POST /v2/models/{domain}/infer``'s body: JSON, or (input starting ``B`` and a length
    byte) a JSON header of that length and binary tensors."""
    api = _scoring_api(schemas_dir, domain)

    def one(data: bytes) -> None:
        header_length = None
        if data[:1] == b"B" and len(data) > 1:
            header_length, data = str(data[1]), data[2:]
        response = api.v2_infer(domain.name, data, header_length)
        _checked(response.status, response.body)

    return one


def target_of(name: str) -> Callable[[bytes], None]:
    """The named target on the project's own declarations and schemas."""
    schemas_dir = default_schemas_dir()
    domain = load_domain(default_features_dir(), "payments")
    if name == "avro":
        return avro_target(SchemaStore.from_dir(schemas_dir), domain)
    if name == "http":
        return http_target(schemas_dir, domain)
    if name == "v2":
        return v2_target(schemas_dir, domain)
    raise ValueError(f"unknown fuzz target {name!r}: avro, http or v2")

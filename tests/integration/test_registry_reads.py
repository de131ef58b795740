"""A registry read sees every write that came before it, also one whose commit is still landing.

Kafka answers a transaction's commit before its markers are on the partitions, and until they
are, a read_committed reader's end (the last stable offset) is before the record. A reader that
stopped there missed the version just registered: ``promote`` right after ``register`` failed with
"has no version '1' (known: none)" on a busy machine. The reader's end is the log's end (the
high watermark), and it waits for the markers, or says why it could not.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from confluent_kafka import Producer

from services.core.errors import StackError
from services.core.kafka import producer_config
from services.core.serde import codecs_for
from services.core.settings import StackSettings
from services.registry import versions
from services.registry.versions import CANDIDATE, MODELS, ModelVersion, read_registry

pytestmark = pytest.mark.integration

HELD_S = 1.5


def candidate(name: str) -> ModelVersion:
    at = versions.now_ms()
    return ModelVersion(
        model_name=name,
        version="1",
        stage=CANDIDATE,
        kind="onnx",
        artifact_uri="file:///nowhere/model.onnx",
        sha256="0" * 64,
        dataset_id="ds-test",
        feature_names=["x"],
        created_at=at,
        updated_at=at,
    )


def open_transaction(stack: StackSettings, version: ModelVersion) -> Producer:
    """The record is in the log; its transaction is neither committed nor aborted yet."""
    producer = Producer(
        producer_config(stack, **{"transactional.id": f"test-registry-{uuid.uuid4().hex}"})
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    codec = codecs_for(stack).for_topic(MODELS)
    producer.produce(MODELS, key=version.key.encode(), value=codec.encode(version.to_record()))
    producer.flush(30)
    return producer


def test_a_read_waits_for_a_commit_still_landing_and_sees_its_version(
    stack: StackSettings,
) -> None:
    version = candidate(f"held-{uuid.uuid4().hex[:8]}")
    producer = open_transaction(stack, version)
    committer = threading.Timer(HELD_S, lambda: producer.commit_transaction(30))
    started = time.monotonic()
    committer.start()
    view = read_registry(stack, codecs_for(stack))
    committer.join()
    assert view.get(version.model_name, "1") == version
    assert time.monotonic() - started >= HELD_S  # it waited for the commit


def test_a_read_that_cannot_reach_the_end_says_so_instead_of_returning_part_of_it(
    stack: StackSettings,
) -> None:
    producer = open_transaction(stack, candidate(f"hanging-{uuid.uuid4().hex[:8]}"))
    try:
        with pytest.raises(StackError, match="did not reach the end"):
            read_registry(stack, codecs_for(stack), timeout_s=1.0)
    finally:
        producer.abort_transaction(30)

"""Our Avro single-object encoding as faust codecs, found by name through faust's entry
points (``streamml`` and ``streamml:<subject>``), reading what our services write."""

from __future__ import annotations

from typing import Any

import pytest
from faust.serializers import codecs

from services.core.errors import SerializationError
from services.core.serde import CodecFactory
from tests.unit.test_serde import SAMPLES

TRANSACTION = SAMPLES["payments.transactions"]


def prediction() -> dict[str, Any]:
    return dict(SAMPLES["payments.predictions"])


def test_the_streamml_codec_is_found_by_name_and_reads_what_the_services_write(
    codecs_factory: CodecFactory,
) -> None:
    any_topic = codecs.get_codec("streamml")
    written = codecs_factory.for_topic("payments.predictions").encode(prediction())
    assert any_topic.loads(written) == prediction()
    again = any_topic.dumps(prediction())
    assert codecs_factory.for_topic("payments.predictions").decode(again) == prediction()


def test_a_subject_codec_writes_the_bytes_our_codec_writes(codecs_factory: CodecFactory) -> None:
    events = codecs.get_codec("streamml:payments.transactions")
    ours = codecs_factory.for_topic("payments.transactions")
    assert events.dumps(TRANSACTION) == ours.encode(TRANSACTION)
    assert events.loads(ours.encode(TRANSACTION)) == TRANSACTION


def test_bad_bytes_and_unplaceable_records_are_clear_errors() -> None:
    any_topic = codecs.get_codec("streamml")
    with pytest.raises(SerializationError, match="too short"):
        any_topic.loads(b"\xc3\x01")
    with pytest.raises(SerializationError, match="not in schemas/"):
        any_topic.loads(b"\xc3\x01" + b"\x00" * 8 + b"\x02")
    with pytest.raises(SerializationError, match="match none of our schemas"):
        any_topic.dumps({"event_id": "x", "colour": "red"})
    with pytest.raises(SerializationError, match="not Avro single-object"):
        codecs.get_codec("streamml:payments.transactions").loads(b'{"event_id": "x"}')


@pytest.fixture
def codecs_factory(schema_store: Any) -> CodecFactory:
    return CodecFactory(schema_store)

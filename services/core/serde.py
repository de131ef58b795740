"""Avro on every topic.

Default: Avro single-object encoding (``C3 01``, the writer schema's 8-byte CRC-64-AVRO
fingerprint little-endian, the Avro binary body); the reader finds the writer schema by
fingerprint in ``schemas/`` and resolves it to its own. With ``STREAMML_SCHEMA_REGISTRY_URL``
set, the Confluent wire format through confluent-kafka's Schema Registry client instead.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError

from services.core.errors import (
    EncodingError,
    MalformedRecordError,
    SerializationError,
    StackError,
    UnknownSchemaError,
)
from services.core.flatavro import compile_codec
from services.core.schemas import Schema, SchemaStore
from services.core.settings import StackSettings
from services.core.topics import schema_subject

Record = dict[str, Any]

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
_HEADER_LEN = len(SINGLE_OBJECT_MAGIC) + 8
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NOT_FOUND = 404
_AVRO_DECODE_ERRORS = (EOFError, ValueError, TypeError, KeyError, IndexError, OverflowError)
_ONE_MS = timedelta(milliseconds=1)


class Codec(Protocol):
    """Encodes and decodes the values of one topic."""

    def encode(self, record: Record) -> bytes: ...

    def decode(self, data: bytes) -> Record: ...


class SingleObjectCodec:
    """Avro single-object encoding with writer-schema resolution by fingerprint."""

    def __init__(self, schema: Schema, store: SchemaStore) -> None:
        self._schema = schema
        self._store = store
        self._header = SINGLE_OBJECT_MAGIC + schema.fingerprint_bytes
        self._fast = compile_codec(schema.parsed, schema.subject)

    @property
    def schema(self) -> Schema:
        return self._schema

    def encode(self, record: Record) -> bytes:
        if self._fast is not None:
            return self._header + self._fast[0](record)
        out = io.BytesIO()
        out.write(self._header)
        try:
            schemaless_writer(out, self._schema.parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise EncodingError(f"{self._schema.subject}: {exc}") from exc
        return out.getvalue()

    def decode(self, data: bytes) -> Record:
        if len(data) < _HEADER_LEN or data[:2] != SINGLE_OBJECT_MAGIC:
            raise SerializationError(
                f"not Avro single-object encoded (starts {data[:2].hex() or 'empty'}, "
                f"expected {SINGLE_OBJECT_MAGIC.hex()})"
            )
        writer_fp = int.from_bytes(data[2:_HEADER_LEN], "little", signed=True)
        if writer_fp == self._schema.fingerprint and self._fast is not None:
            return self._fast[1](data, _HEADER_LEN)
        writer = (
            self._schema
            if writer_fp == self._schema.fingerprint
            else self._store.by_fingerprint(writer_fp)
        )
        body = io.BytesIO(data)
        body.seek(_HEADER_LEN)
        try:
            record = cast(Record, schemaless_reader(body, writer.parsed, self._schema.parsed))
        except SchemaResolutionError:  # a known schema, but not one this topic's can read
            raise UnknownSchemaError(
                f"{self._schema.subject}: written with {writer.subject}'s schema (fingerprint "
                f"{writer_fp}), which {self._schema.subject}'s current schema cannot read"
            ) from None
        except _AVRO_DECODE_ERRORS as exc:
            raise MalformedRecordError(
                f"{self._schema.subject}: body does not decode with its writer schema: {exc}"
            ) from exc
        if body.tell() != len(data):
            raise MalformedRecordError(
                f"{self._schema.subject}: {len(data) - body.tell()} bytes left after the record"
            )
        return record


class RegistryCodec:
    """Confluent wire format (magic 0, 4-byte schema id) via confluent-kafka's registry client."""

    def __init__(self, topic: str, schema: Schema, registry_url: str) -> None:
        import json

        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
        from confluent_kafka.serialization import MessageField, SerializationContext

        # new_client: the in-memory registry for mock:// URLs (tests), the real one otherwise.
        client = SchemaRegistryClient.new_client({"url": registry_url})
        text = json.dumps(schema.source)
        self._schema = schema
        self._context = SerializationContext(topic, MessageField.VALUE)
        self._serializer = AvroSerializer(client, text, conf={"auto.register.schemas": True})
        self._deserializer = AvroDeserializer(client, text)

    def encode(self, record: Record) -> bytes:
        try:
            data: bytes = self._serializer(record, self._context)
        except Exception as exc:  # confluent-kafka raises its own and fastavro's errors
            raise EncodingError(f"{self._schema.subject}: {exc}") from exc
        return data

    def decode(self, data: bytes) -> Record:
        from confluent_kafka.schema_registry.error import SchemaRegistryError
        from confluent_kafka.serialization import SerializationError as ConfluentSerdeError

        subject = self._schema.subject
        try:
            record: Record = self._deserializer(data, self._context)
        except SchemaRegistryError as exc:
            if exc.http_status_code == _NOT_FOUND:
                raise UnknownSchemaError(f"{subject}: {exc}") from exc
            raise StackError(f"schema registry failed reading {subject}: {exc}") from exc
        except ConfluentSerdeError as exc:
            raise SerializationError(f"{subject}: {exc}") from exc
        except _AVRO_DECODE_ERRORS as exc:
            raise MalformedRecordError(f"{subject}: {exc}") from exc
        except Exception as exc:  # the registry client's transport: not the record's fault
            raise StackError(f"schema registry unreachable reading {subject}: {exc}") from exc
        return _timestamps_as_millis(record)


def _timestamps_as_millis(record: Record) -> Record:
    """The registry path decodes timestamp-millis to datetimes; streamml keeps epoch ms."""
    return {k: (v - _EPOCH) // _ONE_MS if isinstance(v, datetime) else v for k, v in record.items()}


class CodecFactory:
    """Builds the codec for a topic, one per topic, from the settings' choice of wire format."""

    def __init__(self, store: SchemaStore, registry_url: str | None = None) -> None:
        self._store = store
        self._registry_url = registry_url
        self._codecs: dict[str, Codec] = {}

    @property
    def store(self) -> SchemaStore:
        return self._store

    def for_topic(self, topic: str) -> Codec:
        codec = self._codecs.get(topic)
        if codec is None:
            schema = self._store.current(schema_subject(topic))
            codec = (
                RegistryCodec(topic, schema, self._registry_url)
                if self._registry_url
                else SingleObjectCodec(schema, self._store)
            )
            self._codecs[topic] = codec
        return codec


def codecs_for(settings: StackSettings) -> CodecFactory:
    """The codecs the settings choose: the schemas directory's, through a schema registry when
    one is configured."""
    return CodecFactory(SchemaStore.from_dir(settings.schemas_dir), settings.schema_registry_url)

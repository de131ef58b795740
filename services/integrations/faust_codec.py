"""Our topics' Avro single-object encoding as faust codecs, for teams that write faust agents.

Registered through the ``faust.codecs`` entry point, so a faust app names them as strings:

- ``value_serializer="streamml"`` reads a record of any of our topics (the writer schema is
  found by its fingerprint among ``schemas/`` and ``schemas/history/``, and resolved to the
  subject's current schema) into a dict; writing with it picks the one current schema whose
  fields are exactly the dict's keys, and refuses a dict that matches none or several;
- ``value_serializer="streamml:<subject>"``, e.g. ``"streamml:payments.transactions"``,
  reads and writes that subject's records only (registered for every ``schemas/*.avsc``
  when faust loads the ``streamml`` codec).

``STREAMML_SCHEMAS_DIR`` points them at another schema folder, as it does for the services.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

from faust.serializers import codecs

from services.core.errors import SerializationError
from services.core.paths import default_schemas_dir
from services.core.schemas import SchemaStore
from services.core.serde import SingleObjectCodec

NAME = "streamml"
_HEADER_LEN = 10


@cache
def _store() -> SchemaStore:
    folder = os.environ.get("STREAMML_SCHEMAS_DIR")
    return SchemaStore.from_dir(Path(folder) if folder else default_schemas_dir())


@cache
def _codec(subject: str) -> SingleObjectCodec:
    return SingleObjectCodec(_store().current(subject), _store())


class SubjectCodec(codecs.Codec):
    """One subject's records (``streamml:<subject>``)."""

    def __init__(self, subject: str = "", **kwargs: Any) -> None:
        super().__init__(subject=subject, **kwargs)
        self.subject = subject

    def _dumps(self, obj: Any) -> bytes:
        return _codec(self.subject).encode(dict(obj))

    def _loads(self, s: bytes) -> Any:
        return _codec(self.subject).decode(bytes(s))


class AnyCodec(codecs.Codec):
    """Any of our subjects' records (``streamml``): read by fingerprint, written by fields."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        register_subject_codecs()

    def _dumps(self, obj: Any) -> bytes:
        record = dict(obj)
        return _codec(subject_of_fields(frozenset(record))).encode(record)

    def _loads(self, s: bytes) -> Any:
        data = bytes(s)
        if len(data) < _HEADER_LEN:
            raise SerializationError(f"{len(data)} bytes: too short for an Avro single object")
        writer = _store().by_fingerprint(int.from_bytes(data[2:_HEADER_LEN], "little", signed=True))
        return _codec(writer.subject).decode(data)


def subject_of_fields(fields: frozenset[str]) -> str:
    """The one current subject whose record fields are exactly ``fields``."""
    matching = _subjects_by_fields().get(fields, [])
    if len(matching) != 1:
        which = ", ".join(matching) if matching else "none"
        raise SerializationError(
            f"the fields {', '.join(sorted(fields))} match {which} of our schemas; name the "
            f"subject: value_serializer='{NAME}:<subject>'"
        )
    return matching[0]


@cache
def _subjects_by_fields() -> dict[frozenset[str], list[str]]:
    """Each current schema's field set and the subjects that have it (read once, not per
    record written)."""
    store = _store()
    index: dict[frozenset[str], list[str]] = {}
    for subject in store.subjects():
        fields = frozenset(f["name"] for f in store.current(subject).source.get("fields", ()))
        index.setdefault(fields, []).append(subject)
    return index


def register_subject_codecs() -> None:
    """``streamml:<subject>`` for every current schema, in faust's codec registry."""
    for subject in _store().subjects():
        codecs.register(f"{NAME}:{subject}", SubjectCodec(subject))

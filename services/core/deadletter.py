"""Dead letters: a record a service could not use, kept whole with the reason it was refused."""

from __future__ import annotations

from typing import NamedTuple

from services.core.serde import Record


class SourcePosition(NamedTuple):
    """Where a record was read. A tuple: built for every record on hot paths."""

    topic: str
    partition: int
    offset: int


def dead_letter(
    *,
    reason: str,
    detail: str,
    key: bytes | None,
    value: bytes | None,
    source: SourcePosition,
    service: str,
    failed_at_ms: int,
) -> Record:
    """The ``schemas/dlq.avsc`` record for one refused input."""
    return {
        "reason": reason,
        "detail": detail[:2000],
        "original_key": key,
        "original_value": value,
        "source_topic": source.topic,
        "source_partition": source.partition,
        "source_offset": source.offset,
        "failed_at": failed_at_ms,
        "service": service,
    }

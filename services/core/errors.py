"""One root exception for everything streamml raises on purpose.

::

    StreamMLError
     ├── ConfigError            settings or declarations that cannot work
     ├── StackError             the embedded broker or Redis did not come up or go down
     ├── SerializationError     bytes that are not a record we can read
     │    ├── UnknownSchemaError     a fingerprint or schema id no schema in schemas/ has
     │    └── MalformedRecordError   a known schema but a body that does not decode
     ├── EncodingError          a record that does not fit its schema
     ├── ModelError             a model artifact that cannot be used
     │    └── IntegrityError         an artifact whose sha256 is not the registered one
     └── RegistryError          a model version that ml.models does not know

Third-party errors are wrapped (``raise SerializationError(...) from exc``) so a caller
needs to know only these names; each message says what to do next where there is something to do.
"""

from __future__ import annotations


class StreamMLError(Exception):
    """Root of every error streamml raises on purpose."""


class ConfigError(StreamMLError):
    """Settings or declarations that cannot work as given."""


class StackError(StreamMLError):
    """The embedded broker or Redis did not start, answer or stop."""


class SerializationError(StreamMLError):
    """Bytes that cannot be read as a record; ``reason`` is the DLQ reason code."""

    reason = "undecodable"


class UnknownSchemaError(SerializationError):
    """A writer fingerprint (or registry id) that no known schema has."""

    reason = "unknown_schema"


class MalformedRecordError(SerializationError):
    """A known writer schema, but a body that does not decode with it."""

    reason = "malformed"


class EncodingError(StreamMLError):
    """A record that does not fit the schema it is written with."""


class ModelError(StreamMLError):
    """A model artifact that cannot be loaded or run."""


class IntegrityError(ModelError):
    """An artifact whose sha256 differs from the one registered for it."""


class RegistryError(StreamMLError):
    """A model or version that the registry topic does not know."""

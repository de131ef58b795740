"""A faster Avro binary codec for flat records, checked against fastavro.

fastavro spends most of its time per call, not per field: about 5 µs to encode or decode a
ten-field record. The featurizer does both for every event, so for records whose fields are
all primitives (string, bytes, int, long, float, double, boolean), nullable primitives
(``["null", T]``) or arrays of doubles, this module generates an encoder and a decoder once
per schema, as straight-line Python with a block per field. Any other schema gets ``None``
and the caller keeps using fastavro. The bytes are Avro's binary encoding; tests compare both
ways with fastavro.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from services.core.errors import EncodingError, MalformedRecordError

Record = dict[str, Any]
Encoder = Callable[[Record], bytes]
Decoder = Callable[[bytes, int], Record]  # data, start offset -> record (all bytes consumed)

_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")
_SMALL = [bytes([(n << 1) & 0xFF]) if n < 64 else b"" for n in range(64)]


def long_bytes(value: int) -> bytes:
    """An Avro int or long: zigzag, then a base-128 varint."""
    if 0 <= value < 64:
        return _SMALL[value]
    return varint((value << 1) ^ (value >> 63))


def varint(n: int) -> bytes:
    """A non-negative integer as a base-128 varint (Avro after zigzag; protobuf as is).

    Low groups come first, so a large number is its two lowest groups and then the varint of
    the rest, which neighbouring numbers share (event times a few seconds apart): that part is
    cached. It was a loop of six steps per event time, several times per event.
    """
    if n < 0x80:
        return _ONE_BYTE[n]
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    return bytes((n & 0x7F | 0x80, (n >> 7) & 0x7F | 0x80)) + _varint_high(n >> 14)


def _varint_loop(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_ONE_BYTE = [bytes([n]) for n in range(0x80)]
_varint_high = lru_cache(maxsize=4096)(_varint_loop)


def read_long(data: bytes, pos: int) -> tuple[int, int]:
    b = data[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    n, shift = b & 0x7F, 7
    while True:
        pos += 1
        b = data[pos]
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return (n >> 1) ^ -(n & 1), pos + 1
        shift += 7
        if shift > 63:
            raise MalformedRecordError("a varint longer than 10 bytes")


def _encode_doubles(v: Any) -> bytes:
    n = len(v)
    return (long_bytes(n) + struct.pack(f"<{n}d", *v) if n else b"") + b"\x00"


def _decode_doubles(data: bytes, pos: int) -> tuple[Any, int]:
    items: list[float] = []
    while True:
        n, pos = read_long(data, pos)
        if n == 0:
            return items, pos
        if n < 0:  # a block that states its byte size too
            n = -n
            _, pos = read_long(data, pos)
        items += struct.unpack_from(f"<{n}d", data, pos)
        pos += 8 * n


def _kind(field_type: Any) -> tuple[str, int | None] | None:
    """(primitive kind, index of the null branch or None), or None when not flat."""
    if isinstance(field_type, list):
        if len(field_type) != 2 or "null" not in field_type:
            return None
        null = field_type.index("null")
        inner = _kind(field_type[1 - null])
        return None if inner is None or inner[1] is not None else (inner[0], null)
    kind: Any = field_type
    if isinstance(field_type, dict):
        if "logicalType" in field_type:
            kind = None
        elif field_type.get("type") == "array":
            kind = "double_array" if field_type.get("items") == "double" else None
        else:
            kind = field_type.get("type")
    return (kind, None) if isinstance(kind, str) and kind in _ENCODE_VALUE else None


def compile_codec(schema: Any, label: str) -> tuple[Encoder, Decoder] | None:
    """An encoder and decoder for a flat record schema (parsed), else None. ``label`` names
    the schema in error messages."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return None
    fields: list[tuple[str, str, int | None]] = []
    for field in schema["fields"]:
        kind = _kind(field["type"])
        if kind is None:
            return None
        fields.append((field["name"], *kind))
    return _encoder(label, fields), _decoder(label, fields)


# The encoder is generated as straight-line Python too: small lengths and ints take their
# one-byte varint from a table, and nothing else is called per field.
_ENCODE_VALUE = {
    "string": "{pad}b = v.encode()\n{pad}n = len(b)\n"
    "{pad}add(SMALL[n] if n < 64 else long_bytes(n))\n{pad}add(b)\n",
    "bytes": "{pad}b = v.encode() if isinstance(v, str) else bytes(v)\n{pad}n = len(b)\n"
    "{pad}add(SMALL[n] if n < 64 else long_bytes(n))\n{pad}add(b)\n",
    "int": "{pad}v = int(v.__index__())\n{pad}add(SMALL[v] if 0 <= v < 64 else long_bytes(v))\n",
    "long": "{pad}v = int(v.__index__())\n{pad}add(SMALL[v] if 0 <= v < 64 else long_bytes(v))\n",
    "double": "{pad}add(pack_double(v))\n",
    "float": "{pad}add(pack_float(v))\n",
    "boolean": "{pad}add(b'\\x01' if v else b'\\x00')\n",
    "double_array": "{pad}add(encode_doubles(v))\n",
}
_ENCODE_UNION = """    if type(v) is tuple:  # fastavro's (branch name, value) notation
        v = v[1]
    if v is None:
        add({null_byte!r})
    else:
        add({value_byte!r})
{value}"""
_ENCODER_TEMPLATE = """def encode(record):
    parts = []
    add = parts.append
    name = None
    try:
{body}    except (KeyError, AttributeError, TypeError, struct.error) as exc:
        raise EncodingError(f"{{subject}}: field {{name!r}}: {{exc!r}}") from exc
    return b"".join(parts)
"""


def _encoder(subject: str, fields: list[tuple[str, str, int | None]]) -> Encoder:
    blocks: list[str] = []
    for name, kind, null in fields:
        block = f"    name = {name!r}\n    v = record[name]\n"
        if null is None:
            block += _ENCODE_VALUE[kind].format(pad="    ")
        else:
            block += _ENCODE_UNION.format(
                null_byte=_SMALL[null],
                value_byte=_SMALL[1 - null],
                value=_ENCODE_VALUE[kind].format(pad="        "),
            )
        blocks.append(block)
    body = "".join("    " + line + "\n" for block in blocks for line in block.splitlines())
    namespace: dict[str, Any] = {
        "subject": subject,
        "struct": struct,
        "SMALL": _SMALL,
        "long_bytes": long_bytes,
        "pack_double": _DOUBLE.pack,
        "pack_float": _FLOAT.pack,
        "encode_doubles": _encode_doubles,
        "EncodingError": EncodingError,
    }
    exec(_ENCODER_TEMPLATE.format(body=body), namespace)  # noqa: S102
    encode: Encoder = namespace["encode"]
    return encode


# The decoder is generated as straight-line Python, one block per field, with single-byte
# varints (most lengths and small ints) read inline: per-field calls were most of its cost.
_INLINE_VARINT = """{pad}{var} = data[pos]
{pad}if {var} < 0x80:
{pad}    {var} = ({var} >> 1) ^ -({var} & 1)
{pad}    pos += 1
{pad}else:
{pad}    {var}, pos = read_long(data, pos)
"""
_DECODE_VALUE = {
    "string": _INLINE_VARINT.replace("{var}", "n")
    + """{pad}end = pos + n
{pad}if n < 0 or end > len(data):
{pad}    raise MalformedRecordError("a string runs past the end of the record")
{pad}{var} = data[pos:end].decode()
{pad}pos = end
""",
    "bytes": _INLINE_VARINT.replace("{var}", "n")
    + """{pad}end = pos + n
{pad}if n < 0 or end > len(data):
{pad}    raise MalformedRecordError("a string runs past the end of the record")
{pad}{var} = data[pos:end]
{pad}pos = end
""",
    "int": _INLINE_VARINT,
    "long": _INLINE_VARINT,
    "double": "{pad}{var} = unpack_double(data, pos)[0]\n{pad}pos += 8\n",
    "float": "{pad}{var} = unpack_float(data, pos)[0]\n{pad}pos += 4\n",
    "boolean": "{pad}{var} = data[pos] == 1\n{pad}pos += 1\n",
    "double_array": "{pad}{var}, pos = decode_doubles(data, pos)\n",
}
_DECODE_UNION = """    b = data[pos]
    pos += 1
    if b == {null_code}:
        {var} = None
    elif b == {value_code}:
{value}    else:
        branch, _ = read_long(data, pos - 1)
        raise MalformedRecordError(f"union branch {{branch}} of {name!r}")
"""
_DECODER_TEMPLATE = """def decode(data, pos):
    try:
{body}    except MalformedRecordError as exc:
        raise MalformedRecordError(f"{{subject}}: {{exc}}") from exc
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise MalformedRecordError(
            f"{{subject}}: body does not decode with its writer schema: {{exc!r}}"
        ) from exc
    if pos != len(data):
        raise MalformedRecordError(f"{{subject}}: {{len(data) - pos}} bytes left after the record")
    return {{{record}}}
"""


def _decoder(subject: str, fields: list[tuple[str, str, int | None]]) -> Decoder:
    blocks: list[str] = []
    for i, (name, kind, null) in enumerate(fields):
        var = f"v{i}"
        if null is None:
            blocks.append(_DECODE_VALUE[kind].format(pad="    ", var=var))
            continue
        value = _DECODE_VALUE[kind].format(pad="        ", var=var)
        blocks.append(
            _DECODE_UNION.format(
                null_code=null * 2, value_code=(1 - null) * 2, var=var, value=value, name=name
            )
        )
    body = "".join("    " + line + "\n" for block in blocks for line in block.splitlines())
    record = ", ".join(f"{name!r}: v{i}" for i, (name, _, _) in enumerate(fields))
    namespace: dict[str, Any] = {
        "subject": subject,
        "struct": struct,
        "read_long": read_long,
        "unpack_double": _DOUBLE.unpack_from,
        "unpack_float": _FLOAT.unpack_from,
        "decode_doubles": _decode_doubles,
        "MalformedRecordError": MalformedRecordError,
    }
    exec(_DECODER_TEMPLATE.format(body=body, record=record), namespace)  # noqa: S102
    decode: Decoder = namespace["decode"]
    return decode

"""A faster Avro binary codec for the records our topics carry, checked against fastavro.

fastavro spends most of its time per call, not per field: about 5 µs to encode or decode a
ten-field flat record, 40 to 70 µs for a prediction or a labelled pair (nested records and
enums). The featurizer, the scorer and the monitor do both for every event, so for records
built of primitives (string, bytes, int, long, float, double, boolean), records, enums,
arrays of doubles and ``["null", T]`` unions of those, this module generates an encoder and a
decoder once per schema, as straight-line Python with a block per field. Any other schema
(maps, other arrays, wider unions, named-type references) gets ``None`` and the caller keeps
using fastavro. The bytes are Avro's binary encoding; tests compare both ways with fastavro.
"""

from __future__ import annotations

import itertools
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


class _Unsupported(Exception):
    """A type the generator leaves to fastavro."""


def compile_codec(schema: Any, label: str) -> tuple[Encoder, Decoder] | None:
    """An encoder and decoder for a record schema (parsed) built of primitives, records,
    enums, arrays of doubles and ``["null", T]`` unions of those, else None. ``label`` names
    the schema in error messages."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return None
    try:
        return _Generator(label).encoder(schema), _Generator(label).decoder(schema)
    except _Unsupported:
        return None


# The code is generated as straight-line Python, a block per field, nested records inline:
# small lengths and ints take their one-byte varint from a table, single-byte varints are read
# inline, and nothing else is called per field (per-field calls were most of the cost).
_ENCODE_VALUE = {
    "string": "b = {v}.encode()\nn = len(b)\nadd(SMALL[n] if n < 64 else long_bytes(n))\nadd(b)",
    "bytes": "b = {v}.encode() if isinstance({v}, str) else bytes({v})\nn = len(b)\n"
    "add(SMALL[n] if n < 64 else long_bytes(n))\nadd(b)",
    "int": "{v} = int({v}.__index__())\nadd(SMALL[{v}] if 0 <= {v} < 64 else long_bytes({v}))",
    "long": "{v} = int({v}.__index__())\nadd(SMALL[{v}] if 0 <= {v} < 64 else long_bytes({v}))",
    "double": "add(pack_double({v}))",
    "float": "add(pack_float({v}))",
    "boolean": "add(b'\\x01' if {v} else b'\\x00')",
}
_INLINE_VARINT = """{v} = data[pos]
if {v} < 0x80:
    {v} = ({v} >> 1) ^ -({v} & 1)
    pos += 1
else:
    {v}, pos = read_long(data, pos)"""
_READ_BYTES = (
    _INLINE_VARINT.replace("{v}", "n")
    + """
end = pos + n
if n < 0 or end > len(data):
    raise MalformedRecordError("a string runs past the end of the record")"""
)
_DECODE_VALUE = {
    "string": _READ_BYTES + "\n{v} = data[pos:end].decode()\npos = end",
    "bytes": _READ_BYTES + "\n{v} = data[pos:end]\npos = end",
    "int": _INLINE_VARINT,
    "long": _INLINE_VARINT,
    "double": "{v} = unpack_double(data, pos)[0]\npos += 8",
    "float": "{v} = unpack_float(data, pos)[0]\npos += 4",
    "boolean": "{v} = data[pos] == 1\npos += 1",
}
_ENCODER_TEMPLATE = """def encode(record):
    parts = []
    add = parts.append
    name = None
    try:
{body}
    except (KeyError, AttributeError, TypeError, struct.error) as exc:
        raise EncodingError(f"{{subject}}: field {{name!r}}: {{exc!r}}") from exc
    return b"".join(parts)
"""
_DECODER_TEMPLATE = """def decode(data, pos):
    try:
{body}
    except MalformedRecordError as exc:
        raise MalformedRecordError(f"{{subject}}: {{exc}}") from exc
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise MalformedRecordError(
            f"{{subject}}: body does not decode with its writer schema: {{exc!r}}"
        ) from exc
    if pos != len(data):
        raise MalformedRecordError(f"{{subject}}: {{len(data) - pos}} bytes left after the record")
    return {top}
"""


class _Generator:
    """Writes one schema's encoder or decoder as Python source, then compiles it."""

    def __init__(self, label: str) -> None:
        self._count = itertools.count()
        self._namespace: dict[str, Any] = {
            "subject": label,
            "struct": struct,
            "SMALL": _SMALL,
            "long_bytes": long_bytes,
            "read_long": read_long,
            "pack_double": _DOUBLE.pack,
            "pack_float": _FLOAT.pack,
            "unpack_double": _DOUBLE.unpack_from,
            "unpack_float": _FLOAT.unpack_from,
            "encode_doubles": _encode_doubles,
            "decode_doubles": _decode_doubles,
            "EncodingError": EncodingError,
            "MalformedRecordError": MalformedRecordError,
        }

    def _var(self) -> str:
        return f"v{next(self._count)}"

    def _const(self, value: Any) -> str:
        name = f"C{next(self._count)}"
        self._namespace[name] = value
        return name

    def _compile(self, source: str, function: str) -> Any:
        exec(source, self._namespace)  # noqa: S102 -- source generated above from a schema
        return self._namespace[function]

    def encoder(self, schema: Any) -> Encoder:
        lines: list[str] = []
        self._encode(schema, "record", "", "        ", lines)
        encode: Encoder = self._compile(_ENCODER_TEMPLATE.format(body="\n".join(lines)), "encode")
        return encode

    def decoder(self, schema: Any) -> Decoder:
        lines: list[str] = []
        top = self._var()
        self._decode(schema, top, "", "        ", lines)
        source = _DECODER_TEMPLATE.format(body="\n".join(lines), top=top)
        decode: Decoder = self._compile(source, "decode")
        return decode

    def _encode(self, t: Any, v: str, path: str, pad: str, out: list[str]) -> None:
        """Lines that append the encoding of the value in variable ``v`` of type ``t``."""
        if isinstance(t, list):
            null, other = _nullable(t)
            out += [
                f"{pad}if type({v}) is tuple:  # fastavro's (branch name, value) notation",
                f"{pad}    {v} = {v}[1]",
                f"{pad}if {v} is None:",
                f"{pad}    add({_SMALL[null]!r})",
                f"{pad}else:",
                f"{pad}    add({_SMALL[1 - null]!r})",
            ]
            self._encode(other, v, path, pad + "    ", out)
            return
        kind = _type_name(t)
        if kind == "record":
            for field in t["fields"]:
                name = field["name"]
                inner, where = self._var(), f"{path}.{name}" if path else name
                out.append(f"{pad}name = {where!r}")
                if "default" in field:  # fastavro writes a missing field's default too
                    default = self._const(field["default"])
                    out.append(f"{pad}{inner} = {v}.get({name!r}, {default})")
                else:
                    out.append(f"{pad}{inner} = {v}[{name!r}]")
                self._encode(field["type"], inner, where, pad, out)
        elif kind == "enum":
            codes = {symbol: long_bytes(i) for i, symbol in enumerate(t["symbols"])}
            out.append(f"{pad}add({self._const(codes)}[{v}])")
        elif kind == "double_array":
            out.append(f"{pad}add(encode_doubles({v}))")
        else:
            out += [pad + line for line in _ENCODE_VALUE[kind].format(v=v).splitlines()]

    def _decode(self, t: Any, v: str, path: str, pad: str, out: list[str]) -> None:
        """Lines that read a value of type ``t`` at ``pos`` into variable ``v``."""
        if isinstance(t, list):
            null, other = _nullable(t)
            out += [
                f"{pad}b = data[pos]",
                f"{pad}pos += 1",
                f"{pad}if b == {null * 2}:",
                f"{pad}    {v} = None",
                f"{pad}elif b == {(1 - null) * 2}:",
            ]
            self._decode(other, v, path, pad + "    ", out)
            out += [
                f"{pad}else:",
                f"{pad}    branch = read_long(data, pos - 1)[0]",
                f"{pad}    raise MalformedRecordError(f'union branch {{branch}} of ' + {path!r})",
            ]
            return
        kind = _type_name(t)
        if kind == "record":
            fields = []
            for field in t["fields"]:
                name = field["name"]
                inner = self._var()
                self._decode(field["type"], inner, f"{path}.{name}" if path else name, pad, out)
                fields.append(f"{name!r}: {inner}")
            out.append(f"{pad}{v} = {{{', '.join(fields)}}}")
        elif kind == "enum":
            symbols = self._const(tuple(t["symbols"]))
            out += [pad + line for line in _INLINE_VARINT.format(v="n").splitlines()]
            out += [
                f"{pad}if not 0 <= n < {len(t['symbols'])}:",
                f"{pad}    raise MalformedRecordError(f'enum index {{n}} of ' + {path!r})",
                f"{pad}{v} = {symbols}[n]",
            ]
        elif kind == "double_array":
            out.append(f"{pad}{v}, pos = decode_doubles(data, pos)")
        else:
            out += [pad + line for line in _DECODE_VALUE[kind].format(v=v).splitlines()]


def _nullable(union: list[Any]) -> tuple[int, Any]:
    """(index of the null branch, the other branch) of a ``["null", T]`` union."""
    if len(union) != 2 or "null" not in union or all(t == "null" for t in union):
        raise _Unsupported
    null = union.index("null")
    other = union[1 - null]
    if isinstance(other, list):
        raise _Unsupported
    return null, other


def _type_name(t: Any) -> str:
    """What the generator calls a (non-union) type; _Unsupported for anything else."""
    if isinstance(t, dict):
        if "logicalType" in t:
            raise _Unsupported
        kind = t.get("type")
        if kind in ("record", "enum"):
            return str(kind)
        if kind == "array":
            if t.get("items") == "double":
                return "double_array"
            raise _Unsupported
        t = kind
    if isinstance(t, str) and t in _ENCODE_VALUE:
        return t
    raise _Unsupported

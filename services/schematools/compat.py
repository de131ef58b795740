"""Schema compatibility, checked by resolving real data rather than by reading rules.

``check_compatible(old, new)`` asks for FULL compatibility, the two directions Avro allows:
a reader with the new schema reads what the old schema wrote (consumers upgraded first), and
a reader with the old schema reads what the new one writes (producers upgraded first). It
builds sample data for each writer schema (every union branch, every enum symbol, nested
records, arrays, maps, named references), encodes it with the writer schema and decodes it
with fastavro's schema resolution against the reader schema; whatever fastavro refuses is a
problem. ``previous_committed(path)`` finds the version of a schema file to compare against.
"""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import SchemaParseException, parse_schema

from services.core.schemas import without_logical_types

GIT_TIMEOUT_S = 10.0

_PRIMITIVE_SAMPLES: dict[str, list[Any]] = {
    "null": [None],
    "boolean": [True],
    "int": [-(2**31)],
    "long": [2**40],  # too big for an int: a long-to-int narrowing cannot pass unnoticed
    "float": [1.5],
    "double": [2.5e300],
    "bytes": [b"\x00\xff"],
    "string": ["sample"],
}
_NAMED = ("record", "error", "enum", "fixed")
_DECODE_ERRORS = (
    SchemaResolutionError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
)


def check_compatible(
    old: dict[str, Any], new: dict[str, Any], subject: str | None = None
) -> list[str]:
    """Problems that keep ``old`` and ``new`` from being fully compatible; empty when none."""
    name = subject or _name_of(new) or _name_of(old) or "schema"
    try:
        old_parsed = _parse(old)
    except (SchemaParseException, ValueError, TypeError, KeyError) as exc:
        return [f"{name}: the old schema is not valid Avro: {exc}"]
    try:
        new_parsed = _parse(new)
    except (SchemaParseException, ValueError, TypeError, KeyError) as exc:
        return [f"{name}: the new schema is not valid Avro: {exc}"]
    problems = _resolve(
        old_parsed,
        new_parsed,
        f"{name}: the new schema cannot read data written with the old one (backward)",
    )
    problems += _resolve(
        new_parsed,
        old_parsed,
        f"{name}: the old schema cannot read data written with the new one (forward)",
    )
    return list(dict.fromkeys(problems))


def sample_datums(schema: Any) -> list[Any]:
    """Writer data covering every branch, symbol and nested type of ``schema``.

    Values inside unions use fastavro's tuple notation ``(branch name, value)`` so each
    branch is written as itself (an ``int`` sample is not silently written as a ``long``).
    """
    return _samples(_parse(schema), {}, ())


def _parse(schema: Any) -> Any:
    return parse_schema(without_logical_types(schema), _write_hint=False)


def _resolve(writer: Any, reader: Any, direction: str) -> list[str]:
    problems: list[str] = []
    for datum in _samples(writer, {}, ()):
        buffer = io.BytesIO()
        try:
            schemaless_writer(buffer, writer, datum)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            problems.append(f"{direction}: no sample could be written ({exc})")
            continue
        buffer.seek(0)
        try:
            schemaless_reader(buffer, writer, reader)
        except _DECODE_ERRORS as exc:
            problems.append(f"{direction}: {_first_line(exc)}")
    return problems


def _samples(schema: Any, named: dict[str, Any], stack: tuple[str, ...]) -> list[Any]:
    """Sample values; ``[]`` when a recursive reference has no finite value on this path."""
    if isinstance(schema, list):
        return [
            (_branch_name(branch), value)
            for branch in schema
            for value in _samples(branch, named, stack)
        ]
    if isinstance(schema, str):
        if schema in _PRIMITIVE_SAMPLES:
            return list(_PRIMITIVE_SAMPLES[schema])
        # A recursive type is followed one level deep; below that only finite branches.
        return [] if stack.count(schema) > 1 else _samples(named[schema], named, stack)
    kind = schema["type"]
    if kind in _NAMED:
        named[schema["name"]] = schema
    if kind in ("record", "error"):
        return _record_samples(schema, named, (*stack, schema["name"]))
    return _other_samples(schema, named, stack)


def _other_samples(schema: Any, named: dict[str, Any], stack: tuple[str, ...]) -> list[Any]:
    kind = schema["type"]
    if kind == "enum":
        return list(schema["symbols"])
    if kind == "fixed":
        return [bytes(int(schema["size"]))]
    if kind == "array":
        items = _samples(schema["items"], named, stack)
        return [[], items] if items else [[]]
    if kind == "map":
        values = _samples(schema["values"], named, stack)
        return [{}, {f"k{i}": v for i, v in enumerate(values)}] if values else [{}]
    return _samples(kind, named, stack)  # {"type": "long"} and the like


def _record_samples(schema: Any, named: dict[str, Any], stack: tuple[str, ...]) -> list[Any]:
    columns = [(f["name"], _samples(f["type"], named, stack)) for f in schema["fields"]]
    if any(not values for _, values in columns):
        return []
    rows = max((len(values) for _, values in columns), default=1)
    return [{name: values[i % len(values)] for name, values in columns} for i in range(rows)]


def _branch_name(branch: Any) -> str:
    if isinstance(branch, str):
        return branch
    kind = branch["type"]
    return str(branch["name"]) if kind in _NAMED else str(kind)


def _name_of(schema: Any) -> str | None:
    if isinstance(schema, dict) and isinstance(schema.get("name"), str):
        return str(schema["name"])
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else ""
    return f"{type(exc).__name__}: {message[:500]}"


def previous_committed(path: Path) -> dict[str, Any] | None:
    """The newest committed version of ``path`` that differs from the working copy.

    That is HEAD's version when the file has uncommitted changes, else the version before
    the last commit that changed it. None outside a git work tree, for an untracked file, or
    when no committed version differs.
    """
    path = path.resolve()
    root = _git(path.parent, "rev-parse", "--show-toplevel")
    if root is None:
        return None
    try:
        relative = path.relative_to(Path(root.strip()).resolve()).as_posix()
    except ValueError:
        return None
    current = _json_or_none(path.read_text()) if path.is_file() else None
    for commit in _commits_touching(path.parent, relative):
        text = _git(path.parent, "show", f"{commit}:{relative}")
        if text is None:
            continue  # the commit deleted the file
        committed = _json_or_none(text)
        if isinstance(committed, dict) and committed != current:
            return committed
    return None


def _commits_touching(cwd: Path, relative: str) -> Iterator[str]:
    yield "HEAD"
    log = _git(cwd, "log", "--format=%H", "--", f":(top,literal){relative}")
    if log is not None:
        yield from log.split()


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=GIT_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None

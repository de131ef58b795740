"""The Open Inference Protocol (KServe v2, as Triton and Seldon speak it) over the scorer.

A v2 client sees the domain as one model whose inputs are the champion's numeric inputs, one
named tensor each (``FP32``, shape ``[-1, 1]``), and whose outputs are ``score`` (``FP64``) and
``decision`` (``BOOL``). A request is scored by the champion the stream is using at that moment
(not the canary: v2 requests carry no entity key to route by; not the shadow), so it gets the
score the stream gives a vector with those inputs. The answer names the model version that
scored it; ``parameters.served_by`` says whether the model or the heuristic did.

Tensors come as JSON ``data`` (flat or nested row-major) or, with Triton's binary-data
extension, as little-endian bytes after a JSON header of ``Inference-Header-Content-Length``
bytes. Answers are JSON. Every refusal is a 4xx with ``{"error": ...}`` naming the tensor.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from services.core.serde import Record
from services.scorer.batch import Scored, now_ms
from services.scorer.serving import Lineup

SCORE = "score"
DECISION = "decision"
OUTPUTS = (SCORE, DECISION)
INPUT_DATATYPE = "FP32"
HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_EXTENSION = "binary_tensor_data"
_DTYPES: Mapping[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
NUMERIC_DATATYPES = frozenset(_DTYPES) - {"BOOL"}


class InferenceError(Exception):
    """A request the protocol refuses: ``status`` 400 or 413, ``code`` for ``{"error": ...}``."""

    def __init__(self, detail: str, *, status: int = 400, code: str = "invalid_request") -> None:
        super().__init__(detail)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class InferRequest:
    """A parsed request: the rows as the scorer's records, and what to answer."""

    request_id: str | None
    rows: list[dict[str, float]]
    outputs: tuple[str, ...]


def model_metadata(name: str, lineup: Lineup) -> dict[str, Any]:
    """``GET /v2/models/{name}``: the champion's inputs, the two outputs, its version."""
    champion = lineup.champion
    return {
        "name": name,
        "versions": [champion.version],
        "platform": f"streamml_{champion.kind}",
        "inputs": [
            {"name": feature, "datatype": INPUT_DATATYPE, "shape": [-1, 1]}
            for feature in champion.runtime.feature_names
        ],
        "outputs": [
            {"name": SCORE, "datatype": "FP64", "shape": [-1, 1]},
            {"name": DECISION, "datatype": "BOOL", "shape": [-1, 1]},
        ],
    }


def champion_only(lineup: Lineup) -> Lineup:
    """The line-up a v2 request is scored by: the champion alone."""
    return replace(lineup, canary=None, canary_share=0.0, shadow=None)


def parse_infer(
    body: bytes, header_length: str | None, inputs: Sequence[str], max_rows: int
) -> InferRequest:
    """The request's rows, one per vector, each with every named input; refuses anything
    else with ``InferenceError``."""
    header, binary = _split(body, header_length)
    if not isinstance(header, dict):
        raise InferenceError("the request is a JSON object with 'inputs'")
    tensors = header.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise InferenceError("'inputs' is a non-empty list of tensors")
    columns: dict[str, np.ndarray] = {}
    offset = 0
    for i, tensor in enumerate(tensors):
        name, column, offset = _tensor(tensor, i, binary, offset)
        if name in columns:
            raise InferenceError(f"input {name!r} is given twice")
        columns[name] = column
    if offset != len(binary):
        raise InferenceError(
            f"{len(binary) - offset} bytes of binary data follow the tensors that name theirs"
        )
    _check_names(columns, inputs)
    sizes = {len(column) for column in columns.values()}
    if len(sizes) != 1:
        raise InferenceError("every input has one value per row; their sizes differ")
    count = sizes.pop()
    if count == 0:
        raise InferenceError("the inputs have no rows")
    if count > max_rows:
        raise InferenceError(
            f"{count} rows; at most {max_rows} per request", status=413, code="too_many_rows"
        )
    as_lists = {name: column.tolist() for name, column in columns.items()}
    rows = [{name: float(values[r]) for name, values in as_lists.items()} for r in range(count)]
    return InferRequest(_request_id(header), rows, _requested_outputs(header))


def vectors_of(
    rows: Sequence[Mapping[str, Any]], key_field: str, event_id_field: str, time_field: str
) -> list[tuple[bytes, Record]]:
    """The rows as the scorer's keyed vectors (they stay in the process: ids made up here)."""
    at_ms = now_ms()
    return [
        (b"", {**row, event_id_field: f"v2-{i}", key_field: "", time_field: at_ms})
        for i, row in enumerate(rows)
    ]


def infer_answer(name: str, request: InferRequest, scored: Scored) -> dict[str, Any]:
    """The v2 response for ``request``'s rows scored as ``scored``."""
    predictions = [prediction for _, prediction in scored.predictions]
    versions = sorted({str(p["model_version"]) for p in predictions})
    served_by = sorted({str(p["served_by"]) for p in predictions})
    shape = [len(predictions), 1]
    tensors = {
        SCORE: {
            "name": SCORE,
            "datatype": "FP64",
            "shape": shape,
            "data": [float(p["score"]) for p in predictions],
        },
        DECISION: {
            "name": DECISION,
            "datatype": "BOOL",
            "shape": shape,
            "data": [bool(p["decision"]) for p in predictions],
        },
    }
    answer: dict[str, Any] = {
        "model_name": name,
        "model_version": ",".join(versions),
        "parameters": {"served_by": ",".join(served_by)},
        "outputs": [tensors[output] for output in request.outputs],
    }
    if request.request_id is not None:
        answer["id"] = request.request_id
    return answer


def _split(body: bytes, header_length: str | None) -> tuple[Any, bytes]:
    if header_length is None:
        return _json(body), b""
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if not 0 <= length <= len(body):
        raise InferenceError(
            f"{HEADER_LENGTH} is {header_length!r}; the body has {len(body)} bytes"
        )
    return _json(body[:length]), body[length:]


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InferenceError(f"the request is not JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise InferenceError("the request's JSON nests too deeply", code="invalid_json") from None


def _no_constant(word: str) -> Any:
    raise ValueError(f"{word} is not a JSON number")


def _tensor(tensor: Any, i: int, binary: bytes, offset: int) -> tuple[str, np.ndarray, int]:
    """One input tensor's name and values as a flat float64 column, and the binary offset
    after it."""
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise InferenceError(f"inputs[{i}] is an object with a 'name'")
    name = tensor["name"]
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in NUMERIC_DATATYPES:
        raise InferenceError(
            f"input {name!r}: datatype {datatype!r}; a model input is one of "
            f"{', '.join(sorted(NUMERIC_DATATYPES))}"
        )
    count = _count_of(name, tensor.get("shape"))
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InferenceError(f"input {name!r}: 'parameters' is an object")
    size = parameters.get("binary_data_size")
    if size is not None:
        column, offset = _from_binary(name, datatype, size, count, binary, offset)
    else:
        column = _from_json(name, tensor.get("data"), count)
    if not np.isfinite(column).all():
        raise InferenceError(f"input {name!r}: every value must be a finite number")
    return name, column, offset


def _count_of(name: str, shape: Any) -> int:
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        or (len(shape) == 2 and shape[1] != 1)
    ):
        raise InferenceError(f"input {name!r}: shape {shape!r}; a column is [n] or [n, 1]")
    return int(shape[0])


def _from_binary(
    name: str, datatype: str, size: Any, count: int, binary: bytes, offset: int
) -> tuple[np.ndarray, int]:
    dtype = np.dtype(_DTYPES[datatype]).newbyteorder("<")
    if not isinstance(size, int) or size != count * dtype.itemsize:
        raise InferenceError(
            f"input {name!r}: binary_data_size {size!r}; {count} {datatype} values are "
            f"{count * dtype.itemsize} bytes"
        )
    if offset + size > len(binary):
        raise InferenceError(f"input {name!r}: the body ends before its {size} bytes")
    column = np.frombuffer(binary, dtype=dtype, count=count, offset=offset).astype(np.float64)
    return column, offset + size


def _from_json(name: str, data: Any, count: int) -> np.ndarray:
    flat = _flatten(data) if isinstance(data, list) else None
    if flat is None:
        raise InferenceError(f"input {name!r}: 'data' is a list of numbers")
    if len(flat) != count:
        raise InferenceError(f"input {name!r}: {len(flat)} values for a shape of {count} rows")
    try:
        return np.array(flat, dtype=np.float64)
    except OverflowError:
        raise InferenceError(f"input {name!r}: a value is out of range") from None


def _flatten(data: list[Any]) -> list[float] | None:
    flat: list[float] = []
    stack = [iter(data)]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, list):
            if len(stack) > 8:
                return None
            stack.append(iter(item))
        elif isinstance(item, int | float) and not isinstance(item, bool):
            if isinstance(item, int) and not -(2**63) <= item < 2**64:
                return None
            flat.append(item)
        else:
            return None
    return flat


_END = object()


def _check_names(columns: Mapping[str, np.ndarray], inputs: Sequence[str]) -> None:
    missing = [name for name in inputs if name not in columns]
    if missing:
        raise InferenceError(
            f"missing inputs: {', '.join(missing)} (the model takes {_list(inputs)})"
        )
    unknown = sorted(name for name in columns if name not in inputs)
    if unknown:
        raise InferenceError(
            f"unknown inputs: {', '.join(unknown)} (the model takes {_list(inputs)})"
        )


def _list(names: Sequence[str]) -> str:
    return ", ".join(names)


def _request_id(header: Mapping[str, Any]) -> str | None:
    request_id = header.get("id")
    if request_id is None:
        return None
    if not isinstance(request_id, str):
        raise InferenceError("'id' is a string")
    return request_id


def _requested_outputs(header: Mapping[str, Any]) -> tuple[str, ...]:
    asked = header.get("outputs")
    if asked is None:
        return OUTPUTS
    if not isinstance(asked, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in asked
    ):
        raise InferenceError("'outputs' is a list of objects with a 'name'")
    names = tuple(dict.fromkeys(str(o["name"]) for o in asked))
    unknown = [name for name in names if name not in OUTPUTS]
    if unknown:
        raise InferenceError(
            f"unknown outputs: {', '.join(unknown)} (the model answers {_list(OUTPUTS)})"
        )
    return names or OUTPUTS

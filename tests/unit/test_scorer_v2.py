"""The Open Inference Protocol (KServe v2) over the scorer: metadata, inference in JSON and in
Triton's binary tensors, the same scores as /v1/score, and every refusal a 4xx naming why."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest

from services.core.declarations import Domain
from services.scorer.http.v2 import HEADER_LENGTH
from services.scorer.serving import Lineup, heuristic_serving
from services.scorer.vectors import VectorSpec
from tests.unit.test_scorer_http import (
    ONLINE,
    FakeOnline,
    LinearRuntime,
    call,
    make_api,
    model_lineup,
    post,
    vector,
)

INFER = "/v2/models/payments/infer"


def columns(domain: Domain, vectors: list[dict[str, Any]], names: tuple[str, ...]) -> list[Any]:
    """The vectors as v2 input tensors, one FP32 column per model input (nulls filled as
    the scorer fills them)."""
    rows = [domain.input_row(v, names) for v in vectors]
    return [
        {"name": name, "datatype": "FP32", "shape": [len(rows), 1], "data": [r[i] for r in rows]}
        for i, name in enumerate(names)
    ]


def infer(api: Any, request: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    raw = request if isinstance(request, bytes) else json.dumps(request).encode()
    answer = call(api, "POST", INFER, raw, headers)
    return answer.status, json.loads(answer.body)


def with_online(v: dict[str, Any], count: int = 5) -> dict[str, Any]:
    return {**v, ONLINE: count}


def test_the_model_metadata_names_the_champions_inputs_and_the_two_outputs(
    payments: Domain, spec: VectorSpec
) -> None:
    api, _, _ = make_api(payments, spec, model_lineup(payments), FakeOnline({}))
    answer = call(api, "GET", "/v2/models/payments")
    meta = json.loads(answer.body)
    assert answer.status == 200
    assert meta["name"] == "payments" and meta["versions"] == ["7"]
    assert [i["name"] for i in meta["inputs"]] == list(payments.model_inputs)
    assert {(i["datatype"], tuple(i["shape"])) for i in meta["inputs"]} == {("FP32", (-1, 1))}
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [
        ("score", "FP64"),
        ("decision", "BOOL"),
    ]
    assert call(api, "GET", "/v2/models/rides").status == 404
    assert json.loads(call(api, "GET", "/v2").body)["extensions"] == ["binary_tensor_data"]


def test_v2_readiness_follows_the_scorers(payments: Domain, spec: VectorSpec) -> None:
    alive = [True]
    api, service, _ = make_api(payments, spec, model_lineup(payments), alive=lambda: alive[0])
    assert call(api, "GET", "/v2/health/live").status == 200
    assert call(api, "GET", "/v2/health/ready").status == 400  # the consumer owns nothing yet
    service.is_ready = True
    assert call(api, "GET", "/v2/health/ready").status == 200
    assert call(api, "GET", "/v2/models/payments/ready").status == 200
    alive[0] = False
    assert call(api, "GET", "/v2/health/live").status == 400
    assert call(api, "GET", "/v2/health/ready").status == 400


def test_inference_gives_the_scores_and_decisions_of_v1_for_the_same_vectors(
    payments: Domain, spec: VectorSpec
) -> None:
    online = FakeOnline({})
    api, _, _ = make_api(payments, spec, model_lineup(payments), online)
    vectors = [with_online(vector(i), count=i) for i in range(12)]
    status, over_v1 = post(api, {"vectors": vectors})
    assert status == 200
    status, answer = infer(
        api, {"id": "req-1", "inputs": columns(payments, vectors, payments.model_inputs)}
    )
    assert status == 200, answer
    assert (answer["model_name"], answer["model_version"], answer["id"]) == (
        "payments",
        "7",
        "req-1",
    )
    assert answer["parameters"] == {"served_by": "champion"}
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["score"]["shape"] == [12, 1] and outputs["score"]["datatype"] == "FP64"
    assert outputs["score"]["data"] == [p["score"] for p in over_v1["predictions"]]
    assert outputs["decision"]["data"] == [p["decision"] for p in over_v1["predictions"]]
    assert online.asked == []  # every input given: the store is not read


def test_binary_tensors_and_flat_shapes_are_taken(payments: Domain, spec: VectorSpec) -> None:
    api, _, _ = make_api(payments, spec, model_lineup(payments), FakeOnline({}))
    vectors = [with_online(vector(i)) for i in range(3)]
    names = payments.model_inputs
    rows = np.array([payments.input_row(v, names) for v in vectors], dtype=np.float32)
    values = {n: rows[:, i] for i, n in enumerate(names)}
    tensors = [
        {"name": n, "datatype": "FP32", "shape": [3], "parameters": {"binary_data_size": 12}}
        for n in names
    ]
    header = json.dumps({"inputs": tensors, "outputs": [{"name": "score"}]}).encode()
    body = header + b"".join(values[n].astype("<f4").tobytes() for n in names)
    status, answer = infer(api, body, {HEADER_LENGTH: str(len(header))})
    assert status == 200, answer
    assert [o["name"] for o in answer["outputs"]] == ["score"]
    _, over_json = infer(api, {"inputs": columns(payments, vectors, names)})
    assert answer["outputs"][0]["data"] == over_json["outputs"][0]["data"]
    nested = columns(payments, vectors, names)
    nested[0]["data"] = [[x] for x in nested[0]["data"]]
    assert infer(api, {"inputs": nested})[1]["outputs"] == over_json["outputs"]


def test_inference_is_the_champions_even_with_a_canary_on_every_key(
    payments: Domain, spec: VectorSpec
) -> None:
    api, _, _ = make_api(payments, spec, model_lineup(payments, share=1.0), FakeOnline({}))
    vectors = [with_online(vector(i)) for i in range(5)]
    status, answer = infer(api, {"inputs": columns(payments, vectors, payments.model_inputs)})
    assert status == 200 and answer["model_version"] == "7"
    model = LinearRuntime(payments.model_inputs, 1.0)
    rows = np.array([payments.input_row(v, payments.model_inputs) for v in vectors], np.float32)
    assert answer["outputs"][0]["data"] == pytest.approx(model.predict(rows).tolist())


def test_without_a_model_the_heuristic_answers_and_says_so(
    payments: Domain, spec: VectorSpec
) -> None:
    api, _, _ = make_api(payments, spec, Lineup(heuristic_serving(payments)))
    names = heuristic_serving(payments).runtime.feature_names
    status, answer = infer(api, {"inputs": columns(payments, [with_online(vector())], names)})
    assert status == 200
    assert (answer["model_version"], answer["parameters"]) == (
        "heuristic",
        {"served_by": "fallback"},
    )


def one_binary_amount(size: int) -> bytes:
    """The JSON header of a request whose one FP32 value of ``amount`` is ``size`` bytes."""
    tensor = {"name": "amount", "datatype": "FP32", "shape": [1]}
    return json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": size}}]}).encode()


def _base(payments: Domain) -> dict[str, Any]:
    return {
        "inputs": columns(
            payments, [with_online(vector(i)) for i in range(2)], payments.model_inputs
        )
    }


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        (lambda r: r["inputs"].pop(0), 400, "missing inputs: amount"),
        (lambda r: r["inputs"].append({**r["inputs"][0], "name": "amout"}), 400, "unknown inputs"),
        (lambda r: r["inputs"].append(dict(r["inputs"][0])), 400, "given twice"),
        (lambda r: r["inputs"][0].update(shape=[2, 2]), 400, "a column is [n] or [n, 1]"),
        (lambda r: r["inputs"][0].update(shape=[3, 1]), 400, "2 values for a shape of 3"),
        (lambda r: r["inputs"][0].update(datatype="BYTES"), 400, "datatype 'BYTES'"),
        (lambda r: r["inputs"][0].update(data=["1", 2]), 400, "a list of numbers"),
        (
            lambda r: r["outputs"] if r.update(outputs=[{"name": "p"}]) else 0,
            400,
            "unknown outputs",
        ),
        (lambda r: r.update(id=7), 400, "'id' is a string"),
        (lambda r: r.update(inputs=[]), 400, "non-empty list"),
    ],
)
def test_a_bad_request_is_a_4xx_naming_what_is_wrong(
    payments: Domain, spec: VectorSpec, change: Any, status: int, words: str
) -> None:
    api, _, _ = make_api(payments, spec, model_lineup(payments), FakeOnline({}))
    request = _base(payments)
    change(request)
    got_status, got = infer(api, request)
    assert got_status == status and words in got["error"], got


def test_malformed_bodies_and_sizes_are_refused(payments: Domain, spec: VectorSpec) -> None:
    api, _, _ = make_api(payments, spec, model_lineup(payments), FakeOnline({}), max_vectors=3)
    assert infer(api, b"{oops")[0] == 400
    assert "not a JSON number" in infer(api, b'{"inputs": [{"data": [NaN]}]}')[1]["error"]
    many = {
        "inputs": columns(
            payments, [with_online(vector(i)) for i in range(4)], payments.model_inputs
        )
    }
    status, got = infer(api, many)
    assert status == 413 and "at most 3" in got["error"]
    status, got = infer(api, json.dumps(_base(payments)).encode(), {HEADER_LENGTH: "999999"})
    assert status == 400 and HEADER_LENGTH in got["error"]
    header = one_binary_amount(size=8)
    status, got = infer(api, header + struct.pack("<f", 1.0), {HEADER_LENGTH: str(len(header))})
    assert status == 400 and "1 FP32 values are 4 bytes" in got["error"]
    nan = one_binary_amount(size=4)
    status, got = infer(api, nan + struct.pack("<f", float("nan")), {HEADER_LENGTH: str(len(nan))})
    assert status == 400 and "'amount': every value must be a finite number" in got["error"]
    assert call(api, "POST", "/v2/models/rides/infer", b"{}").status == 404

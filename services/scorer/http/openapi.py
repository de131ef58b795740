"""The scorer's OpenAPI document: FastAPI's, from the routes, with the bodies described.

The request vector's schema comes from the domain's features schema (``VectorSpec``), the
prediction's from ``<domain>.predictions.avsc``, so the document follows the ``.avsc`` files.
Path parameters name the one domain a scorer serves (an enum), and every status a route can
answer is documented with its body, so a client generated from the document (or schemathesis)
finds no answer it was not told about.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from services.schematools.jsonschema import JsonSchema, primitive
from services.scorer.http.v2 import NUMERIC_DATATYPES, OUTPUTS
from services.scorer.vectors import FieldSpec, Kind, VectorSpec

JSON = "application/json"
_KINDS: dict[Kind, JsonSchema] = {
    Kind.STRING: primitive("string"),
    Kind.LONG: primitive("long"),
    Kind.INT: primitive("int"),
    Kind.DOUBLE: primitive("double"),
    Kind.BOOLEAN: primitive("boolean"),
    Kind.TIMESTAMP_MS: {**primitive("long"), "description": "epoch milliseconds"},
}
_V1_ERROR: JsonSchema = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "a code: invalid_json, invalid_vector, ..."},
        "detail": {"type": "string"},
        "field": {"type": "string", "description": "the field at fault, when one is"},
        "index": {"type": "integer", "description": "the vector at fault in a batch"},
    },
    "required": ["error", "detail"],
}
_V2_ERROR: JsonSchema = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}
_TENSOR_META: JsonSchema = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
    },
    "required": ["name", "datatype", "shape"],
}
_NUMBERS: JsonSchema = {
    "type": "array",
    "items": {"anyOf": [{"type": "number"}, {"type": "array"}]},
    "description": "row-major values, flat or nested",
}


def _json(schema: JsonSchema, description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


class Documented:
    """The OpenAPI details of each route, as keyword arguments of FastAPI's decorators."""

    def __init__(
        self, spec: VectorSpec, prediction: JsonSchema, max_vectors: int, max_body: int
    ) -> None:
        self.domain = spec.domain.name
        self._inputs = spec.domain.model_inputs
        self._vector = _vector_schema(spec)
        self._prediction = prediction
        self._max_vectors = max_vectors
        self._max_body = max_body

    def _errors(self, *statuses: int, v2: bool = False) -> dict[int | str, dict[str, Any]]:
        words = {
            400: "the request is refused; the body says why",
            404: "no such domain or model",
            413: f"over {self._max_body} bytes, or too many vectors",
            503: "the scorer is stopping, or the online store did not answer",
        }
        schema = _V2_ERROR if v2 else _V1_ERROR
        return {status: _json(schema, words[status]) for status in statuses}

    def score(self) -> dict[str, Any]:
        batch = {
            "type": "object",
            "properties": {
                "vectors": {
                    "type": "array",
                    "items": self._vector,
                    "minItems": 1,
                    "maxItems": self._max_vectors,
                }
            },
            "required": ["vectors"],
            "additionalProperties": False,
        }
        answers = {
            "type": "object",
            "properties": {"predictions": {"type": "array", "items": self._prediction}},
            "required": ["predictions"],
            "additionalProperties": False,
        }
        return {
            "summary": "Score one feature vector, or a batch of them",
            "description": (
                "The prediction record(s) the stream would publish for these vectors, by the "
                "line-up serving now (champion, and canary by entity key; not the shadow). "
                "Not published, not deduplicated. Online-only features left out or null are "
                "read from the online store."
            ),
            "openapi_extra": {
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": {"oneOf": [self._vector, batch]}}},
                }
            },
            "responses": {
                200: _json({"oneOf": [self._prediction, answers]}, "the prediction(s)"),
                **self._errors(400, 404, 413, 503),
            },
        }

    def health(self) -> dict[str, Any]:
        status = {"type": "object", "properties": {"status": {"type": "string"}}}
        return {
            "summary": "Liveness",
            "responses": {200: _json(status, "alive"), 503: _json(status, "stopping")},
        }

    def ready(self) -> dict[str, Any]:
        state = {
            "type": "object",
            "properties": {
                "status": {"type": "string", "enum": ["ready", "not_ready", "stopping"]},
                "serving": {"type": "string"},
                "reason": {"type": "string"},
            },
            "required": ["status"],
        }
        return {
            "summary": "Readiness: a model serves and the consumer owns partitions",
            "responses": {200: _json(state, "ready"), 503: _json(state, "not ready")},
        }

    def metrics(self) -> dict[str, Any]:
        text = {"description": "Prometheus text format", "content": {"text/plain": {}}}
        return {"summary": "The scorer's Prometheus metrics", "responses": {200: text}}

    def v2_server(self) -> dict[str, Any]:
        meta = {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["name", "version", "extensions"],
        }
        return {
            "summary": "Open Inference Protocol: server metadata",
            "responses": {200: _json(meta, "the server")},
        }

    def v2_live(self) -> dict[str, Any]:
        return self._v2_state("live", "Open Inference Protocol: liveness")

    def v2_ready(self) -> dict[str, Any]:
        return self._v2_state("ready", "Open Inference Protocol: readiness")

    def v2_model_ready(self) -> dict[str, Any]:
        documented = self._v2_state("ready", "Open Inference Protocol: model readiness")
        documented["responses"].update(self._errors(404, v2=True))
        return documented

    def _v2_state(self, word: str, summary: str) -> dict[str, Any]:
        state = {
            "type": "object",
            "properties": {word: {"type": "boolean"}, "error": {"type": "string"}},
            "required": [word],
        }
        return {
            "summary": summary,
            "responses": {200: _json(state, f"{word}"), 400: _json(state, f"not {word}")},
        }

    def v2_model(self) -> dict[str, Any]:
        meta = {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": _TENSOR_META},
                "outputs": {"type": "array", "items": _TENSOR_META},
            },
            "required": ["name", "versions", "platform", "inputs", "outputs"],
        }
        return {
            "summary": "Open Inference Protocol: the model's inputs and outputs",
            "description": (
                "One FP32 input per numeric input of the champion, shape [-1, 1]; outputs "
                "score (FP64) and decision (BOOL)."
            ),
            "responses": {200: _json(meta, "the model"), **self._errors(404, v2=True)},
        }

    def v2_infer(self) -> dict[str, Any]:
        tensor_in = {
            "type": "object",
            "properties": {
                "name": {"type": "string", "enum": list(self._inputs)},
                "datatype": {"type": "string", "enum": sorted(NUMERIC_DATATYPES)},
                "shape": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0},
                    "minItems": 1,
                    "maxItems": 2,
                },
                "data": _NUMBERS,
                "parameters": {"type": "object"},
            },
            "required": ["name", "datatype", "shape"],
        }
        request = {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "inputs": {"type": "array", "items": tensor_in, "minItems": 1},
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"name": {"type": "string", "enum": list(OUTPUTS)}},
                        "required": ["name"],
                    },
                },
            },
            "required": ["inputs"],
        }
        tensor_out = {
            "type": "object",
            "properties": {
                **_TENSOR_META["properties"],
                "data": {"type": "array", "items": {"type": ["number", "boolean"]}},
            },
            "required": ["name", "datatype", "shape", "data"],
        }
        answer = {
            "type": "object",
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "outputs": {"type": "array", "items": tensor_out},
            },
            "required": ["model_name", "model_version", "outputs"],
        }
        return {
            "summary": "Open Inference Protocol: score rows with the champion",
            "description": (
                "JSON tensors, or Triton's binary tensor extension (a JSON header of "
                "Inference-Header-Content-Length bytes, then the tensors' bytes). At most "
                f"{self._max_vectors} rows."
            ),
            "openapi_extra": {
                "requestBody": {"required": True, "content": {JSON: {"schema": request}}}
            },
            "responses": {
                200: _json(answer, "the scores"),
                **self._errors(400, 404, 413, 503, v2=True),
            },
        }


def openapi_document(app: FastAPI, documented: Documented) -> dict[str, Any]:
    """FastAPI's document of ``app``'s routes, with FastAPI's own validation answers (which
    these routes never give) left out and the path parameters naming the served domain."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=(
            "Score feature vectors with the model the stream is using: streamml's own API "
            "(/v1) and the Open Inference Protocol (KServe v2, /v2)."
        ),
        routes=app.routes,
    )
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
            for parameter in operation.get("parameters", ()):
                if parameter.get("in") == "path":
                    parameter["schema"] = {"type": "string", "enum": [documented.domain]}
    schemas = document.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    if "components" in document and not schemas:
        document["components"].pop("schemas", None)
        if not document["components"]:
            document.pop("components")
    app.openapi_schema = document
    return document


def _vector_schema(spec: VectorSpec) -> JsonSchema:
    return {
        "type": "object",
        "title": "FeatureVector",
        "properties": {field.name: _field_schema(field) for field in spec.fields},
        "required": list(spec.required),
        "additionalProperties": False,
    }


def _field_schema(field: FieldSpec) -> JsonSchema:
    schema = dict(_KINDS[field.kind])
    if field.online:
        schema["description"] = "online-only: left out or null, it is read from the store"
    if field.nullable:
        return {"anyOf": [schema, {"type": "null"}]}
    return schema

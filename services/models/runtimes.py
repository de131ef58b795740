"""Model runtimes behind one interface: a batch of input rows in, one score per row out."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from services.core.declarations import Heuristic
from services.core.errors import ModelError

Matrix = npt.NDArray[np.float32]
Scores = npt.NDArray[np.float64]

KIND = "onnx"
INPUT_NAME = "features"


class ModelRuntime(Protocol):
    feature_names: tuple[str, ...]

    def predict(self, rows: Matrix) -> Scores: ...


class OnnxModel:
    """An ONNX graph (input ``features``: float32 [batch, n]) run by ONNX Runtime."""

    def __init__(self, artifact: bytes, feature_names: tuple[str, ...], threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # No spinning worker threads: they would steal the core the broker needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                artifact, options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"ONNX Runtime cannot load the artifact: {exc}") from exc
        self.feature_names = feature_names
        self._output = self._session.get_outputs()[0].name

    def predict(self, rows: Matrix) -> Scores:
        out = self._session.run([self._output], {INPUT_NAME: rows})[0]
        return np.asarray(out, dtype=np.float64).reshape(len(rows))


class HeuristicModel:
    """The domain's declared baseline, vectorised."""

    def __init__(self, heuristic: Heuristic) -> None:
        self.feature_names = tuple(heuristic.weights)
        self._weights = np.array(list(heuristic.weights.values()), dtype=np.float64)
        self._bias = heuristic.bias

    def predict(self, rows: Matrix) -> Scores:
        """A probability for every row, whatever its values: an input past float32's range
        is ±inf in the matrix, and inf - inf has no sign, so such a row scores 0.5 (the
        heuristic is the last resort: it must always answer with a number)."""
        with np.errstate(invalid="ignore", over="ignore"):
            z = self._bias + rows.astype(np.float64) @ self._weights
        z = np.clip(np.nan_to_num(z, nan=0.0, posinf=60.0, neginf=-60.0), -60.0, 60.0)
        scores: Scores = 1.0 / (1.0 + np.exp(-z))
        return scores

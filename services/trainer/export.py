"""ONNX export of a trained module, and the parity check that gates registering it.

The graph: input ``features`` float32 [batch, n_inputs], output ``score`` float32 [batch, 1]
(one probability per row; the batch axis is dynamic). It is exported with the TorchScript-based
exporter (``dynamo=False``): it needs nothing beyond torch, works offline, and handles this
plain feed-forward graph exactly. The scorer runs the bytes with onnxruntime, so the parity
check runs them the same way before anything is saved.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from services.core.errors import ModelError
from services.trainer.dataset import Matrix

INPUT_NAME = "features"
OUTPUT_NAME = "score"
OPSET = 17

log = logging.getLogger(__name__)


def export_onnx(module: nn.Module, n_inputs: int) -> bytes:
    """The module as ONNX bytes (opset 17), in eval mode, with a dynamic batch axis."""
    module.eval()
    example = torch.zeros(2, n_inputs, dtype=torch.float32)
    with (
        tempfile.TemporaryDirectory(prefix="streamml-export-") as folder,
        warnings.catch_warnings(),
    ):
        path = Path(folder) / "model.onnx"
        # torch 2.9+ deprecates the TorchScript exporter in favour of the dynamo one, which
        # needs onnxscript; the legacy path is the one chosen here, so its notice is expected.
        warnings.filterwarnings(
            "ignore",
            message="You are using the legacy TorchScript-based ONNX export",
            category=DeprecationWarning,
        )
        warnings.filterwarnings(
            "ignore",
            message="The feature will be removed",
            category=DeprecationWarning,
            module=r"torch\.onnx\..*",
        )
        try:
            torch.onnx.export(
                module,
                (example,),
                path,  # the typed API takes a path, not a file object
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
        except RuntimeError as exc:  # the exporter's own errors derive from RuntimeError
            raise ModelError(f"cannot export {type(module).__name__} to ONNX: {exc}") from exc
        return path.read_bytes()


def onnx_session(onnx_bytes: bytes) -> ort.InferenceSession:
    """An onnxruntime session on one thread: deterministic and what a small scorer runs."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped exceptions
        raise ModelError(f"onnxruntime cannot load the exported model: {exc}") from exc


def parity_check(
    module: nn.Module, onnx_bytes: bytes, X_sample: Matrix, atol: float = 1e-5
) -> float:
    """The max |torch - onnxruntime| over ``X_sample``; ModelError when it exceeds ``atol``."""
    sample = np.ascontiguousarray(X_sample, dtype=np.float32)
    module.eval()
    with torch.no_grad():
        expected = module(torch.from_numpy(sample)).numpy()
    try:
        (actual,) = onnx_session(onnx_bytes).run([OUTPUT_NAME], {INPUT_NAME: sample})
    except Exception as exc:  # onnxruntime raises its own untyped exceptions
        raise ModelError(f"onnxruntime cannot run the exported model: {exc}") from exc
    if actual.shape != expected.shape:
        raise ModelError(f"ONNX output shape {actual.shape} differs from torch {expected.shape}")
    max_diff = float(np.max(np.abs(actual - expected))) if sample.shape[0] else 0.0
    if not max_diff <= atol:  # also catches NaN
        raise ModelError(
            f"ONNX and torch disagree by up to {max_diff:.3g} on {sample.shape[0]} rows "
            f"(allowed {atol:.3g}); do not register this artifact"
        )
    log.info("parity check passed: max |torch - onnx| = %.3g on %d rows", max_diff, len(sample))
    return max_diff

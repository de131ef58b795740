"""The ``river`` model kind: an online-learning pipeline that scores and keeps learning.

The pipeline is ``signed log1p | StandardScaler | LogisticRegression(SGD 0.01)``. The payments
inputs are counts, amounts and seconds with heavy tails; on their logs a linear model can weigh
ratios such as "this amount against the card's 24 h mean", and the scaler keeps SGD stable
without a tuned learning rate. Measured on a busy 2-core machine (Python 3.11, river 0.26.1,
9 inputs; dict building included): about 5 us a row to predict in batches of 100 or more (15 us
for a batch of one) and about 14 us a row to learn, so one core scores about 200,000 rows/s.
Holdout AUC on the bootstrap data: 0.989 (60,000 events). A tree ensemble
(``forest.ARFClassifier``, 10 trees) ranked a 20,000-event holdout no better (AUC 0.97 both)
at about 80 us a row to predict and 540 us to learn, so it was not chosen.

A model that has learned nothing scores 0.5 (zero weights and intercept). Non-finite inputs
become 0 before the scaler, so a NaN can neither be learned nor poison the running means.

Artifacts are pickles and unpickling runs code: they are trusted, written only by the trainer
or by the scorer's own snapshots, and the model store checks their sha256 against the registry
record (``ModelStore.load_verified``) before ``from_bytes`` ever sees them.
"""

from __future__ import annotations

import math
import pickle
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from services.core.errors import ModelError
from services.models.runtimes import Matrix, Scores

KIND = "river"
ARTIFACT_FILE = "model.river.pkl"
FORMAT = 1  # the envelope's layout; from_bytes refuses others
PIPELINE_DESCRIPTION = "signed log1p | StandardScaler | LogisticRegression(SGD lr=0.01)"


def signed_log1p(x: Mapping[str, float]) -> dict[str, float]:
    """``sign(v) * log(1 + |v|)`` per input; non-finite values become 0.

    Module level, so the pipeline that holds it can be pickled: artifacts name it by this
    module and name, so moving or renaming it makes every saved river artifact unloadable.
    """
    return {
        k: math.copysign(math.log1p(abs(v)), v) if math.isfinite(v) else 0.0 for k, v in x.items()
    }


def default_pipeline() -> Any:
    """A fresh, untrained pipeline (see the module docstring for why this one)."""
    from river import compose, linear_model, optim, preprocessing

    return (
        compose.FuncTransformer(signed_log1p)
        | preprocessing.StandardScaler()
        | linear_model.LogisticRegression(optimizer=optim.SGD(0.01))
    )


class RiverModel:
    """A river pipeline behind ``ModelRuntime``, which can also ``learn``.

    ``predict`` and ``learn`` take float32 rows in ``feature_names`` order. Both, and
    ``to_bytes``, hold one lock, so outcomes may be learned on another thread than the one
    that scores; river models are not safe to read while they are being updated.
    """

    def __init__(
        self, pipeline: Any, feature_names: tuple[str, ...], *, rows_learned: int = 0
    ) -> None:
        self.feature_names = tuple(feature_names)
        self._pipeline = pipeline
        self._rows_learned = rows_learned
        self._lock = threading.Lock()

    @classmethod
    def new(cls, feature_names: tuple[str, ...]) -> RiverModel:
        """An untrained model with the default pipeline."""
        return cls(default_pipeline(), feature_names)

    @property
    def rows_learned(self) -> int:
        """Rows learned over the model's whole life, across snapshots and reloads."""
        return self._rows_learned

    def predict(self, rows: Matrix) -> Scores:
        """The positive class's probability per row, float64 [n], finite and in [0, 1]."""
        self._check_width(rows)
        names = self.feature_names
        with self._lock:
            predict_one = self._pipeline.predict_proba_one
            scores = [
                float(predict_one(dict(zip(names, row, strict=True))).get(True, 0.5))
                for row in rows.tolist()
            ]
        out = np.asarray(scores, dtype=np.float64).reshape(len(scores))
        # LogisticRegression clamps its sigmoid, so this only guards against a broken pipeline.
        out = np.nan_to_num(out, nan=0.5, posinf=1.0, neginf=0.0)
        clipped: Scores = np.clip(out, 0.0, 1.0)
        return clipped

    def learn(self, rows: Matrix, labels: Sequence[bool]) -> None:
        """``learn_one`` per row, in order: label True means fraud (the positive class)."""
        self._check_width(rows)
        if len(rows) != len(labels):
            raise ValueError(f"{len(rows)} rows but {len(labels)} labels")
        names = self.feature_names
        with self._lock:
            learn_one = self._pipeline.learn_one
            for row, label in zip(rows.tolist(), labels, strict=True):
                learn_one(dict(zip(names, row, strict=True)), bool(label))
                self._rows_learned += 1

    def to_bytes(self) -> bytes:
        """The artifact: a pickled envelope of the pipeline, its input names and rows learned."""
        with self._lock:
            envelope = {
                "format": FORMAT,
                "kind": KIND,
                "feature_names": list(self.feature_names),
                "rows_learned": self._rows_learned,
                "pipeline": self._pipeline,
            }
            return pickle.dumps(envelope, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_bytes(cls, data: bytes, feature_names: Sequence[str]) -> RiverModel:
        """Loads an artifact written by ``to_bytes``; only call it on sha256-verified bytes.

        ``feature_names`` is what the registry record says; a mismatch with the artifact's
        own names is refused (ModelError), so a model never sees columns in another order.
        """
        try:
            # Trusted input: the store verified the sha256 the registry recorded (see above).
            envelope = pickle.loads(data)  # noqa: S301
        except Exception as exc:  # unpickling raises almost anything on bad bytes
            raise ModelError(f"cannot unpickle the river artifact: {exc!r}") from exc
        if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
            raise ModelError("the artifact is not a river model envelope of format 1")
        names = tuple(feature_names)
        if tuple(envelope["feature_names"]) != names:
            raise ModelError(
                f"the artifact's inputs {envelope['feature_names']} are not the record's "
                f"{list(names)}"
            )
        return cls(envelope["pipeline"], names, rows_learned=int(envelope["rows_learned"]))

    def _check_width(self, rows: Matrix) -> None:
        if rows.ndim != 2 or rows.shape[1] != len(self.feature_names):
            raise ModelError(
                f"expected rows of {len(self.feature_names)} inputs, got shape {rows.shape}"
            )

"""The fraud MLP, with its input preprocessing inside the module.

Standardisation (and log1p on the non-negative, heavy-tailed columns) lives in buffers of the
module rather than in trainer code, so the exported ONNX graph takes the raw feature values the
featurizer produces: the scorer has no preprocessing of its own to get out of step.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import nn

from services.trainer.dataset import Dataset, Matrix

log = logging.getLogger(__name__)


class FraudMLP(nn.Module):
    """inputs -> 32 -> 16 -> 1; ``forward`` returns probabilities, ``logits`` trains."""

    log_columns: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, log_columns: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("log_columns", log_columns.to(torch.bool))
        self.register_buffer("mean", mean.to(torch.float32))
        self.register_buffer("std", std.to(torch.float32))
        n_inputs = int(mean.shape[0])
        self.net = nn.Sequential(
            nn.Linear(n_inputs, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 1)
        )

    @classmethod
    def fitted_to(cls, X: Matrix) -> FraudMLP:
        """A fresh network whose preprocessing is fitted to the training inputs ``X``."""
        raw = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        log_columns = (raw.min(dim=0).values >= 0.0) & (raw.max(dim=0).values > 1.0)
        scaled = torch.where(log_columns, torch.log1p(raw.clamp_min(0.0)), raw)
        std = scaled.std(dim=0)
        return cls(log_columns, scaled.mean(dim=0), torch.where(std > 1e-6, std, 1.0))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        scaled = torch.where(self.log_columns, torch.log1p(x.clamp_min(0.0)), x)
        result: torch.Tensor = self.net((scaled - self.mean) / self.std)
        return result

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fraud probabilities, shape [batch, 1], from raw (unscaled) model inputs."""
        return torch.sigmoid(self.logits(x))


def train_mlp(
    train: Dataset,
    *,
    epochs: int = 12,
    seed: int = 7,
    lr: float = 3e-3,
    batch_size: int = 256,
) -> FraudMLP:
    """Trains with Adam on BCE-with-logits; deterministic for a seed (one CPU thread).

    The rare positives get ``pos_weight = sqrt(negatives / positives)``: enough for the model
    to look at them, without pushing every score up as the full ratio would (scores are still
    not calibrated probabilities).
    """
    if train.positives == 0 or train.positives == len(train):
        raise ValueError(f"{train.dataset_id} needs both classes to train on")
    X = torch.from_numpy(np.ascontiguousarray(train.X))
    y = torch.from_numpy(np.ascontiguousarray(train.y)).reshape(-1, 1)
    pos_weight = torch.tensor([math.sqrt((len(train) - train.positives) / train.positives)])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = FraudMLP.fitted_to(train.X)
            _fit(module, X, y, pos_weight, epochs=epochs, lr=lr, batch_size=batch_size)
    finally:
        torch.set_num_threads(threads)
    return module.eval()


def _fit(
    module: FraudMLP,
    X: torch.Tensor,
    y: torch.Tensor,
    pos_weight: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
) -> None:
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    optimiser = torch.optim.Adam(module.parameters(), lr=lr)
    module.train()
    for epoch in range(1, epochs + 1):
        order = torch.randperm(X.shape[0])
        total = 0.0
        for start in range(0, X.shape[0], batch_size):
            rows = order[start : start + batch_size]
            optimiser.zero_grad()
            loss = loss_fn(module.logits(X[rows]), y[rows])
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * rows.shape[0]
        log.info("epoch %d/%d: weighted train loss %.4f", epoch, epochs, total / X.shape[0])

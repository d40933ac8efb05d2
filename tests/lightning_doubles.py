"""Small stand-ins the core tests train with a bare Lightning Trainer: a task, a module whose validation score
follows a script, and a logger that records what it receives."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import Logger
from torchmetrics import MeanSquaredError, MetricCollection

from converge.task import TaskModule


class Regression(TaskModule):
    """A linear regression TaskModule on 3 features (SGD at 0.05 unless `optim` says otherwise)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("optim", {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.05})
        super().__init__(**{"spec": {}, **kwargs})
        self.net = torch.nn.Linear(3, 1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs).squeeze(-1)

    def build_metrics(self) -> MetricCollection:
        return MetricCollection({"mse": MeanSquaredError()})

    def compute_loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(outputs, target)


class ScriptedScore(pl.LightningModule):
    """Trains a layer on 4 features and logs `val/score` = scores[epoch]: checkpoint and stopping rules see the
    scores a test chose."""

    def __init__(self, scores: Sequence[float]) -> None:
        super().__init__()
        self.scores = list(scores)
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.log("val/score", self.scores[self.current_epoch])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Recorder(Logger):
    """Every log_metrics call, as a logger receives it: (step, metrics) rows."""

    name, version = "recorder", 0

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, dict[str, float]]] = []

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.rows.append((step, dict(metrics)))

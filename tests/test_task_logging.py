"""What TaskModule logs: the curves of per-step `self.log` calls, written without calling it on every step."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning_doubles import Recorder, Regression
from torch.utils.data import DataLoader, TensorDataset


class StepLosses(pl.Callback):
    def __init__(self) -> None:
        self.by_epoch: dict[int, list[tuple[float, int]]] = {}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.by_epoch.setdefault(trainer.current_epoch, []).append((float(outputs["loss"]), len(batch[-1])))


class PerStepLogging(Regression):
    """The same task logging its train loss the plain Lightning way: self.log on every step."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        inputs, target = self.split_batch(batch)
        loss = self.compute_loss(self(*inputs), target)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(target))
        return loss


def _fit(task_class: type[Regression]) -> tuple[Regression, Recorder, StepLosses]:
    torch.manual_seed(0)
    train = TensorDataset(torch.randn(70, 3), torch.randn(70))  # batches of 16: the last one has 6 rows
    task = task_class()
    recorder, steps = Recorder(), StepLosses()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=recorder, callbacks=[steps], log_every_n_steps=2,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    trainer.fit(task, DataLoader(train, batch_size=16), DataLoader(VAL, batch_size=16))
    return task, recorder, steps


_SEEDED = torch.Generator().manual_seed(1)
VAL = TensorDataset(torch.randn(40, 3, generator=_SEEDED), torch.randn(40, generator=_SEEDED))


def _curve(recorder: Recorder, name: str) -> list[tuple[int, float]]:
    return [(step, row[name]) for step, row in recorder.rows if name in row]


def test_train_curves_are_those_of_per_step_logging() -> None:
    task, recorder, steps = _fit(Regression)
    _, reference, _ = _fit(PerStepLogging)
    for name in ("train/loss_step", "train/loss_epoch"):
        ours, theirs = _curve(recorder, name), _curve(reference, name)
        assert [step for step, _ in ours] == [step for step, _ in theirs] and ours, name  # logged at the same steps
        assert all(abs(a - b) < 1e-6 for (_, a), (_, b) in zip(ours, theirs, strict=True)), name
    for epoch, (_, value) in enumerate(_curve(recorder, "train/loss_epoch")):
        losses = steps.by_epoch[epoch]
        assert abs(value - sum(loss * size for loss, size in losses) / sum(size for _, size in losses)) < 1e-6


def test_validation_metrics_are_logged_once_an_epoch_over_the_whole_split() -> None:
    task, recorder, _ = _fit(Regression)
    val_rows = [row for _, row in recorder.rows if "val/mse" in row]
    assert len(val_rows) == 2 and all("val/loss" in row for row in val_rows)
    with torch.no_grad():
        inputs, target = VAL.tensors
        expected = float(torch.nn.functional.mse_loss(task(inputs), target))
    assert abs(val_rows[-1]["val/mse"] - expected) < 1e-5 and abs(val_rows[-1]["val/loss"] - expected) < 1e-5


class Penalised(Regression):
    """A constant penalty: it changes the training loss and no gradient, so the runs differ by it alone."""

    def regularization(self, inputs: Any) -> float:
        return 5.0


def test_regularization_is_added_to_the_training_loss_only() -> None:
    _, plain, _ = _fit(Regression)
    _, penalised, _ = _fit(Penalised)
    for (_, base), (_, with_penalty) in zip(_curve(plain, "train/loss_epoch"), _curve(penalised, "train/loss_epoch"),
                                            strict=True):
        assert abs(with_penalty - base - 5.0) < 1e-5
    assert _curve(plain, "val/loss") == _curve(penalised, "val/loss")

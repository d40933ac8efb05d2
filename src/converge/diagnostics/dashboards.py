"""TensorBoard dashboards that mean something: curves that belong together on one chart, and pictures.

`Dashboards` (the `dashboards` callback, on by default) writes, once per run, a custom-scalars
layout that puts train and validation loss on one chart, each validation metric with its test
value, the learning rate, and the `convergence/` curves side by side (TensorBoard's CUSTOM
SCALARS tab). Every few epochs, and when fitting ends, it asks the task for pictures
(`TaskModule.log_pictures`: a confusion matrix, predictions on validation samples) and, once at
the end, for the costlier views (`TaskModule.log_final_pictures`: an embedding projector).

The pictures come from an extra pass over the validation batches the trainer runs (its
`limit_val_batches`, and under DDP each rank's shard: every rank calls the hooks so that metric
syncs and sharded forwards match, and only rank 0's logger writes). Nothing runs per training step.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import move_data_to_device

from converge.errors import ConfigError

if TYPE_CHECKING:
    from converge.task import TaskModule

# Chart title -> tag regexes of the curves the convergence callback logs, one scale per chart.
CONVERGENCE_CHARTS = {
    "generalisation gap (val loss - train loss)": [r"^convergence/gap$"],
    "trend of the gap (slope per epoch)": [r"^convergence/gap_trend$"],
    "relative improvement of the monitored metric": [r"^convergence/rel_improvement$"],
    "epochs since the best epoch": [r"^convergence/epochs_since_best$"],
    "gradient norm": [r"^convergence/grad_norm$"],
    "update-to-weight ratio": [r"^convergence/update_ratio$"],
    "state (index in converge.diagnostics.rule.STATES)": [r"^convergence/state$"],
}


def scalar_layout(metric_names: Iterable[str]) -> dict[str, dict[str, list[Any]]]:
    """The custom-scalars layout (SummaryWriter.add_custom_scalars) for a task with these metrics.

    Tags are regular expressions (TensorBoard matches them against every run), so a chart whose
    curves a run does not log (no test split, no convergence callback) just stays empty.
    """
    metrics = {"loss": ["Multiline", [r"^train/loss_epoch$", r"^val/loss$", r"^test/loss$"]]}
    for name in metric_names:
        metrics[name] = ["Multiline", [f"^val/{re.escape(name)}$", f"^test/{re.escape(name)}$"]]
    convergence = {title: ["Multiline", tags] for title, tags in CONVERGENCE_CHARTS.items()}
    return {"train vs validation": metrics, "learning rate": {"learning rate": ["Multiline", [r"^lr-"]]},
            "convergence": convergence}


def tensorboard_writers(trainer: pl.Trainer) -> list[Any]:
    """The SummaryWriter of each TensorBoard logger (a no-op stand-in on ranks other than 0)."""
    return [logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


class Dashboards(pl.Callback):
    """Writes the custom-scalars layout when fitting starts, and the task's pictures every
    `every_n_epochs` validation epochs and at the end of fitting (never twice for the same weights)."""

    def __init__(self, every_n_epochs: int = 5) -> None:
        if every_n_epochs < 1:
            raise ConfigError(f"callbacks.dashboards.every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self._drawn_at_step: int | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: TaskModule) -> None:
        self._drawn_at_step = None
        layout = scalar_layout(name.removeprefix("val/") for name in pl_module.val_metrics)
        for writer in tensorboard_writers(trainer):
            writer.add_custom_scalars(layout)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: TaskModule) -> None:
        if not trainer.sanity_checking and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._draw(trainer, pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: TaskModule) -> None:
        if self._drawn_at_step != trainer.global_step:  # the last validation epoch may have drawn these weights
            self._draw(trainer, pl_module)
        with drawing(pl_module):
            for writer in tensorboard_writers(trainer):
                pl_module.log_final_pictures(writer, _logging_step(trainer))

    def _draw(self, trainer: pl.Trainer, task: TaskModule) -> None:
        with drawing(task):
            for writer in tensorboard_writers(trainer):
                task.log_pictures(writer, _logging_step(trainer))
        self._drawn_at_step = trainer.global_step


def _logging_step(trainer: pl.Trainer) -> int:
    """The step Lightning logs the current epoch's metrics at (its LearningRateMonitor uses the same), so a
    picture sits at the same step as the validation scores of the weights it shows.

    Lightning's one private internal left here: no public value equals it. global_step is one more during
    the validation that ends an epoch (the loop counts the batch after validating), and only equal at the end
    of fit. Pinned by tests/test_lightning_internals.py."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


@contextmanager
def drawing(task: pl.LightningModule) -> Iterator[None]:
    """Eval mode without gradients for the picture hooks, then the loop's mode and random state back:
    a pass over a DataLoader without its own generator draws a seed from torch's global one, and a
    picture must not change the training that follows (converge's loaders have their own generators;
    a user's may not)."""
    modes = [(module, module.training) for module in task.modules()]  # a frozen part may be in eval on purpose
    devices = [task.device] if task.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        task.eval()
        try:
            yield
        finally:
            for module, training in modes:
                module.training = training


def validation_predictions(task: TaskModule) -> Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor]]:
    """(inputs, outputs, target) of each validation batch the trainer runs, on the task's device.

    The loaders are the trainer's own (a DDP rank sees its shard), cut to its validation batch
    limit, so a picture costs at most one validation pass.
    """
    trainer = task.trainer
    loaders = trainer.val_dataloaders
    if loaders is None:
        return
    if isinstance(loaders, Mapping):
        loaders = list(loaders.values())
    elif not isinstance(loaders, Sequence):
        loaders = [loaders]
    for loader, limit in zip(loaders, trainer.num_val_batches, strict=False):
        for index, batch in enumerate(loader):
            if index >= limit:
                break
            inputs, target = task.split_batch(move_data_to_device(batch, task.device))
            yield inputs, task(*inputs), target

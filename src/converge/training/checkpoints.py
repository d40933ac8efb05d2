"""The checkpoints of a run: the one it keeps (tested, exported, reported), and last.ckpt every epoch.

`KeptCheckpoint` keeps the epoch with the best monitored score, or the last epoch: a fixed schedule
(a cosine decay to zero, a convex objective) ends in the model, and a small validation split picking
among its epochs picks noise.

`ckpt_path=last` resumes from `last.ckpt`, so `LastCheckpoint` writes it every epoch, a file of its own
even in an epoch that also wrote the kept checkpoint. Hard-linking it to that checkpoint instead saved one
checkpoint write in those epochs (about 7 ms of CPU, 1% of a digits epoch: bench/callback_costs.py), at
the price of five private fields of Lightning's ModelCheckpoint: not worth it.

`MonitorLogged` makes sure the metric the kept checkpoint (and early stopping) follow is one the run logs.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

from converge.errors import ConfigError, UnknownNameError

KEEP = ("best", "last")


class KeptCheckpoint(ModelCheckpoint):
    """The checkpoint a run keeps: the epoch with the best `monitor` score (keep="best"), or the last epoch
    (keep="last"; the monitor is still logged and reported, it only picks nothing). Otherwise ModelCheckpoint."""

    def __init__(self, keep: str = "best", monitor: str | None = None, **kwargs: Any) -> None:
        if keep not in KEEP:
            raise ConfigError(f"monitor.keep must be one of {', '.join(KEEP)}, got {keep!r}")
        super().__init__(monitor=monitor if keep == "best" else None, **kwargs)


class LastCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint of the latest weights: no monitor, one file. Its arguments are ModelCheckpoint's."""

    def __init__(self, dirpath: str | None = None, filename: str = "last", **kwargs: Any) -> None:
        # Always the one file: a run resumed in its own folder finds last.ckpt there, and must not go on
        # in a last-v1.ckpt that `ckpt_path=last` would never find.
        super().__init__(dirpath=dirpath, filename=filename, monitor=None, save_top_k=1,
                         enable_version_counter=False, **kwargs)


class MonitorLogged(pl.Callback):
    """Refuse a monitored metric the run does not log (`val/accuracy` for `val/acc`) as soon as the logs can
    tell: early stopping would fail on it as a bare RuntimeError, and a run keeping its last epoch would report
    it as missing, silently. Only the logs can tell, as a plugin's task may log metrics of its own.

    A validation metric is checked when the first validation ends, before anything reads it; any other (a
    training loss's epoch mean, a callback's) when the second epoch starts.

    Args:
        metric: `monitor.metric`.

    Raises:
        UnknownNameError: the metric is not among those logged, with the names that are.
    """

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.epochs_ended = 0
        self.checked = False

    @property
    def validation_metric(self) -> bool:
        return self.metric.startswith("val/")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.validation_metric and not trainer.sanity_checking:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epochs_ended += 1

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.epochs_ended and not self.validation_metric:  # validation may not run every epoch
            self._check(trainer)

    def _check(self, trainer: pl.Trainer) -> None:
        if self.checked:
            return
        self.checked = True
        if self.metric not in trainer.callback_metrics:
            raise UnknownNameError("monitor.metric", self.metric, trainer.callback_metrics,
                                   hint="Set monitor.metric to one of them (and monitor.mode if it is not the task's).")

"""Fault injection for resume tests: a real SIGKILL at an exact point of training.

Add it to a run from the command line, e.g.
`+callbacks.crash._target_=converge.testing.faults.KillAt +callbacks.crash.epoch=1 +callbacks.crash.batch=2`:
the process dies as a crashed or preempted job would, with no chance to clean up.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning.pytorch as pl


class KillAt(pl.Callback):
    """SIGKILLs its own process after training batch `batch` of epoch `epoch` (both from 0)."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


class FailAt(KillAt):
    """Raises `converge.errors.DataError` after training batch `batch` of epoch `epoch`: a run that fails inside
    fit, after its loggers and callbacks started (the process cleans up, unlike under KillAt)."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            from converge.errors import DataError

            raise DataError(f"injected failure at epoch {self.epoch}, batch {self.batch} (converge.testing.faults)")

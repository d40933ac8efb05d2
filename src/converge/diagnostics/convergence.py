"""The convergence callback: measure each epoch, classify the run, stop it at once when it diverges.

Logged under convergence/ every epoch: rel_improvement (of the monitored validation metric's best over
the rule's window), gap (val loss - train loss) and gap_trend (its slope per epoch over the window),
epochs_since_best, grad_norm, update_ratio (|dW| / |W| of an optimiser step) and state (the index of
the state name in `rule.STATES`; the name goes to TensorBoard as text, to convergence.json and to
metrics.json). `rule` holds the classification rule.

Cost: the gradient norm and the update ratio are measured on every `sample_every_n_steps`-th batch of
an epoch (the first one always), not on every step; the only per-step work is adding up the loss and
checking it is finite.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.loggers import TensorBoardLogger

from converge.diagnostics.baseline import baseline_scores
from converge.diagnostics.rule import STATES, Thresholds, classify, epoch_diagnostics, finite
from converge.errors import TrainingDiverged
from converge.layout import HISTORY_FILE, write_json

log = logging.getLogger("converge")

_ADVICE = "Lower optim.lr, or clip gradients (+trainer.gradient_clip_val=1.0)."


class ConvergenceCallback(pl.Callback):
    """Per-epoch convergence diagnostics and state (see `converge.diagnostics.rule` for the rule).

    A non-finite train loss (checked every step), validation loss or weight (checked before the
    checkpoints of an epoch are written) raises `TrainingDiverged` at once: Lightning then writes no
    further checkpoint, so `last.ckpt` and the best checkpoint stay the last finite ones.

    Args:
        monitor: the validation metric to judge (default: the task's own, e.g. val/acc).
        mode: min or max (default: the task's own).
        sample_every_n_steps: measure the gradient norm and update ratio on every n-th batch.
        dirpath: where convergence.json goes (default: the trainer's default_root_dir).
        window, tolerance, overfit_epochs, underfit_skill, diverge_fraction: the rule's thresholds.
    """

    def __init__(self, monitor: str | None = None, mode: str | None = None, window: int = 5,
                 tolerance: float = 0.01, overfit_epochs: int = 3, underfit_skill: float = 0.05,
                 diverge_fraction: float = 0.5, sample_every_n_steps: int = 10, dirpath: str | None = None) -> None:
        self.monitor, self.mode, self.dirpath = monitor, mode, dirpath
        self.limits = Thresholds(window=window, tolerance=tolerance, overfit_epochs=overfit_epochs,
                                 underfit_skill=underfit_skill, diverge_fraction=diverge_fraction)
        self.sample_every_n_steps = max(1, int(sample_every_n_steps))
        self.history: list[dict[str, Any]] = []
        self.baseline: dict[str, float] | None = None  # None: not measured yet
        self.diverged: dict[str, Any] | None = None
        self._targets: dict[str, list[torch.Tensor]] = {"train": [], "val": []}
        self._reset_epoch()

    @property
    def state(self) -> str | None:
        return self.history[-1]["state"] if self.history else None

    def _reset_epoch(self) -> None:
        self._loss_sum: torch.Tensor | float = 0.0
        self._loss_count = 0
        self._grad_norms: list[torch.Tensor] = []
        self._update_ratios: list[torch.Tensor] = []
        self._snapshot: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._sampled = False
        self._validated = False
        self._started = time.perf_counter()

    # -- Lightning hooks ------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.monitor = self.monitor or getattr(pl_module, "monitor", "val/loss")
        self.mode = self.mode or getattr(pl_module, "mode", "min")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset_epoch()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._sampled = batch_idx % self.sample_every_n_steps == 0

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if not self._sampled:
            return
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if params:
            self._grad_norms.append(torch.nn.utils.get_total_norm([p.grad.detach() for p in params]))
            self._snapshot.extend((p, p.detach().clone()) for p in params)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._snapshot:  # the optimiser has stepped since the snapshot: measure the update
            before = [old for _, old in self._snapshot]
            change = torch.nn.utils.get_total_norm([p.detach() - old for p, old in self._snapshot])
            self._update_ratios.append(change / torch.nn.utils.get_total_norm(before).clamp_min(1e-12))
            self._snapshot = []
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return  # manual optimisation that returned nothing: no loss to follow
        target = self._collect(pl_module, batch, "train")
        size = len(target) if target is not None and target.dim() else 1
        self._loss_sum = self._loss_sum + loss.detach().float() * size
        self._loss_count += size
        if self._any_rank(trainer, not bool(torch.isfinite(loss))):
            self._diverge(trainer, f"the train loss is {float(loss)} at epoch {trainer.current_epoch}, "
                                   f"step {trainer.global_step}")

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.baseline is None and not trainer.sanity_checking:
            self._collect(pl_module, batch, "val")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = True
            self._check_finite(trainer, pl_module)  # before ModelCheckpoint (Lightning calls checkpoints last)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_finite(trainer, pl_module)
        if self.baseline is None and self._targets["train"] and self._targets["val"]:
            self.baseline = self._measure_baseline(pl_module)
        record = self._epoch_record(trainer)
        previous = self.state
        self.history.append(record)
        record.update(epoch_diagnostics(self.history, self.mode, self.limits))
        record["state"] = classify(self.history, self.mode, (self.baseline or {}).get(self.monitor), self.limits)
        for name in ("rel_improvement", "gap", "gap_trend", "epochs_since_best", "grad_norm", "update_ratio"):
            if finite(record[name]):
                pl_module.log(f"convergence/{name}", float(record[name]), on_step=False, on_epoch=True)
        pl_module.log("convergence/state", float(STATES.index(record["state"])), on_step=False, on_epoch=True)
        if record["state"] != previous:
            self._log_text(trainer, f"epoch {record['epoch']}: {record['state']}")
        self.write(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.write(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "baseline": self.baseline, "diverged": self.diverged}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self.baseline = state_dict.get("baseline")
        self.diverged = state_dict.get("diverged")

    # -- what the callback writes ---------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The run's convergence outcome, for metrics.json and the report."""
        best = min((r for r in self.history if finite(r.get("monitor"))), default=None,
                   key=lambda r: r["monitor"] if self.mode == "min" else -r["monitor"])
        return {
            "state": self.state,
            "monitor": self.monitor,
            "best_epoch": best["epoch"] if best else None,
            "best_score": best["monitor"] if best else None,
            "gap_at_best": best.get("gap") if best else None,
            "baseline": self.baseline or {},
            "diverged": self.diverged,
        }

    def write(self, trainer: pl.Trainer) -> None:
        """convergence.json in the run directory (rank 0): what `converge report` reads the curves from."""
        if not trainer.is_global_zero:
            return
        write_json(Path(self.dirpath or trainer.default_root_dir) / HISTORY_FILE, {
            **self.summary(),
            "mode": self.mode,
            "thresholds": asdict(self.limits),
            "epochs": self.history,
        })

    # -- internals ------------------------------------------------------------------------------
    def _collect(self, pl_module: pl.LightningModule, batch: Any, split: str) -> torch.Tensor | None:
        """The batch's targets; kept during the first epoch when the task declares a baseline to fit."""
        split_batch = getattr(pl_module, "split_batch", None)
        if split_batch is None:
            return None
        _, target = split_batch(batch)
        if self.baseline is None and getattr(pl_module, "baseline", None):
            self._targets[split].append(target.detach())
        return target

    def _measure_baseline(self, pl_module: pl.LightningModule) -> dict[str, float]:
        train, val = (torch.cat(self._targets[split]) if self._targets[split] else torch.empty(0)
                      for split in ("train", "val"))
        self._targets = {"train": [], "val": []}
        try:
            return baseline_scores(pl_module, train, val)
        except (RuntimeError, ValueError) as error:  # targets the declared predictor cannot fit
            log.warning("no baseline for the convergence check (%s: %s)", pl_module.baseline, error)
            return {}

    def _epoch_record(self, trainer: pl.Trainer) -> dict[str, Any]:
        metrics = trainer.callback_metrics

        def value(name: str | None) -> float | None:
            return float(metrics[name]) if self._validated and name in metrics else None

        def mean(values: list[torch.Tensor]) -> float | None:
            return float(torch.stack(values).mean()) if values else None

        return {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "train_loss": float(self._loss_sum) / self._loss_count if self._loss_count else None,
            "val_loss": value("val/loss"),
            "monitor": value(self.monitor),
            "grad_norm": mean(self._grad_norms),
            "update_ratio": mean(self._update_ratios),
            "seconds": round(time.perf_counter() - self._started, 3),
        }

    def _check_finite(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        val_loss = trainer.callback_metrics.get("val/loss") if self._validated else None
        bad_val = val_loss is not None and not bool(torch.isfinite(val_loss))
        bad_weights = not bool(torch.isfinite(torch.nn.utils.get_total_norm(
            [p.detach() for p in pl_module.parameters()])))
        if self._any_rank(trainer, bad_val or bad_weights):
            what = f"the validation loss is {float(val_loss)}" if bad_val else "the weights are not finite"
            self._diverge(trainer, f"{what} at epoch {trainer.current_epoch}")

    @staticmethod
    def _any_rank(trainer: pl.Trainer, flag: bool) -> bool:
        """One decision for every process: under DDP a rank that stopped alone would hang the others."""
        return trainer.strategy.reduce_boolean_decision(flag, all=False) if trainer.world_size > 1 else flag

    def _diverge(self, trainer: pl.Trainer, what: str) -> None:
        self.diverged = {"epoch": trainer.current_epoch, "step": trainer.global_step, "reason": what}
        self.history.append({"epoch": trainer.current_epoch, "step": trainer.global_step, "train_loss": None,
                             "val_loss": None, "monitor": None, "state": "diverging",
                             "seconds": round(time.perf_counter() - self._started, 3)})
        self._log_text(trainer, f"epoch {trainer.current_epoch}: diverging ({what})")
        self.write(trainer)
        raise TrainingDiverged(f"training diverged: {what}. Stopped at once: checkpoints/ keeps the last finite "
                               f"weights (of the last finished epoch, if any). {_ADVICE}")

    @staticmethod
    def _log_text(trainer: pl.Trainer, text: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("convergence/state", text, trainer.global_step)



def fit_outcome(trainer: pl.Trainer) -> dict[str, Any]:
    """How `fit` ended, for metrics.json: the convergence summary, why training stopped, early stopping's patience."""
    callback = next((c for c in trainer.callbacks if isinstance(c, ConvergenceCallback)), None)
    stopper = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)
    if callback is not None and callback.diverged:
        reason = "diverged"
    elif stopper is not None and stopper.stopping_reason != EarlyStoppingReason.NOT_STOPPED:  # epoch 0 too
        reason = "early_stopping"
    elif trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps:
        reason = "max_steps"
    elif trainer.max_epochs not in (None, -1) and trainer.current_epoch >= trainer.max_epochs:
        reason = "max_epochs"
    else:
        reason = "stopped"
    outcome = callback.summary() if callback is not None else {"state": None}
    return {**outcome, "stop_reason": reason, "patience": stopper.patience if stopper else None}

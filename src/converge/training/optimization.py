"""Optimiser and LR scheduler from the `optim` and `scheduler` config groups.

`optim` is a partial (`_partial_: true`) optimiser; `scheduler` holds Lightning's
scheduler keys (interval, frequency, monitor) plus a partial `schedule`. A
schedule that takes `total_steps` gets the run's length, in steps or epochs
according to its interval, so no config has to repeat it. The parameters come in
groups, each training at a factor (`lr_scale`) of `optim.lr` (the fine-tuning
strategies' groups: converge.training.finetuning).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
from hydra.utils import instantiate

from converge.errors import ConfigError


def configure_optimizers(
    optim: Mapping[str, Any], scheduler: Mapping[str, Any] | None, groups: Sequence[Mapping[str, Any]],
    trainer: pl.Trainer,
) -> Any:
    scales = [float(group.get("lr_scale", 1.0)) for group in groups if group["params"]]
    optimizer = instantiate(dict(optim))(param_groups(optim, groups))
    if not scheduler:
        return optimizer
    settings = dict(scheduler)
    if "schedule" not in settings:
        raise ConfigError(f"scheduler config needs a `schedule` entry (a partial LR scheduler), got {sorted(settings)}")
    make = instantiate(settings.pop("schedule"))
    interval = settings.setdefault("interval", "epoch")
    kwargs: dict[str, Any] = {}
    if isinstance(getattr(make, "keywords", {}).get("max_lr"), float | int) and len(set(scales)) > 1:
        kwargs["max_lr"] = [make.keywords["max_lr"] * scale for scale in scales]  # one-cycle: each group's own peak
    if "total_steps" in inspect.signature(make).parameters:
        kwargs["total_steps"] = int(trainer.estimated_stepping_batches if interval == "step" else trainer.max_epochs)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": make(optimizer, **kwargs), **settings}}


def param_groups(optim: Mapping[str, Any], groups: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Torch's parameter groups: each at its `lr_scale` x `optim.lr`; empty groups left out."""
    groups = [group for group in groups if group["params"]]
    if not groups:
        raise ConfigError("nothing to train: every parameter of the task is frozen")
    lr = optim.get("lr")
    if lr is None and any(group.get("lr_scale", 1.0) != 1.0 for group in groups):
        raise ConfigError("the finetune strategy's per-group learning rates need optim.lr")
    return [{"params": list(group["params"]), **({} if lr is None else {"lr": lr * group.get("lr_scale", 1.0)})}
            for group in groups]

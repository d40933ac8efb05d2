"""Optimiser and LR scheduler from the `optim` and `scheduler` config groups.

`optim` is a partial (`_partial_: true`) optimiser; `scheduler` holds Lightning's
scheduler keys (interval, frequency, monitor) plus a partial `schedule`. A
schedule that takes `total_steps` gets the run's length, in steps or epochs
according to its interval, so no config has to repeat it.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate

from converge.errors import ConfigError


def configure_optimizers(
    optim: Mapping[str, Any], scheduler: Mapping[str, Any] | None, parameters: Iterable[torch.nn.Parameter],
    trainer: pl.Trainer,
) -> Any:
    optimizer = instantiate(dict(optim))(parameters)
    if not scheduler:
        return optimizer
    settings = dict(scheduler)
    if "schedule" not in settings:
        raise ConfigError(f"scheduler config needs a `schedule` entry (a partial LR scheduler), got {sorted(settings)}")
    make = instantiate(settings.pop("schedule"))
    interval = settings.setdefault("interval", "epoch")
    kwargs = {}
    if "total_steps" in inspect.signature(make).parameters:
        kwargs["total_steps"] = int(trainer.estimated_stepping_batches if interval == "step" else trainer.max_epochs)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": make(optimizer, **kwargs), **settings}}

"""Transfer learning in the train recipe: the task's starting weights and its fine-tuning strategy."""

from __future__ import annotations

import lightning.pytorch as pl
from omegaconf import DictConfig

from converge.app.build import instantiate_config
from converge.errors import ConfigError
from converge.task import TaskModule
from converge.training.finetuning import FineTuning
from converge.training.pretrained import load_pretrained


def prepare_transfer(cfg: DictConfig, task: TaskModule) -> list[pl.Callback]:
    """Start `task` from its `pretrained` weights (not when resuming: a checkpoint holds them) and give it the
    `finetune` strategy; returns the strategy's callback (none for `finetune=full`)."""
    pretrained = cfg.get("pretrained") or {}
    if pretrained.get("source") and not cfg.get("ckpt_path"):
        load_pretrained(task, output_root=cfg.paths.output_root, **pretrained)
    if not cfg.get("finetune"):
        return []
    strategy = instantiate_config(cfg.finetune, "finetune strategy")
    if not isinstance(strategy, FineTuning):
        raise ConfigError(f"finetune config builds a {type(strategy).__name__}, not a converge FineTuning strategy")
    strategy.prepare(task)
    task.finetuning = strategy
    return [strategy]

"""The experiment loggers of a run (the `logger` group), and what they are told when it ends."""

from __future__ import annotations

import sys
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from omegaconf import DictConfig

from converge.app.build import instantiate_config, plain
from converge.summary import RunSummary


def build_loggers(logger: DictConfig | None) -> list[Any]:
    return [instantiate_config(node, f"logger '{name}'") for name, node in (logger or {}).items()
            if node is not None]


def log_hparams(trainer: pl.Trainer, cfg: DictConfig, summary: RunSummary) -> None:
    """Tell each logger the composed config and the final scores, then close it: so the runs of a sweep compare
    side by side (TensorBoard's HPARAMS tab, MLflow's run table, wandb's config and summary).

    TensorBoard pairs the flat config with the scores; MLflow keeps the flat config as params (Lightning keeps a
    value's first 250 characters: within MLflow's limit) and the scores as metrics; wandb takes the config nested,
    with its own types (lists, null)."""
    config = {key: value for key, value in plain(cfg).items() if key not in ("hydra", "paths")}
    flat = _flatten(config)
    scores = {f"hparams/{key.replace('/', '_')}": value for key, value in summary.test.items()}
    if summary.kept.score is not None:
        scores["hparams/best_" + summary.monitor.replace("/", "_")] = summary.kept.score
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(flat, scores)
        else:
            logger.log_hyperparams(config if isinstance(logger, WandbLogger) else flat)
            logger.log_metrics(scores)
        logger.finalize("success")
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()  # Lightning leaves it open: the next job of a sweep would log into this run


def finish_failed_wandb_run() -> None:
    """After a failed run: its wandb run, if one started, finished with exit code 1 (marked failed). Lightning
    leaves it open, and the next job of a sweep in this process would log into it."""
    wandb = sys.modules.get("wandb")  # never imported for that: no wandb logger, no run
    if wandb is not None and wandb.run is not None:
        wandb.run.finish(exit_code=1)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    value = node if isinstance(node, (int, float, str, bool)) or node is None else str(node)
    return {prefix[:-1]: "null" if value is None else value}

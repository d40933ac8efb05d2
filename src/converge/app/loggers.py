"""The experiment loggers of a run (the `logger` group), and what they are told when it ends."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig

from converge.app.build import instantiate_config, plain
from converge.summary import RunSummary


def build_loggers(logger: DictConfig | None) -> list[Any]:
    return [instantiate_config(node, f"logger '{name}'") for name, node in (logger or {}).items()
            if node is not None]


def log_hparams(trainer: pl.Trainer, cfg: DictConfig, summary: RunSummary) -> None:
    """The flat composed config with the final scores, so runs of a sweep compare in TensorBoard's HPARAMS tab."""
    flat = {key: value for key, value in _flatten(plain(cfg)).items() if not key.startswith(("hydra", "paths"))}
    metrics = {f"hparams/{key.replace('/', '_')}": value for key, value in summary.test.items()}
    if summary.kept.score is not None:
        metrics["hparams/best_" + summary.monitor.replace("/", "_")] = summary.kept.score
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(flat, metrics)
        else:
            logger.log_hyperparams(flat)
        logger.finalize("success")


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    value = node if isinstance(node, (int, float, str, bool)) or node is None else str(node)
    return {prefix[:-1]: "null" if value is None else value}

"""`converge eval`: test a checkpoint on the test (or validation) split of its data set, or of another."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

from converge.app.build import build_datamodule, build_trainer, load_task
from converge.app.loggers import build_loggers, finish_failed_wandb_run
from converge.app.logs import configure_console
from converge.app.run_dir import discard_if_untrained
from converge.errors import ConfigError
from converge.layout import METRICS_FILE, write_json
from converge.training.checkpoint_io import resolve_checkpoint

log = logging.getLogger("converge")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    run_dir = Path(cfg.paths.output_dir)
    try:
        return _evaluate(cfg, run_dir)
    except BaseException:
        finish_failed_wandb_run()
        if pl.utilities.rank_zero_only.rank == 0:
            discard_if_untrained(run_dir)
        raise


def _evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    if cfg.split not in ("test", "val"):
        raise ConfigError(f"split must be test or val, got '{cfg.split}'")
    configure_console()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    path = resolve_checkpoint(cfg.ckpt_path, cfg.paths.output_root, cfg.task_name)
    task, checkpoint = load_task(path)
    data = cfg.data if cfg.get("data") else OmegaConf.create(checkpoint["hyper_parameters"]["data"])
    datamodule = build_datamodule(data, cfg.seed)
    if cfg.get("data"):
        check_same_kind(datamodule.spec(), checkpoint["hyper_parameters"]["spec"], type(task).__name__)
    trainer = build_trainer(cfg, callbacks=[], loggers=build_loggers(cfg.get("logger")))
    run = trainer.test if cfg.split == "test" else trainer.validate
    results = run(task, datamodule=datamodule)
    metrics = {key: float(value) for key, value in (results[0] if results else {}).items()}
    if trainer.is_global_zero:
        write_json(run_dir / METRICS_FILE, {"checkpoint": str(path), "epoch": checkpoint.get("epoch"),
                                              "split": cfg.split, "metrics": metrics})
        log.info("%s metrics of %s written to %s", cfg.split, path, run_dir / METRICS_FILE)
    return metrics


def check_same_kind(spec: Mapping[str, Any], trained: Mapping[str, Any], task: str) -> None:
    """Refuse `data=...` of another kind than the task was trained on, told by the layout of the two data specs
    (their keys, nested ones too): another plugin's data, or another layout of the same plugin's (a fastText
    checkpoint on MiniLM word pieces scored 0.49, chance, without a word). The values (classes, sizes) are the
    task's and the data's business.

    Raises:
        ConfigError: the specs' layouts differ.
    """
    differing = _key_paths(spec) ^ _key_paths(trained)
    # named where they part (tokenizer.definition, not each of the thousands of keys under it)
    parted = sorted(".".join(path) for path in differing
                    if not any(path[:depth] in differing for depth in range(1, len(path))))
    if parted:
        raise ConfigError(f"data: not the kind of data the checkpoint's {task} was trained on (the two data specs "
                          f"differ in {', '.join(parted)}): evaluate it on data like its own, or leave data unset "
                          "for its own")


def _key_paths(node: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """The path of every key of a nested mapping."""
    if not isinstance(node, Mapping):
        return set()
    return {path for key, value in node.items() for path in ((*prefix, key), *_key_paths(value, (*prefix, key)))}

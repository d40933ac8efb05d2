"""`converge train`: compose, fit, test the best checkpoint, write metrics.json."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict

from converge.app.build import (
    build_callbacks,
    build_datamodule,
    build_task,
    build_trainer,
    instantiate_config,
)
from converge.app.loggers import build_loggers, log_hparams
from converge.app.logs import configure_console
from converge.app.run_dir import discard_if_untrained
from converge.app.sweeps import resume_sweep_job
from converge.diagnostics.convergence import fit_outcome
from converge.diagnostics.report import write_report
from converge.errors import TrainingDiverged
from converge.layout import METRICS_FILE, write_json
from converge.training.checkpoint_io import read_checkpoint, resolve_checkpoint
from converge.training.checkpoints import LastCheckpoint
from converge.training.distributed import DDPStrategy, end_world
from converge.training.seeding import EpochSeed

log = logging.getLogger("converge")


def train(cfg: DictConfig) -> float | None:
    """Run one training job; return the best monitored score (what a sweeper optimises)."""
    run_dir = Path(cfg.paths.output_dir)
    try:
        return _train(cfg, run_dir)
    except BaseException:
        if pl.utilities.rank_zero_only.rank == 0 and discard_if_untrained(run_dir):
            log.info("removed %s: the run failed before writing any checkpoint", run_dir)
        raise


def _train(cfg: DictConfig, run_dir: Path) -> float | None:
    started = time.perf_counter()
    configure_console()
    finished = resume_sweep_job(cfg, run_dir)  # a rerun sweep: skip finished jobs, resume interrupted ones
    if finished is not None:
        return finished["best"]["score"]
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.ckpt_path:  # resolve `last` once, here, so every rank resumes the same file
        path = resolve_checkpoint(cfg.ckpt_path, cfg.paths.output_root, cfg.task_name)
        read_checkpoint(path)  # refuse a corrupt or unsafe file before anything starts
        cfg.ckpt_path = str(path)

    datamodule = build_datamodule(cfg.data)
    task = build_task(cfg, datamodule.spec())
    with open_dict(cfg):
        cfg.monitor.metric = cfg.monitor.metric or task.monitor
        cfg.monitor.mode = cfg.monitor.mode or task.mode
    loggers = build_loggers(cfg.get("logger"))
    callbacks = [*build_callbacks(cfg.get("callbacks"), bool(loggers)), EpochSeed(cfg.seed)]  # always: exact resumes
    trainer = build_trainer(cfg, callbacks, loggers)
    if isinstance(trainer.strategy, DDPStrategy):
        trainer.strategy.run_config = OmegaConf.to_container(cfg, resolve=True)

    if cfg.ckpt_path:
        log.info("resuming from %s", cfg.ckpt_path)
    diverged = False
    try:
        try:
            trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
        except TrainingDiverged as error:  # stopped at once: the checkpoints hold the last finite weights
            log.error("%s", error)
            diverged = True
        summary = _fit_summary(cfg, trainer)  # before test: testing a checkpoint restores callback states
        summary["convergence"] = fit_outcome(trainer)
    finally:
        end_world(trainer.strategy)
    if (trainer.interrupted and not diverged) or not trainer.is_global_zero:
        return summary["best"]["score"]  # other ranks are done: rank 0 tests alone
    if cfg.test_after_fit and (summary["best"]["checkpoint"] or not diverged):  # never test non-finite weights
        tester = trainer if trainer.world_size == 1 else _single_device_trainer(cfg, trainer)
        results = tester.test(task, datamodule=datamodule, ckpt_path=summary["best"]["checkpoint"],
                              weights_only=True)
        summary["test"] = {key: float(value) for key, value in (results[0] if results else {}).items()}
    summary["seconds"] = round(time.perf_counter() - started, 2)
    write_json(run_dir / METRICS_FILE, summary)
    log_hparams(trainer, cfg, summary)
    log.info("%s %s = %s at epoch %s; metrics in %s", summary["keep"], cfg.monitor.metric, summary["best"]["score"],
             summary["best"]["epoch"], run_dir / METRICS_FILE)
    log.info("%s", write_report(run_dir))
    return summary["best"]["score"]


def _single_device_trainer(cfg: DictConfig, trainer: pl.Trainer) -> pl.Trainer:
    """A one-device Trainer for the test split: under DDP, a DistributedSampler would pad the test set
    with repeated samples, and each sample must count exactly once."""
    return instantiate_config(cfg.trainer, "trainer", devices=1, num_nodes=1, strategy="auto", callbacks=[],
                              logger=trainer.loggers or False)


def _fit_summary(cfg: DictConfig, trainer: pl.Trainer) -> dict[str, Any]:
    """What fit left: the kept checkpoint ("best") with its epoch and monitored score, last.ckpt, how it ended."""
    savers = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
    kept = next((c for c in savers if not isinstance(c, LastCheckpoint)), None)
    latest = next((c for c in savers if isinstance(c, LastCheckpoint)), None)
    best_path = kept.best_model_path if kept else ""
    keep = "best" if kept is not None and kept.monitor else "last"  # a checkpoint monitoring nothing keeps the last
    if keep == "best":
        score = kept.best_model_score
    else:  # its score is the last validation's
        score = trainer.callback_metrics.get(cfg.monitor.metric) if best_path else None
    stopper = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)
    return {
        "task_name": cfg.task_name,
        "monitor": cfg.monitor.metric,
        "mode": cfg.monitor.mode,
        "keep": keep,
        "best": {
            "score": float(score) if score is not None else None,
            "epoch": read_checkpoint(Path(best_path))["epoch"] if best_path else None,
            "checkpoint": best_path or None,
        },
        "last_checkpoint": (latest.best_model_path if latest else "") or None,
        "epochs_trained": trainer.current_epoch,
        "stopped_early": bool(stopper and stopper.stopped_epoch > 0),
        "world_size": trainer.world_size,
        "test": {},
    }

"""`converge train`, a recipe that reads top to bottom:

    config   every value resolved once (ckpt_path to a file, the task's own monitor), then read-only
    build    the data module, the task, callbacks, loggers and the Trainer
    fit      until the run converges, stops early, diverges or is interrupted
    summary  what fitting kept (RunSummary: the kept checkpoint, last.ckpt, why it stopped)
    test     the kept checkpoint on the test split (rank 0, on one device)
    write    metrics.json (last, atomically), the loggers' hparams, report.md
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from converge.app.build import (
    build_callbacks,
    build_datamodule,
    build_task,
    build_trainer,
    check_fits,
    instantiate_config,
    plain,
)
from converge.app.loggers import build_loggers, finish_failed_wandb_run, log_hparams
from converge.app.logs import configure_console
from converge.app.run_dir import discard_if_untrained
from converge.app.sweeps import finished_sweep_job, interrupted_sweep_job
from converge.app.transfer import prepare_transfer
from converge.data.module import DataModule
from converge.diagnostics.convergence import fit_outcome
from converge.diagnostics.report import write_report
from converge.errors import ConfigError, TrainingDiverged
from converge.layout import HYDRA_DIR, write_text
from converge.summary import KeptCheckpoint, RunSummary
from converge.task import TaskModule
from converge.training.checkpoint_io import read_checkpoint, resolve_checkpoint
from converge.training.checkpoints import LastCheckpoint, MonitorLogged
from converge.training.distributed import end_world, start_ranks_from_config
from converge.training.seeding import EpochSeed

log = logging.getLogger("converge")


def train(cfg: DictConfig) -> float | None:
    """Run one training job; return the kept checkpoint's monitored score (what a sweeper optimises)."""
    run_dir = Path(cfg.paths.output_dir)
    try:
        return _train(cfg, run_dir)
    except BaseException:
        finish_failed_wandb_run()
        if rank_zero_only.rank == 0 and discard_if_untrained(run_dir):
            log.info("removed %s: the run failed before writing any checkpoint", run_dir)
        raise


def _train(cfg: DictConfig, run_dir: Path) -> float | None:
    started = time.perf_counter()
    configure_console()
    finished = finished_sweep_job(run_dir)  # a rerun sweep: a job that finished is not run again
    if finished is not None:
        return finished.kept.score
    cfg = run_config(cfg, run_dir)

    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # initial weights; data order: from (seed, epoch)
    datamodule = build_datamodule(cfg.data, cfg.seed)
    task = build_task(cfg, datamodule.spec())
    check_monitor(task, cfg.monitor.metric, cfg.monitor.mode)
    finetuning = prepare_transfer(cfg, task)  # pretrained weights (unless resuming), the finetune strategy
    if cfg.ckpt_path:  # resuming: refused before anything starts if its weights do not fit the task
        check_fits(task, read_checkpoint(Path(cfg.ckpt_path)), cfg.ckpt_path)
    loggers = build_loggers(cfg.get("logger"))
    callbacks = [MonitorLogged(cfg.monitor.metric), *build_callbacks(cfg.get("callbacks"), with_loggers=bool(loggers)),
                 EpochSeed(cfg.seed), *finetuning]  # MonitorLogged first: it speaks before what reads the monitor
    trainer = build_trainer(cfg, callbacks, loggers)

    _fit(cfg, trainer, task, datamodule)
    summary = _summary(cfg, trainer)  # before testing, which restores the kept checkpoint's callback states
    if not trainer.is_global_zero or (trainer.interrupted and summary.stop_reason != "diverged"):
        return summary.kept.score  # the other ranks are done (rank 0 tests alone); a user's Ctrl-C tests nothing
    if cfg.test_after_fit and (summary.kept.checkpoint or summary.stop_reason != "diverged"):
        summary.test = _test(cfg, trainer, task, datamodule, summary.kept.checkpoint)  # never non-finite weights
    summary.seconds = round(time.perf_counter() - started, 2)

    path = summary.write(run_dir)
    log_hparams(trainer, cfg, summary)
    log.info("%s %s = %s at epoch %s; metrics in %s", summary.keep, summary.monitor, summary.kept.score,
             summary.kept.epoch, path)
    log.info("%s", write_report(run_dir))
    return summary.kept.score


def run_config(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """The run's config with every value final, read-only from here on; rank 0 records it in `.hydra/config.yaml`.

    `monitor.*` is the task's own unless set (conf/train.yaml), and `ckpt_path` a checked file: `last` or `best`
    resolved once, so every rank resumes the same one, or this sweep job's own last.ckpt after an interruption.
    """
    config = OmegaConf.create(plain(cfg))
    if config.ckpt_path:
        config.ckpt_path = str(resolve_checkpoint(config.ckpt_path, config.paths.output_root, config.task_name))
    else:
        config.ckpt_path = interrupted_sweep_job(run_dir)
    if config.ckpt_path:
        read_checkpoint(Path(config.ckpt_path))  # refuse a corrupt or unsafe file before anything starts
    OmegaConf.set_readonly(config, True)
    recorded = run_dir / HYDRA_DIR / "config.yaml"
    if rank_zero_only.rank == 0 and recorded.is_file():
        write_text(recorded, OmegaConf.to_yaml(config))
    return config


def check_monitor(task: TaskModule, metric: str, mode: str) -> None:
    """Refuse a `monitor.mode` against the direction of the task's own metric (torchmetrics' `higher_is_better`;
    a loss is lower-better): early stopping would stop at the best epoch and checkpoints keep the worst.

    Raises:
        ConfigError: the metric is the task's and `mode` points the other way.
    """
    directions = {f"{stage}/loss": False for stage in ("train", "val", "test")}
    directions |= {name: found.higher_is_better for metrics in (task.val_metrics, task.test_metrics)
                   for name, found in metrics.items()}
    higher = directions.get(metric)
    expected = {True: "max", False: "min", None: mode}[higher]
    if mode != expected:
        raise ConfigError(f"monitor.metric={metric} is better {'higher' if higher else 'lower'}, but "
                          f"monitor.mode={mode} would keep its worst epoch: set monitor.mode={expected}")


def _fit(cfg: DictConfig, trainer: pl.Trainer, task: TaskModule, datamodule: DataModule) -> None:
    """Fit; a divergence stops it at once (the checkpoints hold the last finite weights; the summary says so)."""
    start_ranks_from_config(trainer.strategy, plain(cfg))
    if cfg.ckpt_path:
        log.info("resuming from %s", cfg.ckpt_path)
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    except TrainingDiverged as error:
        log.error("%s", error)
    finally:
        end_world(trainer.strategy)


def _summary(cfg: DictConfig, trainer: pl.Trainer) -> RunSummary:
    """What fitting left: the kept checkpoint with its epoch and monitored score, last.ckpt, how it ended."""
    savers = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
    kept = next((c for c in savers if not isinstance(c, LastCheckpoint)), None)
    latest = next((c for c in savers if isinstance(c, LastCheckpoint)), None)
    path = kept.best_model_path if kept else ""
    keep = "best" if kept is not None and kept.monitor else "last"  # a checkpoint monitoring nothing keeps the last
    score = kept.best_model_score if keep == "best" else trainer.callback_metrics.get(cfg.monitor.metric)
    return RunSummary(
        task_name=cfg.task_name, monitor=cfg.monitor.metric, mode=cfg.monitor.mode, keep=keep,
        kept=KeptCheckpoint(checkpoint=path or None, epoch=read_checkpoint(Path(path))["epoch"] if path else None,
                            score=float(score) if path and score is not None else None),
        last_checkpoint=(latest.best_model_path if latest else "") or None,
        epochs_trained=trainer.current_epoch, world_size=trainer.world_size, convergence=fit_outcome(trainer),
    )


def _test(cfg: DictConfig, trainer: pl.Trainer, task: TaskModule, datamodule: DataModule,
          checkpoint: str | None) -> dict[str, float]:
    """The test metrics of `checkpoint`, on one device: under DDP each test sample must count exactly once."""
    if trainer.world_size > 1:
        trainer = instantiate_config(cfg.trainer, "trainer", devices=1, num_nodes=1, strategy="auto", callbacks=[],
                                     logger=trainer.loggers or False)
    results = trainer.test(task, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
    return {key: float(value) for key, value in (results[0] if results else {}).items()}

"""The files converge writes, named once, and how they are written (atomically).

Every module that writes or reads a run directory, a sweep folder or a bundle takes
its file names from here. A run directory:

    outputs/<task_name>/runs/<date>/          (a sweep job: outputs/<task_name>/multiruns/<date>/<job>/)
        .hydra/                               the composed config
        checkpoints/best-epochNNN.ckpt        the kept checkpoint
        checkpoints/last.ckpt                 the latest epoch: what `ckpt_path=last` resumes
        tensorboard/  csv/  mlflow/  wandb/   the loggers'
        metrics.json                          the run summary, written last: a failed run has none
        convergence.json  report.md  loss.png the convergence history and the end-of-run report
        train.log  sweep_job.json             the log; a sweep job's overrides
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from converge.errors import ConfigError

HYDRA_DIR = ".hydra"  # the config Hydra composed (config.yaml: resolved by converge train), the overrides
CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
LAST_CHECKPOINT = "last.ckpt"
METRICS_FILE = "metrics.json"  # a finished run's summary (converge.app.train writes it last)
HISTORY_FILE = "convergence.json"  # the convergence callback's per-epoch history
REPORT_FILE = "report.md"
PLOT_FILE = "loss.png"
LOG_FILE = "train.log"
SWEEP_RECORD = "sweep.json"  # a sweep folder's overrides
JOB_RECORD = "sweep_job.json"  # a sweep job's overrides
CV_SUMMARY, CV_TABLE = "cv.json", "cv.md"
TRIAL_RECORD, SEARCH_SUMMARY = "trial.json", "best.yaml"

# What a run creates (loggers' folders included); on a failure before any checkpoint exists these go again.
RUN_ENTRIES = (HYDRA_DIR, LOG_FILE, TENSORBOARD_DIR, "csv", "mlflow", "wandb", CHECKPOINTS_DIR, JOB_RECORD,
               HISTORY_FILE)


def last_checkpoint(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR / LAST_CHECKPOINT


def write_text(path: Path, text: str) -> None:
    """Write atomically: a temporary file in the same folder, renamed over `path`; a reader never sees half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(text)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_json(path: Path, content: Any) -> None:
    """Write JSON atomically (see `write_text`)."""
    write_text(path, json.dumps(content, indent=2, sort_keys=False) + "\n")


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Fill a folder that appears at `path` whole or not at all: the body writes into a hidden staging folder
    next to it, renamed to `path` when the body succeeds and removed when it fails. `path` may exist if empty."""
    staging = path.with_name(f".{path.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
    except OSError as error:  # a folder that cannot be made there: the user's path, one clear error
        raise ConfigError(f"{path}: cannot create it ({error.strerror}): choose another folder") from None
    try:
        yield staging
        if path.exists():
            path.rmdir()
        staging.rename(path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

"""A finished run's summary: metrics.json, written last by `converge train`, read by everything after it.

The report, cross-validation, sweeps (a finished job is skipped with its stored score),
`ckpt_path=best` and the loggers all read a run through `RunSummary`, so its fields
are defined once. Plain data and the standard library only: `converge report` reads
it without importing torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from converge.errors import ReportError
from converge.layout import METRICS_FILE, write_json


@dataclass(frozen=True)
class KeptCheckpoint:
    """The checkpoint a run keeps: tested when fitting ends, exported and evaluated with `ckpt_path=best`.

    With `monitor.keep=best` it is the epoch with the best monitored score; with `monitor.keep=last`, the last
    epoch (the end of a fixed schedule), and `score` is that epoch's own monitored value.
    """

    checkpoint: str | None = None
    epoch: int | None = None
    score: float | None = None


@dataclass
class RunSummary:
    """What a run did, as metrics.json holds it.

    Example::

        summary = RunSummary.read("outputs/vision-digits/runs/2026-12-04_10-00-00")
        print(summary.kept.score, summary.kept.checkpoint, summary.test["test/acc"])
    """

    task_name: str
    monitor: str  # the validation metric the run followed (early stopping, the kept checkpoint)
    mode: str  # min | max
    keep: str  # best | last: which epoch `kept` is
    kept: KeptCheckpoint
    last_checkpoint: str | None  # where the run stopped: what `ckpt_path=last` resumes
    epochs_trained: int
    world_size: int
    convergence: dict[str, Any] = field(default_factory=dict)  # state, stop_reason, ... (diagnostics.convergence)
    test: dict[str, float] = field(default_factory=dict)  # the kept checkpoint's test metrics
    seconds: float | None = None

    @property
    def stop_reason(self) -> str | None:
        return self.convergence.get("stop_reason")

    def write(self, run_dir: str | Path) -> Path:
        """Write `run_dir`/metrics.json atomically; return its path."""
        path = Path(run_dir) / METRICS_FILE
        write_json(path, asdict(self))
        return path

    @classmethod
    def read(cls, run_dir: str | Path) -> RunSummary:
        """The summary of a finished run.

        Raises:
            ReportError: `run_dir` holds no metrics.json (the run did not finish) or an unreadable one.
        """
        path = Path(run_dir) / METRICS_FILE
        try:
            content = json.loads(path.read_text())
            return cls(**{**content, "kept": KeptCheckpoint(**content["kept"])})
        except FileNotFoundError:
            raise ReportError(f"{run_dir}: not a finished run (no {METRICS_FILE})") from None
        except (ValueError, KeyError, TypeError) as error:
            raise ReportError(f"{path}: not a converge run summary ({error})") from error

    @staticmethod
    def finished(run_dir: str | Path) -> bool:
        return (Path(run_dir) / METRICS_FILE).is_file()

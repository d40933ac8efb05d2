"""Cross-validation: `converge train cv.folds=K ...` trains folds 0..K-1 as one Hydra multirun, then summarises.

A data module supports folds by taking `num_folds` (null: no cross-validation) and
`fold` keys. `cv.folds=K` on the command line becomes the sweep
`data.num_folds=K data.fold=0..K-1` (so every job's saved config names its fold, and
the sweep resumes like any other); when it ends, the mean and standard deviation over
the folds of the best validation score and of each test metric go to `cv.json` and
`cv.md` in the sweep directory, and to the console.
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from converge.diagnostics.report import score_name
from converge.errors import ConfigError, run_reporting_errors
from converge.layout import CV_SUMMARY, CV_TABLE, METRICS_FILE, write_json, write_text
from converge.summary import RunSummary

log = logging.getLogger("converge")

_FOLD_KEYS = ("data.num_folds", "data.fold")


def fold_arguments(args: list[str]) -> list[str]:
    """The Hydra arguments of `converge train`: with `cv.folds=K`, a multirun over the K folds."""
    given = [arg.split("=", 1)[1] for arg in args if arg.startswith("cv.folds=")]
    if not given or given[-1] == "null":
        return args
    if "-m" in args or "--multirun" in args:
        raise ConfigError("cv.folds=K runs its own sweep, one job per fold: drop -m "
                          "(sweeping other keys under cross-validation is not supported).")
    if not given[-1].isdigit() or int(given[-1]) < 2:
        raise ConfigError(f"cv.folds must be a whole number of folds, at least 2; got {given[-1]!r}")
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for arg in args:
        if "=" not in arg or arg.startswith("-"):
            continue  # a flag, or a flag's value (--cfg job)
        try:
            override = parser.parse_overrides([arg])[0]
        except OverrideParseException:
            continue  # Hydra reports it, in its own words
        if override.key_or_group in _FOLD_KEYS:
            raise ConfigError(f"{arg}: cv.folds sets data.num_folds and data.fold itself; drop it.")
        if override.is_sweep_override():
            raise ConfigError(f"{arg}: cv.folds=K cannot be combined with a sweep over other keys.")
    folds = int(given[-1])
    return ["-m", *args, f"data.num_folds=choice({folds})", f"data.fold=range(0,{folds})"]


class CrossValidation(Callback):
    """Checks that the data supports folds before any job starts; summarises the folds when all have run."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_reporting_errors(lambda: _refuse_single_run(config))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_reporting_errors(lambda: _check_data_has_folds(config))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if _folds(config):
            print(summary_table(summarise(Path(config.hydra.sweep.dir), _folds(config))))


def _folds(config: DictConfig) -> int | None:
    return (config.get("cv") or {}).get("folds")


def _refuse_single_run(config: DictConfig) -> None:
    if _folds(config):
        raise ConfigError("cv.folds turns one run into K jobs, so it is a command-line key: "
                          "converge train cv.folds=K ... (not set in a config file).")


def _check_data_has_folds(config: DictConfig) -> None:
    data = config.get("data") or {}
    if _folds(config) and ("num_folds" not in data or "fold" not in data):
        raise ConfigError(f"cross-validation needs a data module that supports folds (data.num_folds and "
                          f"data.fold); the data config {data.get('_target_', '(none)')} has no such keys.")


def summarise(sweep_dir: Path, folds: int) -> dict[str, Any]:
    """Read every fold's metrics.json; write and return the mean and standard deviation (n - 1) of each score."""
    runs = {path.parent.name: RunSummary.read(path.parent) for path in sorted(sweep_dir.glob(f"*/{METRICS_FILE}"))}
    if len(runs) < folds:
        log.error("cross-validation: %d of %d folds finished in %s; the summary covers those only",
                  len(runs), folds, sweep_dir)
    first = next(iter(runs.values()), None)
    scores = {score_name(first): {job: run.kept.score for job, run in runs.items()}}
    for job, run in runs.items():
        for metric, value in run.test.items():
            scores.setdefault(metric, {})[job] = value
    summary = {
        "folds": folds, "completed": len(runs), "monitor": first and first.monitor, "mode": first and first.mode,
        "metrics": {name: _stats(values) for name, values in scores.items()},
        "runs": {job: str(sweep_dir / job) for job in runs},
    }
    write_json(sweep_dir / CV_SUMMARY, summary)
    write_text(sweep_dir / CV_TABLE, summary_table(summary) + "\n")
    return summary


def _stats(values: dict[str, float | None]) -> dict[str, Any]:
    known = [v for v in values.values() if v is not None]
    return {"mean": statistics.fmean(known) if known else None,
            "std": statistics.stdev(known) if len(known) > 1 else None, "values": values}


def summary_table(summary: dict[str, Any]) -> str:
    """A markdown table: one row per metric, its mean and standard deviation, then each fold's value."""
    jobs = list(summary["runs"])
    lines = [f"Cross-validation: {summary['completed']} of {summary['folds']} folds "
             f"(std: sample standard deviation over folds)", "",
             "| metric | mean | std | " + " | ".join(f"fold {job}" for job in jobs) + " |",
             "|---|---|---|" + "---|" * len(jobs)]
    for name, stats in summary["metrics"].items():
        cells = [_number(stats["mean"]), _number(stats["std"]), *(_number(stats["values"].get(j)) for j in jobs)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"

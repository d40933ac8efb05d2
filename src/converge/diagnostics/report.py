"""The end-of-run report, rebuilt from what a run wrote (metrics.json, convergence.json, .hydra/).

`converge train` writes report.md and loss.png at the end of a run and prints the summary; `converge
report RUN_DIR` does the same again for any finished run, and `converge report SWEEP_DIR` compares
the jobs of a sweep in one table. No torch import here: the report reads files only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from converge.errors import ReportError
from converge.layout import HISTORY_FILE, HYDRA_DIR, METRICS_FILE, PLOT_FILE, REPORT_FILE, write_text
from converge.summary import RunSummary

_STOP_REASONS = {
    "early_stopping": "early stopping",
    "max_epochs": "max epochs reached",
    "max_steps": "max steps reached",
    "stopped": "stopped by a callback",
}


def report(path: Path) -> str:
    """The report of a run directory (rewriting its report.md and loss.png), or the comparison table of a
    sweep directory (the folder of its numbered jobs)."""
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path}: no such directory. Pass a run directory (outputs/<task>/runs/<date>) or a "
                          f"sweep directory (outputs/<task>/multiruns/<date>).")
    if (path / METRICS_FILE).is_file():
        return write_report(path)
    jobs = sorted((p for p in path.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not any((job / METRICS_FILE).is_file() for job in jobs):
        raise ReportError(f"{path}: neither a finished run (no {METRICS_FILE}) nor a sweep (no numbered job "
                          f"folders with a {METRICS_FILE}). A run that failed before it finished has no report.")
    return compare_jobs(jobs)


def write_report(run_dir: Path) -> str:
    """Write report.md (with loss.png) in `run_dir`; return the short summary for the console."""
    metrics = RunSummary.read(run_dir)
    history = _read_json(run_dir / HISTORY_FILE) if (run_dir / HISTORY_FILE).is_file() else {}
    epochs = history.get("epochs", [])
    facts = _facts(metrics, epochs)
    lines = [f"# Run report: {metrics.task_name}", "", f"Run directory: `{run_dir}`", "",
             "| | |", "|---|---|", *(f"| {label} | {value} |" for label, value in facts), ""]
    if _plot(epochs, metrics, run_dir / PLOT_FILE):
        lines += [f"![train and validation loss per epoch]({PLOT_FILE})", ""]
    if epochs:
        lines += ["## Per epoch", "", *_epoch_table(epochs, metrics.monitor), ""]
    else:
        lines += ["No per-epoch history: the run had no convergence callback (~callbacks.convergence).", ""]
    write_text(run_dir / REPORT_FILE, "\n".join(lines))
    width = max(len(label) for label, _ in facts)
    return "\n".join([f"run report: {run_dir / REPORT_FILE}", *(f"  {label:<{width}}  {value}" for label, value
                                                                  in facts)])


def compare_jobs(jobs: list[Path]) -> str:
    """One markdown table for the jobs of a sweep: the overrides that differ, scores, state, epochs, time."""
    overrides = {job: _overrides(job) for job in jobs}
    shared = set.intersection(*(set(o) for o in overrides.values())) if overrides else set()
    rows = [(job, RunSummary.read(job) if RunSummary.finished(job) else None) for job in jobs]
    test_keys = list(dict.fromkeys(key for _, metrics in rows if metrics for key in metrics.test))
    first = next((metrics for _, metrics in rows if metrics), None)
    header = ["job", "overrides", score_name(first), "checkpoint epoch", *test_keys, "state", "epochs", "seconds"]
    lines = [f"sweep: {jobs[0].parent}", f"shared overrides: {' '.join(sorted(shared)) or '(none)'}", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for job, metrics in rows:
        varying = " ".join(o for o in overrides[job] if o not in shared) or "(none)"
        if metrics is None:
            cells = [job.name, varying, "-", "-", *("-" for _ in test_keys), f"no {METRICS_FILE} (failed?)", "-", "-"]
        else:
            cells = [job.name, varying, _number(metrics.kept.score), _text(metrics.kept.epoch),
                     *(_number(metrics.test.get(key)) for key in test_keys), _text(metrics.convergence.get("state")),
                     _text(metrics.epochs_trained), _text(metrics.seconds)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def score_name(metrics: RunSummary | None) -> str:
    """What a run's kept score (metrics.json `kept.score`) is: the best of the run, or its last epoch's
    (monitor.keep=last)."""
    if metrics is None:
        return "score"
    return f"{'last-epoch' if metrics.keep == 'last' else 'best'} {metrics.monitor}"


# -- the facts of one run ------------------------------------------------------------------------
def _facts(metrics: RunSummary, epochs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    kept, outcome = metrics.kept, metrics.convergence
    facts = [("state", _state(outcome.get("state"), epochs)),
             (score_name(metrics), f"{_number(kept.score)} at epoch {_text(kept.epoch)} (checkpoint)")]
    if outcome.get("best_epoch") is not None and outcome.get("best_epoch") != kept.epoch:
        facts.append((f"best {metrics.monitor} seen", f"{_number(outcome.get('best_score'))} at epoch "
                                              f"{outcome['best_epoch']} (not checkpointed)"))
    facts.append(("stopped", _stopped(metrics)))
    by_epoch = {record["epoch"]: record for record in epochs}
    gap = by_epoch.get(kept.epoch, {}).get("gap", outcome.get("gap_at_best"))
    facts.append(("gap at checkpoint epoch", f"{_number(gap)} (val loss - train loss)"))
    seconds = [r["seconds"] for r in epochs if r.get("seconds") is not None and r.get("state") != "diverging"]
    if seconds:
        epochs_timed = f"{len(seconds)} epoch{'s' * (len(seconds) > 1)}"
        facts.append(("time per epoch", f"{sum(seconds) / len(seconds):.2f} s over {epochs_timed} "
                                        f"({_text(metrics.seconds)} s in all, with testing)"))
    if outcome.get("baseline"):
        facts.append(("baseline (trivial predictor)", _pairs(outcome["baseline"])))
    if metrics.test:
        facts.append(("test", _pairs(metrics.test)))
    return facts


def _state(state: str | None, epochs: list[dict[str, Any]]) -> str:
    """The final state, and the epoch since which the run has been in it (where it converged, say)."""
    since = None
    for record in reversed(epochs):
        if record.get("state") != state:
            break
        since = record["epoch"]
    return f"{state} (since epoch {since})" if state and since is not None else _text(state)


def _stopped(metrics: RunSummary) -> str:
    reason, outcome = metrics.stop_reason, metrics.convergence
    if reason == "diverged" and outcome.get("diverged"):
        return f"epoch {outcome['diverged']['epoch']}: diverged ({outcome['diverged']['reason']})"
    last = metrics.epochs_trained - 1
    detail = f" (patience {outcome['patience']})" if reason == "early_stopping" and outcome.get("patience") else ""
    return f"epoch {last}: {_STOP_REASONS.get(reason, reason or 'unknown')}{detail}"


def _epoch_table(epochs: list[dict[str, Any]], monitor: str) -> list[str]:
    judged = [] if monitor == "val/loss" else [(monitor, "monitor")]  # the monitored metric, unless a loss column
    columns = [("epoch", "epoch"), ("train loss", "train_loss"), ("val loss", "val_loss"), *judged,
               ("rel. improvement", "rel_improvement"), ("gap", "gap"), ("gap trend", "gap_trend"),
               ("grad norm", "grad_norm"), ("update ratio", "update_ratio"), ("state", "state"),
               ("seconds", "seconds")]
    lines = ["| " + " | ".join(label for label, _ in columns) + " |", "|" + "---|" * len(columns)]
    for record in epochs:
        lines.append("| " + " | ".join(_number(record.get(key)) if key not in ("epoch", "state")
                                       else _text(record.get(key)) for _, key in columns) + " |")
    return lines


def _plot(epochs: list[dict[str, Any]], metrics: RunSummary, path: Path) -> bool:
    """Train and validation loss per epoch, the checkpoint's epoch marked (matplotlib's Agg canvas, no display)."""
    points = [(r["epoch"], r.get("train_loss"), r.get("val_loss")) for r in epochs if r.get("state") != "diverging"]
    if not points:
        return False
    from matplotlib.figure import Figure  # only the report draws: keep it off the import path of the CLI
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    axes = figure.subplots()
    for index, label in ((1, "train loss"), (2, "val loss")):
        series = [(p[0], p[index]) for p in points if p[index] is not None]
        if series:
            axes.plot(*zip(*series, strict=True), marker=".", label=label)
    kept = metrics.kept.epoch
    if kept is not None:
        axes.axvline(kept, color="grey", linestyle="--", label=f"checkpoint epoch ({kept})")
    diverged = metrics.convergence.get("diverged")
    if diverged:
        axes.axvline(diverged["epoch"], color="red", linestyle=":", label=f"diverged (epoch {diverged['epoch']})")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss")
    axes.set_title(f"{metrics.task_name}: state {metrics.convergence.get('state')}")
    axes.legend()
    figure.savefig(path, dpi=100)
    return True


# -- reading and formatting ----------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ReportError(f"{path}: cannot read it ({error})") from error


def _overrides(job: Path) -> list[str]:
    path = job / HYDRA_DIR / "overrides.yaml"
    if not path.is_file():
        return []
    import yaml  # omegaconf's dependency; imported here so `converge --help` stays fast

    return [str(o) for o in yaml.safe_load(path.read_text()) or []]


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return _text(value)


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{key} {_number(value)}" for key, value in values.items())

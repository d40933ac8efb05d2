"""Where `converge train`'s time goes besides the training itself: the time of each default callback, each
logger and `LightningModule.log`, per epoch and as a share of the run.

`converge train` runs in this process for a fixed number of steps of `vision/digits` (the small workload,
where per-epoch costs weigh most) with its default callbacks and loggers (early stopping off, so every
run trains all its steps). Every hook of every callback, every logger method and every
`LightningModule.log`/`log_dict` call (the task's metrics, and the scalars callbacks log through it) are
timed in wall time (hooks run one after another in the training process, so their share of fit's wall
time is what they add to it) and in process CPU time (which another job on the machine inflates far
less; the training itself runs on every core, the hooks mostly on one). Times are exclusive: a logger
call made from a callback's hook counts for the logger, not twice. Medians of `--repeats` runs, each a
fresh process.

    python bench/callback_costs.py                      # 1,000 steps of digits, 3 repeats
    python bench/callback_costs.py --steps 300 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

# A fixed amount of work: max_steps ends the run (max_epochs and early stopping never do), no test.
RUN = ["experiment=vision/digits", "trainer.max_epochs=100000", "test_after_fit=false"]
LOGGER_METHODS = ("log_metrics", "log_hyperparams", "save", "finalize", "after_save_checkpoint")
MODULE_LOGGING = "LightningModule.log / log_dict"


class Clock:
    """Exclusive wall and CPU seconds by component: time spent in a nested timed call is taken off its caller."""

    def __init__(self) -> None:
        self.spent: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])  # component -> [wall, cpu]
        self._stack: list[tuple[str, tuple[float, float], list[float]]] = []  # component, start, nested time

    def wrap(self, component: str, method):
        def timed(*args, **kwargs):
            self._stack.append((component, (time.perf_counter(), time.process_time()), [0.0, 0.0]))
            try:
                return method(*args, **kwargs)
            finally:
                name, started, nested = self._stack.pop()
                total = [time.perf_counter() - started[0], time.process_time() - started[1]]
                for clock in (0, 1):
                    self.spent[name][clock] += total[clock] - nested[clock]
                    if self._stack:
                        self._stack[-1][2][clock] += total[clock]
        return timed


def _hooks(callback) -> list[str]:
    """The hook methods this callback's class overrides (Lightning's base hooks do nothing)."""
    from lightning.pytorch.callbacks import Callback

    return [name for name in dir(Callback) if (name.startswith("on_") or name in ("setup", "teardown", "state_dict"))
            and getattr(type(callback), name) is not getattr(Callback, name)]


def timed_train(overrides: list[str], result: Path) -> None:
    """Run `converge train` in this process with every callback, logger and task logging call timed."""
    import lightning.pytorch as pl

    from converge.cli import main

    clock, counts = Clock(), {}
    build = pl.Trainer.__init__

    def instrumented(trainer, *args, **kwargs):
        build(trainer, *args, **kwargs)
        for callback in trainer.callbacks:
            for name in _hooks(callback):
                setattr(callback, name, clock.wrap(type(callback).__name__, getattr(callback, name)))
        for logger in trainer.loggers:
            for name in LOGGER_METHODS:
                setattr(logger, name, clock.wrap(type(logger).__name__, getattr(logger, name)))

    def counted_fit(trainer, *args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return fit(trainer, *args, **kwargs)
        finally:
            counts.update(fit=[time.perf_counter() - wall, time.process_time() - cpu], epochs=trainer.current_epoch)

    fit = pl.Trainer.fit
    pl.Trainer.__init__, pl.Trainer.fit = instrumented, counted_fit
    pl.LightningModule.log = clock.wrap(MODULE_LOGGING, pl.LightningModule.log)
    pl.LightningModule.log_dict = clock.wrap(MODULE_LOGGING, pl.LightningModule.log_dict)
    try:
        main(["train", *overrides])
    except SystemExit as done:
        if done.code:
            raise
    result.write_text(json.dumps({**counts, "spent": clock.spent}))


def one_run(steps: int, workdir: Path) -> dict:
    result = workdir / f"result-{time.monotonic_ns()}.json"
    overrides = [*RUN, f"+trainer.max_steps={steps}", f"hydra.run.dir={workdir / f'run-{time.monotonic_ns()}'}"]
    code = f"import callback_costs as b; from pathlib import Path; b.timed_train({overrides!r}, Path({str(result)!r}))"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                   cwd=Path(__file__).parent)
    return json.loads(result.read_text())


def table(steps: int = 1000, repeats: int = 3) -> str:
    """Markdown table: each component's milliseconds per epoch and share of fit's time (medians of the runs)."""
    with tempfile.TemporaryDirectory() as workdir:
        runs = [one_run(steps, Path(workdir)) for _ in range(repeats)]
    epochs = statistics.median(run["epochs"] for run in runs)

    def median(name: str) -> list[float]:
        return [statistics.median(run["spent"].get(name, [0.0, 0.0])[clock] for run in runs) for clock in (0, 1)]

    fit = [statistics.median(run["fit"][clock] for run in runs) for clock in (0, 1)]
    components = sorted({name for run in runs for name in run["spent"]}, key=lambda name: -median(name)[0])
    rows = [f"| `converge train experiment=vision/digits`, {steps} steps ({epochs:g} epochs), median of {repeats} "
            "| wall ms per epoch | share of fit's wall time | CPU ms per epoch |", "|---|---|---|---|"]

    def row(name: str, wall: float, cpu: float) -> str:
        return f"| {name} | {1000 * wall / epochs:.1f} | {100 * wall / fit[0]:.2f} % | {1000 * cpu / epochs:.1f} |"

    total = [0.0, 0.0]
    for name in components:
        wall, cpu = median(name)
        total = [total[0] + wall, total[1] + cpu]
        rows.append(row(name, wall, cpu))
    rows.append(row("**all of the above**", *total))
    rows.append(row("fit, in all", *fit))
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    print(table(options.steps, options.repeats))


if __name__ == "__main__":
    main()

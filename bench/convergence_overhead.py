"""Cost of the convergence callback: the same 1,000-step training with it (the default) and without it
(`~callbacks.convergence`).

Each run is a fresh process (`converge train`, so imports and caches are the same for both), the two
variants alternate, and the medians of `--repeats` runs are compared, in wall time and in the process's
CPU time (which a machine shared with other jobs inflates far less; run with OMP_NUM_THREADS=1 there).
Start-up and data loading are the same in both variants and cancel in the difference. The callback's
own CPU time is also measured directly in the "on" runs: every hook of the callback is timed and
summed, the figure to trust on a loaded machine, where differences of a few percent drown in noise.

    python bench/convergence_overhead.py                 # 1,000 steps of digits, 3 repeats
    python bench/convergence_overhead.py --steps 300 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# A fixed amount of work: max_steps ends the run (max_epochs and early stopping never do), no test.
RUN = ["experiment=vision/digits", "scheduler=none", "trainer.max_epochs=100000", "test_after_fit=false",
       "~callbacks.progress_bar", "~callbacks.model_summary", "~callbacks.early_stopping"]
HOOKS = ("on_train_epoch_start", "on_train_batch_start", "on_before_optimizer_step", "on_train_batch_end",
         "on_validation_batch_end", "on_validation_end", "on_train_epoch_end", "on_fit_end")


def timed_train(overrides: list[str], result: Path) -> None:
    """Run `converge train` in this process with every callback hook timed; write the timings to `result`."""
    from converge.cli import main
    from converge.diagnostics.convergence import ConvergenceCallback

    spent = [0.0]

    def timing(hook):
        def run(*args, **kwargs):
            started = time.process_time()
            try:
                return hook(*args, **kwargs)
            finally:
                spent[0] += time.process_time() - started
        return run

    for name in HOOKS:
        setattr(ConvergenceCallback, name, timing(getattr(ConvergenceCallback, name)))
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        main(["train", *overrides])
    except SystemExit as done:
        if done.code:
            raise
    result.write_text(json.dumps({"seconds": time.perf_counter() - started,
                                  "cpu_seconds": time.process_time() - cpu_started, "callback_cpu_seconds": spent[0]}))


def one_run(steps: int, with_callback: bool, workdir: Path) -> dict:
    result = workdir / f"result-{with_callback}-{time.monotonic_ns()}.json"
    run_dir = workdir / f"run-{time.monotonic_ns()}"
    overrides = [*RUN, f"+trainer.max_steps={steps}", f"hydra.run.dir={run_dir}"]
    if not with_callback:
        overrides.append("~callbacks.convergence")
    code = f"import sys; sys.argv=['converge']; from pathlib import Path; import convergence_overhead as b; " \
           f"b.timed_train({overrides!r}, Path({str(result)!r}))"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                   cwd=Path(__file__).parent)
    return json.loads(result.read_text())


def table(steps: int = 1000, repeats: int = 3) -> str:
    """Markdown table of the callback's cost: medians of `repeats` alternating runs of `steps` steps each."""
    runs: dict[bool, list[dict]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(repeats):
            for with_callback in (False, True):  # alternating, so drift in machine load hits both alike
                runs[with_callback].append(one_run(steps, with_callback, Path(workdir)))
    rows = [f"| {steps} steps of `vision/digits`, median of {repeats} | without | with | overhead |",
            "|---|---|---|---|"]
    for clock, label in (("seconds", "wall s"), ("cpu_seconds", "CPU s")):
        off = statistics.median(r[clock] for r in runs[False])
        on = statistics.median(r[clock] for r in runs[True])
        rows.append(f"| {label} | {off:.2f} | {on:.2f} | {100 * (on - off) / off:+.2f} % |")
    own = statistics.median(r["callback_cpu_seconds"] / r["cpu_seconds"] for r in runs[True])
    rows.append(f"| the callback's hooks, share of the run's CPU time | | | {100 * own:.3f} % |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    print(table(options.steps, options.repeats))


if __name__ == "__main__":
    main()

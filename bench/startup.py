"""Start-up costs: process start to the first training step, imports, and the fast commands.

    python bench/startup.py --repeats 5

Time to first step: the parent notes the wall clock, starts the process, and a
callback in the child writes the wall clock at its first `on_train_batch_start`.
Measured for `converge train experiment=vision/digits` (its default callbacks and
logging) and for a plain Lightning script training the same network on the same
digits (what a user would write without converge: sklearn's loader, a
TensorDataset, a minimal LightningModule, a Trainer with Lightning's defaults).
The difference is converge's own start-up: Hydra composition, the plugin registry,
config instantiation, the data module's splits and the run directory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl

BENCH = Path(__file__).resolve().parent


class FirstStepClock(pl.Callback):
    """Writes the wall-clock time of the first training step to `path` (then stays silent)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.written = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self.written:
            Path(self.path).write_text(repr(time.time()))
            self.written = True


def plain_lightning(stamp: str, run_dir: str) -> None:
    """The script a user writes without a framework, for the same network and data."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from torch.utils.data import DataLoader, TensorDataset

    from converge_vision.models import SmallCNN

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
    data = DataLoader(TensorDataset(images, torch.tensor(digits.target)), batch_size=64, shuffle=True)

    class Classifier(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = SmallCNN(1, 10, upsample=2)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("train/loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=3e-3)

    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, accelerator="cpu", default_root_dir=run_dir,
                         callbacks=[FirstStepClock(stamp)])
    trainer.fit(Classifier(), data)


def first_step_seconds(variant: str) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        stamp = f"{scratch}/first-step"
        if variant == "converge":
            command = [sys.executable, "-m", "converge.cli", "train", "experiment=vision/digits",
                       "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "test_after_fit=false",
                       f"+callbacks.first_step._target_={Path(__file__).stem}.FirstStepClock",
                       f"+callbacks.first_step.path={stamp}", f"hydra.run.dir={scratch}/run"]
        else:
            command = [sys.executable, __file__, "--worker", stamp, f"{scratch}/run"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH), os.environ.get("PYTHONPATH")]))}
        started = time.time()
        subprocess.run(command, check=True, capture_output=True, env=env)
        return float(Path(stamp).read_text()) - started


def command_seconds(*args: str, repeats: int) -> float:
    """Best of `repeats` fresh processes: the answer time a user sees on an idle machine."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "converge.cli", *args], check=True, capture_output=True)
        best = min(best, time.perf_counter() - started)
    return best


def import_seconds(module: str, repeats: int) -> float:
    """Median cumulative import time of `module` in a fresh interpreter (python -X importtime)."""
    times = []
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], check=True,
                              capture_output=True, text=True)
        line = next(line for line in reversed(done.stderr.splitlines()) if line.rstrip().endswith(f"| {module}"))
        times.append(int(line.split("|")[1]) / 1e6)
    return statistics.median(times)


def table(repeats: int = 5) -> str:
    first = {variant: [] for variant in ("plain Lightning", "converge")}
    for _ in range(repeats):  # interleaved, so drift in machine load hits both alike
        for variant in first:
            first[variant].append(first_step_seconds("converge" if variant == "converge" else "plain"))
    plain, ours = (statistics.median(first[v]) for v in first)
    rows = [
        "| what | seconds |",
        "|---|---|",
        f"| plain Lightning script: process start to first training step (median of {repeats}) | {plain:.2f} |",
        f"| `converge train experiment=vision/digits`: process start to first training step (median of {repeats}) "
        f"| {ours:.2f} (+{ours - plain:.2f}) |",
        f"| `import converge` (python -X importtime, median of {repeats}) | "
        f"{import_seconds('converge', repeats):.3f} |",
        f"| `import converge.app.train` (what `converge train` loads) | "
        f"{import_seconds('converge.app.train', repeats):.2f} |",
        f"| `import lightning.pytorch` | {import_seconds('lightning.pytorch', repeats):.2f} |",
        f"| `converge --help` (best of {repeats}) | {command_seconds('--help', repeats=repeats):.3f} |",
        f"| `converge plugins` (best of {repeats}) | {command_seconds('plugins', repeats=repeats):.3f} |",
    ]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker", nargs=2, metavar=("STAMP", "RUN_DIR"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        plain_lightning(*options.worker)
        return
    print(table(options.repeats))


if __name__ == "__main__":
    main()

"""Framework overhead: one training done by a hand-written loop, by plain Lightning and by `converge train`.

The method of Lightning's own parity benchmark (tests/parity_pytorch): the same
network, data, seed, optimiser and epochs, each variant in a fresh process, run
one after another and repeated; medians reported. The hand-written loop and the
minimal Lightning script must end on the same training loss (5 decimals), so the
comparison is of one computation. All three validate once per epoch.

Steady-state seconds per epoch: each process records when every epoch starts (and
when training ends); an epoch's time runs from its start to the next one's, so it
holds the training steps, the validation pass and whatever the variant does
between epochs (`converge train`: checkpoints, logging, its callbacks). The first
epoch (warm-up) and the last (it ends in fit's teardown) are left out; the median
of the others is the run's figure, which one slow epoch on a shared machine does
not move. `converge train` runs with its default callbacks and logging
(checkpoints, the LR monitor, TensorBoard, the rich progress bar, the convergence
and dashboards callbacks; early stopping off, so every run trains its epochs) plus
`EpochClock` below, given on the command line.

    python bench/parity.py                       # both workloads, 5 repeats
    python bench/parity.py --workloads digits --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

import lightning.pytorch as pl

WORKLOADS = {
    "digits": ["data=vision/digits", "model=vision/cnn"],
    "mnist5k-wide": ["data=vision/mnist5k", "model=vision/cnn", "model.net.widths=[64,128,256]"],
}
# Epochs of each run: the first and the last are not measured.
EPOCHS = {"digits": 12, "mnist5k-wide": 5}
SAME_RUN = ["optim=adamw", "optim.lr=0.001", "scheduler=none", "seed=42", "data.train_transforms=[]",
            "data.num_workers=0", "~callbacks.early_stopping"]


class EpochClock(pl.Callback):
    """Writes when each epoch started and when fitting ended, as a JSON list of perf_counter seconds."""

    def __init__(self, path: str) -> None:
        self.path, self.marks = Path(path), []

    def mark(self) -> None:
        self.marks.append(time.perf_counter())

    def write(self) -> None:
        self.mark()
        self.path.write_text(json.dumps(self.marks))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.mark()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.write()


def steady_epoch_seconds(marks: list[float]) -> float:
    """Median epoch time, without the first epoch and the last."""
    epochs = [end - start for start, end in pairwise(marks)]
    return statistics.median(epochs[1:-1])


def build(workload: str):
    """The converge data module and the network, exactly as `converge train` builds them (same seed, same order)."""
    from converge.app.build import build_datamodule, build_task
    from converge.testing import compose

    cfg = compose([*WORKLOADS[workload], *SAME_RUN], output_dir=tempfile.mkdtemp())
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg.data)
    task = build_task(cfg, datamodule.spec())
    datamodule.setup("fit")
    return task, datamodule, cfg.optim.lr


def plain_pytorch(workload: str, epochs: int, clock: EpochClock) -> float:
    import torch
    import torch.nn.functional as F

    task, datamodule, lr = build(workload)
    optimizer = torch.optim.AdamW(task.parameters(), lr=lr, weight_decay=0.01)
    train_loader = datamodule.train_dataloader()
    for epoch in range(epochs):
        clock.mark()
        task.train()
        train_loader.sampler.set_epoch(epoch)  # the data order of epoch N, as Lightning sets it
        for images, labels in train_loader:
            loss = F.cross_entropy(task(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        task.eval()
        with torch.no_grad():
            for images, labels in datamodule.val_dataloader():
                F.cross_entropy(task(images), labels)
    clock.write()
    return float(loss)


def plain_lightning(workload: str, epochs: int, clock: EpochClock) -> float:
    import torch
    import torch.nn.functional as F

    task, datamodule, lr = build(workload)

    class Minimal(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = task
            self.last_loss = 0.0

        def training_step(self, batch, batch_idx):
            images, labels = batch
            loss = F.cross_entropy(self.net(images), labels)
            self.last_loss = float(loss)
            return loss

        def validation_step(self, batch, batch_idx):
            images, labels = batch
            return F.cross_entropy(self.net(images), labels)

        def configure_optimizers(self):
            return torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=0.01)

    model = Minimal()
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[clock])
    trainer.fit(model, train_dataloaders=datamodule.train_dataloader(), val_dataloaders=datamodule.val_dataloader())
    return model.last_loss


def timed_worker(variant: str, workload: str, scratch: Path) -> dict:
    """Run one variant in a fresh interpreter: its steady-state seconds per epoch (and final loss, a and b)."""
    marks, epochs = scratch / f"{variant}-{time.monotonic_ns()}.json", EPOCHS[workload]
    here = Path(__file__).resolve().parent
    if variant == "converge":
        clock = ["+callbacks.epoch_clock._target_=parity.EpochClock", f"+callbacks.epoch_clock.path={marks}"]
        command = [sys.executable, "-m", "converge.cli", "train", *WORKLOADS[workload], *SAME_RUN, *clock,
                   f"trainer.max_epochs={epochs}", "test_after_fit=false", f"hydra.run.dir={scratch}/run-{marks.stem}"]
        subprocess.run(command, check=True, capture_output=True, cwd=here)  # `parity` importable from here
        loss = None
    else:
        done = subprocess.run([sys.executable, __file__, "--worker", variant, workload, str(marks)], check=True,
                              capture_output=True, text=True)
        loss = json.loads(done.stdout.splitlines()[-1])["loss"]
    return {"seconds": steady_epoch_seconds(json.loads(marks.read_text())), "loss": loss}


def table(workloads: list[str], repeats: int = 5) -> str:
    rows = ["| workload | epochs measured a run | hand-written s/epoch (a) | plain Lightning s/epoch (b) "
            "| converge s/epoch (c) | c/a | c/b | c - b, s/epoch | final loss a / b |", "|---" * 9 + "|"]
    for workload in workloads:
        per_epoch: dict[str, list[float]] = {"pytorch": [], "lightning": [], "converge": []}
        losses = {}
        with tempfile.TemporaryDirectory() as scratch:
            for _ in range(repeats):
                for variant in per_epoch:  # interleaved, so drift in machine load hits all three alike
                    run = timed_worker(variant, workload, Path(scratch))
                    per_epoch[variant].append(run["seconds"])
                    losses[variant] = run["loss"]
        a, b, c = (statistics.median(per_epoch[variant]) for variant in ("pytorch", "lightning", "converge"))
        same = f"{losses['pytorch']:.5f} / {losses['lightning']:.5f}"
        if round(losses["pytorch"], 5) != round(losses["lightning"], 5):
            same += " (DIFFER)"
        rows.append(f"| {workload} | {EPOCHS[workload] - 2} of {EPOCHS[workload]} | {a:.3f} | {b:.3f} | {c:.3f} "
                    f"| {c / a:.3f} | {c / b:.3f} | {c - b:+.3f} | {same} |")
        print(rows[-1], file=sys.stderr, flush=True)
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker", nargs=3, metavar=("VARIANT", "WORKLOAD", "MARKS"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        variant, workload, marks = options.worker
        run = plain_pytorch if variant == "pytorch" else plain_lightning
        print(json.dumps({"loss": run(workload, EPOCHS[workload], EpochClock(marks))}))
        return
    print(table(options.workloads, options.repeats))


if __name__ == "__main__":
    main()

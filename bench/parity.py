"""Framework overhead: one training done by a hand-written loop, by plain Lightning and by `converge train`.

The method of Lightning's own parity benchmark (tests/parity_pytorch): the same
network, data, seed, optimiser and epochs, each variant in a fresh process, run
one after another and repeated; medians reported. The hand-written loop and the
minimal Lightning script must end on the same training loss (5 decimals), so the
comparison is of one computation. All three validate once per epoch.

Steady-state seconds per epoch = (wall time of `long` epochs - wall time of
`short` epochs) / (long - short), EPOCHS below: start-up, data loading and the final test
cancel out. `converge train` runs with its default callbacks and logging
(checkpoints, early stopping disabled so every run trains its epochs, the LR
monitor, TensorBoard, the rich progress bar).

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

WORKLOADS = {
    "digits": ["data=vision/digits", "model=vision/cnn"],
    "mnist5k-wide": ["data=vision/mnist5k", "model=vision/cnn", "model.net.widths=[64,128,256]"],
}
# (short, long) epochs of each workload: a 0.1 s digits epoch needs many for the per-epoch delta to rise
# above the noise of process start-up.
EPOCHS = {"digits": (1, 16), "mnist5k-wide": (1, 4)}
SAME_RUN = ["optim=adamw", "optim.lr=0.001", "scheduler=none", "seed=42", "data.train_transforms=[]",
            "data.num_workers=0", "~callbacks.early_stopping"]


def build(workload: str):
    """The converge data module and the network, exactly as `converge train` builds them (same seed, same order)."""
    import lightning.pytorch as pl

    from converge.app.build import build_datamodule, build_task
    from converge.testing import compose

    cfg = compose([*WORKLOADS[workload], *SAME_RUN], output_dir=tempfile.mkdtemp())
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg.data)
    task = build_task(cfg, datamodule.spec())
    datamodule.setup("fit")
    return task, datamodule, cfg.optim.lr


def plain_pytorch(workload: str, epochs: int) -> float:
    import torch
    import torch.nn.functional as F

    task, datamodule, lr = build(workload)
    optimizer = torch.optim.AdamW(task.parameters(), lr=lr, weight_decay=0.01)
    train_loader = datamodule.train_dataloader()
    for epoch in range(epochs):
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
    return float(loss)


def plain_lightning(workload: str, epochs: int) -> float:
    import lightning.pytorch as pl
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
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, train_dataloaders=datamodule.train_dataloader(), val_dataloaders=datamodule.val_dataloader())
    return model.last_loss


def timed_worker(variant: str, workload: str, epochs: int) -> dict:
    """Run one variant in a fresh interpreter; its wall time includes start-up, which the epoch delta removes."""
    started = time.perf_counter()
    if variant == "converge":
        with tempfile.TemporaryDirectory() as scratch:
            command = [sys.executable, "-m", "converge.cli", "train", *WORKLOADS[workload], *SAME_RUN,
                       f"trainer.max_epochs={epochs}", "test_after_fit=false", f"hydra.run.dir={scratch}/run"]
            subprocess.run(command, check=True, capture_output=True)
        return {"seconds": time.perf_counter() - started, "loss": None}
    done = subprocess.run([sys.executable, __file__, "--worker", variant, workload, str(epochs)], check=True,
                          capture_output=True, text=True)
    return {"seconds": time.perf_counter() - started, "loss": json.loads(done.stdout.splitlines()[-1])["loss"]}


def table(workloads: list[str], repeats: int = 5) -> str:
    rows = ["| workload | hand-written s/epoch (a) | plain Lightning s/epoch (b) | converge s/epoch (c) | c/a | c/b "
            "| final loss a / b |", "|---|---|---|---|---|---|---|"]
    for workload in workloads:
        per_epoch: dict[str, list[float]] = {"pytorch": [], "lightning": [], "converge": []}
        losses = {}
        short, long = EPOCHS[workload]
        for _ in range(repeats):
            for variant in per_epoch:  # interleaved, so drift in machine load hits all three alike
                first = timed_worker(variant, workload, short)
                last = timed_worker(variant, workload, long)
                per_epoch[variant].append((last["seconds"] - first["seconds"]) / (long - short))
                losses[variant] = last["loss"]
        median = {variant: statistics.median(values) for variant, values in per_epoch.items()}
        same = f"{losses['pytorch']:.5f} / {losses['lightning']:.5f}"
        if round(losses["pytorch"], 5) != round(losses["lightning"], 5):
            same += " (DIFFER)"
        rows.append(f"| {workload} | {median['pytorch']:.3f} | {median['lightning']:.3f} | {median['converge']:.3f} | "
                    f"{median['converge'] / median['pytorch']:.3f} | {median['converge'] / median['lightning']:.3f} "
                    f"| {same} |")
        print(rows[-1], file=sys.stderr, flush=True)
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker", nargs=3, metavar=("VARIANT", "WORKLOAD", "EPOCHS"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        variant, workload, epochs = options.worker
        run = plain_pytorch if variant == "pytorch" else plain_lightning
        print(json.dumps({"loss": run(workload, int(epochs))}))
        return
    print(table(options.workloads, options.repeats))

if __name__ == "__main__":
    main()

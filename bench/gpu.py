"""Fine-tuning all-MiniLM-L6-v2 on one GPU in bf16-mixed precision: training samples/s under `hardware=gpu` and
under `hardware=ddp` on one device (the DDP wrapper's cost), through the real recipe
(`experiment=text/rotten_tomatoes_minilm`, its batch size and sequence length).

Each run trains two epochs; the second is timed (the first warms up kernels and allocators) from its first
batch to its last, with the GPU synchronised at both ends. Prints one JSON line per run and writes them to
`$OUT/gpu.json` when `OUT` is set (the device machine's output folder).

    python bench/gpu.py                      # hardware=gpu and hardware=ddp, bf16-mixed, batch 32
    python bench/gpu.py --batch-size 128 --precision 32-true
    python bench/gpu.py --hardware cpu --precision 32-true data.max_docs=64   # a dry run without a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch


class TimedEpoch(pl.Callback):
    """Seconds and samples of the last training epoch, from its first batch to its last (the newest instance is
    `TimedEpoch.latest`: the config builds it)."""

    latest: TimedEpoch | None = None

    def __init__(self) -> None:
        self.samples, self.seconds, self.started = 0, 0.0, 0.0
        TimedEpoch.latest = self

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        synchronize()
        self.samples, self.started = 0, time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.samples += len(batch[-1])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        synchronize()
        self.seconds = time.perf_counter() - self.started


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run(hardware: str, precision: str, batch_size: int, root: Path, overrides: list[str]) -> dict:
    from converge.app.train import train
    from converge.testing import compose

    cfg = compose(["experiment=text/rotten_tomatoes_minilm", f"hardware={hardware}", "trainer.devices=1",
                   f"trainer.precision={precision}", f"data.batch_size={batch_size}", "trainer.max_epochs=2",
                   "logger=none", "~callbacks.progress_bar", "+callbacks.timed._target_=__main__.TimedEpoch",
                   *overrides],
                  output_dir=root / hardware)
    score = train(cfg)
    timed = TimedEpoch.latest
    return {"hardware": hardware, "precision": precision, "batch_size": batch_size,
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
            "samples_per_s": round(timed.samples / timed.seconds, 1),
            "epoch_s": round(timed.seconds, 2), "val_acc": score}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hardware", type=lambda names: names.split(","), default=["gpu", "ddp"],
                        help="comma-separated hardware configs, each run in turn (default: gpu,ddp)")
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("overrides", nargs="*", help="more overrides (a dry run here: hardware=cpu data.max_docs=64)")
    args = parser.parse_args()
    if not torch.cuda.is_available() and set(args.hardware) - {"cpu"}:
        sys.exit("bench/gpu.py needs a CUDA GPU (or --hardware cpu for a dry run)")
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for hardware in args.hardware:
            results.append(run(hardware, args.precision, args.batch_size, Path(folder), args.overrides))
            print(json.dumps(results[-1]), flush=True)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"]).mkdir(parents=True, exist_ok=True)
        Path(os.environ["OUT"], "gpu.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

"""Transfer learning on this machine's data: digits with 10% of its labels (130 training images), from scratch
against started from a network pretrained on MNIST 5k at 8x8, at equal and at half the epochs.

Pretrains once (`experiment=vision/mnist8x8`), then for each seed trains `experiment=vision/digits_few`
(from scratch) for E epochs and `experiment=vision/digits_from_mnist` (the pretrained backbone, a new head)
for E and E/2 epochs, each with its own full cosine schedule, through `converge train`. Prints the test
accuracy table (mean and std over the seeds). The target: the transferred run at E/2 epochs reaches the
from-scratch run's accuracy at E.

    python bench/vision_transfer.py                         # E = 20, seeds 0 1 2
    python bench/vision_transfer.py --epochs 10 --seeds 0 --finetune full
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def train(root: Path, *overrides: str) -> float:
    """The test accuracy of one `converge train` run under `root`."""
    done = subprocess.run([sys.executable, "-m", "converge.cli", "train", f"paths.output_root={root}",
                           "~callbacks.progress_bar", *overrides], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"converge train {' '.join(overrides)} failed:\n{done.stderr[-3000:]}")
    latest = sorted(root.glob("*/runs/*/metrics.json"), key=lambda path: path.stat().st_mtime)[-1]
    return json.loads(latest.read_text())["test"]["test/acc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--finetune", default="llrd", help="the strategy of the transferred runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        pretrained = train(root, "experiment=vision/mnist8x8")
        print(f"pretrained on MNIST 5k at 8x8: test acc {pretrained:.4f}", flush=True)
        transfer = ["experiment=vision/digits_from_mnist", f"finetune={args.finetune}"]
        rows = {f"from scratch, {args.epochs} epochs": [
            "experiment=vision/digits_few", f"trainer.max_epochs={args.epochs}"],
                f"from MNIST, {args.epochs} epochs": [*transfer, f"trainer.max_epochs={args.epochs}"],
                f"from MNIST, {args.epochs // 2} epochs": [*transfer, f"trainer.max_epochs={args.epochs // 2}"]}
        results = {name: [train(root, *overrides, f"seed={seed}") for seed in args.seeds]
                   for name, overrides in rows.items()}
    print(f"\ndigits, 10% of the labels (130 images), test accuracy over seeds {args.seeds}:\n")
    print("| run | test acc (mean) | std |\n|---|---|---|")
    for name, scores in results.items():
        spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
        print(f"| {name} | {statistics.mean(scores):.4f} | {spread:.4f} |")


if __name__ == "__main__":
    main()

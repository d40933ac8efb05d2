"""Headline results: train each experiment through the real CLI and report its metrics.json.

    python bench/results.py                      # digits and mnist5k, seed 42
    python bench/results.py --seeds 42 1 2 --experiments vision/digits

Also times `converge --help` and `converge plugins` (cold processes, best of 5) and
scores the classical baseline on the digits split (an RBF SVM), so the table
shows what the CNN adds. Prints a markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def cli_seconds(*args: str, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "converge.cli", *args], check=True, capture_output=True)
        best = min(best, time.perf_counter() - started)
    return best


def train(experiment: str, seed: int, output_root: Path) -> dict:
    command = [sys.executable, "-m", "converge.cli", "train", f"experiment={experiment}", f"seed={seed}",
               f"paths.output_root={output_root}", "~callbacks.progress_bar"]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - started
    newest = max(output_root.glob("*/runs/*/metrics.json"), key=lambda p: p.stat().st_mtime)
    return {**json.loads(newest.read_text()), "wall": wall}


def svm_baseline_on_digits() -> float:
    from converge_vision.data import ImageClassificationData
    from converge_vision.sources import Digits
    from sklearn.svm import SVC

    splits = ImageClassificationData(source=Digits())._split()
    (images, train_idx), (_, val_idx), (_, test_idx) = splits["train"], splits["val"], splits["test"]
    fit_idx = np.concatenate([train_idx, val_idx])  # the SVM needs no validation split
    pixels = images.images.reshape(len(images.labels), -1).float().numpy() / 255
    model = SVC(kernel="rbf", C=10, gamma="scale").fit(pixels[fit_idx], images.labels[fit_idx])
    return float((model.predict(pixels[test_idx]) == images.labels[test_idx]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", nargs="+", default=["vision/digits", "vision/mnist5k"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    options = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores, "
          f"python {platform.python_version()}")
    print(f"`converge --help`: {cli_seconds('--help'):.3f} s, `converge plugins`: {cli_seconds('plugins'):.3f} s")
    print(f"digits RBF SVM baseline (train+val -> test): {svm_baseline_on_digits():.4f}\n")
    print("| experiment | seed | test acc | test macro-F1 | best epoch | epochs | train+test s | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for experiment in options.experiments:
            for seed in options.seeds:
                result = train(experiment, seed, Path(scratch))
                test = result["test"]
                print(f"| {experiment} | {seed} | {test['test/acc']:.4f} | {test['test/f1']:.4f} | "
                      f"{result['best']['epoch']} | {result['epochs_trained']} | {result['seconds']:.1f} | "
                      f"{result['wall']:.1f} |", flush=True)


if __name__ == "__main__":
    main()

"""Headline results: train each experiment through the real CLI, export it, serve it; print markdown tables.

    python bench/results.py                      # digits and mnist5k, seed 42
    python bench/results.py --seeds 42 1 2 --experiments vision/digits

For each experiment and seed: the test metrics of the best checkpoint (metrics.json).
For the first seed: `converge export` with int8 and `converge bench` (ONNX, int8 and
eager PyTorch: latency at batch 1, throughput at batch 64, file sizes, the int8
metric drop on the validation split). Also: `converge --help`, `converge plugins`
and `converge predict` cold starts (best of 5 fresh processes), and the classical
baseline on the digits split (an RBF SVM).
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


def converge(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "converge.cli", *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"converge {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def train(experiment: str, seed: int, output_root: Path) -> dict:
    started = time.perf_counter()
    converge("train", f"experiment={experiment}", f"seed={seed}", f"paths.output_root={output_root}",
             "~callbacks.progress_bar")
    wall = time.perf_counter() - started
    newest = max(output_root.glob("*/runs/*/metrics.json"), key=lambda p: p.stat().st_mtime)
    return {**json.loads(newest.read_text()), "wall": wall}


def export_and_bench(checkpoint: str, bundle: Path) -> tuple[dict, dict]:
    converge("export", f"ckpt_path={checkpoint}", "export.quantize=int8", f"export.dir={bundle}",
             f"hydra.run.dir={bundle.parent / 'export-run'}")
    table = json.loads(converge("bench", str(bundle), "--json"))["formats"]
    return json.loads((bundle / "manifest.json").read_text()), table


def predict_cold_start(bundle: Path, folder: Path) -> float:
    from PIL import Image

    from converge_vision.sources import Digits

    image = folder / "digit.png"
    Image.fromarray(Digits().load().images[0, 0].numpy(), mode="L").save(image)
    return cli_seconds("predict", str(bundle), str(image))


def svm_baseline_on_digits() -> float:
    from sklearn.svm import SVC

    from converge_vision.data import ImageClassificationData
    from converge_vision.sources import Digits

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
    print("| experiment | seed | test metrics | best epoch | epochs | train+test s | wall s |")
    print("|---|---|---|---|---|---|---|")
    served = {}
    with tempfile.TemporaryDirectory() as scratch:
        for experiment in options.experiments:
            for seed in options.seeds:
                result = train(experiment, seed, Path(scratch))
                test = ", ".join(f"{k.removeprefix('test/')} {v:.4f}" for k, v in result["test"].items()
                                 if k != "test/loss")
                print(f"| {experiment} | {seed} | {test} | {result['best']['epoch']} | {result['epochs_trained']} | "
                      f"{result['seconds']:.1f} | {result['wall']:.1f} |", flush=True)
                if experiment not in served:
                    bundle = Path(scratch) / experiment.replace("/", "-") / "bundle"
                    served[experiment] = (*export_and_bench(result["best"]["checkpoint"], bundle), bundle)
        print("\n| bundle | format | MB | p50 ms (b=1) | p99 ms (b=1) | rows/s (b=1) | rows/s (b=64) | "
              "x eager (b=1) | x eager (b=64) | val metric |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for experiment, (manifest, table, _) in served.items():
            metrics = manifest["verification"]["metrics"]
            key = next(iter(metrics["eager"]))  # the task's first metric (acc, rmse, ...), on the validation split
            for name, row in table.items():
                single = 1000 / row["p50_ms"]
                eager_single = 1000 / table["eager"]["p50_ms"] if "eager" in table else None
                eager_batch = table.get("eager", {}).get("rows_per_s")
                size = f"{row['size_bytes'] / 1e6:.2f}" if row["size_bytes"] else "-"
                print(f"| {experiment} | {name} | {size} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} | "
                      f"{single:.0f} | {row['rows_per_s']:.0f} | "
                      f"{single / eager_single if eager_single else 0:.1f} | "
                      f"{row['rows_per_s'] / eager_batch if eager_batch else 0:.1f} | "
                      f"{key} {metrics.get(name, {}).get(key, float('nan')):.4f} |")
        if "vision/digits" in served:
            print(f"\n`converge predict` cold start of the digits bundle (process start to first answer, best of 5):"
                  f" {predict_cold_start(served['vision/digits'][2], Path(scratch)):.3f} s")


if __name__ == "__main__":
    main()

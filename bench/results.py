"""Headline results: train each experiment through the real CLI, export it, serve it; markdown tables.

    python bench/results.py                                   # every plugin's headline experiment, seed 42
    python bench/results.py --experiments vision/digits --seeds 42 1 2

For each experiment and seed: the test metrics of the best checkpoint and the epochs
and seconds it took (metrics.json), next to the published or classical anchor. For
the first seed: `converge export` with TorchScript and int8, and `converge bench` on
2 threads and on 1 (ONNX, int8, TorchScript and eager PyTorch: latency at batch 1,
throughput at batch 64, file sizes, each format's metric on the validation split),
and the `converge predict` cold start of the digits bundle.
"""

from __future__ import annotations

import argparse
import json
import pkgutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from startup import command_seconds  # bench/ is on sys.path when run as a script

# What each headline experiment is measured against (test split unless said).
ANCHORS = {
    "vision/digits": "RBF SVM (C=10, fit on train+val) on the same test split: {svm}",
    "vision/mnist5k": "RBF SVM (C=10, fit on train+val) on the same test split: {svm}",
    "text/r8": "fastText 0.9613, TF-IDF+LR 0.9374, TextGCN 0.9707 (Yao et al. 2019)",
    "text/20ng": "fastText 0.7938, TF-IDF+LR 0.8319, TextGCN 0.8634 (Yao et al. 2019)",
    "recsys/ml100k": "RMSE: SVD 0.934, SVD++ 0.919 (Surprise, 5-fold)",
}
HEADLINES = list(ANCHORS)


def converge(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "converge.cli", *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"converge {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def train(experiment: str, seed: int, output_root: Path) -> dict:
    """The run's metrics.json (its own `seconds` is the train+test time)."""
    converge("train", f"experiment={experiment}", f"seed={seed}", f"paths.output_root={output_root}",
             "~callbacks.progress_bar")
    newest = max(output_root.glob("*/runs/*/metrics.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(newest.read_text())


def export_and_bench(checkpoint: str, bundle: Path) -> tuple[dict, dict[int, dict]]:
    """The bundle's manifest, and its `converge bench` table on 2 threads (the issue's 2 cores) and on 1."""
    converge("export", f"ckpt_path={checkpoint}", "export.formats=[onnx,torchscript]", "export.quantize=int8",
             f"export.dir={bundle}", f"hydra.run.dir={bundle.parent / 'export-run'}")
    tables = {threads: json.loads(converge("bench", str(bundle), "--json", "--threads", str(threads),
                                           "--repeats", "500"))["formats"] for threads in (2, 1)}
    return json.loads((bundle / "manifest.json").read_text()), tables


def predict_cold_start(bundle: Path, folder: Path) -> float:
    from PIL import Image

    from converge_vision.sources import Digits

    image = folder / "digit.png"
    Image.fromarray(Digits().load().images[0, 0].numpy(), mode="L").save(image)
    return command_seconds("predict", str(bundle), str(image), repeats=5)


def svm_baseline(experiment: str) -> float:
    """An RBF SVM on the experiment's own split (train+val -> test): the classical anchor for vision."""
    from sklearn.svm import SVC

    from converge.app.build import build_datamodule
    from converge.testing import compose

    splits = build_datamodule(compose([f"experiment={experiment}"]).data)._split()
    # train and val index one image set; test may be another (MNIST's own test images): index each its own.
    (images, train_idx), (_, val_idx), (test_images, test_idx) = splits["train"], splits["val"], splits["test"]
    fit_idx = np.concatenate([train_idx, val_idx])  # the SVM needs no validation split

    def pixels(image_set, idx: np.ndarray) -> np.ndarray:
        return image_set.images[idx].reshape(len(idx), -1).float().numpy() / 255

    model = SVC(kernel="rbf", C=10, gamma="scale").fit(pixels(images, fit_idx), images.labels[fit_idx])
    return float((model.predict(pixels(test_images, test_idx)) == test_images.labels[test_idx]).mean())


def anchor(experiment: str) -> str:
    text = ANCHORS.get(experiment, "")
    return text.format(svm=f"{svm_baseline(experiment):.4f}") if "{svm}" in text else text


def results_table(experiments: list[str], seeds: list[int], scratch: Path) -> tuple[str, dict]:
    rows = ["| experiment | seed | test metrics | best epoch / epochs | train+test s | anchor |",
            "|---|---|---|---|---|---|"]
    served = {}
    for experiment in experiments:
        for seed in seeds:
            result = train(experiment, seed, scratch)
            test = ", ".join(f"{key.removeprefix('test/')} {value:.4f}" for key, value in result["test"].items()
                             if key != "test/loss")
            rows.append(f"| `{experiment}` | {seed} | {test} | {result['best']['epoch']} / {result['epochs_trained']} "
                        f"| {result['seconds']:.1f} | {anchor(experiment) if seed == seeds[0] else ''} |")
            print(rows[-1], file=sys.stderr, flush=True)
            if experiment not in served:
                bundle = scratch / experiment.replace("/", "-") / "bundle"
                served[experiment] = (*export_and_bench(result["best"]["checkpoint"], bundle), bundle,
                                      result["monitor"])
    return "\n".join(rows), served


def validation_metric(manifest: dict, monitor: str) -> str:
    """The run's monitored metric, as the bundle's verification names it (val/rmse -> rmse); the task's own
    monitor where the run followed something export does not measure (val/loss, epoch)."""
    measured = manifest["verification"]["metrics"]["eager"]
    key = monitor.split("/", 1)[-1]
    if key not in measured:
        key = pkgutil.resolve_name(manifest["task_module"]).monitor.split("/", 1)[-1]
    return key


def inference_table(served: dict) -> str:
    rows = ["| bundle | format | MB | p50 ms (b=1) | p99 ms (b=1) | x eager (b=1) | rows/s (b=64) | x eager (b=64) "
            "| rows/s (b=64, 1 thread) | x eager (b=64, 1 thread) | val metric |", "|---" * 11 + "|"]
    for experiment, (manifest, tables, _, monitor) in served.items():
        metrics = manifest["verification"]["metrics"]
        key = validation_metric(manifest, monitor)
        two, one = tables[2], tables[1]
        for name, row in two.items():
            size = f"{row['size_bytes'] / 1e6:.2f}" if row["size_bytes"] else "-"
            rows.append(f"| {experiment} | {name} | {size} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} | "
                        f"{two['eager']['p50_ms'] / row['p50_ms']:.1f} | {row['rows_per_s']:.0f} | "
                        f"{row['rows_per_s'] / two['eager']['rows_per_s']:.1f} | {one[name]['rows_per_s']:.0f} | "
                        f"{one[name]['rows_per_s'] / one['eager']['rows_per_s']:.1f} | "
                        f"{key} {metrics.get(name, {}).get(key, float('nan')):.4f} |")
    return "\n".join(rows)


def tables(experiments: list[str], seeds: list[int]) -> dict[str, str]:
    """The `results` and `inference` sections of BENCHMARKS.md."""
    with tempfile.TemporaryDirectory() as scratch:
        results, served = results_table(experiments, seeds, Path(scratch))
        inference = inference_table(served)
        if "vision/digits" in served:
            cold = predict_cold_start(served["vision/digits"][2], Path(scratch))
            inference += (f"\n\n`converge predict` cold start on the digits bundle (process start to first answer, "
                          f"best of 5): {cold:.3f} s")
    return {"results": results, "inference": inference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", nargs="+", default=HEADLINES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    options = parser.parse_args()
    for section in tables(options.experiments, options.seeds).values():
        print(section, end="\n\n")


if __name__ == "__main__":
    main()

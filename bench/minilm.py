"""all-MiniLM-L6-v2 on Rotten Tomatoes and few-shot R8: the encoder, the frozen-encoder cache, the recipes and
the bundle. Every figure is wall-clock: run it on an idle machine and say under which load it ran.

    python bench/minilm.py encoder            # texts/s through the encoder (eval, batch 64)
    python bench/minilm.py cache              # a frozen training epoch without, then with, the feature cache
    python bench/minilm.py train              # experiment=text/rotten_tomatoes_minilm{,_frozen}: test acc, time
    python bench/minilm.py fewshot            # R8, N = 5, 20, 100 per class, 3 seeds: MiniLM vs fastText
    python bench/minilm.py fewshot --per-class 5 20 --seeds 0 1 2
    python bench/minilm.py bundle RUN_DIR [OVERRIDE...]   # export a run with int8, then converge bench --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def converge(*args: str) -> subprocess.CompletedProcess:
    completed = subprocess.run([sys.executable, "-m", "converge.cli", *args], cwd=ROOT, capture_output=True, text=True)
    if completed.returncode:
        raise SystemExit(f"converge {' '.join(args)} failed:\n{completed.stderr[-3000:]}")
    return completed


def newest_run(task_name: str) -> Path:
    return max((ROOT / "outputs" / task_name / "runs").iterdir())


def frozen_task(cache: bool, overrides: tuple[str, ...] = ()) -> tuple:
    """The frozen recipe's data module, task and fine-tuning callback (what freezes the encoder)."""
    from converge.app.build import build_datamodule, build_task
    from converge.app.transfer import prepare_transfer
    from converge.testing.compose import compose

    cfg = compose(["experiment=text/rotten_tomatoes_minilm_frozen", f"finetune.cache_features={cache}",
                   *overrides])
    datamodule = build_datamodule(cfg.data)
    task = build_task(cfg, datamodule.spec())
    return datamodule, task, prepare_transfer(cfg, task)


def encoder() -> None:
    import torch

    datamodule, task, _ = frozen_task(cache=False)
    texts = datamodule.dataset("train").ids[:640]
    torch.set_num_threads(2)
    from converge_text.tokenizer import pad

    batches = [torch.from_numpy(pad(texts[i:i + 64])) for i in range(0, len(texts), 64)]
    with torch.no_grad():
        task.net.pooled(batches[0])
        started = time.perf_counter()
        for batch in batches:
            task.net.pooled(batch)
    print(f"encoder: {len(texts) / (time.perf_counter() - started):.0f} texts/s (eval, batch 64, 2 threads)")


def cache() -> None:
    """Seconds of one training epoch of the head (no validation): uncached, then with the cache (the first epoch
    fills it, unless an earlier run did: it lives in the data cache, $CONVERGE_DATA_DIR/features)."""
    import lightning.pytorch as pl

    class EpochTimes(pl.Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.started = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.seconds.append(time.perf_counter() - self.started)

    results = {}
    for cached, epochs in ((False, 1), (True, 3)):
        datamodule, task, freezing = frozen_task(cached)
        times = EpochTimes()
        pl.Trainer(max_epochs=epochs, limit_val_batches=0, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, callbacks=[times, *freezing]).fit(task, datamodule=datamodule)
        results[cached] = times.seconds
    uncached, (filling, *served) = results[False][0], results[True]
    print(f"frozen epoch: uncached {uncached:.1f} s; cached: filling {filling:.1f} s, then "
          f"{statistics.median(served):.3f} s ({uncached / statistics.median(served):.0f}x faster)")


def train() -> None:
    for experiment in ("text/rotten_tomatoes_minilm_frozen", "text/rotten_tomatoes_minilm"):
        started = time.perf_counter()
        converge("train", f"experiment={experiment}")
        metrics = json.loads((newest_run(experiment.replace("/", "-")) / "metrics.json").read_text())
        print(f"{experiment}: test acc {metrics['test']['test/acc']:.4f} in {time.perf_counter() - started:.0f} s")


def fewshot(per_class: list[int], seeds: list[int]) -> None:
    rows = []
    for n in per_class:
        for experiment, task_name in (("text/r8_fewshot_minilm", "text-r8_fewshot_minilm"), ("text/r8", "text-r8")):
            scores = []
            for seed in seeds:
                converge("train", f"experiment={experiment}", f"data.per_class={n}", f"data.split_seed={seed}",
                         f"seed={seed}", f"task_name={task_name}-{n}")
                scores.append(json.loads((newest_run(f"{task_name}-{n}") / "metrics.json").read_text())
                              ["test"]["test/acc"])
            rows.append(f"| {n} | {experiment} | {statistics.mean(scores):.4f} | {statistics.stdev(scores):.4f} |")
    print("| N per class | experiment | test acc (mean) | std |\n|---|---|---|---|\n" + "\n".join(rows))


def bundle(run_dir: str, *overrides: str) -> None:
    checkpoint = json.loads((Path(run_dir) / "metrics.json").read_text())["kept"]["checkpoint"]
    target = Path(run_dir) / "bundle"
    converge("export", f"ckpt_path={checkpoint}", "export.quantize=int8", f"export.dir={target}", *overrides)
    manifest = json.loads((target / "manifest.json").read_text())
    print(json.dumps(manifest["verification"], indent=1))
    print({name: round(entry["bytes"] / 1e6, 1) for name, entry in manifest["files"].items()}, "MB")
    print(converge("bench", str(target), "--threads", "2", "--batch-size", "64").stdout)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["encoder", "cache", "train", "fewshot", "bundle"])
    parser.add_argument("run_dir", nargs="?")
    parser.add_argument("overrides", nargs="*", help="export overrides (bundle)")
    parser.add_argument("--per-class", type=int, nargs="+", default=[5, 20, 100], help="fewshot: N per class")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fewshot: seeds")
    arguments = parser.parse_args()
    if arguments.what == "bundle":
        bundle(arguments.run_dir, *arguments.overrides)
    elif arguments.what == "fewshot":
        fewshot(arguments.per_class, arguments.seeds)
    else:
        globals()[arguments.what]()

"""`converge bench`: latency and throughput of every format in a bundle, against eager PyTorch.

ONNX formats run through onnxruntime; TorchScript, torch.export and the eager
model (rebuilt from the bundle's source checkpoint) need torch, imported only
for them. Inputs are the bundle's own validation rows (example_inputs.npz).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from converge.runtime.bundle import FORMAT_FILES, ONNX_FORMATS, Bundle
from converge.runtime.processing import positive_int

EXAMPLES = "example_inputs.npz"


def measure(run: Callable[[dict[str, np.ndarray]], Any], feeds: dict[str, np.ndarray], repeats: int) -> list[float]:
    for _ in range(max(3, repeats // 10)):
        run(feeds)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run(feeds)
        seconds.append(time.perf_counter() - started)
    return seconds


def rows(examples: dict[str, np.ndarray], count: int) -> dict[str, np.ndarray]:
    """`count` rows, repeating the examples as needed."""
    available = len(next(iter(examples.values())))
    index = np.arange(count) % available
    return {name: np.ascontiguousarray(array[index]) for name, array in examples.items()}


def runners(bundle: Bundle, threads: int | None = None) -> dict[str, Callable[[dict[str, np.ndarray]], Any]]:
    found: dict[str, Callable] = {}
    output = [bundle.manifest["outputs"][0]["name"]]
    for name in bundle.formats:
        if name in ONNX_FORMATS:
            session = bundle.session(name, threads)
            found[name] = lambda feeds, s=session: s.run(output, feeds)
    torch_formats = [name for name in bundle.formats if name not in ONNX_FORMATS]
    try:
        import torch
    except ImportError:
        return found
    from converge.exporting.formats import runner

    if threads is not None:
        torch.set_num_threads(threads)

    names = [spec["name"] for spec in bundle.manifest["inputs"]]

    def on_torch(run: Callable) -> Callable[[dict[str, np.ndarray]], Any]:
        return lambda feeds: run([torch.from_numpy(feeds[n]) for n in names])

    for name in torch_formats:
        found[name] = on_torch(runner(name, bundle.verified_file(name), names))
    eager = _eager(bundle)
    if eager is not None:
        found["eager"] = on_torch(lambda inputs: eager(*inputs))
    return found


def _eager(bundle: Bundle) -> Callable | None:
    from pathlib import Path

    import torch

    from converge.app.build import load_task
    from converge.checksums import sha256_of

    source = bundle.manifest["source_checkpoint"]
    path = Path(source["path"])
    if not path.is_file() or sha256_of(path) != source["sha256"]:
        return None
    task, _ = load_task(path)
    task.eval()
    torch.set_grad_enabled(False)
    return task


def bench(bundle: Bundle, batch_size: int, repeats: int, threads: int | None = None) -> dict[str, dict[str, float]]:
    with np.load(bundle.verified_file_named(EXAMPLES)) as stored:
        examples = {name: stored[name] for name in stored.files}
    single, batch = rows(examples, 1), rows(examples, batch_size)
    table = {}
    for name, run in runners(bundle, threads).items():
        latency = np.array(measure(run, single, repeats)) * 1000
        per_batch = np.array(measure(run, batch, max(10, repeats // 5)))
        table[name] = {"p50_ms": float(np.percentile(latency, 50)), "p95_ms": float(np.percentile(latency, 95)),
                       "p99_ms": float(np.percentile(latency, 99)),
                       "rows_per_s": float(batch_size / np.median(per_batch)),
                       "size_bytes": _size(bundle, name)}
    return table


def _size(bundle: Bundle, name: str) -> int | None:
    file = FORMAT_FILES.get(name)
    return bundle.manifest["files"][file]["bytes"] if file else None


def main(args: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="converge bench", description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="batch for throughput (default 64)")
    parser.add_argument("--repeats", type=positive_int, default=200, help="timed runs at batch 1 (default 200)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="threads of onnxruntime and torch alike (default: all cores); fix it for figures "
                             "that compare across runs or machines")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    options = parser.parse_args(args)
    bundle = Bundle.open(options.bundle)
    table = bench(bundle, options.batch_size, options.repeats, options.threads)
    if options.json:
        print(json.dumps({"batch_size": options.batch_size, "threads": options.threads, "formats": table}, indent=2))
        return 0
    eager = table.get("eager", {}).get("rows_per_s")
    print(f"{'format':<13}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{f'rows/s @{options.batch_size}':>14}"
          f"{'x eager':>9}{'MB':>8}")
    for name, row in table.items():
        speedup = f"{row['rows_per_s'] / eager:.2f}" if eager else "-"
        size = f"{row['size_bytes'] / 1e6:.2f}" if row["size_bytes"] else "-"
        print(f"{name:<13}{row['p50_ms']:>9.3f}{row['p95_ms']:>9.3f}{row['p99_ms']:>9.3f}{row['rows_per_s']:>14.0f}"
              f"{speedup:>9}{size:>8}")
    return 0

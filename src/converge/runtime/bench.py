"""`converge bench`: latency and throughput of every format in a bundle, against eager PyTorch.

ONNX formats run through onnxruntime; TorchScript, torch.export and the eager
model (rebuilt from the bundle's source checkpoint) need torch, imported only
for them. Inputs are the bundle's own validation rows (example_inputs.npz), one
request each, batched by the plugin's preprocessor as `converge predict` batches
them; eager gets the same batch in its training layout, converted before timing.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from converge.runtime.bundle import EXAMPLES, FORMAT_FILES, ONNX_FORMATS, Bundle
from converge.runtime.predict import processor_classes
from converge.runtime.processing import Preprocessor, Request, positive_int

ROUNDS = 5  # every format is timed in turn, this many times: a busy spell of the machine hits them all alike
Feeds = dict[str, np.ndarray]
Bind = Callable[[Feeds], Callable[[], Any]]  # takes a batch once, returns the call to time on it


def measure(call: Callable[[], Any], repeats: int) -> list[float]:
    for _ in range(max(3, repeats // 10)):
        call()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return seconds


def feeds(preprocessor: Preprocessor, examples: Feeds, count: int) -> Feeds:
    """A model batch of `count` example rows (repeated as needed), collated as the runtime collates requests."""
    available = len(next(iter(examples.values())))
    requests = [Request(source="example", inputs={name: array[i:i + 1] for name, array in examples.items()})
                for i in np.arange(count) % available]
    return {name: np.ascontiguousarray(array) for name, array in preprocessor.collate(requests).items()}


def runners(bundle: Bundle, threads: int | None = None) -> dict[str, Bind]:
    """How to time each format on a batch of feeds; what a format needs of the feeds is done before timing."""
    found: dict[str, Bind] = {}
    output = [bundle.manifest["outputs"][0]["name"]]
    for name in bundle.formats:
        if name in ONNX_FORMATS:
            session = bundle.session(name, threads)
            found[name] = lambda feeds, s=session: lambda: s.run(output, feeds)
    torch_formats = [name for name in bundle.formats if name not in ONNX_FORMATS]
    try:
        import torch
    except ImportError:
        return found
    from converge.exporting.formats import runner

    if threads is not None:
        torch.set_num_threads(threads)

    def on_torch(prepare: Callable, run: Callable) -> Bind:
        def bind(feeds: Feeds) -> Callable[[], Any]:
            inputs = prepare({name: torch.from_numpy(array) for name, array in feeds.items()})
            return lambda: run(inputs)
        return bind

    for name in torch_formats:
        found[name] = on_torch(lambda inputs: inputs, runner(name, bundle.verified_file(name)))
    eager = _eager(bundle)
    if eager is not None:  # eager takes its training layout of the same batch (TaskModule.forward_inputs)
        found["eager"] = on_torch(eager.forward_inputs, torch.no_grad()(lambda inputs: eager(*inputs)))
    return found


def _eager(bundle: Bundle) -> Any:
    from pathlib import Path

    from converge.app.build import load_task
    from converge.checksums import sha256_of

    source = bundle.manifest["source_checkpoint"]
    path = Path(source["path"])
    if not path.is_file() or sha256_of(path) != source["sha256"]:
        return None
    task, _ = load_task(path)
    return task.eval()


def bench(bundle: Bundle, batch_size: int, repeats: int, threads: int | None = None) -> dict[str, dict[str, float]]:
    """Latency at batch 1 and throughput at `batch_size` of every format, timed in ROUNDS interleaved rounds."""
    with np.load(bundle.verified_file_named(EXAMPLES)) as stored:
        examples = {name: stored[name] for name in stored.files}
    preprocessor_class, _ = processor_classes(bundle)
    preprocessor = preprocessor_class(bundle.manifest["preprocessing"])
    single, batch = feeds(preprocessor, examples, 1), feeds(preprocessor, examples, batch_size)
    calls = {name: (bind(single), bind(batch)) for name, bind in runners(bundle, threads).items()}
    latency: dict[str, list[float]] = {name: [] for name in calls}
    per_batch: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(ROUNDS):  # a fifth as many batches as single rows: they take longer
        for name, (one, many) in calls.items():
            latency[name] += measure(one, -(-repeats // ROUNDS))
            per_batch[name] += measure(many, max(2, -(-repeats // (5 * ROUNDS))))
    table = {}
    for name in calls:
        milliseconds = np.array(latency[name]) * 1000
        table[name] = {"p50_ms": float(np.percentile(milliseconds, 50)),
                       "p95_ms": float(np.percentile(milliseconds, 95)),
                       "p99_ms": float(np.percentile(milliseconds, 99)),
                       "rows_per_s": float(batch_size / np.median(per_batch[name])),
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

"""Timing a bundle's formats: latency at batch 1 and throughput at batch N (numpy and onnxruntime only).

Inputs are the bundle's own validation rows (example_inputs.npz), one request each,
batched by the plugin's preprocessor as `converge predict` batches them. The
`converge bench` command (converge.app.bench) adds the torch formats and eager PyTorch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from converge.runtime.bundle import EXAMPLES, FORMAT_FILES, ONNX_FORMATS, Bundle
from converge.runtime.predict import processor_classes
from converge.runtime.processing import Preprocessor, Request

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


def onnx_runners(bundle: Bundle, threads: int | None = None) -> dict[str, Bind]:
    """How to time each ONNX format of the bundle on a batch of feeds (onnxruntime on `threads` threads)."""
    output = [bundle.manifest["outputs"][0]["name"]]
    sessions = {name: bundle.session(name, threads) for name in bundle.formats if name in ONNX_FORMATS}
    return {name: (lambda feeds, s=session: lambda: s.run(output, feeds)) for name, session in sessions.items()}


def bench(bundle: Bundle, runners: dict[str, Bind], batch_size: int, repeats: int) -> dict[str, dict[str, float]]:
    """Latency at batch 1 and throughput at `batch_size` of each runner, timed in ROUNDS interleaved rounds."""
    with np.load(bundle.verified_file_named(EXAMPLES)) as stored:
        examples = {name: stored[name] for name in stored.files}
    preprocessor_class, _ = processor_classes(bundle)
    preprocessor = preprocessor_class(bundle.manifest["preprocessing"])
    single, batch = feeds(preprocessor, examples, 1), feeds(preprocessor, examples, batch_size)
    calls = {name: (bind(single), bind(batch)) for name, bind in runners.items()}
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


def print_table(table: dict[str, dict[str, float]], batch_size: int) -> None:
    eager = table.get("eager", {}).get("rows_per_s")
    print(f"{'format':<13}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{f'rows/s @{batch_size}':>14}{'x eager':>9}{'MB':>8}")
    for name, row in table.items():
        speedup = f"{row['rows_per_s'] / eager:.2f}" if eager else "-"
        size = f"{row['size_bytes'] / 1e6:.2f}" if row["size_bytes"] else "-"
        print(f"{name:<13}{row['p50_ms']:>9.3f}{row['p95_ms']:>9.3f}{row['p99_ms']:>9.3f}{row['rows_per_s']:>14.0f}"
              f"{speedup:>9}{size:>8}")

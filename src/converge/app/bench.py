"""`converge bench`: latency and throughput of every format in a bundle, against eager PyTorch.

The ONNX formats are timed by converge.runtime.bench (onnxruntime); TorchScript,
torch.export and the eager model (rebuilt from the bundle's source checkpoint, when it
is still there unchanged) run here, on the same batches: eager gets them in its
training layout (TaskModule.forward_inputs), converted before timing.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from converge.app.build import load_task
from converge.checksums import sha256_of
from converge.exporting.formats import runner
from converge.runtime.bench import Bind, Feeds, bench, onnx_runners, print_table
from converge.runtime.bundle import ONNX_FORMATS, Bundle
from converge.runtime.processing import positive_int


def torch_runners(bundle: Bundle) -> dict[str, Bind]:
    """How to time the bundle's torch formats, and eager PyTorch, on a batch of feeds."""

    def on_torch(prepare: Callable, run: Callable) -> Bind:
        def bind(feeds: Feeds) -> Callable[[], Any]:
            inputs = prepare({name: torch.from_numpy(array) for name, array in feeds.items()})
            return lambda: run(inputs)
        return bind

    found = {name: on_torch(lambda inputs: inputs, runner(name, bundle.verified_file(name)))
             for name in bundle.formats if name not in ONNX_FORMATS}
    source = bundle.manifest["source_checkpoint"]
    path = Path(source["path"])
    if path.is_file() and sha256_of(path) == source["sha256"]:
        eager = load_task(path)[0].eval()
        found["eager"] = on_torch(eager.forward_inputs, torch.no_grad()(lambda inputs: eager(*inputs)))
    return found


def every_runner(bundle: Bundle, threads: int | None = None) -> dict[str, Bind]:
    """Every format of the bundle and eager PyTorch, onnxruntime and torch alike on `threads` threads."""
    if threads is not None:
        torch.set_num_threads(threads)
    return onnx_runners(bundle, threads) | torch_runners(bundle)


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
    table = bench(bundle, every_runner(bundle, options.threads), options.batch_size, options.repeats)
    if options.json:
        print(json.dumps({"batch_size": options.batch_size, "threads": options.threads, "formats": table}, indent=2))
    else:
        print_table(table, options.batch_size)
    return 0

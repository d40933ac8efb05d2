"""`converge predict`: batch inference on a bundle with onnxruntime (numpy only: no torch import)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from converge.runtime.bundle import Bundle
from converge.runtime.processing import Postprocessor, Preprocessor, Request, positive_int


def processor_classes(bundle: Bundle) -> tuple[type[Preprocessor], type[Postprocessor]]:
    """The plugin's processors for the bundle's task, found through the registry (never by a path in the file)."""
    from converge import registry
    from converge.errors import PluginError
    from converge.plugin import resolve

    _, task = registry.find_task(bundle.manifest["task_module"])
    if not task.preprocessor:
        raise PluginError(f"task '{task.name}' declares no preprocessor: its plugin cannot serve bundles yet")
    postprocessor = resolve(task.postprocessor) if task.postprocessor else Postprocessor
    return resolve(task.preprocessor), postprocessor


def batches(requests: Iterator[Request], size: int) -> Iterator[list[Request]]:
    batch: list[Request] = []
    for request in requests:
        batch.append(request)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def predict(bundle: Bundle, inputs: Sequence[str], options: argparse.Namespace, sink: IO[str]) -> int:
    """Write one JSON line per answer to `sink`; return how many."""
    preprocessor_class, postprocessor_class = processor_classes(bundle)
    preprocessor = preprocessor_class(bundle.manifest["preprocessing"], options)
    postprocessor = postprocessor_class(bundle.manifest["preprocessing"], options)
    session = bundle.session(options.format)
    output_name = bundle.manifest["outputs"][0]["name"]
    count = 0
    for group in batches(preprocessor.requests(inputs), options.batch_size):
        feeds = preprocessor.collate(group)
        bundle.check_inputs(feeds, source=group[0].source if len(group) == 1 else f"{group[0].source}...")
        (outputs,) = session.run([output_name], feeds)
        start = 0
        for request in group:
            answer: dict[str, Any] = {"input": request.source}
            answer.update(postprocessor(request, outputs[start:start + request.rows]))
            start += request.rows
            sink.write(json.dumps(answer) + "\n")
            count += 1
    return count


def main(args: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="converge predict", description="Batch inference on an export bundle.")
    parser.add_argument("bundle", help="the bundle directory written by `converge export`")
    parser.add_argument("inputs", nargs="*", help="input files (images, text files, CSV... as the plugin reads)")
    parser.add_argument("--output", "-o", help="write JSON lines here (default: standard output)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="requests per model call (default 32)")
    parser.add_argument("--format", default="onnx", help="onnx (default) or int8")
    known, _ = parser.parse_known_args(args)
    bundle = Bundle.open(known.bundle)
    preprocessor_class, _ = processor_classes(bundle)
    preprocessor_class.add_arguments(parser)
    options = parser.parse_args(args)
    if not options.output:
        predict(bundle, options.inputs, options, sys.stdout)
        return 0
    target = Path(options.output)
    partial = target.with_name(f".{target.name}.partial")
    try:
        with open(partial, "w") as sink:
            predict(bundle, options.inputs, options, sink)
        os.replace(partial, target)  # all answers or none: never a half-written file
    finally:
        partial.unlink(missing_ok=True)
    return 0

"""`converge predict`: batch inference on a bundle with onnxruntime (numpy only: no torch import).

The edges of its input are checked here, the same for every plugin: an input that is missing, not a file or
unreadable is refused before the plugin's preprocessor runs; no input at all, or an input that yields no request
(a CSV with a header and no rows), is refused once the preprocessor has read them. Each is a DataError naming
the input (exit code 2). Every answer is one line of valid JSON: a number JSON cannot hold (NaN, infinity, from a
model that overflowed) is written as null, and that answer gets `"non_finite": true`. With --output the answers
go to a temporary file next to it, renamed into place at the end: a failure leaves no partial output.

Inputs of different sizes (texts) are read a window ahead, and each window is answered in batches of similar
sizes, sorted (what sentence-transformers does): a batch is padded to its longest row, so a short text batched
with a long one costs as much as the long one. The answers are written in the inputs' order.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path, PurePath
from typing import IO, Any

import numpy as np

from converge.errors import DataError
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


# How far `converge predict` reads ahead to order its inputs by size: this many batches, unless their elements
# pass WINDOW_ELEMENTS first (large images, all one size: a window is then one batch, as without ordering).
WINDOW_BATCHES = 8
WINDOW_ELEMENTS = 4_000_000


def row_size(request: Request) -> int:
    """The elements of one row of a request, over all its inputs: what padding a batch to its longest costs."""
    return sum(array[0].size for array in request.inputs.values())


def windows(requests: Iterator[Request], batch_size: int) -> Iterator[list[Request]]:
    """The requests, `WINDOW_BATCHES` batches at a time (fewer, in whole batches, past `WINDOW_ELEMENTS`)."""
    window: list[Request] = []
    elements = 0
    for request in requests:
        window.append(request)
        elements += request.rows * row_size(request)
        if len(window) % batch_size == 0 and (len(window) == batch_size * WINDOW_BATCHES
                                              or elements >= WINDOW_ELEMENTS):
            yield window
            window, elements = [], 0
    if window:
        yield window


def sorted_batches(requests: Sequence[Request], batch_size: int) -> list[list[int]]:
    """Positions of `requests` sorted by row size (stable: inputs of one size keep their order), `batch_size` a
    batch."""
    order = sorted(range(len(requests)), key=lambda position: row_size(requests[position]))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def answer_groups(bundle: Bundle, session: Any, output_name: str, preprocessor: Preprocessor,
                  postprocessor: Postprocessor, requests: Sequence[Request], groups: Iterable[list[int]],
                  observe: Callable[[dict[str, np.ndarray], np.ndarray], None] | None = None) -> list[dict[str, Any]]:
    """The answers to `requests`, in their order, from one model call per group of their positions (see
    `answer_batch`)."""
    answers: list[dict[str, Any]] = [{}] * len(requests)
    for group in groups:
        batch = [requests[position] for position in group]
        found = answer_batch(bundle, session, output_name, preprocessor, postprocessor, batch, observe)
        for position, answer in zip(group, found, strict=True):
            answers[position] = answer
    return answers


def answers_in_order(bundle: Bundle, session: Any, output_name: str, preprocessor: Preprocessor,
                     postprocessor: Postprocessor, requests: Iterator[Request], batch_size: int,
                     observe: Callable[[dict[str, np.ndarray], np.ndarray], None] | None = None
                     ) -> Iterator[dict[str, Any]]:
    """Every request's answer, in the requests' order: a window read ahead (`windows`), answered in batches of
    similar sizes (`sorted_batches`)."""
    for window in windows(requests, batch_size):
        yield from answer_groups(bundle, session, output_name, preprocessor, postprocessor, window,
                                 sorted_batches(window, batch_size), observe)


def check_readable(inputs: Sequence[str]) -> None:
    """Every input is a file this process can read (a plugin's reader would fail on it, as a traceback)."""
    for path in inputs:
        if not os.path.exists(path):
            raise DataError(f"{path}: no such file")
        if not os.path.isfile(path):
            raise DataError(f"{path}: not a file (name the input files themselves)")
        if not os.access(path, os.R_OK):
            raise DataError(f"{path}: cannot be read (permission denied)")


def requests_of_every_input(requests: Iterable[Request], inputs: Sequence[str]) -> Iterator[Request]:
    """The requests, checked as they pass: every input gives at least one, and there is at least one.

    Requests come in input order, each named by its input (`file`, or `file:line` for a row), so an input whose
    name no request bears was passed over: it held nothing to answer. Requests named otherwise (recsys's
    `--user U`) count only towards "at least one"."""
    waiting = list(inputs)
    count = 0
    for request in requests:
        if waiting and _comes_from(request.source, waiting[0]):
            waiting.pop(0)
        count += 1
        yield request
    if waiting:
        raise DataError(f"{waiting[0]}: nothing to predict in this input (a table with a header and no rows?)")
    if not count:
        raise DataError("no inputs: give the files to predict on (converge predict BUNDLE INPUT...)")


def _comes_from(source: str, path: str) -> bool:
    return any(source == name or source.startswith(f"{name}:") for name in (path, str(PurePath(path))))


def answer_line(answer: dict[str, Any]) -> str:
    """One JSON line. JSON has no NaN or infinity, so a non-finite number is written as null and the answer
    says so with `"non_finite": true` (a reader never meets a line that is not JSON)."""
    try:
        return json.dumps(answer, allow_nan=False)
    except ValueError:
        return json.dumps(finite_answer(answer))


def finite_answer(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer holding a non-finite number, with it as None and `"non_finite": True` (see `answer_line`)."""
    return {**_finite_or_null(answer), "non_finite": True}


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(item) for item in value]
    return value


def predict(bundle: Bundle, inputs: Sequence[str], options: argparse.Namespace, sink: IO[str]) -> int:
    """Write one JSON line per answer to `sink`; return how many."""
    check_readable(inputs)
    preprocessor_class, postprocessor_class = processor_classes(bundle)
    preprocessor = preprocessor_class(bundle.manifest["preprocessing"], options)
    postprocessor = postprocessor_class(bundle.manifest["preprocessing"], options)
    session = bundle.session(options.format)
    output_name = bundle.manifest["outputs"][0]["name"]
    count = 0
    requests = requests_of_every_input(preprocessor.requests(inputs), inputs)
    for answer in answers_in_order(bundle, session, output_name, preprocessor, postprocessor, requests,
                                   options.batch_size):
        sink.write(answer_line(answer) + "\n")
        count += 1
    return count


def answer_batch(bundle: Bundle, session: Any, output_name: str, preprocessor: Preprocessor,
                 postprocessor: Postprocessor, group: Sequence[Request],
                 observe: Callable[[dict[str, np.ndarray], np.ndarray], None] | None = None) -> list[dict[str, Any]]:
    """The answers to a group of requests from one model call: what `converge predict` writes, one per request,
    and what `converge serve` answers (the same code, so the same answers). `observe` sees the batch and its
    outputs (the server's drift window)."""
    feeds = preprocessor.collate(group)
    bundle.check_inputs(feeds, source=group[0].source if len(group) == 1 else f"{group[0].source}...")
    (outputs,) = session.run([output_name], feeds)
    if observe is not None:
        observe(feeds, outputs)
    answers, start = [], 0
    for request in group:
        answer: dict[str, Any] = {"input": request.source}
        answer.update(postprocessor(request, outputs[start:start + request.rows]))
        start += request.rows
        answers.append(answer)
    return answers


def parse_with_plugin_options(parser: argparse.ArgumentParser,
                              args: Sequence[str]) -> tuple[Bundle, argparse.Namespace]:
    """The bundle a command names (its `bundle` argument), and the command's options with those its plugin's
    preprocessor adds (`add_arguments`)."""
    known, _ = parser.parse_known_args(args)
    bundle = Bundle.open(known.bundle)
    preprocessor_class, _ = processor_classes(bundle)
    preprocessor_class.add_arguments(parser)
    return bundle, parser.parse_args(args)


def main(args: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="converge predict", description="Batch inference on an export bundle.")
    parser.add_argument("bundle", help="the bundle directory written by `converge export`")
    parser.add_argument("inputs", nargs="*", help="input files (images, text files, CSV... as the plugin reads)")
    parser.add_argument("--output", "-o", help="write JSON lines here (default: standard output)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="requests per model call (default 32)")
    parser.add_argument("--format", default="onnx", help="onnx (default) or int8")
    bundle, options = parse_with_plugin_options(parser, args)
    if not options.output:
        predict(bundle, options.inputs, options, sys.stdout)
        return 0
    target = Path(options.output)
    partial = target.with_name(f".{target.name}.partial")
    try:
        sink = open(partial, "w")  # noqa: SIM115 - closed by the with below; opened first to name a bad --output
    except OSError as error:
        raise DataError(f"--output {target}: {error.strerror} ({partial.parent})") from None
    try:
        with sink:
            predict(bundle, options.inputs, options, sink)
        os.replace(partial, target)  # all answers or none: never a half-written file
    finally:
        partial.unlink(missing_ok=True)
    return 0

"""One served model: a bundle opened, its sha256 verified, its onnxruntime session warmed up, its processors built."""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converge.errors import ConvergeError
from converge.runtime.bench import feeds
from converge.runtime.bundle import EXAMPLES, Bundle
from converge.runtime.drift import DRIFT_FILE, Monitor, reference_of
from converge.runtime.predict import answer_groups, processor_classes, row_size
from converge.runtime.processing import Postprocessor, Preprocessor, Request

# A model whose row costs more than COSTLY_ROW seconds (a transformer) is called once per group of requests of
# similar sizes, cut where padding to the group's largest would add more than PADDING_WASTE to its work: MiniLM
# served Rotten Tomatoes snippets at 65 rows/s in batches of 64 padded to the longest, 103 one at a time.
COSTLY_ROW = 0.001
PADDING_WASTE = 0.25


@dataclass
class ServedModel:
    name: str
    bundle: Bundle
    format: str
    session: Any
    preprocessor: Preprocessor
    postprocessor: Postprocessor
    drift: Monitor | None = None  # None: a bundle exported without a drift reference
    row_seconds: float = 0.0  # a model row's onnxruntime time in a batch, measured at warm-up

    @classmethod
    def load(cls, name: str, path: str | Path, model_format: str = "onnx", threads: int | None = None,
             drift_window: int = 2000) -> ServedModel:
        """Open, verify (sha256 of the model file) and warm up a bundle; its processors get the defaults of
        `converge predict`'s options (e.g. recsys's `--top-k`)."""
        bundle = Bundle.open(path)
        preprocessor_class, postprocessor_class = processor_classes(bundle)
        parser = argparse.ArgumentParser(add_help=False)
        preprocessor_class.add_arguments(parser)
        options = parser.parse_args([])
        spec = bundle.manifest["preprocessing"]
        model = cls(name, bundle, model_format, bundle.session(model_format, threads),
                    preprocessor_class(spec, options), postprocessor_class(spec, options))
        if DRIFT_FILE in bundle.manifest["files"]:
            model.drift = Monitor(reference_of(bundle), drift_window)
        model.warm_up()
        return model

    @property
    def output_name(self) -> str:
        return self.bundle.manifest["outputs"][0]["name"]

    def warm_up(self) -> None:
        """Calls on the bundle's own example rows, so the first request pays no onnxruntime set-up; the last,
        timed, gives `row_seconds`."""
        with np.load(self.bundle.verified_file_named(EXAMPLES)) as stored:
            examples = {name: stored[name] for name in stored.files}
        rows = min(len(next(iter(examples.values()))), 64)
        for batch in (1, rows, rows):  # collated as requests are (bags, padding)
            started = time.perf_counter()
            self.session.run([self.output_name], feeds(self.preprocessor, examples, batch))
        self.row_seconds = (time.perf_counter() - started) / rows

    def check(self, request: Request) -> None:
        """A request the model cannot take fails alone, here, and never the batch it would have joined."""
        self.bundle.check_inputs(self.preprocessor.collate([request]), request.source)

    def answer(self, requests: list[Request]) -> list[dict[str, Any]]:
        """The answers to requests (what `converge predict` answers), in order: from one onnxruntime call, or for
        a costly model one call per group of similar sizes (`similar_sizes`)."""
        groups = similar_sizes(requests) if self.row_seconds > COSTLY_ROW else [list(range(len(requests)))]
        return answer_groups(self.bundle, self.session, self.output_name, self.preprocessor, self.postprocessor,
                             requests, groups, self._observe if self.drift else None)

    def _observe(self, batch: dict[str, np.ndarray], outputs: np.ndarray) -> None:
        assert self.drift is not None
        self.drift.observe(self.preprocessor.drift_statistics(batch, outputs), len(outputs))

    def summary(self) -> dict[str, Any]:
        manifest = self.bundle.manifest
        return {"name": self.name, "plugin": manifest["plugin"], "task": manifest["task"], "format": self.format,
                "created": manifest["created"], "inputs": manifest["inputs"], "outputs": manifest["outputs"],
                "sha256": manifest["files"][manifest["formats"][self.format]]["sha256"],
                "request_schema": _schema(self.preprocessor)}


def similar_sizes(requests: list[Request], waste: float = PADDING_WASTE) -> list[list[int]]:
    """Positions of `requests` in groups of similar row sizes (a row's elements over all its inputs), smallest
    first: a group is cut where padding its rows to its largest would add more than `waste` to its elements."""
    size = [row_size(request) for request in requests]
    groups: list[list[int]] = []
    group: list[int] = []
    rows = elements = 0
    for position in sorted(range(len(requests)), key=size.__getitem__):
        added = requests[position].rows
        if group and (rows + added) * size[position] > (1 + waste) * (elements + added * size[position]):
            groups.append(group)
            group, rows, elements = [], 0, 0
        group.append(position)
        rows, elements = rows + added, elements + added * size[position]
    return [*groups, group] if group else groups


def _schema(preprocessor: Preprocessor) -> str:
    """The plugin's documented request schema: its processor module's docstring, where the built-in plugins state
    it, else the preprocessor's own."""
    documented = sys.modules[type(preprocessor).__module__].__doc__ or inspect.getdoc(type(preprocessor))
    return (documented or "").strip()


def named_bundles(arguments: list[str]) -> dict[str, str]:
    """`PATH` or `NAME=PATH` -> {name: path}; a model is named after its folder unless named."""
    named: dict[str, str] = {}
    for argument in arguments:
        name, given, path = argument.partition("=")
        if not given or not re.fullmatch(r"[\w.-]+", name):  # a path (that may hold "="): named after its folder
            name, path = Path(argument).resolve().name, argument
        if name in named:
            raise ConvergeError(f"two bundles are named '{name}': name them apart with NAME=PATH")
        named[name] = path
    return named

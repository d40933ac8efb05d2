"""What a plugin gives the runtime: turning user inputs into model inputs, and outputs into answers.

Both sides are built from the bundle's preprocessing state (the task's plain-JSON
spec) alone, and may import numpy and the standard library only (plus a
format reader such as Pillow), so `converge predict` starts fast and needs no
training code.
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def positive_int(text: str) -> int:
    """An argparse `type` for counts (batch size, k, threads): refused with argparse's usage error, exit code 2."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


@dataclass
class Request:
    """One answer to produce: its model inputs, one or more rows each (a leading row axis)."""

    source: str  # what the answer and any error name: a file, or file:line
    inputs: dict[str, np.ndarray]

    @property
    def rows(self) -> int:
        return len(next(iter(self.inputs.values())))


class Preprocessor(ABC):
    """Reads user inputs (files) into Requests. Subclasses implement `requests`."""

    def __init__(self, spec: Mapping[str, Any], options: argparse.Namespace | None = None) -> None:
        self.spec = spec
        self.options = options or argparse.Namespace()

    @staticmethod  # noqa: B027 - an optional hook, empty by default
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Extra `converge predict` options this plugin understands (none by default)."""

    @abstractmethod
    def requests(self, paths: Sequence[str]) -> Iterator[Request]:
        """One Request per answer, in input order; a bad input raises DataError naming it."""

    def collate(self, requests: Sequence[Request]) -> dict[str, np.ndarray]:
        """Stack the rows of several requests into one model batch (override to pad sequences)."""
        return {name: np.concatenate([r.inputs[name] for r in requests]) for name in requests[0].inputs}


class Postprocessor:
    """Turns the model's output rows for one request into a JSON-ready answer."""

    def __init__(self, spec: Mapping[str, Any], options: argparse.Namespace | None = None) -> None:
        self.spec = spec
        self.options = options or argparse.Namespace()

    def __call__(self, request: Request, outputs: np.ndarray) -> dict[str, Any]:
        return {"outputs": outputs.tolist()}


class ClassificationPostprocessor(Postprocessor):
    """Logits -> the predicted class name, its probability, and the top classes."""

    top = 3

    def __call__(self, request: Request, outputs: np.ndarray) -> dict[str, Any]:
        logits = outputs[0].astype(np.float64)
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        names = self.spec["class_names"]
        order = np.argsort(-probabilities)[: self.top]
        return {
            "label": names[int(order[0])],
            "probability": round(float(probabilities[order[0]]), 6),
            "top": [{"label": names[int(i)], "probability": round(float(probabilities[i]), 6)} for i in order],
        }

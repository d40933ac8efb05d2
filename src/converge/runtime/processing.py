"""What a plugin gives the runtime: turning user inputs into model inputs, and outputs into answers.

Both sides are built from the bundle's preprocessing state (the task's plain-JSON
`serving_state()`) alone, and may import numpy and the standard library only (plus a
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

from converge.errors import DataError


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
    """One answer to produce: its model inputs, one or more rows each (a leading row axis).

    Args:
        source: what the answer and any error name: the input path as given, or `path:line` for one row of it
            (`converge predict` tells an input that gave no request by this name), or another label for a
            request that comes from no file (`--user 7`).
        inputs: model input name -> array, with a leading row axis.
        raw: the JSON instance it was made from (`converge serve`; None for a file), for `log_record`.
    """

    source: str
    inputs: dict[str, np.ndarray]
    raw: Any = None

    @property
    def rows(self) -> int:
        return len(next(iter(self.inputs.values())))


@dataclass
class LogRecord:
    """What `Preprocessor.log_record` logs of a served request, beyond its JSON line.

    Args:
        row: a row of the model's `requests.csv` (the same columns every time), e.g. {"text": ..., "label": ...}.
        file: (a path relative to the model's log folder, its bytes), e.g. ("7/000123.png", png_bytes).
    """

    row: dict[str, Any] | None = None
    file: tuple[str, bytes] | None = None


class Preprocessor(ABC):
    """Reads user inputs (files) into Requests. Subclasses implement `requests`.

    `converge predict` has already checked that every input is a readable file, and checks that each gives at
    least one request: a preprocessor checks only what its format means.

    Args:
        spec: the bundle's serving state (`TaskModule.serving_state`, plain JSON).
        options: `converge predict`'s parsed options, those of `add_arguments` included.
    """

    def __init__(self, spec: Mapping[str, Any], options: argparse.Namespace | None = None) -> None:
        self.spec = spec
        self.options = options or argparse.Namespace()

    @staticmethod  # noqa: B027 - an optional hook, empty by default
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Extra `converge predict` options this plugin understands (none by default); they arrive in `options`.

        Args:
            parser: the command's argparse parser.

        Example::

            @staticmethod
            def add_arguments(parser):
                parser.add_argument("--text-column", default="text", help="the CSV column holding the text")
        """

    @abstractmethod
    def requests(self, paths: Sequence[str]) -> Iterator[Request]:
        """Read the inputs into requests, lazily (a large file is never held whole).

        Args:
            paths: the input files, as given on the command line.

        Returns:
            One Request per answer, in input order, each named after its input (see `Request.source`).

        Raises:
            DataError: an input the model cannot take (a wrong size, a missing column), naming the file (and line).

        Example::

            def requests(self, paths):
                for path in paths:
                    yield Request(path, {"images": read_image(path)[None]})
        """

    def from_json(self, body: Any) -> list[Request]:
        """The requests of one JSON request body to `converge serve` (`POST /v1/models/{name}/predict`).

        A body is one instance, or `{"instances": [instance, ...]}` for several answers in one call; each
        instance becomes one request through `json_request`, named by its place in the body (`body`, or
        `instances[2]`), the name an error gives.

        Args:
            body: the parsed JSON body.

        Returns:
            One Request per answer, in order.

        Raises:
            DataError: a body the model cannot take, its message naming the field (`instances[2].pixels: ...`).
        """
        if isinstance(body, dict) and "instances" in body:
            instances = body["instances"]
            if not isinstance(instances, list) or not instances:
                raise DataError("instances: expected a non-empty list of instances")
            named = [(instance, f"instances[{i}]") for i, instance in enumerate(instances)]
        else:
            named = [(body, "body")]
        requests = []
        for instance, source in named:
            requests.append(self.json_request(instance, source))
            requests[-1].raw = instance
        return requests

    def json_request(self, instance: Any, source: str) -> Request:
        """One instance of a JSON request body as a Request (what `from_json` calls for each instance).

        A plugin that can be served over HTTP implements it; by default a JSON body is refused.

        Args:
            instance: one parsed JSON instance, in the plugin's own schema (documented in its README).
            source: its place in the body (`body`, `instances[2]`): the Request's source, and the prefix of
                every error message, followed by the field (`instances[2].text: expected a string`).

        Returns:
            The Request, built as `requests` builds one from a file, so `converge predict` and `converge serve`
            answer the same input the same.

        Raises:
            DataError: an instance the model cannot take, naming `source` and the field.

        Example::

            def json_request(self, instance, source):
                text = json_field(instance, "text", str, source)
                return Request(source, {"token_ids": self.tokenizer.encode_batch([text])})
        """
        raise DataError(f"{source}: this model's plugin takes no JSON requests (it implements no json_request)")

    def drift_statistics(self, feeds: Mapping[str, np.ndarray], outputs: np.ndarray) -> dict[str, np.ndarray]:
        """What to watch for drift (`converge.runtime.drift`), observed on one model batch and its outputs.

        The same code computes the reference at export (over the validation split, in the bundle's layout) and
        the live statistics of `converge serve` and `converge drift`. None by default.

        Args:
            feeds: a model batch, laid out as the bundle takes it (what `collate` returns).
            outputs: the model's outputs for it (the first output, one row per model row).

        Returns:
            Statistic name -> a 1-D array of observations: integers are categories (a predicted class, a 0/1
            flag), floats are binned at the reference's deciles.

        Example::

            def drift_statistics(self, feeds, outputs):
                return {"pixel_intensity": feeds["images"].reshape(-1),
                        "predicted_class": outputs.argmax(axis=1)}
        """
        return {}

    def log_record(self, request: Request, answer: Mapping[str, Any]) -> LogRecord | None:
        """A served request and its answer as training data the plugin's own data module reads back
        (`converge serve --log-requests DIR`: a row of `DIR/<model>/requests.csv`, or a file under it).
        None by default: the request is logged in `requests.jsonl` only.

        Args:
            request: the request, its JSON instance in `request.raw`.
            answer: the answer the server gave (the postprocessor's fields).

        Returns:
            A LogRecord, or None to log nothing beyond the JSON line.

        Example::

            def log_record(self, request, answer):
                return LogRecord(row={"text": request.raw["text"], "label": answer["label"]})
        """
        return None

    def collate(self, requests: Sequence[Request]) -> dict[str, np.ndarray]:
        """One model batch from several requests: their rows stacked, by default (override to pad sequences).

        Args:
            requests: up to `--batch-size` requests.

        Returns:
            Model input name -> array, checked against the bundle's manifest before the model runs.

        Example::

            def collate(self, requests):
                return {"token_ids": pad([row for r in requests for row in r.inputs["token_ids"]])}
        """
        return {name: np.concatenate([r.inputs[name] for r in requests]) for name in requests[0].inputs}


def json_field(instance: Any, name: str, kind: type | tuple[type, ...], source: str, required: bool = True) -> Any:
    """`instance[name]`, checked to be of `kind`; a DataError naming `source.name` otherwise (None when it is
    absent and not `required`). For `json_request` implementations.

    Example::

        text = json_field(instance, "text", str, "instances[0]")   # DataError "instances[0].text: expected str"
    """
    if not isinstance(instance, dict):
        raise DataError(f"{source}: expected a JSON object, got {type(instance).__name__}")
    if name not in instance:
        if required:
            raise DataError(f"{source}.{name}: missing (fields given: {', '.join(map(str, instance)) or 'none'})")
        return None
    value = instance[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        wanted = " or ".join(k.__name__ for k in kinds)
        raise DataError(f"{source}.{name}: expected {wanted}, got {type(value).__name__}")
    return value


class Postprocessor:
    """Turns the model's output rows for one request into a JSON-ready answer (a plain one by default).

    Args:
        spec: the bundle's serving state (`TaskModule.serving_state`, plain JSON).
        options: `converge predict`'s parsed options.
    """

    def __init__(self, spec: Mapping[str, Any], options: argparse.Namespace | None = None) -> None:
        self.spec = spec
        self.options = options or argparse.Namespace()

    def __call__(self, request: Request, outputs: np.ndarray) -> dict[str, Any]:
        """The answer to one request.

        Args:
            request: the request, as the preprocessor made it.
            outputs: the model's output rows for it (`request.rows` of them).

        Returns:
            JSON-ready fields of the answer line (`input`, the request's source, is added to them). A non-finite
            float is written as null and flags the answer `"non_finite": true`.

        Example::

            def __call__(self, request, outputs):
                return {"prediction": float(outputs[0])}
        """
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

"""Serving texts: files in, padded token ids out. numpy and the standard library only (no torch).

The tokenizer is rebuilt from the bundle's preprocessing state (the training
spec) and is the very code the data module trained with. Inputs:

- `*.txt` (or any other suffix): the whole file is one text, one answer;
- `*.csv`, `*.tsv`, `*.jsonl`: one answer per row, named `file:line`, text from
  `--text-column` (default `text`; a label column, if present, is ignored).

A batch is padded rows, or bags of ids (flat ids plus offsets) for a model
exported that way (`token_layout` in the task's serving state). An empty text is an all-padding
row or an empty bag (the model's prior); bytes that are not UTF-8 are an error
naming the file and line.

`converge serve` takes an instance `{"text": "..."}` (or the bare string).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from converge import DataError, LogRecord, Preprocessor, Request, json_field
from converge_text.sources import decoded_lines, read_table
from converge_text.tokenizer import PAD_ID, bags, pad, tokenizer_from_spec, unpad

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")


class TextPreprocessor(Preprocessor):
    def __init__(self, spec, options: argparse.Namespace | None = None) -> None:
        super().__init__(spec, options)
        self.tokenizer = tokenizer_from_spec(spec["tokenizer"])

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--text-column", default="text",
                            help="column (CSV/TSV) or key (JSONL) holding the text (default: text)")

    def requests(self, paths: Sequence[str]) -> Iterator[Request]:
        for name in paths:
            path = Path(name)
            if not path.is_file():
                raise DataError(f"{path}: no such file")
            if path.suffix.lower() in TABLE_SUFFIXES:
                yield from self._rows(path)
            else:
                yield self.request(name, read_text_file(path))

    def _rows(self, path: Path) -> Iterator[Request]:
        column = getattr(self.options, "text_column", "text")
        table = read_table(path, text_column=column, label_column=None)  # labels are not needed to serve
        for text, origin in zip(table.texts, table.origins, strict=True):
            yield self.request(origin, text)

    def json_request(self, instance: Any, source: str) -> Request:
        text = instance if isinstance(instance, str) else json_field(instance, "text", str, source)
        return self.request(source, text)

    def log_record(self, request: Request, answer: Mapping[str, Any]) -> LogRecord:
        """A row (text, predicted label) of the CSV `data=text/csv` reads."""
        text = request.raw if isinstance(request.raw, str) else request.raw["text"]
        return LogRecord(row={"text": text, "label": answer["label"]})

    def request(self, source: str, text: str) -> Request:
        return Request(source=source, inputs={"token_ids": self.tokenizer.encode_batch([text])})

    def drift_statistics(self, feeds: Mapping[str, np.ndarray], outputs: np.ndarray) -> dict[str, np.ndarray]:
        """Tokens per text, the share of them out of the vocabulary, and the predicted class."""
        ids = feeds["token_ids"]
        if "offsets" in feeds:  # bags: flat ids, each text's start
            rows = np.repeat(np.arange(len(feeds["offsets"])), np.diff(np.append(feeds["offsets"], len(ids))))
            lengths = np.bincount(rows, minlength=len(feeds["offsets"]))
            unknown = np.bincount(rows, weights=ids == self.tokenizer.unknown_id, minlength=len(lengths))
        else:
            lengths, unknown = (ids != PAD_ID).sum(axis=1), (ids == self.tokenizer.unknown_id).sum(axis=1)
        return {"length": lengths.astype(np.float64), "oov_rate": unknown / np.maximum(lengths, 1),
                "predicted_class": outputs.argmax(axis=1)}

    def collate(self, requests: Sequence[Request]) -> dict[str, np.ndarray]:
        rows = [row for r in requests for row in unpad(r.inputs["token_ids"])]
        if self.spec.get("token_layout") == "bags":
            token_ids, offsets = bags(rows)
            return {"token_ids": token_ids, "offsets": offsets}
        return {"token_ids": pad(rows)}


def read_text_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return "".join(decoded_lines(handle, path))

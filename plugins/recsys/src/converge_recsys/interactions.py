"""Reading interaction and attribute files into arrays, refusing bad input with messages that name the file.

numpy and the standard library only: `converge predict` reads user files with
the same code paths. RecBole atomic files (`name:type` headers, tab separated)
and ordinary CSV files share one reader; the type suffix of a header is dropped.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from converge import ConfigError, DataError

DUPLICATE_POLICIES = ("error", "last", "mean")
SCALE_POLICIES = ("error", "clip", "drop")
ID_TYPES = ("str", "int")


@dataclass
class Table:
    """A delimited file: its header names (type suffixes dropped), rows as strings, and their 1-based line numbers."""

    path: Path
    columns: list[str]
    rows: list[list[str]]
    lines: list[int]

    def column(self, name: str) -> list[str]:
        position = self.columns.index(name)
        return [row[position] for row in self.rows]

    def require(self, names: Sequence[str], what: str) -> None:
        missing = [name for name in names if name not in self.columns]
        if missing:
            raise DataError(f"{self.path}: missing {what} column(s) {missing}; the file has {self.columns}. "
                            f"Name the right columns in data.source.")


def read_table(path: str | Path, sep: str = ",") -> Table:
    """Read a delimited text file with a header line; every row must have as many fields as the header."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"interactions file not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle, delimiter=sep)
            header = next(reader, None)
            if not header:
                raise DataError(f"{path}: empty file (expected a header line)")
            columns = [name.strip().split(":", 1)[0] for name in header]
            rows, lines = [], []
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != len(columns):
                    raise DataError(f"{path}:{reader.line_num}: {len(row)} fields, the header has {len(columns)} "
                                    f"(is the separator {sep!r} right?)")
                rows.append([value.strip() for value in row])
                lines.append(reader.line_num)
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error})") from error
    return Table(path, columns, rows, lines)


@dataclass
class Interactions:
    """One row per (user, item) event. Ids stay raw strings until the id maps index them."""

    users: np.ndarray  # str
    items: np.ndarray  # str
    ratings: np.ndarray | None = None  # float32, None for implicit feedback
    timestamps: np.ndarray | None = None  # float64, None when the file has no time column
    source: str = ""

    def __len__(self) -> int:
        return len(self.users)

    def take(self, indices: np.ndarray) -> Interactions:
        def pick(column: np.ndarray | None) -> np.ndarray | None:
            return None if column is None else column[indices]

        return Interactions(self.users[indices], self.items[indices], pick(self.ratings), pick(self.timestamps),
                            self.source)


@dataclass
class Attributes:
    """Side information of users or items: field names, and per raw id the raw values of those fields."""

    fields: list[str] = field(default_factory=list)
    values: dict[str, list[str]] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)  # items only: what a recommendation shows


def _ids(table: Table, column: str, id_type: str, what: str) -> np.ndarray:
    values = table.column(column)
    for value, line in zip(values, table.lines, strict=True):
        if not value:
            raise DataError(f"{table.path}:{line}: empty {what} id in column '{column}'")
        if id_type == "int" and not value.lstrip("-").isdigit():
            raise DataError(f"{table.path}:{line}: {what} id {value!r} in column '{column}' is not an integer "
                            f"(data.source.id_type=int; use id_type=str for text ids)")
    if id_type == "int":
        values = [str(int(value)) for value in values]  # "007" and "7" are the same id
    return np.asarray(values, dtype=object).astype(str)


def _numbers(table: Table, column: str, what: str) -> np.ndarray:
    out = np.empty(len(table.rows), dtype=np.float64)
    for position, (value, line) in enumerate(zip(table.column(column), table.lines, strict=True)):
        try:
            out[position] = float(value)
        except ValueError:
            raise DataError(f"{table.path}:{line}: {what} {value!r} in column '{column}' is not a number") from None
        if not np.isfinite(out[position]):
            raise DataError(f"{table.path}:{line}: {what} {value!r} in column '{column}' is not finite")
    return out


def read_interactions(path: str | Path, user_column: str = "user_id", item_column: str = "item_id",
                      rating_column: str | None = "rating", timestamp_column: str | None = "timestamp",
                      sep: str = ",", id_type: str = "str", rating_scale: Sequence[float] = (1.0, 5.0),
                      out_of_scale: str = "error", duplicates: str = "error") -> Interactions:
    """Read and validate an interactions file.

    Ratings outside `rating_scale` are an error (or clipped / dropped, per `out_of_scale`); a (user, item)
    pair that occurs twice is an error (or keeps its last row / the mean rating, per `duplicates`).
    """
    for value, allowed, key in ((out_of_scale, SCALE_POLICIES, "out_of_scale"),
                                (duplicates, DUPLICATE_POLICIES, "duplicates"), (id_type, ID_TYPES, "id_type")):
        if value not in allowed:
            raise ConfigError(f"data.source.{key} must be one of {list(allowed)}, got {value!r}")
    table = read_table(path, sep)
    table.require([user_column, item_column], "id")
    optional = [name for name in (rating_column, timestamp_column) if name]
    table.require(optional, "rating/timestamp")
    if not table.rows:
        raise DataError(f"{table.path}: no interactions after the header")
    users = _ids(table, user_column, id_type, "user")
    items = _ids(table, item_column, id_type, "item")
    ratings = _numbers(table, rating_column, "rating") if rating_column else None
    timestamps = _numbers(table, timestamp_column, "timestamp") if timestamp_column else None
    lines = np.asarray(table.lines)
    keep = np.ones(len(users), dtype=bool)
    if ratings is not None:
        low, high = float(rating_scale[0]), float(rating_scale[1])
        outside = (ratings < low) | (ratings > high)
        if outside.any():
            first = int(np.flatnonzero(outside)[0])
            if out_of_scale == "error":
                raise DataError(f"{table.path}:{lines[first]}: rating {ratings[first]:g} is outside the declared "
                                f"scale [{low:g}, {high:g}] ({int(outside.sum())} such rows). Fix data.rating_scale, "
                                f"or set data.source.out_of_scale=clip|drop")
            if out_of_scale == "clip":
                ratings = np.clip(ratings, low, high)
            else:
                keep &= ~outside
    result = Interactions(users, items, None if ratings is None else ratings.astype(np.float32), timestamps,
                          str(table.path))
    result = result.take(np.flatnonzero(keep))
    return _resolve_duplicates(result, lines[keep], duplicates)


def _resolve_duplicates(data: Interactions, lines: np.ndarray, policy: str) -> Interactions:
    pairs = np.char.add(np.char.add(data.users, "\x1f"), data.items)
    _, first, inverse, counts = np.unique(pairs, return_index=True, return_inverse=True, return_counts=True)
    if (counts == 1).all():
        return data
    if policy == "error":
        group = int(np.flatnonzero(counts > 1)[0])
        at = lines[inverse == group]
        user, item = str(data.users[first[group]]), str(data.items[first[group]])
        raise DataError(f"{data.source}: user {user!r} and item {item!r} "
                        f"occur on lines {', '.join(map(str, at))} ({int((counts > 1).sum())} duplicated pairs). "
                        f"Set data.source.duplicates=last or mean to merge them")
    last = np.zeros(len(counts), dtype=np.int64)
    last[inverse] = np.arange(len(inverse))  # later rows overwrite earlier ones
    kept = np.sort(last)  # one row per pair, in file order of the pair's last occurrence
    merged = data.take(kept)
    if policy == "mean" and data.ratings is not None:
        sums = np.bincount(inverse, weights=data.ratings, minlength=len(counts))
        merged.ratings = (sums / counts)[inverse[kept]].astype(np.float32)
    return merged


def read_attributes(path: str | Path, key_column: str, fields: Sequence[str], sep: str = ",",
                    title_column: str | None = None, id_type: str = "str") -> Attributes:
    """Side information keyed by user or item id (ages, genres, titles...); ids follow `id_type` like the
    interactions file, so they match its ids."""
    table = read_table(path, sep)
    table.require([key_column, *fields, *([title_column] if title_column else [])], "attribute")
    keys = _ids(table, key_column, id_type, key_column)
    columns = [table.column(name) for name in fields]
    values = {key: [column[row] for column in columns] for row, key in enumerate(keys)}
    titles = dict(zip(keys, table.column(title_column), strict=True)) if title_column else {}
    return Attributes(list(fields), values, titles)

"""`converge predict` for recommendation bundles: CSV requests in, scores or top-K lists out.

An input file is a CSV with a header, one answer per row (its source
`file:line`, as every plugin answers rows of a table): a row with `user_id` and
`item_id` asks for the score (predicted rating, or ranking logit) of that pair;
a row with `user_id` alone (or an empty item) asks for the top-K items the user
has not rated in training, with titles when the data had them. `--user U` asks
for U's top-K without a file.

`converge serve` takes an instance `{"user": "7", "item": "31"}` (a score) or
`{"user": "7", "k": 5}` (the top k; `--top-k` when k is absent). Ids may be JSON
strings or integers, as the CSV's cells are read as text.

numpy and the standard library only: everything comes from the spec via
`converge_recsys.preprocessing`, the code training used.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from converge import DataError, LogRecord, Postprocessor, Preprocessor, Request, json_field, positive_int
from converge_recsys.interactions import read_table
from converge_recsys.preprocessing import UNKNOWN, Encoder

DEFAULT_K = 10


@dataclass
class RecsysRequest(Request):
    """One query: a (user, item) pair to score (one model row), or a user to recommend for (item None: one row
    per known item)."""

    user: str = ""
    item: str | None = None
    k: int | None = None  # a JSON request's own k (else --top-k)


class RecsysPreprocessor(Preprocessor):
    @cached_property
    def encoder(self) -> Encoder:
        return Encoder(self.spec)

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--top-k", type=positive_int, default=DEFAULT_K,
                            help="items per recommendation (default 10)")
        parser.add_argument("--user", action="append", default=[], metavar="U",
                            help="recommend for user U, no input file needed (repeatable)")
        parser.add_argument("--user-column", default="user_id", help="user id column of the input CSV")
        parser.add_argument("--item-column", default="item_id", help="item id column (absent or empty: recommend)")

    def requests(self, paths: Sequence[str]) -> Iterator[Request]:
        wanted_users = getattr(self.options, "user", None) or []
        if not paths and not wanted_users:  # else the command would answer nothing and succeed
            raise DataError("no queries: give a CSV of queries (a user_id column, optionally item_id) "
                            "or --user U")
        encoder = self.encoder
        for user in wanted_users:
            yield self._query(encoder, f"--user {user}", user, None)
        user_column = getattr(self.options, "user_column", "user_id")
        item_column = getattr(self.options, "item_column", "item_id")
        for path in paths:
            table = read_table(path)
            table.require([user_column], "user id")
            users = table.column(user_column)
            items = table.column(item_column) if item_column in table.columns else [""] * len(users)
            if not users:
                raise DataError(f"{path}: no queries after the header")
            for user, item, line in zip(users, items, table.lines, strict=True):
                yield self._query(encoder, f"{path}:{line}", user, item or None)

    def json_request(self, instance: Any, source: str) -> Request:
        user = str(json_field(instance, "user", (str, int), source))
        item = json_field(instance, "item", (str, int), source, required=False)
        k = json_field(instance, "k", int, source, required=False)
        if k is not None and (item is not None or k < 1):
            raise DataError(f"{source}.k: " + ("a score of (user, item) takes no k" if item is not None
                                               else f"must be at least 1, got {k}"))
        request = self._query(self.encoder, source, user, None if item is None else str(item))
        request.k = k
        return request

    def drift_statistics(self, feeds: Mapping[str, np.ndarray], outputs: np.ndarray) -> dict[str, np.ndarray]:
        """Unknown users and items (0/1: scored from biases and side features only), and the scores."""
        flags = {f"unknown_{name}": (feeds[name] == UNKNOWN).astype(np.int64) for name in ("user", "item")
                 if name in feeds}
        return {**flags, "score": np.asarray(outputs, dtype=np.float64).reshape(-1)}

    def log_record(self, request: Request, answer: Mapping[str, Any]) -> LogRecord | None:
        """A scored pair as an interaction row (`data=recsys/csv data.source.rating_column=score`); a top-k
        request is no interaction (JSON line only)."""
        if "score" not in answer:
            return None
        return LogRecord(row={"user_id": answer["user"], "item_id": answer["item"], "score": answer["score"],
                              "timestamp": int(time.time())})

    def _query(self, encoder: Encoder, source: str, user: str, item: str | None) -> RecsysRequest:
        arrays = encoder.pairs([user], [item], source) if item else encoder.all_items(user, source)
        names = self.spec.get("model_inputs", ["user", "item"])
        return RecsysRequest(source, {name: arrays[name] for name in names}, user=user, item=item)


class RecsysPostprocessor(Postprocessor):
    def __init__(self, spec: Mapping[str, Any], options: argparse.Namespace | None = None) -> None:
        super().__init__(spec, options)
        self.encoder = Encoder(spec)
        self.k = int(getattr(self.options, "top_k", DEFAULT_K))  # at least 1: `--top-k` parses with positive_int

    def __call__(self, request: Request, outputs: np.ndarray) -> dict[str, Any]:
        assert isinstance(request, RecsysRequest)
        scores = np.asarray(outputs).reshape(-1)
        if request.item is not None:
            return {"user": request.user, "item": request.item, "score": float(scores[0])}
        recommendations = self.encoder.recommend(request.user, scores, request.k or self.k)
        return {"user": request.user, "recommendations": recommendations}

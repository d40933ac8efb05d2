"""`converge predict` for recommendation bundles: CSV requests in, scores or top-K lists out.

An input file is a CSV with a header, one answer per file: a row with `user_id`
and `item_id` asks for the score (predicted rating, or ranking logit) of that
pair; a row with `user_id` alone (or an empty item) asks for the top-K items the
user has not rated in training, with titles when the data had them.

numpy and the standard library only: everything comes from the spec via
`converge_recsys.preprocessing`, the code training used.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from converge.errors import DataError
from converge.runtime.processing import Postprocessor, Preprocessor, Request
from converge_recsys.interactions import read_table
from converge_recsys.preprocessing import Encoder

DEFAULT_K = 10


@dataclass
class RecsysRequest(Request):
    """All queries of one input file: (user, item) pairs to score, or users (item None) to recommend for."""

    queries: list[tuple[str, str | None]] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # model rows per query


class RecsysPreprocessor(Preprocessor):
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--top-k", type=int, default=DEFAULT_K, help="items per recommendation (default 10)")
        parser.add_argument("--user-column", default="user_id", help="user id column of the input CSV")
        parser.add_argument("--item-column", default="item_id", help="item id column (absent or empty: recommend)")

    def requests(self, paths: Sequence[str]) -> Iterator[Request]:
        encoder = Encoder(self.spec)
        names = self.spec.get("model_inputs", ["user", "item"])
        user_column = getattr(self.options, "user_column", "user_id")
        item_column = getattr(self.options, "item_column", "item_id")
        for path in paths:
            table = read_table(path)
            table.require([user_column], "user id")
            users = table.column(user_column)
            items = table.column(item_column) if item_column in table.columns else [""] * len(users)
            parts, queries = [], []
            for user, item, line in zip(users, items, table.lines, strict=True):
                source = f"{path}:{line}"
                parts.append(encoder.pairs([user], [item], source) if item else encoder.all_items(user, source))
                queries.append((user, item or None))
            if not parts:
                raise DataError(f"{path}: no queries after the header")
            arrays = {name: np.concatenate([part[name] for part in parts]) for name in names}
            yield RecsysRequest(str(path), arrays, queries=queries, sizes=[len(part["user"]) for part in parts])


class RecsysPostprocessor(Postprocessor):
    def __call__(self, request: Request, outputs: np.ndarray) -> dict[str, Any]:
        encoder = Encoder(self.spec)
        k = int(getattr(self.options, "top_k", DEFAULT_K))
        scores = np.asarray(outputs).reshape(-1)
        answers, start = [], 0
        for (user, item), size in zip(request.queries, request.sizes, strict=True):
            rows = scores[start:start + size]
            start += size
            if item is not None:
                answers.append({"user": user, "item": item, "score": float(rows[0])})
            else:
                answers.append({"user": user, "recommendations": encoder.recommend(user, rows, k)})
        return {"answers": answers}

"""How `converge predict` batches a file: a window of inputs read ahead, answered in batches of similar sizes
(padding costs what the longest row of a batch costs), the answers written in the inputs' order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from converge import Request
from converge.runtime import predict
from converge.runtime.predict import answer_groups, sorted_batches, windows


def _text(source: str, length: int) -> Request:
    return Request(source, {"ids": np.arange(1, length + 1, dtype=np.int64)[None]})


class PaddingCollate:
    """A text preprocessor's collate: rows padded with 0 to the batch's longest."""

    def collate(self, requests: Sequence[Request]) -> dict[str, np.ndarray]:
        longest = max(request.inputs["ids"].shape[1] for request in requests)
        return {"ids": np.stack([np.pad(r.inputs["ids"][0], (0, longest - r.inputs["ids"].shape[1]))
                                 for r in requests])}


class SumOfIds:
    """A session whose output is each row's sum, and which records the width of each batch it ran."""

    def __init__(self) -> None:
        self.widths: list[int] = []

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.widths.append(feeds["ids"].shape[1])
        return [feeds["ids"].sum(axis=1)]


class AnyInput:
    def check_inputs(self, feeds: dict[str, np.ndarray], source: str) -> None:
        pass


def _answer(request: Request, outputs: np.ndarray) -> dict[str, Any]:
    return {"sum": int(outputs[0])}


def test_a_window_is_answered_in_sorted_batches_and_written_in_input_order() -> None:
    lengths = [30, 2, 17, 3, 29, 1, 16, 4]
    requests = [_text(f"in.csv:{i + 2}", length) for i, length in enumerate(lengths)]
    session = SumOfIds()
    groups = sorted_batches(requests, 2)
    assert groups == [[5, 1], [3, 7], [6, 2], [4, 0]]
    answers = answer_groups(AnyInput(), session, "sum", PaddingCollate(), _answer, requests, groups)
    assert [answer["input"] for answer in answers] == [request.source for request in requests]
    assert [answer["sum"] for answer in answers] == [n * (n + 1) // 2 for n in lengths]
    assert session.widths == [2, 4, 17, 30]  # 53 columns padded; batches in file order would pad to 30, 17, 29, 16


def test_inputs_of_one_size_keep_their_order() -> None:
    requests = [_text(str(i), 5) for i in range(5)]
    assert sorted_batches(requests, 2) == [[0, 1], [2, 3], [4]]


def test_a_window_is_whole_batches_and_large_inputs_shrink_it(monkeypatch) -> None:
    texts = (_text(str(i), 10) for i in range(50))
    assert [len(window) for window in windows(texts, 4)] == [32, 18]  # WINDOW_BATCHES batches of 4, the rest
    monkeypatch.setattr(predict, "WINDOW_ELEMENTS", 45)  # 5 rows of 10: the window ends at the next whole batch
    assert [len(window) for window in windows((_text(str(i), 10) for i in range(20)), 4)] == [8, 8, 4]

"""`converge predict`'s input edges, the core's for every plugin (each plugin's conformance suite checks them
end to end on its own bundles): inputs that cannot be read, inputs with nothing to answer, non-finite answers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from converge import DataError, Request
from converge.runtime.predict import answer_line, check_readable, requests_of_every_input


def _requests(*sources: str) -> list[Request]:
    return [Request(source, {"x": np.zeros((1, 2), dtype=np.float32)}) for source in sources]


def test_missing_and_directory_inputs_are_refused_naming_them(tmp_path: Path) -> None:
    (tmp_path / "ok.csv").write_text("a\n1\n")
    check_readable([str(tmp_path / "ok.csv")])
    with pytest.raises(DataError, match=rf"^{tmp_path}/missing.csv: no such file$"):
        check_readable([str(tmp_path / "ok.csv"), str(tmp_path / "missing.csv")])
    with pytest.raises(DataError, match=rf"^{tmp_path}: not a file"):
        check_readable([str(tmp_path)])


def test_an_unreadable_input_is_refused_naming_it(tmp_path: Path) -> None:
    locked = tmp_path / "locked.csv"
    locked.write_text("a\n1\n")
    locked.chmod(0)
    if os.access(locked, os.R_OK):
        pytest.skip("running as root: a file without permissions is still readable")
    with pytest.raises(DataError, match=rf"^{locked}: cannot be read \(permission denied\)$"):
        check_readable([str(locked)])


def test_every_input_must_give_a_request() -> None:
    given = _requests("a.csv:2", "a.csv:3", "b.png", "--user 7")
    assert list(requests_of_every_input(given, ["a.csv", "./b.png"])) == given
    with pytest.raises(DataError, match=r"^empty.csv: nothing to predict in this input"):
        list(requests_of_every_input(_requests("a.csv:2", "c.csv:2"), ["a.csv", "empty.csv", "c.csv"]))
    with pytest.raises(DataError, match=r"^last.csv: nothing to predict"):
        list(requests_of_every_input(_requests("a.csv:2"), ["a.csv", "last.csv"]))
    with pytest.raises(DataError, match=r"^no inputs: give the files to predict on"):
        list(requests_of_every_input([], []))
    assert len(list(requests_of_every_input(_requests("--user 7"), []))) == 1  # a request from no file


def test_non_finite_numbers_are_written_as_null_and_flagged() -> None:
    line = answer_line({"input": "a.csv:2", "score": float("nan"),
                        "top": [{"label": "x", "probability": float("inf")}, {"label": "y", "probability": 0.5}]})
    answer = json.loads(line, parse_constant=lambda constant: pytest.fail(f"{constant} is not JSON"))
    assert answer == {"input": "a.csv:2", "score": None, "non_finite": True,
                      "top": [{"label": "x", "probability": None}, {"label": "y", "probability": 0.5}]}
    assert json.loads(answer_line({"input": "b", "score": 1.5})) == {"input": "b", "score": 1.5}

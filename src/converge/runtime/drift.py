"""Drift: how far the inputs a model now sees (and its answers) have moved from those it was trained for.

A plugin says what to watch with `Preprocessor.drift_statistics` (numpy, on a model batch and its outputs):
each statistic is a 1-D array of observations per batch; integer observations are categories (a predicted class,
a 0/1 "unknown id" flag), float ones are binned at the reference's deciles. `converge export` computes the
reference over the validation split (the training distribution without the training split's augmentation) and
writes it to `drift.json` in the bundle; `converge serve` keeps the same statistics over a sliding window of
recent rows, and `converge drift BUNDLE INPUT...` over a file of inputs.

The score of a statistic is the population stability index, PSI = sum_i (a_i - e_i) ln(a_i / e_i), over its bins
(e: the reference's share of observations in bin i, a: the window's; both floored at 1e-4 so an empty bin counts
as rare, not impossible). PSI < 0.1: no change; 0.1-0.25: a moderate one; > 0.25 (THRESHOLD): drift, flagged.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from converge.errors import DataError
from converge.runtime.bundle import Bundle, BundleError

DRIFT_FILE = "drift.json"
THRESHOLD = 0.25
FLOOR = 1e-4
DECILES = np.linspace(0, 1, 11)[1:-1]


def reference(observations: Mapping[str, Sequence[np.ndarray]]) -> dict[str, Any]:
    """The bins and reference counts of each statistic, from its observations over many batches (export)."""
    table = {}
    for name, parts in observations.items():
        values = np.concatenate([np.asarray(part).reshape(-1) for part in parts])
        if values.dtype.kind in "iub":
            categories, counts = np.unique(values.astype(np.int64), return_counts=True)
            table[name] = {"kind": "categorical", "categories": categories.tolist(), "counts": counts.tolist()}
        else:
            edges = np.unique(np.quantile(values, DECILES)).tolist()
            table[name] = {"kind": "continuous", "edges": edges, "counts": _binned(values, edges).tolist()}
    return table


def _binned(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Counts in the bins (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    return np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)


def counts(stat: Mapping[str, Any], values: np.ndarray) -> np.ndarray:
    """Observations counted in a reference statistic's bins (a category the reference never saw: an extra bin)."""
    values = np.asarray(values).reshape(-1)
    if stat["kind"] == "continuous":
        return _binned(values.astype(np.float64), stat["edges"])
    categories = np.asarray(stat["categories"], dtype=np.int64)
    index = np.searchsorted(categories, values.astype(np.int64))
    known = (index < len(categories)) & (categories[np.minimum(index, len(categories) - 1)] == values)
    return np.bincount(np.where(known, index, len(categories)), minlength=len(categories) + 1)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two count vectors over the same bins (see the module docstring)."""
    size = max(len(expected), len(actual))
    e, a = (np.pad(np.asarray(x, np.float64), (0, size - len(x))) for x in (expected, actual))
    e = np.maximum(e / max(e.sum(), 1), FLOOR)
    a = np.maximum(a / max(a.sum(), 1), FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


class Monitor:
    """The live side: a bundle's statistics over a sliding window of the last `window` rows.

    Each batch's counts are kept, and the oldest dropped once the rest still cover the window, so memory stays
    bounded by the batches of one window. `observe` runs in the model's thread, `report` in the event loop:
    a report reads a snapshot of the deque (appends and pops are atomic in CPython).
    """

    def __init__(self, table: Mapping[str, Any], window: int = 2000) -> None:
        self.table, self.window = table, window
        self.batches: deque[tuple[int, dict[str, np.ndarray]]] = deque()
        self.rows = 0  # in self.batches: a running total, as a window holds thousands of one-row batches

    def observe(self, statistics: Mapping[str, np.ndarray], rows: int) -> None:
        self.batches.append((rows, {name: counts(self.table[name], values)
                                    for name, values in statistics.items() if name in self.table}))
        self.rows += rows
        while len(self.batches) > 1 and self.rows - self.batches[0][0] >= self.window:
            self.rows -= self.batches.popleft()[0]

    def report(self) -> dict[str, Any]:
        batches = list(self.batches)
        scores = {}
        for name, stat in self.table.items():
            seen = [c[name] for _, c in batches if name in c]
            if seen:
                score = psi(np.asarray(stat["counts"]), np.sum(seen, axis=0))
                scores[name] = {"psi": round(score, 6), "drift": score > THRESHOLD}
        return {"rows": sum(n for n, _ in batches), "window": self.window, "threshold": THRESHOLD,
                "statistics": scores, "drift": any(s["drift"] for s in scores.values())}


def reference_of(bundle: Bundle) -> dict[str, Any]:
    """The bundle's drift reference (sha256-verified); a BundleError for a bundle exported without one."""
    if DRIFT_FILE not in bundle.manifest["files"]:
        raise BundleError(f"{bundle.root}: this bundle has no drift reference ({DRIFT_FILE}): export it again")
    return json.loads(bundle.verified_file_named(DRIFT_FILE).read_text())


def main(args: Sequence[str]) -> int:
    """`converge drift BUNDLE INPUT...`: the drift score of each statistic over a file of inputs, as JSON."""
    from converge.runtime.predict import (
        answers_in_order,
        check_readable,
        parse_with_plugin_options,
        processor_classes,
        requests_of_every_input,
    )

    parser = argparse.ArgumentParser(prog="converge drift",
                                     description="Drift of inputs (files) against a bundle's training reference.")
    parser.add_argument("bundle", help="the bundle directory written by `converge export`")
    parser.add_argument("inputs", nargs="*", help="input files, as `converge predict` reads them")
    parser.add_argument("--format", default="onnx", help="onnx (default) or int8")
    bundle, options = parse_with_plugin_options(parser, args)
    monitor = Monitor(reference_of(bundle), window=sys.maxsize)
    check_readable(options.inputs)
    preprocessor_class, postprocessor_class = processor_classes(bundle)
    preprocessor = preprocessor_class(bundle.manifest["preprocessing"], options)
    postprocessor = postprocessor_class(bundle.manifest["preprocessing"], options)
    session = bundle.session(options.format)

    def observe(feeds: dict[str, np.ndarray], outputs: np.ndarray) -> None:
        monitor.observe(preprocessor.drift_statistics(feeds, outputs), len(outputs))

    requests = requests_of_every_input(preprocessor.requests(options.inputs), options.inputs)
    for _ in answers_in_order(bundle, session, bundle.manifest["outputs"][0]["name"], preprocessor, postprocessor,
                              requests, 256, observe):
        pass  # the answers are not needed: `observe` sees each batch
    report = monitor.report()
    if not report["statistics"]:
        raise DataError("no drift statistics: this plugin's preprocessor declares none (drift_statistics)")
    del report["window"]
    print(json.dumps(report, indent=1))
    return 0

"""Verification of exported models against eager PyTorch, on real validation data.

Two checks per format. Outputs: on validation rows at two batch sizes, of the
first and the last validation batch (a batch or sequence axis frozen at trace
time fails), the max absolute difference and
the max difference relative to the largest eager output, against a tolerance
(`atol + rtol * max|eager|`, tighter for fp32 formats than for int8). Quality:
the task's own metrics over the whole validation split, so the cost of int8 is
a number, bounded by a maximum drop of the monitored metric, never finer than one
sample: for a score in [0, 1] to maximise (accuracy, F1, hit rate), the allowed drop
is at least 1/N on N validation samples, since a single flipped prediction moves an
accuracy by 1/N (0.69 points on 144 images), and a gate finer than that refuses a
format over one borderline sample. Eager runs the task's forward inputs; each format
the same rows as `export_inputs` lays them out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from converge.exporting.formats import Runner
from converge.task import TaskModule

Batch = tuple[tuple[torch.Tensor, ...], torch.Tensor]


def precision_of(format_name: str) -> str:
    return "int8" if format_name == "int8" else "fp32"


def compare_outputs(eager: TaskModule, runners: Mapping[str, Runner], batches: Sequence[Batch],
                    batch_sizes: Sequence[int]) -> dict[str, dict[str, Any]]:
    """Every format's outputs against eager on the first `batch_sizes` rows of each of `batches` (batches padded
    to their own longest row, such as text's, give as many sequence lengths: a sequence axis frozen at trace time
    fails the second, as a frozen batch axis does)."""
    report: dict[str, dict[str, Any]] = {name: {"max_abs_diff": 0.0, "max_rel_diff": 0.0, "batch_sizes": [],
                                                "input_shapes": []} for name in runners}
    for inputs, _ in batches:
        for size in batch_sizes:
            rows = tuple(tensor[:size] for tensor in inputs)
            with torch.no_grad():
                reference = eager(*rows).float()
            scale = float(reference.abs().max()) or 1.0
            for name, run in runners.items():
                output = run(eager.export_inputs(rows)).float()
                if output.shape != reference.shape:
                    report[name]["shape_mismatch"] = f"{list(output.shape)} != eager {list(reference.shape)}"
                    continue
                difference = float((output - reference).abs().max())
                entry = report[name]
                entry["max_abs_diff"] = max(entry["max_abs_diff"], difference)
                entry["max_rel_diff"] = max(entry["max_rel_diff"], difference / scale)
                entry["batch_sizes"] = sorted({*entry["batch_sizes"], int(rows[0].shape[0])})
                entry["input_shapes"].append(list(rows[0].shape))
                entry["scale"] = max(entry.get("scale", 0.0), scale)
    return report


def task_metrics(eager: TaskModule, runners: Mapping[str, Runner], batches: Sequence[Batch]) -> dict[str, dict]:
    """The task's metrics over `batches` for eager and for every format."""
    metrics = {name: eager.build_metrics() for name in ["eager", *runners]}
    for inputs, target in batches:
        with torch.no_grad():
            metrics["eager"].update(eager(*inputs), target)
        for name, run in runners.items():
            metrics[name].update(run(eager.export_inputs(inputs)), target)
    return {name: {key: float(value) for key, value in collection.compute().items()}
            for name, collection in metrics.items()}


def failures(outputs: Mapping[str, dict], metrics: Mapping[str, dict], monitor: str, mode: str,
             tolerance: Mapping[str, Mapping[str, float]], max_metric_drop: Mapping[str, float],
             samples: int = 0) -> list[str]:
    """Why each format fails verification (empty when all pass); also fills in each format's verdict.
    `samples`: the size of the validation split, the resolution of a rate metric (one sample = 1/samples)."""
    problems = []
    key = monitor.split("/", 1)[-1]
    for name, entry in outputs.items():
        precision = precision_of(name)
        limit = tolerance[precision]
        entry["tolerance"] = dict(limit)
        allowed = limit["atol"] + limit["rtol"] * entry.get("scale", 1.0)
        if "shape_mismatch" in entry:
            problems.append(f"{name}: output shape {entry['shape_mismatch']} (a frozen axis?)")
        elif len(set(entry["batch_sizes"])) < 2:
            problems.append(f"{name}: was not checked at two batch sizes")
        elif entry["max_abs_diff"] > allowed:
            problems.append(f"{name}: max abs difference {entry['max_abs_diff']:.3g} from eager exceeds "
                            f"{allowed:.3g} (atol {limit['atol']} + rtol {limit['rtol']} x {entry['scale']:.3g})")
        if key in metrics.get(name, {}):
            change = metrics[name][key] - metrics["eager"][key]
            drop = -change if mode == "max" else change
            entry["metric_drop"] = drop
            configured = max_metric_drop[precision]
            is_rate = mode == "max" and 0.0 <= min(metrics[name][key], metrics["eager"][key]) <= 1.0 and samples
            entry["allowed_drop"] = allowed_drop = max(configured, 1.0 / samples) if is_rate else configured
            if drop > allowed_drop + 1e-9:  # one sample's worth is allowed exactly, whatever the float rounding
                problems.append(f"{name}: {key} {metrics[name][key]:.4f} vs eager {metrics['eager'][key]:.4f}, "
                                f"a drop of {drop:.4f} > {allowed_drop:.4g} (export.max_metric_drop.{precision}="
                                f"{configured}, never finer than one of the {samples} validation samples)")
    return problems

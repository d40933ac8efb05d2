"""Export verification: what makes a bundle fail (the end-to-end path runs in every plugin's conformance suite)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from converge.exporting.verification import compare_outputs, failures

TOLERANCE = {"fp32": {"atol": 1e-4, "rtol": 1e-4}, "int8": {"atol": 0.0, "rtol": 0.1}}
DROP = {"fp32": 1e-3, "int8": 5e-3}


class Eager(torch.nn.Module):
    """What verification needs of a task: its forward, and its inputs laid out as the exported model takes them."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)

    def export_inputs(self, inputs: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        return {"inputs": inputs[0]}


def test_a_batch_axis_frozen_at_trace_time_fails() -> None:
    torch.manual_seed(0)
    eager = Eager(torch.nn.Linear(3, 2))
    batch = ((torch.randn(8, 3),), torch.zeros(8))
    frozen_at_two = lambda inputs: eager(inputs["inputs"][:1].expand(2, -1))  # noqa: E731 - always 2 rows out
    with torch.no_grad():
        report = compare_outputs(eager, {"onnx": frozen_at_two}, [batch], [1, 8])
    problems = failures(report, {}, "val/acc", "max", TOLERANCE, DROP)
    assert problems and "output shape" in problems[0] and "frozen axis" in problems[0]


def test_a_sequence_axis_frozen_at_trace_time_fails_on_the_last_batch() -> None:
    eager = Eager(torch.nn.Identity())
    first, last = ((torch.randn(4, 5),), torch.zeros(4)), ((torch.randn(3, 7),), torch.zeros(3))  # padded to 5, 7
    frozen_at_five = lambda inputs: inputs["inputs"][:, :5]  # noqa: E731 - a graph traced on 5 positions
    report = compare_outputs(eager, {"onnx": frozen_at_five}, [first, last], [1, 4])
    assert report["onnx"]["input_shapes"][:2] == [[1, 5], [4, 5]]
    assert "frozen axis" in failures(report, {}, "val/acc", "max", TOLERANCE, DROP)[0]


def test_outputs_beyond_tolerance_fail_and_within_pass() -> None:
    eager = Eager(torch.nn.Identity())
    batch = ((torch.full((4, 3), 10.0),), torch.zeros(4))
    close = compare_outputs(eager, {"onnx": lambda inputs: inputs["inputs"] + 5e-4}, [batch], [1, 4])
    assert not failures(close, {}, "val/acc", "max", TOLERANCE, DROP)  # 5e-4 <= 1e-4 + 1e-4 * 10
    far = compare_outputs(eager, {"onnx": lambda inputs: inputs["inputs"] + 5e-3}, [batch], [1, 4])
    assert "onnx: max abs difference 0.005" in failures(far, {}, "val/acc", "max", TOLERANCE, DROP)[0]
    int8 = compare_outputs(eager, {"int8": lambda inputs: inputs["inputs"] + 0.5}, [batch], [1, 4])
    assert not failures(int8, {}, "val/acc", "max", TOLERANCE, DROP)  # int8: 10% of the output scale


def test_metric_drop_follows_the_monitor_direction() -> None:
    outputs = {"int8": {"max_abs_diff": 0.0, "max_rel_diff": 0.0, "batch_sizes": [1, 4], "scale": 1.0}}
    accuracy = {"eager": {"acc": 0.95}, "int8": {"acc": 0.94}}
    assert "a drop of 0.0100" in failures(outputs, accuracy, "val/acc", "max", TOLERANCE, DROP)[0]
    error = {"eager": {"mse": 0.50}, "int8": {"mse": 0.504}}
    assert not failures(outputs, error, "val/mse", "min", TOLERANCE, DROP)
    error["int8"]["mse"] = 0.51
    assert failures(outputs, error, "val/mse", "min", TOLERANCE, DROP)


def test_dynamic_axes_for_an_input_the_export_lacks_is_an_error() -> None:
    """torch.onnx ignores such keys silently and freezes the axes they meant (a known export trap)."""
    from converge.errors import PluginError
    from converge.exporting.formats import dynamic_shapes

    class Task:
        def dynamic_axes(self) -> dict[str, dict[int, str]]:
            return {"image": {0: "batch"}}

    with pytest.raises(PluginError, match=r"names inputs \['image'\], but the exported inputs are \['images'\]"):
        dynamic_shapes(Task(), {"images": torch.zeros(2, 3)})


def test_the_exporters_empty_constant_warning_is_dropped_and_nothing_else(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from converge.exporting.formats import _quiet_onnx_exporter

    logger = logging.getLogger("onnx_ir._convenience")
    with caplog.at_level(logging.WARNING, logger=logger.name), _quiet_onnx_exporter():
        logger.warning("Attribute type is ambiguous because it is an empty sequence. Defaulted to INTS")
        logger.warning("something a user should see")
    assert [record.getMessage() for record in caplog.records] == ["something a user should see"]
    assert not logger.filters  # removed again after the export


def test_a_bundle_folder_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    from converge.errors import ConfigError
    from converge.layout import atomic_folder

    (tmp_path / "a_file").write_text("")
    with pytest.raises(ConfigError, match="cannot create it"), atomic_folder(tmp_path / "a_file" / "bundle"):
        pass  # export.dir under a file (or /proc, or a read-only disk): one message, not a traceback
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "bundle") as staging:
        (staging / "model.onnx").write_text("half")
        raise RuntimeError("the export failed half-way")
    assert [path.name for path in tmp_path.iterdir()] == ["a_file"]

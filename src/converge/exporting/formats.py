"""Writing each export format, and running it again for verification.

Every format is exported from an eval-mode copy of the task stripped of what
breaks tracing (its torchmetrics objects, Lightning #4416; the `trainer`
property that raises when detached, Lightning #14036), with an example batch of
2 rows so no axis is specialised to 1, and with the task's dynamic axes
declared positionally (names cannot silently miss).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.export import Dim

from converge.errors import PluginError
from converge.task import TaskModule

log = logging.getLogger("converge")

Inputs = Mapping[str, torch.Tensor]  # the exported model's named inputs, in order (TaskModule.export_inputs)
Runner = Callable[[Inputs], torch.Tensor]


def exportable_copy(task: TaskModule) -> nn.Module:
    module = copy.deepcopy(task).eval().cpu().for_export().eval()  # a swapped-in module starts in train mode
    for name in ("val_metrics", "test_metrics"):
        if hasattr(module, name):
            delattr(module, name)
    module._jit_is_scripting = True  # Lightning's own switch: the `trainer` property stops raising
    return module


def dynamic_shapes(task: TaskModule, example: Inputs) -> tuple[dict[int, Dim], ...]:
    dims: dict[str, Dim] = {}
    axes = task.dynamic_axes()
    if set(axes) - set(example):  # torch would ignore them silently and freeze the axes they meant
        raise PluginError(f"{type(task).__name__}.dynamic_axes() names inputs {sorted(set(axes) - set(example))}, "
                          f"but the exported inputs are {list(example)}")
    return tuple({axis: dims.setdefault(symbol, Dim(symbol)) for axis, symbol in axes.get(name, {}).items()}
                 for name in example)


def write_onnx(module: nn.Module, task: TaskModule, example: Inputs, path: Path, opset: int) -> None:
    with _quiet_onnx_exporter():
        torch.onnx.export(module, tuple(example.values()), str(path), dynamo=True, external_data=False, verbose=False,
                          opset_version=opset, input_names=list(example), output_names=list(task.output_names),
                          dynamic_shapes=dynamic_shapes(task, example))


def fuse_onnx(path: Path, options: Mapping[str, Any]) -> None:
    """Rewrite the ONNX file at `path` with onnxruntime's transformer fusions (`TaskModule.onnx_fusions`)."""
    from onnxruntime.transformers.optimizer import optimize_model

    # opt_level 0: the pattern fusions only; onnxruntime's own graph optimisations run when a session loads it.
    fused = optimize_model(str(path), opt_level=0, **options)
    log.info("onnxruntime fusions: %s", {op: n for op, n in fused.get_fused_operator_statistics().items() if n})
    fused.save_model_to_file(str(path))


@contextlib.contextmanager
def _quiet_onnx_exporter() -> Iterator[None]:
    """The exporter writes some constants as Constant(value_ints=[]), and onnx_ir warns that an empty list's
    type is ambiguous before it rightly takes INTS: noise to whoever runs `converge export`, dropped there."""
    logger = logging.getLogger("onnx_ir._convenience")

    def keep(record: logging.LogRecord) -> bool:
        return "is an empty sequence" not in record.getMessage()

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def write_torchscript(module: nn.Module, example: Inputs, path: Path) -> None:
    with torch.no_grad(), _quiet_torchscript():
        torch.jit.save(torch.jit.trace(module, tuple(example.values()), check_trace=False), str(path))


@contextlib.contextmanager
def _quiet_torchscript() -> Iterator[None]:
    """TorchScript is deprecated in torch 2.x, yet still what many C++ servers load: use it without the noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*")
        yield


def write_torch_export(module: nn.Module, task: TaskModule, example: Inputs, path: Path) -> None:
    exported = torch.export.export(module, tuple(example.values()), dynamic_shapes=dynamic_shapes(task, example))
    torch.export.save(exported, str(path))


def write_int8(onnx_path: Path, path: Path, calibration: Iterable[dict[str, np.ndarray]], method: str) -> str:
    """Quantize the fp32 ONNX model to int8; return the method used.

    `auto` picks static QDQ quantization, calibrated on validation batches, for
    convolutional networks (dynamic quantization turns Conv into ConvInteger,
    several times slower than fp32 on CPU), and dynamic quantization otherwise
    (MatMul/Gather-heavy models such as embeddings and transformers), where
    `int8_plan` decides per weight whether int8 pays at run time.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = path.with_name("prepared.onnx")
    quant_pre_process(str(onnx_path), str(prepared))  # shape inference first: quantize_dynamic fails without it
    if method == "auto":
        has_conv = any(node.op_type == "Conv" for node in onnx.load(str(prepared)).graph.node)
        method = "static" if has_conv else "dynamic"
    if method == "static":
        class Batches(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = iter(calibration)

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.batches, None)

        quantize_static(str(prepared), str(path), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    elif method == "dynamic":
        from converge.exporting import int8_plan  # imports onnx: only when an int8 copy is asked for

        int8_plan.quantize_dynamic_where_it_pays(prepared, path)
    else:
        from converge.errors import ConfigError

        raise ConfigError(f"export.int8_method must be auto, static or dynamic, got '{method}'")
    prepared.unlink()
    return method


def runner(format_name: str, path: Path) -> Runner:
    """A callable that runs an exported file on its named inputs (torch tensors) and returns its output."""
    if format_name in ("onnx", "int8"):
        from converge.runtime.bundle import onnx_session

        session = onnx_session(path)

        def run_onnx(inputs: Inputs) -> torch.Tensor:
            return torch.from_numpy(session.run(None, {name: tensor.numpy() for name, tensor in inputs.items()})[0])

        return run_onnx
    if format_name == "torchscript":
        with _quiet_torchscript():
            module = torch.jit.load(str(path))
    else:
        module = torch.export.load(str(path)).module()

    def run_torch(inputs: Inputs) -> torch.Tensor:
        with torch.no_grad():
            return module(*inputs.values())

    return run_torch

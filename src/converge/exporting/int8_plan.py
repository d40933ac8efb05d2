"""Dynamic int8: which weights of a graph compute in int8 at run time, and which are only stored as int8.

onnxruntime's `quantize_dynamic` turns every MatMul into DynamicQuantizeLinear +
MatMulInteger and every table lookup into an int8 Gather + DequantizeLinear.
That pays where int8 arithmetic, or reading a quarter of the bytes, saves more
than the extra kernels cost: large matrices, and tables too big for the CPU's
caches. On small ones it is a loss, and in an embedding model at batch 64
nearly every weight is small (MovieLens MF: int8 0.65-0.88x the speed of fp32).

So each weight of a Gather, MatMul, Gemm or Conv gets one of two schemes:

- **run time**: a MatMul/Gemm weight of at least `MIN_RUNTIME_MATMUL_ELEMENTS`
  (at 64 rows, int8 arithmetic measured 1.25x the speed of fp32 at 128x128,
  0.98x at 64x64, 0.93x for MovieLens's 33x129 feature maps in their graph),
  or a lookup table of at least `MIN_RUNTIME_TABLE_BYTES` in fp32 (int8 lookups
  measured 1.04-1.32x fp32 on 122-488 MB tables, 0.65-0.99x on 1-49 MB ones
  that the caches hold);
- **load time**: every other one is stored as int8 with a scale per output
  channel (per row of a table) and dequantized by Cast + Mul, which
  onnxruntime's constant folding evaluates once when the session loads: the
  file is as small, and the graph that runs is the fp32 graph.

Run-time weights get a scale per output channel: fine-tuned MiniLM's int8 logits
came within 0.17 of fp32 that way, 0.82 with one scale per tensor, which cost
1.0 point of validation accuracy (4 of 390 snippets).

Conv weights are always stored (ConvInteger is several times slower than
fp32 on CPU; calibrated static int8 is the route to int8 convolutions), and a
MatMul of two activations is left alone (no weight to shrink).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

log = logging.getLogger("converge")
MIN_RUNTIME_MATMUL_ELEMENTS = 128 * 128
MIN_RUNTIME_TABLE_BYTES = 64 * 2**20
PER_TENSOR = None  # no channel axis: one scale for the whole weight
MIN_SLICE_ELEMENTS = 16  # a scale per slice of fewer (a bias table's single values) would outweigh them


@dataclass
class Int8Plan:
    runtime_nodes: list[str] = field(default_factory=list)  # for quantize_dynamic(nodes_to_quantize=...)
    stored_weights: dict[str, int | None] = field(default_factory=dict)  # initializer -> channel axis of its scales

    def describe(self) -> str:
        return (f"int8 arithmetic at run time in {len(self.runtime_nodes)} node(s) {self.runtime_nodes}; "
                f"{len(self.stored_weights)} weight(s) stored as int8, dequantized at load "
                f"{sorted(self.stored_weights)}")


def plan(model: onnx.ModelProto, min_matmul_elements: int = MIN_RUNTIME_MATMUL_ELEMENTS,
         min_table_bytes: int = MIN_RUNTIME_TABLE_BYTES) -> Int8Plan:
    """The scheme of every float32 weight of a Gather, MatMul, Gemm or Conv in `model`'s main graph."""
    weights = {name: tensor for name, tensor in _constants(model).items() if tensor.data_type == TensorProto.FLOAT}
    chosen = Int8Plan()
    axes: dict[str, set[int | None]] = {}
    for node in model.graph.node:
        found = _weight_of(node)
        if found is None or found[0] not in weights:
            continue
        name, axis = found
        elements = int(np.prod(weights[name].dims))
        runtime = ((node.op_type == "Gather" and elements * 4 >= min_table_bytes)
                   or (node.op_type in ("MatMul", "Gemm") and elements >= min_matmul_elements))
        if runtime and node.name:  # quantize_dynamic addresses nodes by name
            chosen.runtime_nodes.append(node.name)
        else:
            dims = list(weights[name].dims)
            per_slice = elements // dims[axis] if len(dims) > 1 and dims[axis] else 0
            axes.setdefault(name, set()).add(axis % len(dims) if per_slice >= MIN_SLICE_ELEMENTS else PER_TENSOR)
    # A weight two nodes read along different axes gets one scale (a tied embedding and output layer).
    chosen.stored_weights = {name: found.pop() if len(found) == 1 else PER_TENSOR for name, found in axes.items()}
    return chosen


def _constants(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """The initializers that are constants: one also listed in `graph.input` is only a default, which a caller
    may override at run time, so it keeps its float32 values."""
    overridable = {value.name for value in model.graph.input}
    return {tensor.name: tensor for tensor in model.graph.initializer if tensor.name not in overridable}


def _weight_of(node: onnx.NodeProto) -> tuple[str, int] | None:
    """(the weight input of `node`, its output-channel axis), for the op types the plan covers."""
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Gather":
        return node.input[0], int(attributes.get("axis", 0))  # one scale per looked-up row
    if node.op_type == "MatMul":
        return node.input[1], -1
    if node.op_type == "Gemm":
        return node.input[1], 0 if attributes.get("transB", 0) else 1
    if node.op_type == "Conv":
        return node.input[1], 0
    return None


def store_as_int8(model: onnx.ModelProto, weights: dict[str, int | None]) -> None:
    """Replace each named float32 initializer still in `model` by int8 values and float scales (symmetric, one
    per slice along its axis), dequantized by Cast + Mul nodes that constant folding evaluates at load time.
    (DequantizeLinear would be the usual spelling, but onnxruntime keeps it out of constant folding to fuse it
    with the op after it, and would dequantize the whole table on every call.)"""
    initializers = _constants(model)
    dequantize = []
    for name, axis in sorted(weights.items()):
        if name not in initializers:  # quantize_dynamic replaced it everywhere, or it can be overridden
            continue
        values = numpy_helper.to_array(initializers[name])
        reduce = None if axis is PER_TENSOR else tuple(a for a in range(values.ndim) if a != axis)
        scale = np.abs(values).max(axis=reduce, keepdims=True) / 127.0
        scale[scale == 0] = 1.0  # an all-zero slice (a padding row) stays zero
        quantized = np.clip(np.rint(values / scale), -127, 127).astype(np.int8)
        model.graph.initializer.remove(initializers[name])
        model.graph.initializer.extend([numpy_helper.from_array(quantized, f"{name}_int8"),
                                        numpy_helper.from_array(scale.astype(np.float32), f"{name}_int8_scale")])
        dequantize += [helper.make_node("Cast", [f"{name}_int8"], [f"{name}_int8_float"], name=f"{name}_int8_cast",
                                        to=TensorProto.FLOAT),
                       helper.make_node("Mul", [f"{name}_int8_float", f"{name}_int8_scale"], [name],
                                        name=f"{name}_int8_dequantize")]
    nodes = dequantize + list(model.graph.node)  # before their consumers: the graph stays topologically sorted
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def quantize_dynamic_where_it_pays(source: Path, target: Path, min_matmul_elements: int = MIN_RUNTIME_MATMUL_ELEMENTS,
                                   min_table_bytes: int = MIN_RUNTIME_TABLE_BYTES) -> Int8Plan:
    """Write `source` (shape-inferred by quant_pre_process) to `target` as dynamic int8, following `plan`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(source))
    chosen = plan(model, min_matmul_elements, min_table_bytes)
    if chosen.runtime_nodes:  # (an empty nodes_to_quantize would mean every node)
        quantize_dynamic(model, str(target), weight_type=QuantType.QInt8, nodes_to_quantize=chosen.runtime_nodes,
                         per_channel=True)
        model = onnx.load(str(target))
    store_as_int8(model, chosen.stored_weights)
    onnx.save(model, str(target))
    log.info("dynamic int8: %s", chosen.describe())
    return chosen

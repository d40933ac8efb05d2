"""Dynamic int8 picks, per weight, int8 arithmetic at run time or int8 storage dequantized at load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

from converge.exporting.int8_plan import plan, quantize_dynamic_where_it_pays, store_as_int8

ROWS, DIM, HIDDEN = 500, 64, 128  # DIM x HIDDEN: half the smallest matrix int8 arithmetic pays for


def _model(path: Path) -> Path:
    """ids -> embedding rows (a table and a bias table) -> a wide MatMul -> a narrow Gemm, plus a MatMul of two
    activations: every case of the plan in one graph."""
    rng = np.random.default_rng(0)
    weights = {"table": rng.normal(0, 0.1, (ROWS, DIM)), "bias_table": rng.normal(0, 0.1, (ROWS, 1)),
               "wide": rng.normal(0, 0.1, (DIM, HIDDEN)), "narrow": rng.normal(0, 0.1, (4, HIDDEN))}
    nodes = [helper.make_node("Gather", ["table", "ids"], ["rows"], name="lookup"),
             helper.make_node("Gather", ["bias_table", "ids"], ["bias"], name="lookup_bias"),
             helper.make_node("MatMul", ["rows", "wide"], ["hidden"], name="wide_matmul"),
             helper.make_node("Gemm", ["hidden", "narrow"], ["scores"], name="narrow_gemm", transB=1),
             helper.make_node("MatMul", ["scores", "mix"], ["mixed"], name="activations_matmul"),
             helper.make_node("Add", ["mixed", "bias"], ["out"], name="add")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"]),
                     helper.make_tensor_value_info("mix", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(value.astype(np.float32), name) for name, value in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.save(model, str(path))
    return path


def _run(path: Path, feeds: dict[str, np.ndarray], optimized: Path | None = None) -> np.ndarray:
    options = onnxruntime.SessionOptions()
    if optimized:
        options.optimized_model_filepath = str(optimized)
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_int8_arithmetic_only_for_weights_large_enough_to_pay(tmp_path: Path) -> None:
    model = onnx.load(str(_model(tmp_path / "model.onnx")))
    chosen = plan(model, min_matmul_elements=DIM * HIDDEN, min_table_bytes=ROWS * DIM * 4)
    assert chosen.runtime_nodes == ["lookup", "wide_matmul"]
    # the bias table's rows hold one value each: one scale for the table; the Gemm's weight is (out, in): rows
    assert chosen.stored_weights == {"bias_table": None, "narrow": 0}
    default = plan(model)  # the real thresholds: this small graph computes nothing in int8
    assert default.runtime_nodes == []
    assert default.stored_weights == {"table": 0, "bias_table": None, "wide": 1, "narrow": 0}


def test_weights_stored_as_int8_are_folded_when_the_session_loads(tmp_path: Path) -> None:
    """A quarter of the bytes on disk, and after loading exactly the fp32 graph: no dequantization per call."""
    source = _model(tmp_path / "model.onnx")
    target = tmp_path / "model.int8.onnx"
    quantize_dynamic_where_it_pays(source, target)
    assert source.stat().st_size / target.stat().st_size > 3.5
    feeds = {"ids": np.arange(0, ROWS, 7, dtype=np.int64), "mix": np.eye(4, dtype=np.float32)}
    fp32 = _run(source, feeds, tmp_path / "fp32.opt.onnx")
    int8 = _run(target, feeds, tmp_path / "int8.opt.onnx")
    assert np.abs(int8 - fp32).max() <= 0.02 * np.abs(fp32).max()
    ops = [[node.op_type for node in onnx.load(str(tmp_path / name)).graph.node]
           for name in ("fp32.opt.onnx", "int8.opt.onnx")]
    assert ops[1] == ops[0] and "Cast" not in ops[1]


def test_a_weight_shared_by_a_runtime_matmul_and_a_stored_lookup_serves_both(tmp_path: Path) -> None:
    """A tied matrix (rows looked up by id, and multiplied with): int8 arithmetic in the MatMul, int8 storage
    for the lookup, and no fp32 copy left in the file."""
    rng = np.random.default_rng(1)
    tied = numpy_helper.from_array(rng.normal(0, 0.1, (DIM, 2 * HIDDEN)).astype(np.float32), "tied")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["tied", "ids"], ["rows"], name="lookup"),
         helper.make_node("MatMul", ["x", "tied"], ["product"], name="matmul"),
         helper.make_node("Add", ["rows", "product"], ["out"], name="add")],
        "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"]),
              helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", DIM])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 2 * HIDDEN])], [tied])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    source, target = tmp_path / "tied.onnx", tmp_path / "tied.int8.onnx"
    onnx.save(model, str(source))
    chosen = quantize_dynamic_where_it_pays(source, target)  # the real thresholds: DIM x 2 HIDDEN is just enough
    assert chosen.runtime_nodes == ["matmul"] and chosen.stored_weights == {"tied": 0}
    written = onnx.load(str(target))
    assert "MatMulInteger" in {node.op_type for node in written.graph.node}
    floats = sum(int(np.prod(t.dims)) for t in written.graph.initializer if t.data_type == TensorProto.FLOAT)
    assert floats <= DIM + 2 * HIDDEN  # scales: one per row of the stored copy, per output channel at run time
    feeds = {"ids": np.array([0, 5, DIM - 1], dtype=np.int64), "x": rng.normal(0, 1, (3, DIM)).astype(np.float32)}
    fp32, int8 = _run(source, feeds), _run(target, feeds)
    assert np.abs(int8 - fp32).max() <= 0.05 * np.abs(fp32).max()


def test_an_initializer_listed_as_a_graph_input_keeps_its_float_values(tmp_path: Path) -> None:
    """An initializer that is also a graph input is a default a caller may override: not a constant to shrink."""
    model = onnx.load(str(_model(tmp_path / "model.onnx")))
    narrow = next(tensor for tensor in model.graph.initializer if tensor.name == "narrow")
    model.graph.input.append(helper.make_tensor_value_info("narrow", TensorProto.FLOAT, list(narrow.dims)))
    assert "narrow" not in plan(model).stored_weights
    store_as_int8(model, {"narrow": 0, "wide": 1})
    kept = {tensor.name: tensor for tensor in model.graph.initializer}
    assert "narrow" in kept and kept["narrow"].data_type == TensorProto.FLOAT and "narrow_int8" not in kept
    assert "wide" not in kept and kept["wide_int8"].data_type == TensorProto.INT8  # a constant is still stored
    onnx.save(model, str(tmp_path / "stored.onnx"))
    feeds = {"ids": np.arange(0, ROWS, 7, dtype=np.int64), "mix": np.eye(4, dtype=np.float32)}
    default = _run(tmp_path / "stored.onnx", feeds)
    overridden = _run(tmp_path / "stored.onnx", {**feeds, "narrow": np.zeros(list(narrow.dims), np.float32)})
    assert not np.allclose(default, overridden)  # the caller's value still reaches the Gemm

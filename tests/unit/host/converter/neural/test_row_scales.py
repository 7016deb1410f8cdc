"""Dynamic quantization made per row (``row_scales``): the rewritten products against a numpy
reference of per-row quantization, rows that never reach each other, what it refuses, and an
LSTM's int8 weights. Real onnxruntime sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from edge_agent.errors import ModelError
from edge_agent.neural.backends import get_backend
from edge_agent_host.converter.builders import mlp_onnx, random_mlp, recurrent_onnx
from edge_agent_host.converter.neural.row_scales import (
    int8_recurrent_weights,
    per_row_activations,
)


def run_inputs(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    """The first output, from the device backend's session (on an x86 CPU without VNNI in
    onnxruntime's exact int8 mode, without which u8 x s8 products saturate at 16 bits)."""
    session = get_backend("onnxruntime").load(model.SerializeToString(), 1)
    session.set_batch(len(next(iter(feed.values()))))
    return np.array(session.run(feed)[session.output_specs[0].name], copy=True)


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return run_inputs(model, {model.graph.input[0].name: x})


def dynamic(model: onnx.ModelProto, tmp: Path) -> onnx.ModelProto:
    onnx.save(model, tmp / "float.onnx")
    quantize_dynamic(str(tmp / "float.onnx"), str(tmp / "dynamic.onnx"), per_channel=True,
                     weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    return onnx.load(str(tmp / "dynamic.onnx"))


def per_row_reference(x: np.ndarray, model: onnx.ModelProto, b: np.ndarray) -> np.ndarray:
    """One product with per-row uint8 activations on the model's own int8 weights (as
    onnxruntime quantized them: ``W_quantized``, ``W_scale``, ``W_zero_point``), in float64."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    w_q = inits["W0_quantized"].astype(np.float64) - inits["W0_zero_point"].astype(np.float64)
    w_scale = inits["W0_scale"].astype(np.float64)
    lo = np.minimum(x.min(axis=1, keepdims=True), 0.0)
    hi = np.maximum(x.max(axis=1, keepdims=True), 0.0)
    scale = np.maximum((hi - lo) / 255.0, np.finfo(np.float32).tiny)
    zero = np.clip(np.round(-lo / scale), 0, 255)
    q = np.clip(np.round(x / scale) + zero, 0, 255)
    return ((q - zero) @ w_q) * scale * w_scale + b


def test_each_row_is_quantized_on_its_own_range_and_no_row_reaches_another(
    tmp_path: Path,
) -> None:
    W, b = random_mlp((12, 5), seed=1)[0]
    model = dynamic(mlp_onnx([(W, b)], 1, 12), tmp_path)
    assert [n.op_type for n in model.graph.node].count("DynamicQuantizeLinear") == 1
    assert per_row_activations(model) == 1
    ops = {n.op_type for n in model.graph.node}
    assert "DynamicQuantizeLinear" not in ops
    assert {"QuantizeLinear", "MatMulInteger"} <= ops
    onnx.checker.check_model(model)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (6, 1, 12)).astype(np.float32)
    x[1] *= 1000.0  # a row far out of range
    x[2] = np.abs(x[2])  # all positive: zero point 0
    x[3] = 0.0  # all zeros: the smallest scale, no division by zero
    got = run(model, x)
    want = per_row_reference(x.reshape(6, 12).astype(np.float64), model, b)
    # To float32 rounding, relative to each row's own magnitude (row 1 is 1,000 times row 0's).
    scale = np.abs(want).max(axis=1, keepdims=True) + 1e-30
    assert np.all(np.abs(got - want) <= 1e-5 * scale), np.abs(got - want) / scale
    # Every row, alone, gives exactly what it gives in the batch.
    for i in range(len(x)):
        np.testing.assert_array_equal(run(model, x[i : i + 1])[0], got[i])


def test_a_weight_shared_by_several_products_is_rewritten_for_each(tmp_path: Path) -> None:
    """Two MatMuls read one weight (as an unrolled LSTM's steps do): each product gets its
    rows; the column sums are stored once."""
    W = np.random.default_rng(2).normal(0, 0.3, (4, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "W"], ["ya"]),
         helper.make_node("MatMul", ["b", "W"], ["yb"]),
         helper.make_node("Add", ["ya", "yb"], ["y"])],
        "shared",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 4]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(W, "W")],
    )
    float_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    float_model.ir_version = 8
    model = dynamic(float_model, tmp_path)
    assert per_row_activations(model) == 2
    assert sum(1 for i in model.graph.initializer if i.name.endswith("_colsum")) == 1
    rng = np.random.default_rng(3)
    a, b = (rng.normal(0, 1, (5, 4)).astype(np.float32) for _ in range(2))
    y = run_inputs(model, {"a": a, "b": b})
    np.testing.assert_allclose(y, a @ W + b @ W, atol=0.05)
    for i in range(5):
        alone = run_inputs(model, {"a": a[i : i + 1], "b": b[i : i + 1]})
        np.testing.assert_array_equal(alone[0], y[i])


def test_what_cannot_be_made_per_row_is_refused_in_one_line(tmp_path: Path) -> None:
    W, b = random_mlp((6, 2), seed=4)[0]
    model = dynamic(mlp_onnx([(W, b)], 1, 6), tmp_path)
    old = onnx.ModelProto()
    old.CopyFrom(model)
    del old.opset_import[:]
    old.opset_import.append(helper.make_opsetid("", 11))
    with pytest.raises(ModelError, match=r"^dynamic quantization with per-row scales needs "
                                         r"opset 13 or newer, the model has 11 \(--mode static\)$"):
        per_row_activations(old)
    # The quantized input read by something else than a MatMulInteger.
    dql = next(n for n in model.graph.node if n.op_type == "DynamicQuantizeLinear")
    model.graph.node.append(helper.make_node("Identity", [dql.output[0]], ["leak"]))
    with pytest.raises(ModelError, match=r"is read by Identity, MatMulInteger: only "
                                         r"MatMulInteger's input can get per-row scales"):
        per_row_activations(model)
    # A model without dynamic quantization is left alone.
    plain = mlp_onnx([(W, b)], 1, 6)
    assert per_row_activations(plain) == 0


def test_an_lstms_weights_are_stored_in_int8_and_read_through_dequantize(
    tmp_path: Path,
) -> None:
    model = recurrent_onnx("LSTM", 4, 3, 8, 2, seed=5)
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    x = np.random.default_rng(6).normal(0, 1, (7, 4, 3)).astype(np.float32)
    want = run(model, x)
    assert int8_recurrent_weights(model) == 2
    stored = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert not {"W", "R"} & set(stored)  # the float weights are gone
    for name in ("W", "R"):
        q, scale = stored[f"{name}_int8"], stored[f"{name}_scale"]
        assert q.dtype == np.int8
        assert scale.shape == (weights[name].shape[1],)  # one per gate row
        np.testing.assert_allclose(q * scale[None, :, None], weights[name],
                                   atol=float(scale.max()) / 2 + 1e-7)
    onnx.checker.check_model(model)
    got = run(model, x)
    np.testing.assert_allclose(got, want, atol=0.05)
    for i in range(len(x)):  # the LSTM in float: each row its own, to float rounding
        np.testing.assert_allclose(run(model, x[i : i + 1])[0], got[i], atol=1e-5)
    assert int8_recurrent_weights(model) == 0  # nothing float left to quantize

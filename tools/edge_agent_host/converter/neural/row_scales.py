"""Dynamic quantization that keeps each agent to itself: activation scales per row, not per batch.

onnxruntime's ``quantize_dynamic`` quantizes an activation with **one** scale and zero point per
call, computed by ``DynamicQuantizeLinear`` over the whole tensor, and its ``DynamicQuantizeLSTM``
does the same inside the LSTM at every step. A device steps all the agents of a group in one
call, so one agent's large input (a faulty or unnormalised sensor) widens the scale every other
agent is quantized with, and changes their outputs: with ``examples/sensor_policy.onnx``, 1,000
agents and agent 0's observation x300, 710 of the other 999 took another action
(``benchmarks/bench_neural_coupling.py``, docs/host-tool.md). After this module's rewrite no
value of one row reaches another row's output:

* :func:`per_row_activations`: every ``DynamicQuantizeLinear`` that feeds ``MatMulInteger``
  (``MatMul`` and ``Gemm`` in dynamic mode) becomes a quantization **per row** of the product's
  input: the input seen as ``(rows, K)`` (every dimension but the last one is a row: an agent,
  or an agent's time step), each row's own ``[min, max]`` (with 0 in it) mapped onto uint8, by
  ``QuantizeLinear`` along axis 0. onnxruntime's ``MatMulInteger`` takes only one zero point
  for its first input, so the product runs with none and each row's zero point comes off after:
  ``(q - z_r) @ (W - z_W) = q @ (W - z_W) - z_r * colsum(W - z_W)``, in int32, exact;
* :func:`int8_recurrent_weights`: an ``LSTM``'s weights ``W`` and ``R`` become int8 (symmetric,
  one scale per gate row) read through ``DequantizeLinear``: the LSTM itself runs in float, on
  each agent's own row.

An agent's outputs are then the same, bit for bit, whether its batch holds it alone or 999
others with extreme inputs (an LSTM's up to float rounding: a batch of one sums in another
order), ``tests/integration/kinds/test_batch_independence.py``.
What it costs per tick, measured: docs/host-tool.md.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np

from edge_agent.errors import ModelError

__all__ = [
    "DYNAMIC_ACTIVATION_OPS",
    "DYNAMIC_SCHEME",
    "DYNAMIC_WEIGHT_OPS",
    "int8_recurrent_weights",
    "per_row_activations",
]

#: The op types dynamic mode quantizes with per-row activation scales (onnxruntime turns Gemm
#: into MatMul, then MatMulInteger).
DYNAMIC_ACTIVATION_OPS = frozenset({"MatMul", "Gemm"})
#: The recurrent op types whose weights dynamic mode stores in int8
#: (:func:`int8_recurrent_weights`).
DYNAMIC_WEIGHT_OPS = frozenset({"LSTM"})
#: The manifest's quantization scheme of a dynamic model rewritten here (``onnx-dynamic-u8s8``,
#: before: one activation scale per batch).
DYNAMIC_SCHEME = "onnx-dynamic-row-u8s8"
#: ``QuantizeLinear`` along an axis and ``Squeeze`` with axes as an input need opset 13.
MIN_OPSET = 13


def _opset(model: Any) -> int:
    """The model's standard (ai.onnx) opset."""
    versions = [int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")]
    return max(versions, default=0)


class _Graph:
    """A model's graph while nodes are replaced: who produces and who reads each tensor, its
    initializers, and fresh names."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.graph = model.graph
        self.opset = _opset(model)
        self.initializers = {init.name: init for init in self.graph.initializer}
        self.producer = {out: node for node in self.graph.node for out in node.output}
        self.readers: dict[str, list[Any]] = {}
        for node in self.graph.node:
            for name in node.input:
                if name:
                    self.readers.setdefault(name, []).append(node)
        self.names = {out for node in self.graph.node for out in node.output}
        self.names |= set(self.initializers) | {v.name for v in self.graph.input}
        self.added: list[Any] = []

    def fresh(self, base: str) -> str:
        name, i = base, 0
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def constant(self, base: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.fresh(base)
        self.added.append(numpy_helper.from_array(value, name))
        return name

    def only_reader(self, tensor: str, op_type: str, what: str) -> Any:
        readers = self.readers.get(tensor, [])
        if len(readers) != 1 or readers[0].op_type != op_type:
            found = ", ".join(sorted(r.op_type for r in readers)) or "nothing"
            raise ModelError(
                f"dynamic quantization: {what} {tensor!r} is read by {found}, where a "
                f"{op_type} was expected: cannot give it per-row scales (--mode static)"
            )
        return readers[0]

    def weight(self, name: str, what: str) -> np.ndarray:
        from onnx import numpy_helper

        if name not in self.initializers:
            raise ModelError(
                f"dynamic quantization: {what} {name!r} is not a constant of the model: cannot "
                "give its product per-row scales (--mode static)"
            )
        return np.asarray(numpy_helper.to_array(self.initializers[name]))


def per_row_activations(model: Any) -> int:
    """Rewrite ``model`` (onnxruntime's dynamic quantization) in place so that every activation
    is quantized per row (module docstring); returns how many products were rewritten.

    ModelError in one line when a ``DynamicQuantizeLinear`` is used in a way this does not know
    (it then leaves nothing half done: the caller discards the model).
    """
    g = _Graph(model)
    quantizers = [n for n in g.graph.node if n.op_type == "DynamicQuantizeLinear"]
    if not quantizers:
        return 0
    if g.opset < MIN_OPSET:
        raise ModelError(
            f"dynamic quantization with per-row scales needs opset {MIN_OPSET} or newer, the "
            f"model has {g.opset} (--mode static)"
        )
    constants = _RowConstants(g)
    replaced: dict[int, list[Any]] = {}  # id of the node whose place the new nodes take
    dropped: set[int] = set()
    colsums: dict[tuple[str, str], str] = {}  # a weight's column sums, once however shared
    for dql in quantizers:
        x: str = dql.input[0]
        q_out, scale_out, zp_out = (str(name) for name in dql.output)
        products = g.readers.get(q_out, [])
        if not products or any(p.op_type != "MatMulInteger" for p in products):
            found = ", ".join(sorted({p.op_type for p in products})) or "nothing"
            raise ModelError(
                f"dynamic quantization: the quantized {x!r} is read by {found}: only "
                "MatMulInteger's input can get per-row scales (--mode static)"
            )
        stem = g.fresh(f"{x}_rows")
        widths: set[int] = set()
        nodes: list[Any] = []
        for product in products:
            width, product_nodes = _product_per_row(
                g,
                product,
                stem,
                scale_out=scale_out,
                zp_out=zp_out,
                colsums=colsums,
                dropped=dropped,
            )
            widths.add(width)
            nodes += product_nodes
        if len(widths) != 1:
            raise ModelError(
                f"dynamic quantization: {x!r} is multiplied by weights of {sorted(widths)} rows "
                "(--mode static)"
            )
        replaced[id(dql)] = _rows_quantized(g, constants, x, stem, widths.pop()) + nodes
    nodes_out: list[Any] = []
    for node in g.graph.node:
        if id(node) in replaced:
            nodes_out.extend(replaced[id(node)])
        elif id(node) not in dropped:
            nodes_out.append(node)
    del g.graph.node[:]
    g.graph.node.extend(nodes_out)
    g.graph.initializer.extend(g.added)
    _drop_unused_initializers(g.graph)
    return sum(1 for n in nodes_out if n.op_type == "MatMulInteger")


class _RowConstants:
    """The scalar constants every per-row quantization reads (added to the graph once)."""

    def __init__(self, g: _Graph) -> None:
        self.axis1 = g.constant("row_scales_axis1", np.array([1], dtype=np.int64))
        self.zero = g.constant("row_scales_zero", np.array(0.0, dtype=np.float32))
        self.levels = g.constant("row_scales_levels", np.array(255.0, dtype=np.float32))
        self.tiny = g.constant(
            "row_scales_tiny", np.array(np.finfo(np.float32).tiny, dtype=np.float32)
        )


def _rows_quantized(g: _Graph, c: _RowConstants, x: str, stem: str, K: int) -> list[Any]:
    """Nodes that quantize ``x`` seen as ``(rows, K)``, each row on its own ``[min, max]`` (0
    in it) over uint8: ``{stem}_q`` ``(rows, K)`` uint8, ``{stem}_scale`` ``(rows, 1)`` float,
    ``{stem}_zp32`` ``(rows, 1)`` int32, and ``{stem}_lead``, ``x``'s shape but the last
    dimension."""
    from onnx import TensorProto, helper

    def reduce(op: str, source: str, out: str) -> Any:
        if g.opset >= 18:
            return helper.make_node(op, [source, c.axis1], [out], keepdims=1)
        return helper.make_node(op, [source], [out], axes=[1], keepdims=1)

    rows_shape = g.constant(f"{stem}_shape", np.array([-1, K], dtype=np.int64))
    s = stem
    return [
        helper.make_node("Shape", [x], [f"{s}_lead"], end=-1),
        helper.make_node("Reshape", [x, rows_shape], [f"{s}_x"]),
        reduce("ReduceMax", f"{s}_x", f"{s}_max0"),
        reduce("ReduceMin", f"{s}_x", f"{s}_min0"),
        helper.make_node("Max", [f"{s}_max0", c.zero], [f"{s}_max"]),
        helper.make_node("Min", [f"{s}_min0", c.zero], [f"{s}_min"]),
        helper.make_node("Sub", [f"{s}_max", f"{s}_min"], [f"{s}_span"]),
        helper.make_node("Div", [f"{s}_span", c.levels], [f"{s}_step"]),
        helper.make_node("Max", [f"{s}_step", c.tiny], [f"{s}_scale"]),  # (rows, 1)
        helper.make_node("Div", [f"{s}_min", f"{s}_scale"], [f"{s}_low"]),
        helper.make_node("Neg", [f"{s}_low"], [f"{s}_zpf0"]),
        helper.make_node("Round", [f"{s}_zpf0"], [f"{s}_zpf1"]),
        helper.make_node("Clip", [f"{s}_zpf1", c.zero, c.levels], [f"{s}_zpf"]),
        helper.make_node("Cast", [f"{s}_zpf"], [f"{s}_zp32"], to=TensorProto.INT32),
        helper.make_node("Cast", [f"{s}_zpf"], [f"{s}_zp8_2d"], to=TensorProto.UINT8),
        helper.make_node("Squeeze", [f"{s}_zp8_2d", c.axis1], [f"{s}_zp8"]),
        helper.make_node("Squeeze", [f"{s}_scale", c.axis1], [f"{s}_scale1"]),
        helper.make_node(
            "QuantizeLinear", [f"{s}_x", f"{s}_scale1", f"{s}_zp8"], [f"{s}_q"], axis=0
        ),
    ]


def _product_per_row(
    g: _Graph,
    product: Any,
    stem: str,
    *,
    scale_out: str,
    zp_out: str,
    colsums: dict[tuple[str, str], str],
    dropped: set[int],
) -> tuple[int, list[Any]]:
    """``(K, nodes)``: the nodes that take the place of one ``MatMulInteger`` -> ``Cast`` ->
    ``Mul`` (by the input scale times the weight scale) of onnxruntime's dynamic quantization,
    on the rows :func:`_rows_quantized` made of its input (``stem``); the replaced nodes' ids
    go into ``dropped``."""
    from onnx import TensorProto, helper

    _, w, a_zp, w_zp = [*product.input, "", "", ""][:4]
    if a_zp != zp_out:
        raise ModelError(
            f"dynamic quantization: {product.name or 'a MatMulInteger'} does not take its "
            "input's zero point: cannot give it per-row scales (--mode static)"
        )
    weights = g.weight(w, "the weight").astype(np.int32)
    if weights.ndim != 2:
        raise ModelError(
            f"dynamic quantization: weight {w!r} has {weights.ndim} dimensions, where a matrix "
            "(K, M) was expected (--mode static)"
        )
    K, M = weights.shape
    if (w, w_zp) not in colsums:
        w_zero = g.weight(w_zp, "the weight zero point").astype(np.int32) if w_zp else 0
        colsum = (weights - w_zero).sum(axis=0, dtype=np.int64)
        if np.abs(colsum).max(initial=0) * 255 >= 2**31:
            raise ModelError(
                f"dynamic quantization: weight {w!r} is too large for int32 products with "
                "per-row zero points (--mode static)"
            )
        colsums[w, w_zp] = g.constant(f"{w}_colsum", colsum.astype(np.int32).reshape(1, M))
    cast = g.only_reader(product.output[0], "Cast", "the product")
    rescale = g.only_reader(cast.output[0], "Mul", "the product in float")
    other = [i for i in rescale.input if i != cast.output[0]]
    scales_mul = g.producer.get(other[0]) if len(other) == 1 else None
    if scales_mul is None or scales_mul.op_type != "Mul" or scale_out not in scales_mul.input:
        raise ModelError(
            "dynamic quantization: a product's float rescale is not the input scale times the "
            "weight scale (--mode static)"
        )
    w_scale = next(i for i in scales_mul.input if i != scale_out)
    p = g.fresh(f"{product.output[0]}_rows")
    width = g.constant(f"{p}_width", np.array([M], dtype=np.int64))
    dropped |= {id(product), id(cast), id(rescale)}
    if all(r is rescale for r in g.readers.get(scales_mul.output[0], [])):
        dropped.add(id(scales_mul))
    return K, [
        helper.make_node("MatMulInteger", [f"{stem}_q", w, "", w_zp], [f"{p}_raw"]),
        helper.make_node("Mul", [f"{stem}_zp32", colsums[w, w_zp]], [f"{p}_offset"]),
        helper.make_node("Sub", [f"{p}_raw", f"{p}_offset"], [f"{p}_int"]),
        helper.make_node("Cast", [f"{p}_int"], [f"{p}_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [f"{stem}_scale", w_scale], [f"{p}_scales"]),
        helper.make_node("Mul", [f"{p}_float", f"{p}_scales"], [f"{p}_rows"]),
        helper.make_node("Concat", [f"{stem}_lead", width], [f"{p}_shape"], axis=0),
        helper.make_node("Reshape", [f"{p}_rows", f"{p}_shape"], [rescale.output[0]]),
    ]


def int8_recurrent_weights(model: Any, exclude_nodes: Collection[str] = ()) -> int:
    """Store the weights ``W`` and ``R`` of every ``LSTM`` of ``model`` (but those named in
    ``exclude_nodes``) in int8, read through ``DequantizeLinear`` (module docstring), in place;
    returns how many tensors were quantized. Symmetric, one scale per gate row (axis 1 of
    ``(directions, gates * hidden, inputs)``), zero points 0."""
    from onnx import helper, numpy_helper

    g = _Graph(model)
    done: dict[str, str] = {}
    front: list[Any] = []
    for node in g.graph.node:
        if node.op_type not in DYNAMIC_WEIGHT_OPS or node.name in exclude_nodes:
            continue
        for index in (1, 2):  # W, R
            name = node.input[index] if len(node.input) > index else ""
            if not name or name not in g.initializers:
                continue
            if name not in done:
                weights = np.asarray(numpy_helper.to_array(g.initializers[name]), np.float32)
                if weights.ndim != 3:
                    continue
                scale = np.abs(weights).max(axis=(0, 2)) / 127.0
                scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
                q = np.clip(np.round(weights / scale[None, :, None]), -127, 127).astype(np.int8)
                q_name = g.constant(f"{name}_int8", q)
                s_name = g.constant(f"{name}_scale", scale)
                z_name = g.constant(f"{name}_zero_point", np.zeros(scale.shape, dtype=np.int8))
                out = g.fresh(f"{name}_dequantized")
                front.append(
                    helper.make_node("DequantizeLinear", [q_name, s_name, z_name], [out], axis=1)
                )
                done[name] = out
            node.input[index] = done[name]
    if not done:
        return 0
    nodes = front + list(g.graph.node)
    del g.graph.node[:]
    g.graph.node.extend(nodes)
    g.graph.initializer.extend(g.added)
    _drop_unused_initializers(g.graph)
    return len(done)


def _drop_unused_initializers(graph: Any) -> None:
    used = {name for node in graph.node for name in node.input}
    used |= {out.name for out in graph.output}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)

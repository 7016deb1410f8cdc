"""Small float models with deterministic weights, for tests, benchmarks and demos.

Weights are plain numpy (``layers``: a list of ``(W, b)`` with ``W`` ``(in, out)``, ReLU between
layers, none after the last), so the same network can be written as ONNX here and as Keras in
``tests/data/make_tflite_fixture.py``, and evaluated independently with :func:`mlp_forward`.

* :func:`random_mlp` -- He-initialised weights from a seed;
* :func:`sensor_policy` -- weights that *solve* :class:`edge_agent.sim.sensors.SensorWorld`: the
  first layer computes each class's log-likelihood of an exponentially weighted average of the
  window (``z_k``) and passes it through ReLU as ``[z, -z]`` next to a few seeded random units; the
  second layer recovers ``z`` (plus a small random mix of the extra units). The argmax is the ideal
  observer's guess; with ``window = 1`` it is an observation model for perception;
* :func:`mlp_onnx` -- the MLP as an ONNX model with input ``(batch, T, F)`` (``Flatten`` first);
* :func:`conv_onnx` -- a 1-D convolution over the window: ``(batch, T, F)`` -> transpose ->
  ``Conv`` (``F`` in-channels) -> ReLU -> global average over time -> ``Gemm``;
* :func:`recurrent_onnx` -- an ``LSTM`` or ``GRU`` over the window (``(batch, T, F)`` ->
  transpose to time-major -> recurrent layer -> last hidden state -> ``Gemm``), laid out as
  ``torch.onnx.export`` writes a ``batch_first`` recurrent layer;
* :func:`image_cnn_onnx` -- a small camera classifier on frames ``(batch, C, H, W)`` (or
  ``(batch, H, W, C)``): ``Conv`` 3x3 -> ReLU -> ``Flatten`` (or ``GlobalAveragePool``) ->
  ``Gemm``, with :func:`conv_features` computing the same features in numpy so that the head can
  be fitted to real images (``benchmarks/bench_convert.py`` fits it to scikit-learn's digits).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "OPSET",
    "ImageCnn",
    "Layers",
    "constant_onnx",
    "conv_features",
    "conv_onnx",
    "flatten_onnx",
    "image_cnn_onnx",
    "int8_io_onnx",
    "mlp_forward",
    "mlp_onnx",
    "random_image_cnn",
    "random_mlp",
    "recurrent_onnx",
    "sensor_policy",
]

OPSET = 17
Layers = list[tuple[NDArray[np.float32], NDArray[np.float32]]]


def random_mlp(sizes: Sequence[int], seed: int = 0) -> Layers:
    """He-initialised layers for ``sizes = (in, hidden..., out)``."""
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"sizes must be at least (in, out) with positive entries, got {sizes}")
    rng = np.random.default_rng(seed)
    layers: Layers = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        W = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_in, fan_out)).astype(np.float32)
        b = rng.normal(0.0, 0.1, size=fan_out).astype(np.float32)
        layers.append((W, b))
    return layers


def sensor_policy(
    prototypes: np.ndarray,
    noise: float,
    window: int,
    *,
    hidden: int = 32,
    tau: float = 3.0,
    seed: int = 0,
) -> Layers:
    """Two layers that pick the class of a sensor-world window (module docstring).

    ``prototypes`` ``(K, F)``; input ``(T, F)`` flattened; output ``(K,)`` logits.
    """
    mu = np.asarray(prototypes, dtype=np.float64)
    K, F = mu.shape
    if hidden < 2 * K:
        raise ValueError(f"hidden must be at least 2 * classes = {2 * K}, got {hidden}")
    if noise <= 0 or window < 1 or tau <= 0:
        raise ValueError("noise and tau must be positive and window >= 1")
    weights = np.exp(-(window - 1 - np.arange(window)) / tau)
    weights /= weights.sum()
    inv_var = 1.0 / noise**2
    # z_k = sum_t w_t x_t . mu_k / noise^2 - |mu_k|^2 / (2 noise^2): row t*F + f of the input.
    z_W = (weights[:, None, None] * mu.T[None, :, :]).reshape(window * F, K) * inv_var
    z_b = -0.5 * (mu**2).sum(axis=1) * inv_var
    rng = np.random.default_rng(seed)
    extra = hidden - 2 * K
    W1 = np.concatenate(
        [z_W, -z_W, rng.normal(0, 1.0 / np.sqrt(window * F), size=(window * F, extra))], axis=1
    )
    b1 = np.concatenate([z_b, -z_b, rng.normal(0, 0.1, size=extra)])
    W2 = np.concatenate([np.eye(K), -np.eye(K), rng.normal(0, 0.02, size=(extra, K))], axis=0)
    b2 = np.zeros(K)
    return [
        (W1.astype(np.float32), b1.astype(np.float32)),
        (W2.astype(np.float32), b2.astype(np.float32)),
    ]


def mlp_forward(layers: Layers, x: np.ndarray) -> NDArray[np.float64]:
    """The float64 output of the MLP on ``x`` ``(batch, ...)`` (flattened per item)."""
    h = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    for i, (W, b) in enumerate(layers):
        h = h @ W.astype(np.float64) + b.astype(np.float64)
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return h


def _model(
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto],
    *,
    window: int,
    features: int,
    outputs: int,
    input_name: str,
    output_name: str,
    graph_name: str,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        graph_name,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", window, features])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", outputs])],
        initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edge-agent-host"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def mlp_onnx(
    layers: Layers,
    window: int,
    features: int,
    *,
    input_name: str = "window",
    output_name: str = "logits",
) -> onnx.ModelProto:
    """The MLP as ONNX: input ``(batch, window, features)``, output ``(batch, out)``."""
    if layers[0][0].shape[0] != window * features:
        raise ValueError(
            f"first layer takes {layers[0][0].shape[0]} inputs, window x features is "
            f"{window * features}"
        )
    nodes = [helper.make_node("Flatten", [input_name], ["flat"], axis=1)]
    initializers = []
    current = "flat"
    for i, (W, b) in enumerate(layers):
        last = i == len(layers) - 1
        out = output_name if last else f"h{i}"
        initializers += [numpy_helper.from_array(W, f"W{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Gemm", [current, f"W{i}", f"b{i}"], [out]))
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"]))
            out = f"r{i}"
        current = out
    return _model(
        nodes,
        initializers,
        window=window,
        features=features,
        outputs=int(layers[-1][0].shape[1]),
        input_name=input_name,
        output_name=output_name,
        graph_name="mlp",
    )


def conv_onnx(
    window: int,
    features: int,
    outputs: int,
    *,
    channels: int = 16,
    kernel: int = 3,
    seed: int = 0,
    input_name: str = "window",
    output_name: str = "logits",
) -> tuple[onnx.ModelProto, dict[str, NDArray[np.float32]]]:
    """A 1-D convolution over the window; returns the model and its weights (``conv_w`` ...)."""
    if kernel > window:
        raise ValueError(f"kernel {kernel} is longer than the window {window}")
    rng = np.random.default_rng(seed)
    weights = {
        "conv_w": rng.normal(
            0, np.sqrt(2.0 / (features * kernel)), size=(channels, features, kernel)
        ).astype(np.float32),
        "conv_b": rng.normal(0, 0.1, size=channels).astype(np.float32),
        "out_w": rng.normal(0, np.sqrt(2.0 / channels), size=(channels, outputs)).astype(
            np.float32
        ),
        "out_b": rng.normal(0, 0.1, size=outputs).astype(np.float32),
    }
    nodes = [
        helper.make_node("Transpose", [input_name], ["nft"], perm=[0, 2, 1]),
        helper.make_node("Conv", ["nft", "conv_w", "conv_b"], ["conv"], kernel_shape=[kernel]),
        helper.make_node("Relu", ["conv"], ["act"]),
        helper.make_node("GlobalAveragePool", ["act"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "out_w", "out_b"], [output_name]),
    ]
    initializers = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    model = _model(
        nodes,
        initializers,
        window=window,
        features=features,
        outputs=outputs,
        input_name=input_name,
        output_name=output_name,
        graph_name="conv",
    )
    return model, weights


def flatten_onnx(
    window: int, features: int, *, input_name: str = "window", output_name: str = "flat"
) -> onnx.ModelProto:
    """A model that returns its input window flattened: ``(batch, T, F) -> (batch, T * F)``.

    Shows exactly what a neural agent group feeds its model (tests of window stacking).
    """
    nodes = [helper.make_node("Flatten", [input_name], [output_name], axis=1)]
    return _model(
        nodes,
        [],
        window=window,
        features=features,
        outputs=window * features,
        input_name=input_name,
        output_name=output_name,
        graph_name="flatten",
    )


def constant_onnx(
    window: int,
    features: int,
    values: Sequence[float],
    *,
    input_name: str = "window",
    output_name: str = "logits",
) -> onnx.ModelProto:
    """A model whose output is ``values`` for every item (a ``Gemm`` with zero weights)."""
    bias = np.asarray(values, dtype=np.float32)
    layers: Layers = [(np.zeros((window * features, bias.size), dtype=np.float32), bias)]
    return mlp_onnx(layers, window, features, input_name=input_name, output_name=output_name)


def int8_io_onnx(
    layers: Layers,
    window: int,
    features: int,
    *,
    input_scale: float,
    input_zero_point: int,
    output_scale: float,
    output_zero_point: int,
) -> onnx.ModelProto:
    """The MLP with int8 input and output tensors (DequantizeLinear in, QuantizeLinear out).

    ONNX graph inputs carry no quantization parameters: a device gets them from the manifest.
    """
    inner = mlp_onnx(layers, window, features, input_name="real_in", output_name="real_out")
    nodes = [
        helper.make_node("DequantizeLinear", ["q_in", "in_scale", "in_zp"], ["real_in"]),
        *inner.graph.node,
        helper.make_node("QuantizeLinear", ["real_out", "out_scale", "out_zp"], ["q_out"]),
    ]
    initializers = [
        *inner.graph.initializer,
        numpy_helper.from_array(np.array(input_scale, dtype=np.float32), "in_scale"),
        numpy_helper.from_array(np.array(input_zero_point, dtype=np.int8), "in_zp"),
        numpy_helper.from_array(np.array(output_scale, dtype=np.float32), "out_scale"),
        numpy_helper.from_array(np.array(output_zero_point, dtype=np.int8), "out_zp"),
    ]
    outputs = int(layers[-1][0].shape[1])
    graph = helper.make_graph(
        nodes,
        "int8_io",
        [helper.make_tensor_value_info("q_in", TensorProto.INT8, ["batch", window, features])],
        [helper.make_tensor_value_info("q_out", TensorProto.INT8, ["batch", outputs])],
        initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edge-agent-host"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def recurrent_onnx(
    cell: Literal["LSTM", "GRU"],
    window: int,
    features: int,
    hidden: int,
    outputs: int,
    *,
    seed: int = 0,
    input_name: str = "window",
    output_name: str = "logits",
) -> onnx.ModelProto:
    """An ``LSTM`` or ``GRU`` policy over the window, with seeded weights (module docstring).

    Input ``(batch, window, features)``, output ``(batch, outputs)`` logits from the last hidden
    state. The recurrent weights are ONNX's ``W`` ``(1, G*hidden, features)``, ``R`` ``(1,
    G*hidden, hidden)`` and ``B`` ``(1, 2*G*hidden)`` with ``G`` gates (4 for LSTM, 3 for GRU).
    """
    if cell not in ("LSTM", "GRU"):
        raise ValueError(f"cell must be 'LSTM' or 'GRU', got {cell!r}")
    gates = 4 if cell == "LSTM" else 3
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(hidden)
    weights = {
        "W": rng.uniform(-scale, scale, (1, gates * hidden, features)),
        "R": rng.uniform(-scale, scale, (1, gates * hidden, hidden)),
        "B": rng.uniform(-scale, scale, (1, 2 * gates * hidden)),
        "out_w": rng.normal(0, np.sqrt(2.0 / hidden), (hidden, outputs)),
        "out_b": rng.normal(0, 0.1, outputs),
    }
    nodes = [
        helper.make_node("Transpose", [input_name], ["tnf"], perm=[1, 0, 2]),
        helper.make_node(cell, ["tnf", "W", "R", "B"], ["", "h_last"], hidden_size=hidden),
        helper.make_node("Squeeze", ["h_last", "axis0"], ["h"]),
        helper.make_node("Gemm", ["h", "out_w", "out_b"], [output_name]),
    ]
    initializers = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    initializers.append(numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0"))
    return _model(
        nodes,
        initializers,
        window=window,
        features=features,
        outputs=outputs,
        input_name=input_name,
        output_name=output_name,
        graph_name=cell.lower(),
    )


@dataclass(frozen=True)
class ImageCnn:
    """Weights of :func:`image_cnn_onnx`: ``conv_w`` ``(K, C, 3, 3)``, ``conv_b`` ``(K,)``, and
    the head ``head_w`` ``(features, classes)``, ``head_b`` ``(classes,)``, where ``features`` is
    ``K * (H - 2) * (W - 2)`` after ``Flatten`` or ``K`` after ``GlobalAveragePool``."""

    conv_w: NDArray[np.float32]
    conv_b: NDArray[np.float32]
    head_w: NDArray[np.float32]
    head_b: NDArray[np.float32]


def random_image_cnn(
    channels: int,
    height: int,
    width: int,
    classes: int,
    *,
    filters: int = 8,
    pool: bool = False,
    seed: int = 0,
) -> ImageCnn:
    """He-initialised :class:`ImageCnn` weights for frames ``(channels, height, width)``."""
    rng = np.random.default_rng(seed)
    features = filters if pool else filters * (height - 2) * (width - 2)
    return ImageCnn(
        conv_w=rng.normal(0, np.sqrt(2.0 / (9 * channels)), (filters, channels, 3, 3)).astype(
            np.float32
        ),
        conv_b=rng.normal(0, 0.1, filters).astype(np.float32),
        head_w=rng.normal(0, np.sqrt(2.0 / features), (features, classes)).astype(np.float32),
        head_b=rng.normal(0, 0.1, classes).astype(np.float32),
    )


def conv_features(
    images: np.ndarray, conv_w: np.ndarray, conv_b: np.ndarray, *, pool: bool = False
) -> NDArray[np.float64]:
    """``ReLU(conv3x3(images))`` flattened (or averaged over space with ``pool``), in float64.

    ``images`` ``(n, C, H, W)``; returns ``(n, K * (H-2) * (W-2))`` or ``(n, K)``: the input of
    :func:`image_cnn_onnx`'s ``Gemm``, for fitting the head.
    """
    x = np.asarray(images, dtype=np.float64)
    n = x.shape[0]
    patches = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))
    # patches (n, C, H-2, W-2, 3, 3); conv_w (K, C, 3, 3) -> (n, K, H-2, W-2)
    out = np.einsum("nchwij,kcij->nkhw", patches, np.asarray(conv_w, dtype=np.float64))
    out += np.asarray(conv_b, dtype=np.float64)[None, :, None, None]
    np.maximum(out, 0.0, out=out)
    features = out.mean(axis=(2, 3)) if pool else out.reshape(n, -1)
    return np.asarray(features, dtype=np.float64)


def image_cnn_onnx(
    cnn: ImageCnn,
    channels: int,
    height: int,
    width: int,
    *,
    layout: Literal["NCHW", "NHWC"] = "NCHW",
    pool: bool = False,
    input_name: str = "frame",
    output_name: str = "logits",
) -> onnx.ModelProto:
    """A camera classifier: frames ``(batch, C, H, W)`` (``NHWC``: ``(batch, H, W, C)``, as
    Keras lays them out) -> ``Conv`` 3x3 -> ReLU -> ``Flatten`` (``pool``: ``GlobalAveragePool``
    first) -> ``Gemm`` -> ``(batch, classes)`` logits."""
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    dims = [channels, height, width] if layout == "NCHW" else [height, width, channels]
    nodes = []
    current = input_name
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [input_name], ["nchw"], perm=[0, 3, 1, 2]))
        current = "nchw"
    nodes += [
        helper.make_node("Conv", [current, "conv_w", "conv_b"], ["conv"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["conv"], ["act"]),
    ]
    current = "act"
    if pool:
        nodes.append(helper.make_node("GlobalAveragePool", ["act"], ["pooled"]))
        current = "pooled"
    nodes += [
        helper.make_node("Flatten", [current], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "head_w", "head_b"], [output_name]),
    ]
    initializers = [
        numpy_helper.from_array(np.asarray(getattr(cnn, k), dtype=np.float32), k)
        for k in ("conv_w", "conv_b", "head_w", "head_b")
    ]
    classes = int(cnn.head_w.shape[1])
    graph = helper.make_graph(
        nodes,
        "image_cnn",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", *dims])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", classes])],
        initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edge-agent-host"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model

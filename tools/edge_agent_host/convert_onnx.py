"""Convert a float ONNX model to an int8 model, measure it, check it on the device path, bundle it.

Quantization (``NeuralOptions.mode``):

* ``static``: ``onnxruntime.quantization.quantize_static`` in **QDQ** format with **int8
  activations and int8 weights** (S8S8), weights **per channel** unless ``per_channel`` is off,
  activation ranges calibrated with ``minmax`` (default), ``entropy`` (KL-optimal thresholds over
  a 2048-bin histogram, :data:`ENTROPY_BINS`) or ``percentile``. The QDQ model keeps float32
  inputs and outputs; ONNX Runtime fuses the Q/DQ pairs into int8 kernels.
* ``dynamic``: ``quantize_dynamic``: int8 weights, activations quantized per call (uint8). The
  only way onnxruntime quantizes ``LSTM`` weights; no calibration.
* ``auto`` (default): whichever of the two covers more of the model's weight bytes (LSTM and
  Attention weights: dynamic only; Gemm: static only; Conv and MatMul: both), static on a tie.

Before quantizing, ``onnxruntime.quantization.shape_inference.quant_pre_process`` (symbolic shape
inference and graph optimisation) runs unless ``preprocess`` is off; when it fails, or when the
quantizer fails on its output (onnxruntime's per-channel bias adjustment does on skl2onnx MLPs),
the model is quantized without it and the report says so in one line.

Outputs: a bundle holds only outputs a device can act on. An output that cannot be a policy or a
classifier (integer class labels such as skl2onnx's ``label``, a single column, a ZipMap) is
dropped from the model when another one qualifies (the report names it), or the model is refused
in one line; ``outputs`` (``--output NAME``) chooses them by name.

Calibration data is an ``.npz`` of real inputs: one array per model input, keyed by the input's
name, shaped ``(n, *input_shape[1:])``: windows ``(n, T, F)``, feature vectors ``(n, F)`` or
camera frames ``(n, C, H, W)`` / ``(n, H, W, C)`` (a model with one input also accepts a single
array under any key). Without one, inputs are drawn uniformly from a declared range, with a logged
warning. One calibration sample is refused; fewer than :data:`MIN_CALIBRATION_SAMPLES` are warned
about.

The report compares the float and int8 models on a held-out set (``--heldout``; else the last 20 %
of the calibration ``.npz``, kept out of calibration; else fresh draws from the range): max and
mean absolute error over every output value, top-1 agreement of the first output (or of each
output, for perception models), file sizes (with a warning when the int8 model is not below
:data:`SIZE_WARNING_RATIO` of the float one), and latency at batch 1 and 64. An optional array
``labels`` ``(n,)`` in the held-out ``.npz`` adds the top-1 accuracy of both models; labels must be
class indices of the first output.

Before the bundle is signed it is loaded as a device loads it, its agent group is built and
stepped on a few calibration inputs (:func:`device_check`); a bundle a device would refuse is
deleted and never signed.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import math
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.quant import quantize_model
from edge_agent.aif.settings import AifSettings
from edge_agent.bundle.loader import Bundle, BundleKind, NeuralSpec, TensorSpec
from edge_agent.errors import EdgeAgentError, InputError, ModelError
from edge_agent.neural.backends import Session, get_backend
from edge_agent.neural.groups import NeuralAgentGroup, window_layout
from edge_agent.neural.perception import PerceptionAifGroup
from edge_agent_host.convert_aif import (
    AifThresholds,
    aif_bundle_arrays,
    aif_checks,
    aif_report_data,
    aif_spec,
)
from edge_agent_host.output import check_output, write_output
from edge_agent_host.report import Check, ConversionReport, median_latency_ms, progress

logger = logging.getLogger(__name__)

__all__ = [
    "CALIBRATION_METHODS",
    "DEVICE_CHECK_AGENTS",
    "ENTROPY_BINS",
    "HELDOUT_FRACTION",
    "MIN_CALIBRATION_SAMPLES",
    "QUANT_MODES",
    "SIZE_WARNING_RATIO",
    "CalibrationReader",
    "NeuralOptions",
    "NeuralThresholds",
    "check_labels",
    "choose_mode",
    "compare_models",
    "convert_onnx",
    "device_check",
    "load_samples",
    "neural_checks",
    "onnx_tensors",
    "output_problem",
    "quantize_onnx",
    "range_samples",
    "select_outputs",
    "size_warning",
    "unzip_outputs",
]

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
QUANT_MODES = ("auto", "static", "dynamic")
HELDOUT_FRACTION = 0.2
#: Fewer calibration samples than this give a warning (activation ranges from a handful of
#: inputs miss what the model meets in use); a single sample is refused.
MIN_CALIBRATION_SAMPLES = 16
#: An int8 model not below this fraction of the float model's size gets a warning: quantization
#: left most of it in float (or the Q/DQ bookkeeping outweighs a tiny model's weights).
SIZE_WARNING_RATIO = 0.9
#: Entropy calibration: histogram bins over [-max|x|, max|x|] and the int8 levels it is merged
#: into. (onnxruntime's quantize_static fixes both at 128, which leaves one candidate threshold,
#: the full range: entropy calibration through it is MinMax.)
ENTROPY_BINS = 2048
ENTROPY_QUANTIZED_BINS = 256
#: The ai.onnx opset declared for the quantizer when a model uses only ai.onnx.ml operators.
QUANTIZER_OPSET = 17
#: Agents the pre-signing device check runs (at most this many calibration inputs).
DEVICE_CHECK_AGENTS = 8
OutputKind = Literal["discrete", "continuous", "observation"]
QuantMode = Literal["static", "dynamic"]
Samples = dict[str, np.ndarray]
LATENCY_BATCHES = (1, 64)
_FLOAT_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class NeuralOptions:
    """How the neural model is used on the device and how it is quantized.

    ``mode``: ONNX ``auto`` | ``static`` | ``dynamic``; TFLite ``auto`` (= ``full-integer``) |
    ``full-integer`` | ``dynamic-range`` | ``float16``. ``outputs``: the model outputs to keep, in
    order (empty: every output that can be a policy or classifier).
    """

    output_kind: OutputKind = "discrete"
    window: int | None = None
    action_low: tuple[float, ...] | None = None
    action_high: tuple[float, ...] | None = None
    mode: str = "auto"
    method: str = "minmax"
    percentile: float = 99.999
    per_channel: bool = True
    preprocess: bool = True
    symmetric_activations: bool = False
    exclude_nodes: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    calibration_batch: int = 32
    threads: int = 1
    latency_repeats: int = 30


@dataclass(frozen=True)
class NeuralThresholds:
    """Accuracy a neural conversion must reach on the held-out set (``None``: not checked)."""

    min_top1: float | None = 0.99
    max_abs_error: float | None = None


# -- model description -----------------------------------------------------------------------------
def onnx_tensors(model_bytes: bytes) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The model's inputs and outputs as a device sees them (ONNX Runtime session specs)."""
    session = get_backend("onnxruntime").load(model_bytes, 1)
    return session.input_specs, session.output_specs


def _item_shape(spec: TensorSpec) -> tuple[int, ...]:
    dims = spec.shape[1:]
    if spec.shape[:1] != (-1,):
        raise ModelError(
            f"input {spec.name!r} has shape {list(spec.shape)}: the batch dimension must be "
            "dynamic (export with a dynamic batch axis, e.g. torch.onnx.export(dynamic_axes=...))"
        )
    if any(d < 0 for d in dims):
        raise ModelError(f"input {spec.name!r} has shape {list(spec.shape)}: only the batch "
                         "dimension may be dynamic")
    return tuple(dims)


def infer_window(inputs: tuple[TensorSpec, ...], window: int | None) -> int:
    """The history window: ``(batch, T, F)`` inputs give ``T``; flat ones need ``--window``;
    frames ``(batch, C, H, W)`` or ``(batch, H, W, C)`` are one observation each (window 1)."""
    if len(inputs) != 1:
        raise ModelError(
            f"the model has inputs {[t.name for t in inputs]}; neural agents feed exactly one "
            "(the observation window)"
        )
    spec = inputs[0]
    shape = spec.shape
    if len(shape) == 3:
        if window is not None and window != shape[1]:
            raise InputError(f"--window {window} does not match the model's input {list(shape)}")
        return int(shape[1])
    if len(shape) == 4:
        if window not in (None, 1):
            raise InputError(
                f"--window {window}: the model's input {list(shape)} is a frame (batch, C, H, W) "
                "or (batch, H, W, C), one per step; frames take window 1"
            )
        return 1
    if len(shape) not in (2, 3):
        raise ModelError(
            f"input {spec.name!r} has shape {list(shape)}; neural agents take (batch, F), "
            "(batch, T, F) or frames (batch, C, H, W) / (batch, H, W, C)"
        )
    return 1 if window is None else window


# -- outputs ---------------------------------------------------------------------------------------
def output_problem(spec: TensorSpec, kind: OutputKind) -> str | None:
    """Why output ``spec`` cannot be ``kind`` (policy logits, actions, observation logits), or
    ``None`` when it can: ``(batch, A)`` floats, with ``A >= 2`` unless continuous."""
    shape = list(spec.shape)
    if spec.dtype not in _FLOAT_DTYPES:
        if len(shape) == 1 and spec.dtype.startswith(("int", "uint")):
            return (f"is {spec.dtype} {shape}: class labels (one index per item), not scores per "
                    "class")
        return f"is {spec.dtype} {shape}: {kind} outputs are float scores"
    if len(shape) != 2:
        return f"has shape {shape}: {kind} outputs are [-1, A] (one row per item)"
    if kind != "continuous" and shape[1] < 2:
        return (f"has shape {shape}: a single column, whose argmax is always 0 (no choice to "
                "make)")
    return None


def select_outputs(
    specs: Sequence[TensorSpec], kind: OutputKind, requested: Sequence[str] = (),
    unloadable: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """``(outputs to keep, {dropped output: why})`` (module docstring); ModelError in one line
    when nothing qualifies or a requested output does not. ``unloadable``: outputs already
    dropped because they are no tensors, and why (named in that error)."""
    by_name = {spec.name: spec for spec in specs}
    unknown = [name for name in requested if name not in by_name]
    if unknown:
        raise InputError(
            f"--output {unknown[0]!r}: the model's outputs are {[s.name for s in specs]}"
        )
    problems = {
        spec.name: problem for spec in specs if (problem := output_problem(spec, kind))
    }
    if requested:
        for name in requested:
            if name in problems:
                raise ModelError(f"output {name!r} {problems[name]}; it cannot be {kind} output")
        keep = list(dict.fromkeys(requested))
    else:
        keep = [spec.name for spec in specs if spec.name not in problems]
    if not keep:
        reasons = "; ".join(f"{name!r} {why}"
                            for name, why in {**problems, **(unloadable or {})}.items())
        raise ModelError(
            f"no output of the model can be {kind} output: {reasons}. Export per-class scores "
            "(logits) of shape [-1, A], A >= 2"
        )
    dropped = {spec.name: problems.get(spec.name, "not chosen with --output")
               for spec in specs if spec.name not in keep}
    return keep, dropped


def _proto_output_problem(value: Any) -> str | None:
    """Why a graph output cannot even be loaded as a tensor (ZipMap, strings), or ``None``."""
    from onnx import TensorProto, helper

    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        hint = ""
        if kind == "sequence_type":
            hint = " (skl2onnx's ZipMap: export with options={'zipmap': False})"
        return f"is a {kind.replace('_type', '')}, not a tensor{hint}"
    elem = value.type.tensor_type.elem_type
    supported = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT8, TensorProto.UINT8,
                 TensorProto.INT16, TensorProto.INT32, TensorProto.INT64, TensorProto.BOOL)
    if elem not in supported:
        name = helper.tensor_dtype_to_string(elem).removeprefix("TensorProto.").lower()
        return f"is a tensor of {name} (class names?), not scores per class"
    return None


def _subgraph_inputs(node: Any) -> set[str]:
    """Every tensor name the node's subgraphs (If, Loop, Scan) read, outer scope included."""
    names: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.HasField("g") else list(attr.graphs)
        for graph in graphs:
            for inner in graph.node:
                names.update(inner.input)
                names.update(_subgraph_inputs(inner))
    return names


def keep_outputs(model_bytes: bytes, names: Sequence[str]) -> bytes:
    """The model with only the graph outputs ``names`` (in that order) and the nodes and
    initializers they need."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    by_name = {value.name: value for value in graph.output}
    outputs = [by_name[name] for name in names]
    needed = set(names)
    kept = []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(node.input)
            needed.update(_subgraph_inputs(node))
    nodes = list(reversed(kept))
    initializers = [init for init in graph.initializer if init.name in needed]
    value_info = [value for value in graph.value_info if value.name in needed]
    for field, values in (("output", outputs), ("node", nodes), ("initializer", initializers),
                          ("value_info", value_info)):
        copies = [type(v)() for v in values]
        for copy, value in zip(copies, values, strict=True):
            copy.CopyFrom(value)
        target = getattr(graph, field)
        del target[:]
        target.extend(copies)
    return bytes(model.SerializeToString())


def unzip_outputs(model_bytes: bytes, warnings: list[str]) -> bytes:
    """Replace each graph output that a ``ZipMap`` makes (skl2onnx's default: one dict of class
    probabilities per item) by the ``ZipMap``'s own float input ``(batch, classes)``."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    zipmaps = {node.output[0]: node for node in graph.node if node.op_type == "ZipMap"}
    names = [value.name for value in graph.output]
    if not any(name in zipmaps for name in names):
        return model_bytes
    outputs = []
    for value in graph.output:
        node = zipmaps.get(value.name)
        if node is None:
            outputs.append(value)
            continue
        source = node.input[0]
        labels = next((len(a.ints) or len(a.strings) for a in node.attribute
                       if a.name.startswith("classlabels")), 0)
        if source not in names:
            outputs.append(helper.make_tensor_value_info(
                source, TensorProto.FLOAT, ["batch", labels or "classes"]
            ))
        warnings.append(
            f"output {value.name!r} is a ZipMap (a dict of class probabilities per item, which a "
            f"device cannot read): bundled as its float input {source!r} [-1, {labels or '?'}] "
            "(export with options={'zipmap': False} to skip this)"
        )
    del graph.output[:]
    graph.output.extend(outputs)
    return keep_outputs(model.SerializeToString(), [value.name for value in outputs])


def choose_outputs(
    model_bytes: bytes, options: NeuralOptions, warnings: list[str], threads: int = 1
) -> bytes:
    """``model_bytes`` with only the outputs a device can use as ``options.output_kind``
    (:func:`select_outputs`); each dropped output is named in ``warnings``."""
    import onnx

    if not options.outputs:
        model_bytes = unzip_outputs(model_bytes, warnings)
    graph_outputs = onnx.load_from_string(model_bytes).graph.output
    names = [value.name for value in graph_outputs]
    unloadable = {
        value.name: problem for value in graph_outputs
        if (problem := _proto_output_problem(value)) is not None
    }
    for name in options.outputs:
        if name not in names:
            raise InputError(f"--output {name!r}: the model's outputs are {names}")
        if name in unloadable:
            raise ModelError(f"output {name!r} {unloadable[name]}")
    if len(unloadable) == len(names):
        reasons = "; ".join(f"{name!r} {why}" for name, why in unloadable.items())
        raise ModelError(f"no output of the model is a tensor: {reasons}")
    loadable = [name for name in names if name not in unloadable]
    if unloadable:
        model_bytes = keep_outputs(model_bytes, loadable)
    specs = get_backend("onnxruntime").load(model_bytes, threads).output_specs
    keep, dropped = select_outputs(specs, options.output_kind, options.outputs, unloadable)
    dropped = {**unloadable, **dropped}
    for name in names:
        if name in dropped:
            warnings.append(
                f"output {name!r} {dropped[name]}: dropped from the bundle; using "
                f"{', '.join(repr(k) for k in keep)} (--output NAME chooses)"
            )
    if keep != loadable:
        model_bytes = keep_outputs(model_bytes, keep)
    return model_bytes


def check_outputs(specs: Sequence[TensorSpec], kind: OutputKind) -> None:
    """The first output must be usable as ``kind`` (converters that cannot drop outputs)."""
    problem = output_problem(specs[0], kind)
    if problem is not None:
        raise ModelError(f"output {specs[0].name!r} {problem}; it cannot be {kind} output")


# -- data ------------------------------------------------------------------------------------------
def load_samples(
    path: str | Path, inputs: tuple[TensorSpec, ...]
) -> tuple[Samples, np.ndarray | None]:
    """Input arrays (and optional ``labels``) from an ``.npz``; InputError naming what is wrong."""
    source = Path(path)
    try:
        with np.load(source, allow_pickle=False) as data:
            arrays = {key: np.asarray(data[key]) for key in data.files}
    except FileNotFoundError as err:
        raise InputError(f"{source}: no such file") from err
    except (OSError, ValueError) as err:
        raise InputError(f"{source}: not a plain-array .npz ({err})") from err
    labels = arrays.pop("labels", None)
    names = [spec.name for spec in inputs]
    if len(inputs) == 1 and len(arrays) == 1 and names[0] not in arrays:
        arrays = {names[0]: next(iter(arrays.values()))}
    if sorted(arrays) != sorted(names):
        raise InputError(f"{source}: has arrays {sorted(arrays)}, the model's inputs are {names}")
    count: int | None = None
    samples: Samples = {}
    for spec in inputs:
        arr = arrays[spec.name]
        shape = _item_shape(spec)
        if arr.ndim != len(shape) + 1 or tuple(arr.shape[1:]) != shape:
            raise InputError(
                f"{source}: {spec.name} has shape {arr.shape}, expected (n, "
                f"{', '.join(map(str, shape))})"
            )
        if arr.dtype.kind not in "fiu" or not np.all(np.isfinite(arr)):
            raise InputError(f"{source}: {spec.name} must hold finite real numbers")
        if count is not None and arr.shape[0] != count:
            raise InputError(f"{source}: inputs have different sample counts")
        count = arr.shape[0]
        samples[spec.name] = arr.astype(np.float32)
    if not count:
        raise InputError(f"{source}: holds no samples")
    if labels is not None and (labels.shape != (count,) or labels.dtype.kind not in "iu"):
        raise InputError(f"{source}: labels must be ({count},) integers, got {labels.shape}")
    return samples, labels


def range_samples(
    inputs: tuple[TensorSpec, ...], low: float, high: float, n: int, seed: int,
    *, warn: bool = True,
) -> Samples:
    """``n`` inputs drawn uniformly from ``[low, high)`` (logs a warning: prefer real data)."""
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise InputError(f"input range must be finite with LOW < HIGH, got {low}, {high}")
    if warn:
        logger.warning(
            "generating %d inputs uniformly in [%g, %g): calibration from real inputs "
            "(--calibration X.npz) gives better int8 scales", n, low, high,
        )
    rng = np.random.default_rng(seed)
    return {
        spec.name: rng.uniform(low, high, size=(n, *_item_shape(spec))).astype(np.float32)
        for spec in inputs
    }


def _count(samples: Samples) -> int:
    return int(next(iter(samples.values())).shape[0])


def _slice(samples: Samples, sl: slice) -> Samples:
    return {k: v[sl] for k, v in samples.items()}


def check_calibration_size(count: int, warnings: list[str]) -> None:
    """Refuse a single calibration sample; warn below :data:`MIN_CALIBRATION_SAMPLES`."""
    if count < 2:
        raise InputError(
            f"calibration uses {count} sample: activation ranges from one input are that "
            f"input's; give at least {MIN_CALIBRATION_SAMPLES} (a few hundred is typical)"
        )
    if count < MIN_CALIBRATION_SAMPLES:
        warnings.append(
            f"calibration uses only {count} samples: activation ranges from so few inputs miss "
            f"what the model meets in use; give at least {MIN_CALIBRATION_SAMPLES} "
            "(a few hundred is typical)"
        )


def check_labels(labels: np.ndarray | None, output: TensorSpec, source: str = "labels") -> None:
    """Held-out ``labels`` must be class indices of ``output`` (its columns); else InputError."""
    if labels is None or labels.size == 0:
        return
    classes = int(output.shape[-1]) if output.shape and output.shape[-1] > 0 else 0
    low, high = int(labels.min()), int(labels.max())
    if classes and (low < 0 or high >= classes):
        raise InputError(
            f"{source}: labels range over {low}..{high}, but output {output.name!r} has "
            f"{classes} classes: labels must be class indices 0..{classes - 1}, in the order of "
            "its columns"
        )


class CalibrationReader:
    """ONNX Runtime calibration data reader over arrays, in batches, with a progress bar."""

    def __init__(self, samples: Samples, batch: int, *, show_progress: bool = False) -> None:
        self.samples = samples
        # Every batch has the same size: the histogram calibrators (Entropy, Percentile) stack
        # per-batch arrays and fail on a shorter last batch.
        n = _count(samples)
        self.batch = max(d for d in range(1, max(1, min(int(batch), n)) + 1) if n % d == 0)
        self.show_progress = show_progress
        self._iter: Iterator[Samples] | None = None

    def _batches(self) -> Iterator[Samples]:
        n = _count(self.samples)
        starts = range(0, n, self.batch)
        for start in progress(starts, total=len(starts), desc="calibration",
                              enabled=self.show_progress):
            yield _slice(self.samples, slice(start, start + self.batch))

    def get_next(self) -> Samples | None:
        if self._iter is None:
            self._iter = self._batches()
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = None


def split_heldout(
    calibration: Samples, labels: np.ndarray | None
) -> tuple[Samples, Samples, np.ndarray | None]:
    """Keep the last :data:`HELDOUT_FRACTION` of the calibration set out of calibration."""
    n = _count(calibration)
    if n < 3:
        raise InputError(
            f"the calibration set has {n} sample(s): too few to calibrate and hold some out; give "
            f"at least {MIN_CALIBRATION_SAMPLES} (or a separate --heldout set)"
        )
    cut = n - max(1, round(n * HELDOUT_FRACTION))
    logger.info("no --heldout: holding out %d of %d calibration samples", n - cut, n)
    held_labels = None if labels is None else labels[cut:]
    return _slice(calibration, slice(0, cut)), _slice(calibration, slice(cut, n)), held_labels


def gather_data(
    inputs: tuple[TensorSpec, ...],
    *,
    calibration_path: str | Path | None,
    heldout_path: str | Path | None,
    input_range: tuple[float, float] | None,
    samples: int,
    seed: int,
) -> tuple[Samples, Samples, np.ndarray | None, str]:
    """``(calibration, heldout, heldout labels, description)`` from the options."""
    if (calibration_path is None) == (input_range is None):
        raise InputError("give calibration data (--calibration X.npz) or an input range "
                         "(--input-range LOW HIGH), not both")
    labels = None
    calibration: Samples = {}
    heldout: Samples = {}
    source = ""
    if calibration_path is not None:
        calibration, calib_labels = load_samples(calibration_path, inputs)
        source = f"npz:{Path(calibration_path).name}"
        if heldout_path is None:
            calibration, heldout, labels = split_heldout(calibration, calib_labels)
            return calibration, heldout, labels, source
    elif input_range is not None:
        calibration = range_samples(inputs, input_range[0], input_range[1], samples, seed)
        source = f"range:[{input_range[0]:g}, {input_range[1]:g})"
    if heldout_path is not None:
        heldout, labels = load_samples(heldout_path, inputs)
    elif input_range is not None:
        heldout = range_samples(
            inputs, input_range[0], input_range[1], samples, seed + 1,
            warn=calibration_path is not None,
        )
    return calibration, heldout, labels, source


# -- quantization ----------------------------------------------------------------------------------
def _quantization_module() -> Any:
    try:
        from onnxruntime import quantization
        from onnxruntime.quantization import shape_inference
    except ImportError as err:
        raise EdgeAgentError(
            "ONNX quantization needs onnxruntime, onnx and sympy: pip install 'edge-agent[host]'"
        ) from err
    return quantization, shape_inference


@functools.cache
def quantizable_op_types() -> dict[QuantMode, frozenset[str]]:
    """The op types onnxruntime quantizes in each mode (its own operator registries)."""
    from onnxruntime.quantization import registry

    return {
        "static": frozenset(registry.QDQRegistry) | frozenset(registry.QLinearOpsRegistry),
        "dynamic": frozenset(registry.IntegerOpsRegistry),
    }


def _tensor_nbytes(tensor: Any) -> int:
    from onnx import helper

    itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    return int(math.prod(tensor.dims)) * itemsize


def float_weight_bytes(model: Any, *, min_bytes: int = 64) -> dict[str, int]:
    """Bytes of float weights per op type: float initializers a node reads (not through
    ``DequantizeLinear``) and float tensor or list attributes (``ai.onnx.ml`` ops keep their
    coefficients there). Tensors under ``min_bytes`` (scales, shapes) are not counted."""
    from onnx import AttributeProto, TensorProto

    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)
    inits = {init.name: init for init in model.graph.initializer if init.data_type in floats}
    out: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        size = sum(_tensor_nbytes(inits[name]) for name in set(node.input) if name in inits)
        for attr in node.attribute:
            if attr.type == AttributeProto.FLOATS:
                size += 4 * len(attr.floats)
            elif attr.type == AttributeProto.TENSOR and attr.t.data_type in floats:
                size += _tensor_nbytes(attr.t)
        if size >= min_bytes:
            out[node.op_type] = out.get(node.op_type, 0) + size
    return out


def choose_mode(model: Any, requested: str) -> tuple[QuantMode, str]:
    """``(mode, why)``: ``requested`` itself, or for ``auto`` the mode that quantizes more of the
    model's float weight bytes (static on a tie)."""
    if requested not in QUANT_MODES:
        raise InputError(f"quantization mode {requested!r}; choose one of {QUANT_MODES}")
    weights = float_weight_bytes(model)
    total = sum(weights.values())
    ops = quantizable_op_types()
    covered = {
        mode: sum(size for op, size in weights.items() if op in ops[mode]) for mode in ops
    }
    share = {mode: covered[mode] / total if total else 0.0 for mode in covered}
    if requested != "auto":
        mode: QuantMode = "static" if requested == "static" else "dynamic"
        return mode, f"as asked: onnxruntime quantizes {100 * share[mode]:.0f} % of the weights"
    mode = "dynamic" if covered["dynamic"] > covered["static"] else "static"
    return mode, (
        f"auto: onnxruntime quantizes {100 * share['static']:.0f} % of the weights in static "
        f"mode, {100 * share['dynamic']:.0f} % in dynamic"
    )


def _other(mode: QuantMode) -> QuantMode:
    return "dynamic" if mode == "static" else "static"


def size_warning(
    float_bytes: int, int8_bytes: int, float_weights: Mapping[str, int], mode_hint: str = ""
) -> str | None:
    """One line when the int8 model is not below :data:`SIZE_WARNING_RATIO` of the float one,
    naming the ops whose weights stayed float; ``None`` otherwise."""
    ratio = int8_bytes / float_bytes if float_bytes else 1.0
    if ratio < SIZE_WARNING_RATIO:
        return None
    text = (
        f"the int8 model is {100 * ratio:.1f} % of the float model's size (a conversion that "
        f"pays is below {100 * SIZE_WARNING_RATIO:.0f} %)"
    )
    if float_weights:
        left = ", ".join(f"{op} {size:,} B" for op, size in
                         sorted(float_weights.items(), key=lambda kv: -kv[1]))
        text += f": weights left in float: {left}"
    else:
        text += ": the Q/DQ bookkeeping outweighs the weights of a model this small"
    return text + (f"; {mode_hint}" if mode_hint else "")


def _mode_hint(mode: QuantMode, float_weights: Mapping[str, int]) -> str:
    """What to try when ``mode`` left ``float_weights`` in float."""
    ops = quantizable_op_types()
    other = _other(mode)
    movable = sorted(op for op in float_weights if op in ops[other] and op not in ops[mode])
    stuck = sorted(op for op in float_weights if op not in ops["static"] | ops["dynamic"])
    hints = []
    if movable:
        hints.append(f"onnxruntime quantizes {', '.join(movable)} in --mode {other}")
    if stuck:
        hints.append(f"onnxruntime quantizes no {', '.join(stuck)} node in either mode")
    return "; ".join(hints)


def _check_exclusions(model: Any, nodes: Sequence[str], op_types: Sequence[str]) -> None:
    names = [node.name for node in model.graph.node if node.name]
    for name in nodes:
        if name not in names:
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise InputError(
                f"--exclude-nodes {name!r}: the model has no node of that name "
                f"({'its nodes: ' + shown if names else 'its nodes have no names'})"
            )
    present = sorted({node.op_type for node in model.graph.node})
    for op in op_types:
        if op not in present:
            raise InputError(
                f"--exclude-op-types {op!r}: the model has no such node (its op types: "
                f"{', '.join(present)})"
            )


class _RootLogToDebug(logging.Filter):
    """onnxruntime.quantization logs through the root logger ("Please consider pre-processing"
    ...): while it runs those records become debug lines of this module."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "root":
            return True
        logger.debug("onnxruntime: %s", record.getMessage())
        return False


@contextlib.contextmanager
def _quiet_onnxruntime() -> Iterator[io.StringIO]:
    """Keep onnxruntime's prints (stdout, which ``--json`` owns), its root-logger lines and its
    C++ warnings (the calibration sessions log at the default level) out of the output."""
    import onnxruntime

    chatter = io.StringIO()
    root = logging.getLogger()
    quiet = _RootLogToDebug()
    root.addFilter(quiet)
    onnxruntime.set_default_logger_severity(3)
    try:
        with contextlib.redirect_stdout(chatter):
            yield chatter
    finally:
        onnxruntime.set_default_logger_severity(2)
        root.removeFilter(quiet)
        if chatter.getvalue().strip():
            logger.debug("onnxruntime quantization: %s", chatter.getvalue().strip())


def _one_line(err: BaseException) -> str:
    from edge_agent.neural.backends.onnxruntime import ort_message

    return ort_message(err) or type(err).__name__


def _preprocess(shape_inference: Any, src: Path, dst: Path, exclude_nodes: Sequence[str]) -> str:
    """Run ``quant_pre_process``; ``""`` on success, else why it cannot be used."""
    import onnx

    try:
        # On "Incomplete symbolic shape inference" onnxruntime saves sym_shape_infer_temp.onnx
        # into the working directory: let that be the temporary one.
        with _quiet_onnxruntime(), contextlib.chdir(dst.resolve().parent):
            shape_inference.quant_pre_process(str(src.resolve()), str(dst.resolve()))
    except Exception as err:  # onnxruntime raises plain Exceptions of many kinds
        return _one_line(err)
    names = {node.name for node in onnx.load(str(dst)).graph.node}
    lost = [name for name in exclude_nodes if name not in names]
    if lost:
        return f"it renames node {lost[0]!r}, which --exclude-nodes names"
    return ""


def _entropy_overrides(
    quantization: Any, model_path: Path, calibration: Samples, *, batch: int, symmetric: bool,
    tmp: Path,
) -> dict[str, list[dict[str, Any]]]:
    """Per-tensor activation ranges from entropy (KL) calibration, as TensorQuantOverrides."""
    calibrator = quantization.create_calibrator(
        str(model_path), None, augmented_model_path=str(tmp / "entropy-augmented.onnx"),
        calibrate_method=quantization.CalibrationMethod.Entropy,
        providers=["CPUExecutionProvider"],
        extra_options={"num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS,
                       "symmetric": symmetric},
    )
    calibrator.collect_data(CalibrationReader(calibration, batch))
    ranges = calibrator.compute_data()
    overrides: dict[str, list[dict[str, Any]]] = {}
    for name in ranges:
        low, high = (np.asarray(v, dtype=np.float32).reshape(()) for v in
                     ranges[name].range_value)
        overrides[name] = [{"rmin": low, "rmax": high}]
    return overrides


def _quantize_static(
    quantization: Any, src: Path, dst: Path, calibration: Samples, options: NeuralOptions, *,
    show_progress: bool, tmp: Path,
) -> None:
    extra: dict[str, Any] = {"ActivationSymmetric": options.symmetric_activations}
    method = quantization.CalibrationMethod.MinMax
    if options.method == "percentile":
        method = quantization.CalibrationMethod.Percentile
        extra["CalibPercentile"] = float(options.percentile)
    elif options.method == "entropy":
        extra["TensorQuantOverrides"] = _entropy_overrides(
            quantization, src, calibration, batch=options.calibration_batch,
            symmetric=options.symmetric_activations, tmp=tmp,
        )
    op_types = None
    if options.exclude_op_types:
        op_types = sorted(quantizable_op_types()["static"] - set(options.exclude_op_types))
    quantization.quantize_static(
        str(src), str(dst),
        CalibrationReader(calibration, options.calibration_batch, show_progress=show_progress),
        quant_format=quantization.QuantFormat.QDQ,
        op_types_to_quantize=op_types,
        per_channel=options.per_channel,
        activation_type=quantization.QuantType.QInt8,
        weight_type=quantization.QuantType.QInt8,
        nodes_to_exclude=list(options.exclude_nodes) or None,
        calibrate_method=method,
        calibration_providers=["CPUExecutionProvider"],
        extra_options=extra,
    )


def _quantize_dynamic(quantization: Any, src: Path, dst: Path, options: NeuralOptions) -> None:
    op_types = None
    if options.exclude_op_types:
        op_types = sorted(quantizable_op_types()["dynamic"] - set(options.exclude_op_types))
    quantization.quantize_dynamic(
        str(src), str(dst),
        op_types_to_quantize=op_types,
        per_channel=options.per_channel,
        weight_type=quantization.QuantType.QInt8,
        nodes_to_exclude=list(options.exclude_nodes) or None,
    )


def _check_static_options(options: NeuralOptions, mode: QuantMode, why: str) -> None:
    if options.method not in CALIBRATION_METHODS:
        raise InputError(
            f"calibration method {options.method!r}; choose one of {CALIBRATION_METHODS}"
        )
    if mode == "static":
        return
    asked = [flag for flag, used in (
        (f"--method {options.method}", options.method != "minmax"),
        ("--symmetric-activations", options.symmetric_activations),
    ) if used]
    if asked:
        raise InputError(
            f"{asked[0]} calibrates static quantization, and this conversion is dynamic ({why});"
            " pass --mode static to use it"
        )


def quantize_onnx(
    float_path: str | Path,
    out_path: str | Path,
    calibration: Samples,
    options: NeuralOptions | None = None,
    *,
    show_progress: bool = False,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """Quantize ``float_path`` into ``out_path`` as ``options`` say (module docstring).

    Returns what was really done (``mode``, ``mode_reason``, ``preprocessed``, ``per_channel``,
    ``symmetric_activations``, excluded nodes and op types, the calibration ``method`` and its
    parameters, ``None`` for dynamic). Fallbacks are appended to ``warnings`` as one line each.
    """
    import onnx

    opts = options or NeuralOptions()
    notes = warnings if warnings is not None else []
    src = Path(float_path)
    model = onnx.load(str(src))
    mode, why = choose_mode(model, opts.mode)
    _check_static_options(opts, mode, why)
    if mode == "static":
        check_calibration_size(_count(calibration) if calibration else 0, notes)
    _check_exclusions(model, opts.exclude_nodes, opts.exclude_op_types)
    quantization, shape_inference = _quantization_module()
    with tempfile.TemporaryDirectory(prefix="edge-agent-onnx-") as tmp_dir:
        tmp = Path(tmp_dir)
        if _normalize_opsets(model):
            src = tmp / "opsets.onnx"
            onnx.save(model, str(src))
        attempts = [src]
        if opts.preprocess:
            pre = tmp / "preprocessed.onnx"
            failure = _preprocess(shape_inference, src, pre, opts.exclude_nodes)
            if failure:
                notes.append(f"onnxruntime's quantization pre-processing fails on this model "
                             f"({failure}): quantized without it")
            else:
                attempts.insert(0, pre)
        errors: list[str] = []
        for model_path in attempts:
            try:
                with _quiet_onnxruntime():
                    if mode == "static":
                        _quantize_static(quantization, model_path, Path(out_path), calibration,
                                         opts, show_progress=show_progress, tmp=tmp)
                    else:
                        _quantize_dynamic(quantization, model_path, Path(out_path), opts)
            except Exception as err:  # onnxruntime raises plain Exceptions of many kinds
                errors.append(_one_line(err))
                continue
            if errors:
                notes.append(
                    f"onnxruntime's {mode} quantization fails after its shape pre-processing "
                    f"({errors[0]}): quantized without pre-processing (--no-preprocess skips it)"
                )
            return _quantization_record(opts, mode, why, preprocessed=model_path in attempts[:-1])
    raise ModelError(f"{float_path}: {mode} quantization failed: {errors[-1]}"
                     + _failure_hint(opts, mode))


def _normalize_opsets(model: Any) -> bool:
    """Declare each opset domain once, and the standard one at all; whether anything changed.

    The quantizer needs exactly one ai.onnx entry: skl2onnx declares it twice for a
    LogisticRegression, and not at all when a model has only ai.onnx.ml operators.
    """
    from onnx import helper

    versions: dict[str, int] = {}
    for opset in model.opset_import:
        domain = "" if opset.domain == "ai.onnx" else opset.domain
        versions[domain] = max(versions.get(domain, 0), int(opset.version))
    versions.setdefault("", QUANTIZER_OPSET)
    if len(versions) == len(model.opset_import) and all(
        op.domain != "ai.onnx" for op in model.opset_import
    ):
        return False
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in versions.items())
    return True


def _failure_hint(options: NeuralOptions, mode: QuantMode) -> str:
    hints = []
    if options.per_channel:
        hints.append("--per-tensor")
    hints.append(f"--mode {_other(mode)}")
    if not options.exclude_op_types and not options.exclude_nodes:
        hints.append("--exclude-op-types OP for the op that fails")
    return "; try " + ", or ".join(hints)


def _quantization_record(
    options: NeuralOptions, mode: QuantMode, why: str, *, preprocessed: bool
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "mode": mode,
        "mode_reason": why,
        "preprocessed": preprocessed,
        "per_channel": options.per_channel,
        "symmetric_activations": options.symmetric_activations if mode == "static" else False,
        "exclude_nodes": list(options.exclude_nodes),
        "exclude_op_types": list(options.exclude_op_types),
        "method": options.method if mode == "static" else None,
    }
    if mode == "static" and options.method == "percentile":
        record["percentile"] = options.percentile
    if mode == "static" and options.method == "entropy":
        record["entropy_bins"] = ENTROPY_BINS
        record["entropy_quantized_bins"] = ENTROPY_QUANTIZED_BINS
    return record


# -- IR versions -----------------------------------------------------------------------------------
@functools.cache
def max_onnxruntime_ir_version() -> int:
    """The newest ONNX IR version the installed onnxruntime reads, found by loading a one-node
    model at each IR version from onnx's own downwards (onnxruntime publishes no constant)."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [value],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    for ir in range(onnx.IR_VERSION, 6, -1):
        model.ir_version = ir
        try:
            onnxruntime.InferenceSession(
                model.SerializeToString(), providers=["CPUExecutionProvider"]
            )
        except Exception:  # onnxruntime raises its own Fail for an IR it cannot read
            continue
        return ir
    return 7


def readable_ir_version(model_bytes: bytes, source: Path) -> bytes:
    """``model_bytes`` with an IR version the installed onnxruntime reads.

    ``onnx`` saves models with its newest IR version (1.23: IR 14) before onnxruntime reads it
    (1.31: IR 13). The IR version labels the file format; a model that uses none of the newer
    IR's additions is the same model under the older label, so the label is lowered (with one
    warning line). A model that does use them is refused by onnxruntime when it loads. Bytes
    that are no ONNX model raise :class:`ModelError` in one line.
    """
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_from_string(model_bytes)
    except DecodeError as err:
        raise ModelError(f"{source}: not an ONNX model ({err})") from err
    newest = max_onnxruntime_ir_version()
    if model.ir_version <= newest:
        return model_bytes
    logger.warning(
        "%s: ONNX IR version %d is newer than onnxruntime %s reads (%d); converting it as IR %d",
        source, model.ir_version, _onnxruntime_version(), newest, newest,
    )
    model.ir_version = newest
    return bytes(model.SerializeToString())


def _onnxruntime_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


# -- measuring -------------------------------------------------------------------------------------
def _run_all(session: Session, samples: Samples, batch: int = 64) -> dict[str, np.ndarray]:
    """Outputs of ``session`` on every sample (in batches; the last batch is resized)."""
    n = _count(samples)
    results: dict[str, list[np.ndarray]] = {spec.name: [] for spec in session.output_specs}
    for start in range(0, n, batch):
        part = _slice(samples, slice(start, start + batch))
        session.set_batch(_count(part))
        for name, value in session.run(part).items():
            results[name].append(value.copy())
    return {name: np.concatenate(parts) for name, parts in results.items()}


def _latency(session: Session, samples: Samples, batch: int, repeats: int) -> float:
    n = _count(samples)
    index = np.arange(batch) % n
    feed = {k: v[index] for k, v in samples.items()}
    session.set_batch(batch)
    return median_latency_ms(lambda: session.run(feed), repeats)


def compare_models(
    float_session: Session,
    int8_session: Session,
    heldout: Samples,
    *,
    labels: np.ndarray | None = None,
    classify: bool = True,
    latency_repeats: int = 30,
) -> dict[str, Any]:
    """Float vs int8 on ``heldout``: errors, top-1 agreement, accuracy, latency (module doc)."""
    ref = _run_all(float_session, heldout)
    got = _run_all(int8_session, heldout)
    per_output: dict[str, dict[str, float | None]] = {}
    abs_sum = 0.0
    count = 0
    worst = 0.0
    for spec in float_session.output_specs:
        diff = np.abs(ref[spec.name].astype(np.float64) - got[spec.name].astype(np.float64))
        entry: dict[str, float | None] = {
            "max_abs_error": float(diff.max()),
            "mean_abs_error": float(diff.mean()),
            "float_abs_max": float(np.abs(ref[spec.name]).max()),
            "top1_agreement": None,
        }
        if classify:
            a = ref[spec.name].reshape(len(diff), -1).argmax(axis=1)
            b = got[spec.name].reshape(len(diff), -1).argmax(axis=1)
            entry["top1_agreement"] = float(np.mean(a == b))
        per_output[spec.name] = entry
        abs_sum += float(diff.sum())
        count += diff.size
        worst = max(worst, float(diff.max()))
    agreements = [
        e["top1_agreement"] for e in per_output.values() if e["top1_agreement"] is not None
    ]
    accuracy = None
    if labels is not None and classify:
        first = float_session.output_specs[0].name
        n = len(labels)
        accuracy = {
            "float": float(np.mean(ref[first].reshape(n, -1).argmax(axis=1) == labels)),
            "int8": float(np.mean(got[first].reshape(n, -1).argmax(axis=1) == labels)),
        }
    latency = {
        variant: {
            str(batch): _latency(session, heldout, batch, latency_repeats)
            for batch in LATENCY_BATCHES
        }
        for variant, session in (("float", float_session), ("int8", int8_session))
    }
    return {
        "heldout_samples": _count(heldout),
        "max_abs_error": worst,
        "mean_abs_error": abs_sum / max(1, count),
        "top1_agreement": min(agreements) if agreements else None,
        "outputs": per_output,
        "label_accuracy": accuracy,
        "latency_ms": latency,
    }


def neural_checks(data: Mapping[str, Any], thresholds: NeuralThresholds) -> list[Check]:
    accuracy = data["accuracy"]
    checks = []
    if thresholds.min_top1 is not None and accuracy["top1_agreement"] is not None:
        checks.append(Check("top-1 agreement", accuracy["top1_agreement"], thresholds.min_top1,
                            "min", "--min-top1"))
    if thresholds.max_abs_error is not None:
        checks.append(Check("max abs error", accuracy["max_abs_error"], thresholds.max_abs_error,
                            "max", "--max-abs-error"))
    return checks


def neural_rows(data: Mapping[str, Any]) -> list[tuple[str, ...]]:
    size = data["size"]
    acc = data["accuracy"]
    lat = data["latency_ms"]
    rows: list[tuple[str, ...]] = [
        ("", "float", "int8", "int8/float"),
        ("model file (bytes)", f"{size['float_bytes']:,}", f"{size['int8_bytes']:,}",
         f"{100 * size['ratio']:.1f} %"),
    ]
    quant = data.get("quantization")
    if quant:
        rows.append(("quantization", _describe_quantization(data["scheme"], quant,
                                                             data.get("calibration"))))
        if quant.get("mode_reason"):
            rows.append(("mode chosen", str(quant["mode_reason"])))
    for batch in LATENCY_BATCHES:
        f, q = lat["float"][str(batch)], lat["int8"][str(batch)]
        rows.append((f"latency batch {batch} (ms)", f"{f:.3f}", f"{q:.3f}", f"{q / f:.2f}x"))
    rows.append(("held-out samples", f"{acc['heldout_samples']:,}"))
    rows.append(("max abs error", f"{acc['max_abs_error']:.4g}"))
    rows.append(("mean abs error", f"{acc['mean_abs_error']:.4g}"))
    if acc["top1_agreement"] is not None:
        rows.append(("top-1 agreement", f"{100 * acc['top1_agreement']:.2f} %"))
    if acc.get("label_accuracy"):
        la = acc["label_accuracy"]
        rows.append(("label accuracy", f"{100 * la['float']:.2f} %", f"{100 * la['int8']:.2f} %"))
    return rows




def _describe_quantization(
    scheme: str, quant: Mapping[str, Any], calibration: Mapping[str, Any] | None
) -> str:
    """One line: what was done (``mode``, weights, calibration, pre-processing)."""
    parts = [str(quant.get("mode", scheme))]
    if "per_channel" in quant:
        parts.append("weights per channel" if quant["per_channel"] else "weights per tensor")
    if calibration and calibration.get("method"):
        method = calibration["method"]
        if method == "percentile":
            method += f" {calibration.get('percentile')}"
        parts.append(f"{method} calibration ({calibration.get('samples', 0):,} samples)")
    if quant.get("symmetric_activations"):
        parts.append("symmetric activations")
    if quant.get("preprocessed") is False:
        parts.append("no pre-processing")
    return ", ".join(parts)


def neural_spec(
    backend: Literal["onnxruntime", "litert"],
    model_file: str,
    session: Session,
    options: NeuralOptions,
    window: int,
) -> NeuralSpec:
    """The manifest's NeuralSpec for a converted model; ModelError if the device cannot run it."""
    if options.output_kind != "continuous" and (
        options.action_low is not None or options.action_high is not None
    ):
        raise InputError("--action-low/--action-high go with --output-kind continuous only")
    try:
        spec = NeuralSpec(
            backend=backend,
            model_file=model_file,
            inputs=session.input_specs,
            outputs=session.output_specs,
            window=window,
            output_kind=options.output_kind,
            action_low=options.action_low,
            action_high=options.action_high,
        )
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'neural'}: {e['msg']}" for e in err.errors()
        )
        raise InputError(
            f"the model cannot run as {options.output_kind} agents: {problems}"
        ) from err
    window_layout(spec)
    return spec


# -- the device's view -----------------------------------------------------------------------------
def _ticks(x: np.ndarray, window: int) -> list[np.ndarray]:
    """The per-tick observations that fill a group's window with the model inputs ``x``:
    ``T`` ticks of ``(n, F)`` for windows, one tick of ``(n, *frame)`` for frames."""
    if x.ndim == 4:
        return [x]
    rows = x.reshape(len(x), window, -1)
    return [rows[:, t] for t in range(window)]


def device_check(bundle: Bundle, samples: Samples, reference: Session) -> dict[str, Any]:
    """Run the written bundle as a device does and compare it with the measured int8 model.

    Builds the agent group from ``bundle`` (:meth:`NeuralAgentGroup.from_bundle`, or
    :meth:`PerceptionAifGroup.from_bundle` for ``aif+perception``), steps it on up to
    :data:`DEVICE_CHECK_AGENTS` of ``samples`` (one agent each, ``T`` ticks to fill the window)
    and requires its actions to be those of ``reference`` on the same inputs (ties agree).
    Raises ModelError in one line if a device would refuse or misread the bundle.
    """
    manifest = bundle.manifest
    n = min(DEVICE_CHECK_AGENTS, _count(samples))
    name, x = next(iter(samples.items()))
    x = x[:n]
    group: NeuralAgentGroup | PerceptionAifGroup
    spec = manifest.neural
    observation = (
        manifest.kind == "neural" and spec is not None and spec.output_kind == "observation"
    )
    try:
        if manifest.kind == "aif+perception":
            group = PerceptionAifGroup.from_bundle(bundle, n)
            window = group.perception.window
        elif observation:
            # A perception model on its own: the device builds it as a group's perception.
            assert spec is not None
            group = NeuralAgentGroup(spec, bundle.file_bytes(spec.model_file), n)
            window = group.window
        else:
            group = NeuralAgentGroup.from_bundle(bundle, n)
            window = group.window
    except EdgeAgentError as err:
        raise ModelError(f"a device would refuse this bundle: {err}") from err
    try:
        ticks = _ticks(x, window)
        actions = np.zeros(0)
        for obs in ticks:
            if observation:
                assert isinstance(group, NeuralAgentGroup)
                logits = group.forward(obs)[group.output.name]
                actions = np.argmax(logits, axis=1)
            else:
                actions = np.array(group.step(obs))
    except EdgeAgentError as err:
        raise ModelError(f"a device cannot step this bundle's agents: {err}") from err
    finally:
        group.release()
    if isinstance(group, NeuralAgentGroup):
        reference.set_batch(n)
        out = reference.run({name: x})[group.output.name].astype(np.float64)
        _compare_actions(group, actions, out)
    return {"agents": n, "ticks": len(ticks)}


def _compare_actions(group: NeuralAgentGroup, actions: np.ndarray, out: np.ndarray) -> None:
    tol = 1e-5 * max(1.0, float(np.abs(out).max()))
    if group.spec.output_kind == "continuous":
        low = np.asarray(group.spec.action_low, dtype=np.float64)
        high = np.asarray(group.spec.action_high, dtype=np.float64)
        bad = np.flatnonzero(~np.all(np.abs(actions - np.clip(out, low, high)) <= tol, axis=1))
    else:
        chosen = out[np.arange(len(out)), actions.astype(np.int64)]
        bad = np.flatnonzero(chosen < out.max(axis=1) - tol)
    if len(bad):
        i = int(bad[0])
        raise ModelError(
            f"the device's agent group and the measured int8 model disagree on calibration input "
            f"{i} (action {actions[i].tolist()}, model output {np.round(out[i], 4).tolist()}): "
            "the bundle's input layout is not what the model was measured with"
        )


# -- converting ------------------------------------------------------------------------------------
def convert_onnx(
    model_path: str | Path,
    out: str | Path,
    *,
    name: str,
    version: str = "1.0.0",
    options: NeuralOptions | None = None,
    calibration_path: str | Path | None = None,
    heldout_path: str | Path | None = None,
    input_range: tuple[float, float] | None = None,
    samples: int = 256,
    seed: int = 0,
    thresholds: NeuralThresholds | None = None,
    aif_model: GenerativeModel | None = None,
    aif_settings: AifSettings | None = None,
    aif_thresholds: AifThresholds | None = None,
    rollouts: int = 200,
    steps: int = 30,
    force: bool = False,
    sign_key: Ed25519PrivateKey | None = None,
    signer: str | None = None,
    show_progress: bool = False,
) -> ConversionReport:
    """Quantize an ONNX model, compare it with the float one, write (and sign) the bundle.

    With ``aif_model`` the bundle is ``aif+perception``: the network is the observation model
    (``output_kind`` must be ``observation``) and the generative model is quantized and measured
    as :func:`edge_agent_host.convert_aif.convert_aif` does. Returns the report; ``report.bundle``
    is ``None`` when a check failed and ``force`` is not set (nothing is written then).
    """
    import onnx

    opts = options or NeuralOptions()
    check_output(out)
    source = Path(model_path)
    try:
        float_bytes = source.read_bytes()
    except OSError as err:
        raise InputError(f"{source}: cannot read the model: {err.strerror or err}") from err
    if aif_model is not None and opts.output_kind != "observation":
        raise InputError("a perception bundle (--aif) needs --output-kind observation")
    backend = get_backend("onnxruntime")
    warnings: list[str] = []
    float_bytes = readable_ir_version(float_bytes, source)
    float_bytes = choose_outputs(float_bytes, opts, warnings, opts.threads)
    float_session = backend.load(float_bytes, opts.threads)
    inputs = float_session.input_specs
    window = infer_window(inputs, opts.window)
    for spec in inputs:
        _item_shape(spec)
    calibration, heldout, labels, data_source = gather_data(
        inputs, calibration_path=calibration_path, heldout_path=heldout_path,
        input_range=input_range, samples=samples, seed=seed,
    )
    if opts.output_kind != "continuous":
        check_labels(labels, float_session.output_specs[0], "held-out labels")
    with tempfile.TemporaryDirectory(prefix="edge-agent-onnx-") as tmp:
        int8_path = Path(tmp) / "model.int8.onnx"
        float_path = Path(tmp) / source.name
        float_path.write_bytes(float_bytes)
        record = quantize_onnx(float_path, int8_path, calibration, opts,
                               show_progress=show_progress, warnings=warnings)
        int8_bytes = int8_path.read_bytes()
    int8_session = backend.load(int8_bytes, opts.threads)
    left_float = float_weight_bytes(onnx.load_from_string(int8_bytes))
    note = size_warning(len(float_bytes), len(int8_bytes), left_float,
                        _mode_hint(record["mode"], left_float))
    if note is not None:
        warnings.append(note)
    static = record["mode"] == "static"
    calibration_info: dict[str, Any] = {
        "method": record.pop("method"),
        "samples": _count(calibration) if static else 0,
        "source": data_source,
        **{k: record.pop(k) for k in ("percentile", "entropy_bins", "entropy_quantized_bins")
           if k in record},
    }
    return finish_neural(
        backend_name="onnxruntime", model_file="model.onnx",
        scheme="onnx-qdq-s8s8" if static else "onnx-dynamic-u8s8",
        source=str(source), out=out, name=name, version=version, options=opts,
        float_bytes=float_bytes, int8_bytes=int8_bytes, float_session=float_session,
        int8_session=int8_session, window=window, heldout=heldout, labels=labels,
        calibration=calibration, calibration_info=calibration_info, quantization_info=record,
        warnings=warnings, thresholds=thresholds, aif_model=aif_model,
        aif_settings=aif_settings, aif_thresholds=aif_thresholds, rollouts=rollouts,
        steps=steps, seed=seed, force=force, sign_key=sign_key, signer=signer,
        show_progress=show_progress,
    )


def check_perception_outputs(session: Session, model: GenerativeModel) -> None:
    """An observation model needs one ``(batch, O_m)`` logits output per modality, in order."""
    outputs = session.output_specs
    if len(outputs) != model.num_modalities:
        raise ModelError(
            f"the observation model has {len(outputs)} outputs, the generative model "
            f"{model.num_modalities} modalities (output m gives the logits of modality m)"
        )
    for m, (spec, outcomes) in enumerate(zip(outputs, model.num_obs, strict=True)):
        if tuple(spec.shape[1:]) != (outcomes,):
            raise ModelError(
                f"output {m} {spec.name!r} has shape {list(spec.shape)}; modality {m} has "
                f"{outcomes} outcomes, expected [-1, {outcomes}]"
            )


def finish_neural(
    *,
    backend_name: Literal["onnxruntime", "litert"],
    model_file: str,
    scheme: str,
    source: str,
    out: str | Path,
    name: str,
    version: str,
    options: NeuralOptions,
    float_bytes: bytes,
    int8_bytes: bytes,
    float_session: Session,
    int8_session: Session,
    window: int,
    heldout: Samples,
    labels: np.ndarray | None,
    calibration: Samples,
    calibration_info: dict[str, Any],
    quantization_info: dict[str, Any],
    warnings: list[str],
    thresholds: NeuralThresholds | None,
    aif_model: GenerativeModel | None,
    aif_settings: AifSettings | None,
    aif_thresholds: AifThresholds | None,
    rollouts: int,
    steps: int,
    seed: int,
    force: bool,
    sign_key: Ed25519PrivateKey | None,
    signer: str | None,
    show_progress: bool,
) -> ConversionReport:
    """Compare, check, write, device-check and sign the bundle of a converted neural model (both
    converters)."""
    spec = neural_spec(backend_name, model_file, int8_session, options, window)
    if aif_model is not None:
        check_perception_outputs(int8_session, aif_model)
    comparison = compare_models(
        float_session, int8_session, heldout, labels=labels,
        classify=options.output_kind != "continuous", latency_repeats=options.latency_repeats,
    )
    latency = comparison.pop("latency_ms")
    backend = get_backend(backend_name)
    data: dict[str, Any] = {
        "scheme": scheme,
        "backend": backend_name,
        "backend_version": backend.version(),
        "quantization": quantization_info,
        "calibration": calibration_info,
        "size": {
            "float_bytes": len(float_bytes),
            "int8_bytes": len(int8_bytes),
            "ratio": len(int8_bytes) / len(float_bytes),
        },
        "accuracy": comparison,
        "latency_ms": latency,
    }
    checks = neural_checks(data, thresholds or NeuralThresholds())
    rows = neural_rows(data)
    kind: BundleKind = "neural"
    arrays: dict[str, np.ndarray] = {}
    aif = None
    if aif_model is not None:
        kind = "aif+perception"
        settings = aif_settings or AifSettings()
        quantized = quantize_model(aif_model)
        limits = aif_thresholds or AifThresholds()
        aif_data, aif_rows = aif_report_data(
            aif_model, quantized, settings, rollouts=rollouts, steps=steps, seed=seed,
            show_progress=show_progress, tie_tol=limits.tie_tolerance,
        )
        data["aif"] = aif_data
        rows += [("active inference model",), *aif_rows]
        checks += aif_checks(aif_data, limits)
        arrays, names = aif_bundle_arrays(quantized)
        aif = aif_spec(quantized, settings, names)
    report = ConversionReport(kind=kind, source=source, data=data, rows=rows, checks=checks,
                              warnings=list(warnings))
    if not report.passed and not force:
        return report
    inputs = calibration if calibration else heldout
    checked: dict[str, Any] = {}

    def on_device(bundle: Bundle) -> None:
        checked.update(device_check(bundle, inputs, int8_session))

    report.bundle = write_output(
        out, name=name, version=version, kind=kind, arrays=arrays,
        files={model_file: int8_bytes}, aif=aif, neural=spec,
        quantization=report.manifest_record(), sign_key=sign_key, signer=signer,
        device_check=on_device,
    )
    report.data["device_check"] = checked
    return report

"""Quantize a float ONNX model to int8 with onnxruntime (:func:`quantize_onnx`).

Quantization (``NeuralOptions.mode``):

* ``static``: ``onnxruntime.quantization.quantize_static`` in **QDQ** format with **int8
  activations and int8 weights** (S8S8), weights **per channel** unless ``per_channel`` is off,
  activation ranges calibrated with ``minmax`` (default), ``entropy`` (KL-optimal thresholds over
  a 2048-bin histogram, :data:`ENTROPY_BINS`) or ``percentile``. The QDQ model keeps float32
  inputs and outputs; ONNX Runtime fuses the Q/DQ pairs into int8 kernels.
* ``dynamic``: ``quantize_dynamic`` on ``MatMul`` and ``Gemm``: int8 weights, activations
  quantized per call (uint8), then made **per row**
  (:mod:`edge_agent_host.converter.neural.row_scales`): onnxruntime's own scale is one per call
  over the whole batch, which makes one agent's input change every other agent's output. An
  ``LSTM``'s weights are stored in int8 and dequantized in front of a float LSTM (onnxruntime's
  ``DynamicQuantizeLSTM`` quantizes each step over the whole batch too). No calibration.
* ``auto`` (default): the converter quantizes in both modes, measures both on the held-out set
  and keeps, of the modes as accurate as the other within a stated tolerance, static unless
  dynamic is the only one that shrinks the model (:func:`pick_mode`). Both keep every agent's
  row to itself; dynamic's per-row scales cost time every tick (docs/host-tool.md).

What a mode really quantized is measured on its output (:func:`quantized_share`: the share of the
float model's weight bytes that are no longer float), not predicted from op lists: onnxruntime's
dynamic mode, for one, turns ``Gemm`` into ``MatMulInteger`` though its registry lists no Gemm.

Before quantizing, ``onnxruntime.quantization.shape_inference.quant_pre_process`` (symbolic shape
inference and graph optimisation) runs unless ``preprocess`` is off; when it fails, or when the
quantizer fails on its output (onnxruntime's per-channel bias adjustment does on skl2onnx MLPs),
the model is quantized without it and the report says so in one line.

``--exclude-nodes`` and ``--exclude-op-types`` must name nodes and op types the model has. An int8
model not below :data:`SIZE_WARNING_RATIO` of the float model's size gets a warning naming the ops
whose weights stayed float (:func:`size_warning`).
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

from edge_agent.errors import EdgeAgentError, InputError, ModelError
from edge_agent_host.converter.neural.inputs import (
    CalibrationReader,
    Samples,
    check_calibration_size,
    sample_count,
)
from edge_agent_host.converter.neural.options import NeuralOptions
from edge_agent_host.converter.neural.row_scales import (
    DYNAMIC_ACTIVATION_OPS,
    DYNAMIC_WEIGHT_OPS,
    int8_recurrent_weights,
    per_row_activations,
)

logger = logging.getLogger(__name__)

__all__ = [
    "AUTO_ERROR_FACTOR",
    "AUTO_SIZE_MARGIN",
    "AUTO_TOP1_TOLERANCE",
    "CALIBRATION_METHODS",
    "DYNAMIC_ROWS",
    "ENTROPY_BINS",
    "ENTROPY_QUANTIZED_BINS",
    "INDEPENDENT_ROWS",
    "QUANTIZER_OPSET",
    "QUANT_MODES",
    "SIZE_WARNING_RATIO",
    "ModeResult",
    "QuantMode",
    "check_mode",
    "float_weight_bytes",
    "load_quantizer",
    "pick_mode",
    "quantizable_op_types",
    "quantize_onnx",
    "quantized_share",
    "size_warning",
]

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
QUANT_MODES = ("auto", "static", "dynamic")
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
QuantMode = Literal["static", "dynamic"]
#: ``auto`` (:func:`pick_mode`) never keeps a mode whose top-1 agreement with float is lower than
#: the other mode's by more than this (classifiers), or whose mean absolute error is more than
#: :data:`AUTO_ERROR_FACTOR` times the other's (continuous outputs); between accurate modes it
#: keeps static, unless static's file is not below :data:`SIZE_WARNING_RATIO` of the float one
#: (it quantized too little to pay) and dynamic's is smaller than static's by more than
#: :data:`AUTO_SIZE_MARGIN`.
AUTO_TOP1_TOLERANCE = 0.005
AUTO_ERROR_FACTOR = 1.5
AUTO_SIZE_MARGIN = 0.05
#: What the reason of a dynamic conversion asked for says of its activations.
DYNAMIC_ROWS = (
    "activation scales per row, so that no agent's input changes another's output (computed at "
    "every call: static's fixed scales cost less per tick)"
)
#: What the reason of every ``auto`` choice between both modes ends with.
INDEPENDENT_ROWS = (
    "both keep each agent's result independent of the other agents in its batch (dynamic's "
    "activation scales per row, not per batch)"
)


def _quantization_module() -> Any:
    try:
        from onnxruntime import quantization
        from onnxruntime.quantization import shape_inference
    except ImportError as err:
        raise EdgeAgentError(
            "ONNX quantization needs onnxruntime, onnx and sympy: "
            "pip install 'edge-agent-runtime[host]'"
        ) from err
    return quantization, shape_inference


def load_quantizer() -> None:
    """Import onnxruntime's quantizer and what its pre-processing imports on first use (sympy's
    symbolic shape inference: half a second), so that the first quantization timed is not
    charged for them."""
    _quantization_module()
    with contextlib.suppress(ImportError):
        import onnxruntime.tools.symbolic_shape_infer  # noqa: F401


@functools.cache
def quantizable_op_types() -> dict[QuantMode, frozenset[str]]:
    """The op types onnxruntime quantizes in each mode (its own operator registries)."""
    from onnxruntime.quantization import registry

    return {
        "static": frozenset(registry.QDQRegistry) | frozenset(registry.QLinearOpsRegistry),
        # Only the ops whose activations can be quantized per row, and the LSTM's weights
        # (row_scales); quantize_dynamic turns Gemm into MatMul first (MatMulInteger).
        "dynamic": DYNAMIC_ACTIVATION_OPS | DYNAMIC_WEIGHT_OPS,
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


def check_mode(requested: str) -> None:
    """InputError in one line for a mode that is not one of :data:`QUANT_MODES`."""
    if requested not in QUANT_MODES:
        raise InputError(f"quantization mode {requested!r}; choose one of {QUANT_MODES}")


def quantized_share(float_model: Any, int8_model: Any) -> float:
    """The share of ``float_model``'s float weight bytes that ``int8_model`` no longer holds in
    float (0.0 for a model without float weights)."""
    total = sum(float_weight_bytes(float_model).values())
    if not total:
        return 0.0
    left = sum(float_weight_bytes(int8_model).values())
    return max(0.0, 1.0 - left / total)


@dataclass(frozen=True)
class ModeResult:
    """One mode's int8 model measured on the held-out set (``auto`` compares two)."""

    mode: QuantMode
    size_ratio: float  # int8 file / float file
    quantized: float  # quantized_share
    top1_agreement: float | None  # None: continuous outputs
    mean_abs_error: float

    def describe(self) -> str:
        text = f"{self.mode} {100 * self.size_ratio:.1f} % of float, {100 * self.quantized:.0f} % "
        text += "of the weights quantized"
        if self.top1_agreement is not None:
            return text + f", top-1 {100 * self.top1_agreement:.2f} %"
        return text + f", mean abs error {self.mean_abs_error:.3g}"


def pick_mode(results: Sequence[ModeResult], failures: Mapping[str, str]) -> tuple[QuantMode, str]:
    """``(mode, why)`` for ``auto``, from both modes measured on the held-out set.

    The rule: never a mode less accurate than the other beyond the tolerance (top-1 agreement
    lower by more than :data:`AUTO_TOP1_TOLERANCE`, or, for continuous outputs, mean abs error
    over :data:`AUTO_ERROR_FACTOR` times the other's); of the accurate ones, **static**, whose
    activation scales are fixed at conversion, where dynamic computes each row's scale and zero
    point at every call (2.1-2.5x static's time per tick on the digits MLP, 3.1-4.1x on the
    sensor policy: docs/host-tool.md); dynamic only where static does not pay (its file not
    below :data:`SIZE_WARNING_RATIO` of the float one: an LSTM, whose recurrent weights static
    leaves float) and dynamic's file is smaller by more than :data:`AUTO_SIZE_MARGIN`. Neither
    mode couples the agents of a batch (:mod:`~edge_agent_host.converter.neural.row_scales`):
    ``why`` says so, and states the rule as it applied. ``failures``: the modes onnxruntime
    could not quantize, and why."""
    if not results:
        raise ValueError("pick_mode needs at least one result")
    classify = all(r.top1_agreement is not None for r in results)
    best_top1 = max(r.top1_agreement or 0.0 for r in results)
    least_error = min(r.mean_abs_error for r in results)
    tolerance = (
        f"top-1 within {100 * AUTO_TOP1_TOLERANCE:g} points"
        if classify
        else f"mean abs error within {AUTO_ERROR_FACTOR:g}x"
    )

    def accurate(r: ModeResult) -> bool:
        if classify:
            return (r.top1_agreement or 0.0) >= best_top1 - AUTO_TOP1_TOLERANCE - 1e-12
        return r.mean_abs_error <= AUTO_ERROR_FACTOR * least_error + 1e-12

    parts = [r.describe() for r in results]
    parts += [f"{mode} fails ({reason})" for mode, reason in failures.items()]
    candidates = [r for r in results if accurate(r)]
    both = len(results) > 1
    if not both:
        chosen, why = results[0], "the only mode that quantizes it"
    elif len(candidates) == 1:
        chosen = candidates[0]
        other = next(r for r in results if r is not chosen)
        if classify:
            gap = 100 * ((chosen.top1_agreement or 0.0) - (other.top1_agreement or 0.0))
            why = (
                f"more accurate: {other.mode}'s top-1 is {gap:.2f} points lower, beyond the "
                f"{100 * AUTO_TOP1_TOLERANCE:g}-point tolerance"
            )
        else:
            why = (
                f"more accurate: {other.mode}'s mean abs error is "
                f"{other.mean_abs_error / max(chosen.mean_abs_error, 1e-30):.2f}x, beyond the "
                f"{AUTO_ERROR_FACTOR:g}x tolerance"
            )
    elif all(r.quantized <= 0.0 for r in candidates):
        chosen = next(r for r in candidates if r.mode == "static")
        why = "neither mode quantizes any of the weights"
    else:
        static = next(r for r in candidates if r.mode == "static")
        dynamic = next(r for r in candidates if r.mode == "dynamic")
        shares = (
            f"{100 * dynamic.size_ratio:.1f} % against {100 * static.size_ratio:.1f} % of float"
        )
        if (
            static.size_ratio >= SIZE_WARNING_RATIO
            and dynamic.size_ratio < (1 - AUTO_SIZE_MARGIN) * static.size_ratio
        ):
            chosen = dynamic
            why = (
                f"as accurate, {tolerance}, and static does not pay (not below "
                f"{100 * SIZE_WARNING_RATIO:.0f} % of float) where dynamic does: {shares}"
            )
        else:
            chosen = static
            why = (
                f"as accurate, {tolerance}; static's activation scales are fixed, dynamic "
                "computes each row's at every call, which costs every tick"
            )
            if dynamic.size_ratio < static.size_ratio:
                why += f" (dynamic is smaller: {shares}; --mode dynamic where size matters more)"
    reason = f"auto: {'; '.join(parts)}: {chosen.mode} ({why})"
    return chosen.mode, reason + (f"; {INDEPENDENT_ROWS}" if both else "")


def _other(mode: QuantMode) -> QuantMode:
    return "dynamic" if mode == "static" else "static"


def size_warning(
    float_bytes: int,
    int8_bytes: int,
    float_weights: Mapping[str, int],
    mode_hint: str = "",
    *,
    overhead: str = "the Q/DQ bookkeeping",
    quantized: float | None = None,
) -> str | None:
    """One line when the int8 model is not below :data:`SIZE_WARNING_RATIO` of the float one,
    with the share of the weights it quantized (``quantized``, :func:`quantized_share`, when
    known), naming the ops whose weights stayed float (or else ``overhead``, what outweighs the
    weights); ``None`` otherwise."""
    ratio = int8_bytes / float_bytes if float_bytes else 1.0
    if ratio < SIZE_WARNING_RATIO:
        return None
    share = "" if quantized is None else f" and quantizes {100 * quantized:.0f} % of its weights"
    text = (
        f"the int8 model is {100 * ratio:.1f} % of the float model's size{share} (a conversion "
        f"that pays is below {100 * SIZE_WARNING_RATIO:.0f} %)"
    )
    if float_weights:
        left = ", ".join(
            f"{op} {size:,} B" for op, size in sorted(float_weights.items(), key=lambda kv: -kv[1])
        )
        text += f": weights left in float: {left}"
    else:
        text += f": {overhead} outweighs the weights of a model this small"
    return text + (f"; {mode_hint}" if mode_hint else "")


def mode_hint(mode: QuantMode, float_weights: Mapping[str, int]) -> str:
    """What to try when ``mode`` left ``float_weights`` in float."""
    ops = quantizable_op_types()
    other = _other(mode)
    movable = sorted(op for op in float_weights if op in ops[other] and op not in ops[mode])
    stuck = sorted(op for op in float_weights if op not in ops["static"] | ops["dynamic"])
    hints = []
    if movable:
        hints.append(f"--mode {other} quantizes {', '.join(movable)}")
    if stuck:
        hints.append(f"neither mode quantizes {', '.join(stuck)}")
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
    quantization: Any,
    model_path: Path,
    calibration: Samples,
    *,
    batch: int,
    symmetric: bool,
    tmp: Path,
) -> dict[str, list[dict[str, Any]]]:
    """Per-tensor activation ranges from entropy (KL) calibration, as TensorQuantOverrides;
    the model's head (:func:`head_tensors`) keeps its MinMax ranges."""
    import onnx

    calibrator = quantization.create_calibrator(
        str(model_path),
        None,
        augmented_model_path=str(tmp / "entropy-augmented.onnx"),
        calibrate_method=quantization.CalibrationMethod.Entropy,
        providers=["CPUExecutionProvider"],
        extra_options={
            "num_bins": ENTROPY_BINS,
            "num_quantized_bins": ENTROPY_QUANTIZED_BINS,
            "symmetric": symmetric,
        },
    )
    calibrator.collect_data(CalibrationReader(calibration, batch))
    ranges = calibrator.compute_data()
    overrides: dict[str, list[dict[str, Any]]] = {}
    for name in ranges:
        low, high = (np.asarray(v, dtype=np.float32).reshape(()) for v in ranges[name].range_value)
        overrides[name] = [{"rmin": low, "rmax": high}]

    # The head keeps MinMax ranges: a KL-optimal threshold clips a distribution's tail, and in
    # the logits and scores the tail is the decision (the largest value).
    observed = calibrator.collector.histogram_dict
    for name in head_tensors(onnx.load(str(model_path))):
        if name in observed:
            seen_min, seen_max = (float(v) for v in observed[name][2:4])
            if symmetric:
                seen_max = max(abs(seen_min), abs(seen_max))
                seen_min = -seen_max
            overrides[name] = [
                {
                    "rmin": np.asarray(seen_min, dtype=np.float32),
                    "rmax": np.asarray(seen_max, dtype=np.float32),
                }
            ]
    return overrides


def head_tensors(model: Any) -> list[str]:
    """The graph outputs and the tensors that lead to them from the last node with weights
    (``Gemm`` -> logits -> ``Softmax`` -> probabilities: both), through nodes of one
    non-constant input."""
    producers = {out: node for node in model.graph.node for out in node.output}
    constants = {init.name for init in model.graph.initializer}
    found: list[str] = []
    for output in model.graph.output:
        name = output.name
        while name not in found:
            found.append(name)
            node = producers.get(name)
            if node is None:
                break
            variable = [i for i in node.input if i and i not in constants]
            if len(variable) != 1 or len(variable) != len([i for i in node.input if i]):
                break  # a node with weights (or several inputs): the head starts at its output
            name = variable[0]
    return found


def _quantize_static(
    quantization: Any,
    src: Path,
    dst: Path,
    calibration: Samples,
    options: NeuralOptions,
    *,
    show_progress: bool,
    tmp: Path,
) -> None:
    extra: dict[str, Any] = {"ActivationSymmetric": options.symmetric_activations}
    method = quantization.CalibrationMethod.MinMax
    if options.method == "percentile":
        method = quantization.CalibrationMethod.Percentile
        extra["CalibPercentile"] = float(options.percentile)
    elif options.method == "entropy":
        extra["TensorQuantOverrides"] = _entropy_overrides(
            quantization,
            src,
            calibration,
            batch=options.calibration_batch,
            symmetric=options.symmetric_activations,
            tmp=tmp,
        )
    op_types = None
    if options.exclude_op_types:
        op_types = sorted(quantizable_op_types()["static"] - set(options.exclude_op_types))
    quantization.quantize_static(
        str(src),
        str(dst),
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
    """onnxruntime's dynamic quantization of MatMul and Gemm, its activations then quantized
    per row, and the LSTMs' weights in int8 (:mod:`~edge_agent_host.converter.neural.row_scales`):
    ``dst`` keeps every agent's row to itself."""
    import onnx

    op_types = sorted(DYNAMIC_ACTIVATION_OPS - set(options.exclude_op_types))
    excluded = list(options.exclude_nodes)
    if "Gemm" in options.exclude_op_types or excluded:
        src, gemms = _named_gemms(src, dst.with_name(dst.stem + ".named.onnx"), options)
        # quantize_dynamic replaces each Gemm with a MatMul named "<gemm>_MatMul" before it
        # looks at exclusions: exclude that name.
        excluded += [f"{name}_MatMul" for name in gemms]
    if op_types:
        quantization.quantize_dynamic(
            str(src),
            str(dst),
            op_types_to_quantize=op_types,
            per_channel=options.per_channel,
            weight_type=quantization.QuantType.QInt8,
            nodes_to_exclude=excluded or None,
        )
        model = onnx.load(str(dst))
    else:  # quantize_dynamic reads an empty list as "every op type"
        model = onnx.load(str(src))
    per_row_activations(model)
    if not set(options.exclude_op_types) >= DYNAMIC_WEIGHT_OPS:
        int8_recurrent_weights(model, options.exclude_nodes)
    onnx.save(model, str(dst))


def _named_gemms(src: Path, named: Path, options: NeuralOptions) -> tuple[Path, list[str]]:
    """The Gemm nodes ``options`` exclude (every one for ``--exclude-op-types Gemm``), named
    (unnamed ones get ``gemm_<i>``, the model saved to ``named``), and the model to quantize."""
    import onnx

    model = onnx.load(str(src))
    names = {node.name for node in model.graph.node}
    renamed = False
    gemms = []
    for i, node in enumerate(model.graph.node):
        if node.op_type != "Gemm":
            continue
        if "Gemm" in options.exclude_op_types and not node.name:
            while f"gemm_{i}" in names:
                i += 1  # noqa: PLW2901
            node.name = f"gemm_{i}"
            names.add(node.name)
            renamed = True
        if "Gemm" in options.exclude_op_types or node.name in options.exclude_nodes:
            gemms.append(node.name)
    if renamed:
        onnx.save(model, str(named))
        return named, gemms
    return src, gemms


def static_only_options(options: NeuralOptions) -> list[str]:
    """The flags in ``options`` that only static quantization uses (calibration settings);
    InputError for an unknown calibration method."""
    if options.method not in CALIBRATION_METHODS:
        raise InputError(
            f"calibration method {options.method!r}; choose one of {CALIBRATION_METHODS}"
        )
    return [
        flag
        for flag, used in (
            (f"--method {options.method}", options.method != "minmax"),
            ("--symmetric-activations", options.symmetric_activations),
        )
        if used
    ]


def quantize_onnx(
    float_path: str | Path,
    out_path: str | Path,
    calibration: Samples,
    options: NeuralOptions | None = None,
    *,
    mode: QuantMode | None = None,
    show_progress: bool = False,
    warnings: list[str] | None = None,
    source: str | Path | None = None,
) -> dict[str, Any]:
    """Quantize ``float_path`` into ``out_path`` in ``mode`` (default ``options.mode``, which
    must then be ``static`` or ``dynamic``: ``auto`` is the converter's, which measures both).

    Returns what was really done (``mode``, ``mode_reason``: the share of the weights really
    quantized, ``quantized_share``, ``preprocessed``, ``per_channel``, ``symmetric_activations``,
    excluded nodes and op types, the calibration ``method`` and its parameters, ``None`` for
    dynamic). Fallbacks are appended to ``warnings`` as one line each. ``source`` names the
    model in errors (default ``float_path``). A model with no node onnxruntime quantizes in
    ``mode`` is written unchanged (nothing to quantize or calibrate), with a warning.
    """
    import shutil

    import onnx

    opts = options or NeuralOptions()
    notes = warnings if warnings is not None else []
    src = Path(float_path)
    model = onnx.load(str(src))
    check_mode(opts.mode)
    chosen = mode or opts.mode
    if chosen not in ("static", "dynamic"):
        raise ValueError("quantize_onnx needs mode static or dynamic; auto is convert_onnx's")
    mode = "static" if chosen == "static" else "dynamic"
    asked = static_only_options(opts)
    if asked and mode == "dynamic":
        raise InputError(
            f"{asked[0]} calibrates static quantization, and this conversion is dynamic;"
            " pass --mode static (or auto) to use it"
        )
    if mode == "static":
        check_calibration_size(sample_count(calibration) if calibration else 0, notes)
    _check_exclusions(model, opts.exclude_nodes, opts.exclude_op_types)
    quantization, shape_inference = _quantization_module()
    present = {node.op_type for node in model.graph.node if node.name not in opts.exclude_nodes}
    if not present & (quantizable_op_types()[mode] - set(opts.exclude_op_types)):
        notes.append(
            f"{mode} quantization has nothing to quantize or calibrate in this model: "
            f"onnxruntime quantizes none of its op types ({', '.join(sorted(present))}) in "
            f"{mode} mode"
        )
        shutil.copyfile(src, out_path)
        record = _quantization_record(
            opts, mode, "as asked: 0 % of the weights quantized", preprocessed=False
        )
        record["quantized_share"] = 0.0
        return record
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
                notes.append(
                    f"onnxruntime's quantization pre-processing fails on this model "
                    f"({failure}): quantized without it"
                )
            else:
                attempts.insert(0, pre)
        errors: list[str] = []
        for model_path in attempts:
            try:
                with _quiet_onnxruntime():
                    if mode == "static":
                        _quantize_static(
                            quantization,
                            model_path,
                            Path(out_path),
                            calibration,
                            opts,
                            show_progress=show_progress,
                            tmp=tmp,
                        )
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
            share = quantized_share(model, onnx.load(str(out_path)))
            why = f"as asked: {100 * share:.0f} % of the weights quantized"
            if mode == "dynamic":
                why += f"; {DYNAMIC_ROWS}"
            record = _quantization_record(opts, mode, why, preprocessed=model_path in attempts[:-1])
            record["quantized_share"] = round(share, 4)
            return record
    raise ModelError(
        f"{source or float_path}: {mode} quantization failed: {errors[-1]}"
        + _failure_hint(opts, mode)
    )


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

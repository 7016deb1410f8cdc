"""Convert a float ONNX model to a static int8 QDQ model, measure it, and bundle it.

Pipeline: ``onnxruntime.quantization.shape_inference.quant_pre_process`` (symbolic shape
inference and graph optimisation; needs sympy), then ``quantize_static`` in **QDQ** format with
**int8 activations and int8 weights** (S8S8), weights **per channel** unless ``per_channel`` is
off, activations calibrated with ``MinMax`` (default), ``Entropy`` or ``Percentile``. The QDQ model
keeps float32 inputs and outputs; ONNX Runtime fuses the Q/DQ pairs into int8 kernels.

Calibration data is an ``.npz`` of real inputs: one array per model input, keyed by the input's
name, shaped ``(n, *input_shape[1:])`` (a model with one input also accepts a single array under
any key). Without one, inputs are drawn uniformly from a declared range, with a logged warning:
ranges a model never sees in use make for poor activation scales.

The report compares the float and int8 models on a held-out set (``--heldout``; else the last 20 %
of the calibration ``.npz``, kept out of calibration; else fresh draws from the range): max and
mean absolute error over every output value, top-1 agreement of the first output (or of each
output, for perception models), file sizes, and latency at batch 1 and 64 (median of repeats,
both models in this process, through the same backend sessions a device uses). An optional array
``labels`` ``(n,)`` in the held-out ``.npz`` adds the top-1 accuracy of both models.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.quant import quantize_model
from edge_agent.aif.settings import AifSettings
from edge_agent.bundle.loader import BundleKind, NeuralSpec, TensorSpec
from edge_agent.errors import EdgeAgentError, InputError, ModelError
from edge_agent.neural.backends import Session, get_backend
from edge_agent.neural.groups import window_layout
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
    "HELDOUT_FRACTION",
    "CalibrationReader",
    "NeuralOptions",
    "NeuralThresholds",
    "compare_models",
    "convert_onnx",
    "load_samples",
    "neural_checks",
    "onnx_tensors",
    "quantize_onnx",
    "range_samples",
]

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
HELDOUT_FRACTION = 0.2
OutputKind = Literal["discrete", "continuous", "observation"]
Samples = dict[str, np.ndarray]
LATENCY_BATCHES = (1, 64)


@dataclass(frozen=True)
class NeuralOptions:
    """How the neural model is used on the device and how it is quantized."""

    output_kind: OutputKind = "discrete"
    window: int | None = None
    action_low: tuple[float, ...] | None = None
    action_high: tuple[float, ...] | None = None
    method: str = "minmax"
    percentile: float = 99.999
    per_channel: bool = True
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


def quantize_onnx(
    float_path: str | Path,
    out_path: str | Path,
    calibration: Samples,
    *,
    method: str = "minmax",
    per_channel: bool = True,
    percentile: float = 99.999,
    batch: int = 32,
    show_progress: bool = False,
) -> None:
    """Pre-process and statically quantize ``float_path`` into ``out_path`` (QDQ, S8S8)."""
    if method not in CALIBRATION_METHODS:
        raise InputError(f"calibration method {method!r}; choose one of {CALIBRATION_METHODS}")
    quantization, shape_inference = _quantization_module()
    methods = {
        "minmax": quantization.CalibrationMethod.MinMax,
        "entropy": quantization.CalibrationMethod.Entropy,
        "percentile": quantization.CalibrationMethod.Percentile,
    }
    extra: dict[str, Any] = {}
    if method == "percentile":
        extra["CalibPercentile"] = float(percentile)
    with tempfile.TemporaryDirectory(prefix="edge-agent-onnx-") as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        try:
            shape_inference.quant_pre_process(str(float_path), str(pre))
        except Exception as err:  # onnxruntime raises plain Exceptions of many kinds
            raise ModelError(f"{float_path}: quantization pre-processing failed: {err}") from err
        reader = CalibrationReader(calibration, batch, show_progress=show_progress)
        chatter = io.StringIO()  # onnxruntime prints progress to stdout; keep stdout for --json
        try:
            with contextlib.redirect_stdout(chatter):
                quantization.quantize_static(
                    str(pre),
                    str(out_path),
                    reader,
                    quant_format=quantization.QuantFormat.QDQ,
                    per_channel=per_channel,
                    activation_type=quantization.QuantType.QInt8,
                    weight_type=quantization.QuantType.QInt8,
                    calibrate_method=methods[method],
                    calibration_providers=["CPUExecutionProvider"],
                    extra_options=extra,
                )
        except Exception as err:
            raise ModelError(f"{float_path}: static quantization failed: {err}") from err
        finally:
            if chatter.getvalue().strip():
                logger.debug("onnxruntime quantization: %s", chatter.getvalue().strip())


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
        accuracy = {
            "float": float(np.mean(ref[first].argmax(axis=1) == labels)),
            "int8": float(np.mean(got[first].argmax(axis=1) == labels)),
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


def infer_window(inputs: tuple[TensorSpec, ...], window: int | None) -> int:
    """The history window: ``(batch, T, F)`` inputs give ``T``; flat ones need ``--window``."""
    if len(inputs) != 1:
        raise ModelError(
            f"the model has inputs {[t.name for t in inputs]}; neural agents feed exactly one "
            "(the observation window)"
        )
    shape = inputs[0].shape
    if len(shape) == 3:
        if window is not None and window != shape[1]:
            raise InputError(f"--window {window} does not match the model's input {list(shape)}")
        return int(shape[1])
    return 1 if window is None else window


def split_heldout(
    calibration: Samples, labels: np.ndarray | None
) -> tuple[Samples, Samples, np.ndarray | None]:
    """Keep the last :data:`HELDOUT_FRACTION` of the calibration set out of calibration."""
    n = _count(calibration)
    if n < 2:
        raise InputError("the calibration set needs at least 2 samples to hold some out")
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
    float_bytes = readable_ir_version(float_bytes, source)
    float_session = backend.load(float_bytes, opts.threads)
    inputs = float_session.input_specs
    window = infer_window(inputs, opts.window)
    for spec in inputs:
        _item_shape(spec)
    calibration, heldout, labels, data_source = gather_data(
        inputs, calibration_path=calibration_path, heldout_path=heldout_path,
        input_range=input_range, samples=samples, seed=seed,
    )
    with tempfile.TemporaryDirectory(prefix="edge-agent-onnx-") as tmp:
        int8_path = Path(tmp) / "model.int8.onnx"
        float_path = Path(tmp) / source.name
        float_path.write_bytes(float_bytes)
        quantize_onnx(
            float_path, int8_path, calibration, method=opts.method, per_channel=opts.per_channel,
            percentile=opts.percentile, batch=opts.calibration_batch, show_progress=show_progress,
        )
        int8_bytes = int8_path.read_bytes()
    int8_session = backend.load(int8_bytes, opts.threads)
    calibration_info: dict[str, Any] = {
        "method": opts.method,
        "per_channel": opts.per_channel,
        "samples": _count(calibration),
        "source": data_source,
        **({"percentile": opts.percentile} if opts.method == "percentile" else {}),
    }
    return finish_neural(
        backend_name="onnxruntime", model_file="model.onnx", scheme="onnx-qdq-s8s8",
        source=str(source), out=out, name=name, version=version, options=opts,
        float_bytes=float_bytes, int8_bytes=int8_bytes, float_session=float_session,
        int8_session=int8_session, window=window, heldout=heldout, labels=labels,
        calibration_info=calibration_info, thresholds=thresholds, aif_model=aif_model,
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
    calibration_info: dict[str, Any],
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
    """Compare, check, and write the bundle of a converted neural model (both converters)."""
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
    report = ConversionReport(kind=kind, source=source, data=data, rows=rows, checks=checks)
    if not report.passed and not force:
        return report
    report.bundle = write_output(
        out, name=name, version=version, kind=kind, arrays=arrays,
        files={model_file: int8_bytes}, aif=aif, neural=spec,
        quantization=report.manifest_record(), sign_key=sign_key, signer=signer,
    )
    return report

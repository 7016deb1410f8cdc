"""Convert a float ONNX model to an int8 model, measure it, check it on the device path, bundle it.

:func:`convert_onnx` reads the model (an IR version newer than onnxruntime reads is relabelled:
:func:`readable_ir_version`) and runs the steps, each in its own module:

* :mod:`edge_agent_host.converter.neural.outputs`: the outputs a bundle keeps (class labels,
  single columns and ZipMaps are dropped or unzipped);
* :mod:`edge_agent_host.converter.neural.inputs`: input shapes, the history window, calibration and
  held-out data;
* :mod:`edge_agent_host.converter.neural.onnx_quantize`: int8 quantization with onnxruntime
  (``static``, ``dynamic`` or ``auto``, calibration methods, pre-processing, exclusions, the size
  warning);
* :mod:`edge_agent_host.converter.neural.measure`: float vs int8 on the held-out set (the report);
* :mod:`edge_agent_host.converter.neural.calibration_advice`: what the report says of the
  calibration method (for entropy or percentile, measured against minmax on the same held-out
  set);
* :mod:`edge_agent_host.converter.neural.bundle` and
  :mod:`edge_agent_host.converter.neural.device_check`: the bundle, loaded and stepped as a device
  does before it is signed.

The options and thresholds are :mod:`edge_agent_host.converter.neural.options`. Every name the CLI,
the TFLite converter, tests and benchmarks import from this module is re-exported by it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.errors import InputError, ModelError
from edge_agent.neural.backends import get_backend
from edge_agent_host.converter.common import Converter, ConvertOptions, add_common_options
from edge_agent_host.converter.neural.args import add_neural_options, read_neural_options
from edge_agent_host.converter.neural.bundle import ConvertedModel, finish_neural, perception_model
from edge_agent_host.converter.neural.calibration_advice import (
    METHOD_HELP,
    MethodResult,
    method_advice,
)
from edge_agent_host.converter.neural.device_check import DEVICE_CHECK_AGENTS, device_check
from edge_agent_host.converter.neural.inputs import (
    HELDOUT_FRACTION,
    MIN_CALIBRATION_SAMPLES,
    CalibrationReader,
    Samples,
    check_calibration_size,
    check_labels,
    gather_data,
    infer_window,
    item_shape,
    load_samples,
    onnx_tensors,
    range_samples,
    sample_count,
)
from edge_agent_host.converter.neural.measure import (
    Agreement,
    agreement,
    compare_models,
    neural_checks,
    run_all,
)
from edge_agent_host.converter.neural.onnx_quantize import (
    AUTO_ERROR_FACTOR,
    AUTO_TOP1_TOLERANCE,
    CALIBRATION_METHODS,
    ENTROPY_BINS,
    QUANT_MODES,
    SIZE_WARNING_RATIO,
    ModeResult,
    QuantMode,
    check_mode,
    float_weight_bytes,
    load_quantizer,
    mode_hint,
    pick_mode,
    quantize_onnx,
    size_warning,
    static_only_options,
)
from edge_agent_host.converter.neural.options import NeuralOptions, NeuralThresholds
from edge_agent_host.converter.neural.outputs import (
    check_outputs,
    choose_outputs,
    output_problem,
    select_outputs,
    unzip_outputs,
)
from edge_agent_host.converter.neural.row_scales import DYNAMIC_SCHEME
from edge_agent_host.converter.output import check_output
from edge_agent_host.converter.report import ConversionReport

logger = logging.getLogger(__name__)

__all__ = [
    "CALIBRATION_METHODS",
    "CONVERTER",
    "DEVICE_CHECK_AGENTS",
    "ENTROPY_BINS",
    "HELDOUT_FRACTION",
    "MIN_CALIBRATION_SAMPLES",
    "QUANT_MODES",
    "SIZE_WARNING_RATIO",
    "CalibrationReader",
    "ConvertOptions",
    "ConvertedModel",
    "NeuralOptions",
    "NeuralThresholds",
    "Samples",
    "check_calibration_size",
    "check_labels",
    "check_outputs",
    "compare_models",
    "convert_onnx",
    "device_check",
    "finish_neural",
    "gather_data",
    "infer_window",
    "load_samples",
    "max_onnxruntime_ir_version",
    "neural_checks",
    "onnx_tensors",
    "output_problem",
    "pick_mode",
    "quantize_onnx",
    "range_samples",
    "readable_ir_version",
    "select_outputs",
    "size_warning",
    "unzip_outputs",
]


# -- IR versions -----------------------------------------------------------------------------------
@functools.cache
def max_onnxruntime_ir_version() -> int:
    """The newest ONNX IR version the installed onnxruntime reads, found by loading a one-node
    model at each IR version from onnx's own downwards (onnxruntime publishes no constant)."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "probe",
        [value],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
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


def read_onnx(source: Path, warnings: list[str]) -> bytes:
    """The ONNX model at ``source`` as one self-contained serialized model.

    ``torch.onnx.export`` (the dynamo exporter, torch's default since 2.9) writes the weights to
    an external data file next to the model (``model.onnx.data``). Those weights are read (onnx
    checks that each location stays inside the model's directory and within its file) and put
    into the model, which is what the bundle carries; one warning line says so. InputError in
    one line when the file or its weights cannot be read.
    """
    import onnx
    from google.protobuf.message import DecodeError
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    try:
        model_bytes = source.read_bytes()
    except OSError as err:
        raise InputError(f"{source}: cannot read the model: {err.strerror or err}") from err
    try:
        model = onnx.load_from_string(model_bytes)
    except DecodeError as err:
        raise ModelError(f"{source}: not an ONNX model ({err})") from err
    if not model.graph.output:  # protobuf reads any bytes, an empty file too, as a model
        raise ModelError(
            f"{source}: not an ONNX model ("
            + ("the file is empty)" if not model_bytes else "it has no graph outputs)")
        )
    external = [t for t in _all_tensors(model) if uses_external_data(t)]
    if not external:
        return model_bytes
    files = sorted({e.value for t in external for e in t.external_data if e.key == "location"})
    try:
        load_external_data_for_model(model, str(source.parent))
    except (OSError, ValueError, onnx.checker.ValidationError) as err:
        # onnx's checks: a missing file, a location outside the model's directory, past its end
        raise InputError(
            f"{source}: its weights are in external data ({', '.join(files)}) that cannot be "
            f"read ({' '.join(str(err).split())}): keep the .onnx file and its data file "
            "together, as the exporter wrote them"
        ) from err
    for tensor in external:  # as if saved inline: no explicit "stored here" marker
        tensor.ClearField("data_location")
    warnings.append(
        f"{len(external)} weight tensor(s) read from the external data file "
        f"{', '.join(files)} and put into the model: the bundle carries one self-contained file"
    )
    return bytes(model.SerializeToString())


def _all_tensors(model: Any) -> list[Any]:
    """Every tensor the model holds: initializers and tensor attributes (a Constant's value),
    in subgraphs (If, Loop, Scan bodies) too."""
    found: list[Any] = []
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        found.extend(graph.initializer)
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    found.append(attr.t)
                found.extend(attr.tensors)
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)
    return found


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
        source,
        model.ir_version,
        _onnxruntime_version(),
        newest,
        newest,
    )
    model.ir_version = newest
    return bytes(model.SerializeToString())


def _onnxruntime_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


# -- converting ------------------------------------------------------------------------------------
def convert_onnx(options: ConvertOptions, neural: NeuralOptions | None = None) -> ConversionReport:
    """Quantize the ONNX model ``options.model``, compare it with the float one, write (and sign)
    the bundle.

    With ``neural.aif`` the bundle is ``aif+perception``: the network is the observation model
    (``output_kind`` must be ``observation``) and the generative model is quantized and measured
    as :func:`edge_agent_host.converter.formats.aif.convert_aif` does. Returns the report;
    ``report.bundle`` is ``None`` when a check failed and ``options.force`` is not set (nothing
    is written then).
    """
    import onnx

    opts = neural or NeuralOptions()
    check_output(options.out)
    source = options.input("a float .onnx model")
    perception_model(opts)
    backend = get_backend("onnxruntime")
    warnings: list[str] = []
    float_bytes = read_onnx(source, warnings)
    float_bytes = readable_ir_version(float_bytes, source)
    float_bytes = choose_outputs(float_bytes, opts, warnings, opts.threads)
    float_session = backend.load(float_bytes, opts.threads)
    inputs = float_session.input_specs
    window = infer_window(inputs, opts.window)
    for spec in inputs:
        item_shape(spec)
    for spec in float_session.output_specs:
        if spec.shape[:1] != (-1,):
            raise ModelError(
                f"output {spec.name!r} has shape {list(spec.shape)}: a fixed batch, where the "
                "rows must follow the input's batch (torch.export fixes a dimension of size 1: "
                "export with an example batch of 2 or more)"
            )
    calibration, heldout, labels, data_source = gather_data(
        inputs,
        calibration_path=opts.calibration,
        heldout_path=opts.heldout,
        input_range=opts.input_range,
        samples=opts.samples,
        seed=options.seed,
        calibrate=_calibrates(opts),
    )
    if opts.output_kind != "continuous":
        check_labels(labels, float_session.output_specs[0], "held-out labels")
    with tempfile.TemporaryDirectory(prefix="edge-agent-onnx-") as tmp:
        float_path = Path(tmp) / source.name
        float_path.write_bytes(float_bytes)
        int8_bytes, record = _quantize(
            float_path,
            Path(tmp),
            calibration,
            heldout=heldout,
            options=opts,
            float_session=float_session,
            warnings=warnings,
            show_progress=options.show_progress,
            source=source,
        )
    int8_session = backend.load(int8_bytes, opts.threads)
    left_float = float_weight_bytes(onnx.load_from_string(int8_bytes))
    hint = mode_hint(record["mode"], left_float)
    forced = static_only_options(opts)
    if hint and opts.mode == "auto" and forced and "--mode dynamic" in hint:
        hint += f" (auto was static because of {forced[0]}: without it, auto measures dynamic too)"
    note = size_warning(
        len(float_bytes), len(int8_bytes), left_float, hint, quantized=record["quantized_share"]
    )
    if note is not None:
        warnings.append(note)
    static = record["mode"] == "static"
    calibration_info: dict[str, Any] = {
        "method": record.pop("method"),
        "samples": sample_count(calibration) if static and calibration else 0,
        "source": data_source,
        **{
            k: record.pop(k)
            for k in ("percentile", "entropy_bins", "entropy_quantized_bins")
            if k in record
        },
        **{
            k.removeprefix("calibration_"): record.pop(k)
            for k in ("calibration_advice", "calibration_minmax", "calibration_minmax_error")
            if k in record
        },
    }
    seconds = record.pop("seconds")
    converted = ConvertedModel(
        backend="onnxruntime",
        model_file="model.onnx",
        scheme="onnx-qdq-s8s8" if static else DYNAMIC_SCHEME,
        source=str(source),
        float_bytes=float_bytes,
        int8_bytes=int8_bytes,
        float_session=float_session,
        int8_session=int8_session,
        window=window,
        heldout=heldout,
        labels=labels,
        calibration=calibration,
        calibration_info=calibration_info,
        quantization_info=record,
        warnings=warnings,
        quantized_share=record["quantized_share"],
        quantize_seconds=seconds,
    )
    report = finish_neural(converted, options, opts)
    if not report.passed and opts.mode == "static":
        report.retry = (
            "--mode auto (the default: it measures dynamic quantization too, which calibrates "
            "nothing)"
        )
    return report


def _calibrates(options: NeuralOptions) -> bool:
    """Whether the conversion needs calibration data: static mode does; ``auto`` does unless it
    is given held-out data alone (and no static-only option), when it quantizes dynamically
    (:func:`_auto_modes`)."""
    check_mode(options.mode)
    if options.mode != "auto":
        return options.mode == "static"
    return not (
        options.calibration is None
        and options.input_range is None
        and options.heldout is not None
        and not static_only_options(options)
    )


def _auto_modes(options: NeuralOptions, calibration: Samples) -> tuple[list[QuantMode], str]:
    """The modes ``--mode`` asks to quantize in, and why only one when ``auto`` has one."""
    check_mode(options.mode)
    if options.mode != "auto":
        return ["static" if options.mode == "static" else "dynamic"], ""
    asked = static_only_options(options)
    if asked:
        return ["static"], f"auto: {asked[0]} calibrates static quantization: static"
    if not calibration:
        return ["dynamic"], (
            "auto: held-out data but no calibration data (--calibration or --input-range), "
            "which static quantization needs: dynamic, which needs none (give calibration "
            "data to measure static too)"
        )
    return ["static", "dynamic"], ""


def _quantize(
    float_path: Path,
    tmp: Path,
    calibration: Samples,
    *,
    heldout: Samples,
    options: NeuralOptions,
    float_session: Any,
    warnings: list[str],
    show_progress: bool,
    source: Path,
) -> tuple[bytes, dict[str, Any]]:
    """The int8 model and its quantization record. ``--mode auto`` quantizes in both modes,
    measures both on the held-out set and keeps one (:func:`pick_mode`); the record's
    ``mode_reason`` gives both measurements."""
    modes, why = _auto_modes(options, calibration)
    backend = get_backend("onnxruntime")
    classify = options.output_kind != "continuous"
    ref = run_all(float_session, heldout) if len(modes) > 1 else {}
    float_size = float_path.stat().st_size
    done: dict[QuantMode, tuple[bytes, dict[str, Any], list[str]]] = {}
    results: list[ModeResult] = []
    failures: dict[str, str] = {}
    seconds: dict[str, float] = {}
    measured: dict[QuantMode, Agreement] = {}
    load_quantizer()
    for mode in modes:
        notes: list[str] = []
        out = tmp / f"model.{mode}.onnx"
        started = time.perf_counter()
        try:
            record = quantize_onnx(
                float_path,
                out,
                calibration,
                options,
                mode=mode,
                show_progress=show_progress,
                warnings=notes,
                source=source,
            )
        except ModelError as err:
            if len(modes) == 1:
                raise
            failures[mode] = str(err).split(": ", 1)[-1]
            continue
        seconds[mode] = time.perf_counter() - started
        int8_bytes = out.read_bytes()
        done[mode] = (int8_bytes, record, notes)
        if len(modes) > 1:
            measured[mode] = agreement(
                ref, backend.load(int8_bytes, options.threads), heldout, classify=classify
            )
            results.append(
                ModeResult(
                    mode,
                    len(int8_bytes) / float_size,
                    record["quantized_share"],
                    measured[mode].top1,
                    measured[mode].mean_abs_error,
                )
            )
    if not done:
        raise ModelError(
            f"{source}: quantization failed in both modes: "
            + "; ".join(f"{mode}: {reason}" for mode, reason in failures.items())
        )
    if len(modes) > 1:
        chosen, why = pick_mode(results, failures)
    else:
        chosen = next(iter(done))
    int8_bytes, record, notes = done[chosen]
    if why:
        record["mode_reason"] = why
    if results:
        record["auto"] = [
            {
                "mode": r.mode,
                "size_ratio": round(r.size_ratio, 4),
                "quantized_share": round(r.quantized, 4),
                "top1_agreement": r.top1_agreement,
                "mean_abs_error": r.mean_abs_error,
            }
            for r in results
        ]
    if chosen == "static" and record["quantized_share"] > 0:
        ref = ref or run_all(float_session, heldout)
        used = measured.get("static") or agreement(
            ref, backend.load(int8_bytes, options.threads), heldout, classify=classify
        )
        record.update(
            _calibration_advice(
                float_path,
                tmp,
                calibration,
                used,
                ref,
                heldout=heldout,
                options=options,
                seconds=seconds,
                source=source,
            )
        )
    record["seconds"] = {mode: round(t, 3) for mode, t in seconds.items()}
    warnings.extend(notes)
    return int8_bytes, record


def _calibration_advice(
    float_path: Path,
    tmp: Path,
    calibration: Samples,
    used: Agreement,
    ref: dict[str, Any],
    *,
    heldout: Samples,
    options: NeuralOptions,
    seconds: dict[str, float],
    source: Path,
) -> dict[str, Any]:
    """What the report says of the calibration method (:func:`method_advice`): ``used``, the
    static model's agreement; for entropy or percentile, minmax quantized and measured on the
    same held-out set too (its time goes into ``seconds``)."""
    classify = options.output_kind != "continuous"
    minmax = None
    record: dict[str, Any] = {}
    if options.method != "minmax":
        out = tmp / "model.minmax.onnx"
        started = time.perf_counter()
        try:
            quantize_onnx(
                float_path,
                out,
                calibration,
                dataclasses.replace(options, method="minmax"),
                mode="static",
                warnings=[],
                source=source,
            )
        except ModelError as err:
            record["calibration_minmax_error"] = str(err).split(": ", 1)[-1]
        else:
            seconds["minmax (comparison)"] = time.perf_counter() - started
            got = agreement(
                ref,
                get_backend("onnxruntime").load(out.read_bytes(), options.threads),
                heldout,
                classify=classify,
            )
            minmax = MethodResult("minmax", got.top1, got.max_abs_error, got.mean_abs_error)
            record["calibration_minmax"] = {
                "top1_agreement": got.top1,
                "max_abs_error": got.max_abs_error,
                "mean_abs_error": got.mean_abs_error,
            }
    scale = max((float(np.abs(v).max(initial=0.0)) for v in ref.values()), default=0.0)
    record["calibration_advice"] = method_advice(
        MethodResult(options.method, used.top1, used.max_abs_error, used.mean_abs_error),
        minmax,
        scale,
        percentile=options.percentile,
    )
    return record


# ``convert onnx`` ------------------------------------------------------------------------------


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="float .onnx model")
    add_common_options(parser)
    add_neural_options(parser)
    quant = parser.add_argument_group("ONNX quantization")
    quant.add_argument(
        "--mode",
        choices=QUANT_MODES,
        default="auto",
        help="static: QDQ int8 activations and weights, calibrated; dynamic: int8 "
        "weights (MatMul, Gemm, LSTM), activations quantized per call with a "
        "scale per row, so that no agent's input changes another's output "
        "(needs no calibration data); auto (default): quantize in both, measure "
        "both on the held-out set, never keep the less accurate one (top-1 more "
        f"than {100 * AUTO_TOP1_TOLERANCE:g} points lower, or mean abs error over "
        f"{AUTO_ERROR_FACTOR:g}x), else static (fixed scales: cheaper per tick), "
        f"dynamic only where static stays above {100 * SIZE_WARNING_RATIO:.0f} %% "
        "of the float size (an LSTM) and dynamic does not; with held-out data but "
        "no calibration data, dynamic",
    )
    quant.add_argument("--method", choices=CALIBRATION_METHODS, default="minmax", help=METHOD_HELP)
    quant.add_argument(
        "--percentile",
        type=float,
        default=99.999,
        help="percentile kept by --method percentile (default 99.999)",
    )
    quant.add_argument(
        "--symmetric-activations",
        action="store_true",
        help="static: activation ranges symmetric around 0 (zero point 0)",
    )
    quant.add_argument(
        "--exclude-nodes",
        nargs="+",
        default=[],
        metavar="NAME",
        help="leave these nodes (by name) in float",
    )
    quant.add_argument(
        "--exclude-op-types",
        nargs="+",
        default=[],
        metavar="OP",
        help="leave every node of these op types (e.g. Softmax) in float",
    )
    quant.add_argument(
        "--no-preprocess",
        action="store_true",
        help="skip onnxruntime's quant_pre_process (shape inference and graph "
        "optimisation); without it the converter falls back to this by itself "
        "when pre-processing fails or breaks quantization, and says so",
    )
    quant.add_argument(
        "--output",
        action="append",
        default=[],
        metavar="NAME",
        dest="outputs",
        help="model output to bundle (repeat for several, in order; default: "
        "every output that can be a policy or classifier: integer labels, single "
        "columns and ZipMaps are dropped with a warning)",
    )


def _convert(args: argparse.Namespace, options: ConvertOptions) -> ConversionReport:
    neural = read_neural_options(
        args,
        mode=args.mode,
        method=args.method,
        percentile=args.percentile,
        preprocess=not args.no_preprocess,
        symmetric_activations=args.symmetric_activations,
        exclude_nodes=tuple(args.exclude_nodes),
        exclude_op_types=tuple(args.exclude_op_types),
        outputs=tuple(args.outputs),
    )
    return convert_onnx(options, neural)


CONVERTER = Converter(
    name="onnx",
    help="ONNX model to int8 (static QDQ S8S8, or dynamic)",
    description="Quantize a float ONNX model to int8 (static QDQ, or dynamic for LSTMs), "
    "compare it with the float model on held-out data, step it as a device would, and write "
    "the bundle. A warning says when the int8 model is not below "
    f"{100 * SIZE_WARNING_RATIO:.0f} % of the float model's size.",
    configure=_configure,
    convert=_convert,
    needs=(("onnx",), ("onnxruntime",)),
)

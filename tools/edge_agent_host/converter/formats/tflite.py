"""Convert a TensorFlow model to an int8 or float16 ``.tflite``, measure it with LiteRT, bundle it.

Sources:

* a **SavedModel** directory or a **Keras** ``.keras`` file: needs TensorFlow on the host
  (``pip install tensorflow-cpu``; tested with 2.21), imported only here and only then. The
  converter writes a float ``.tflite`` (the reference) and, by ``mode``:

  * ``full-integer`` (default): int8 weights and activations (``TFLITE_BUILTINS_INT8``), **int8
    inputs and outputs** with their scale and zero point recorded in the model and the manifest,
    weights per channel unless ``per_channel`` is off, activation ranges from a representative
    data set (the calibration samples);
  * ``dynamic-range``: int8 weights, float32 activations, inputs and outputs (LiteRT quantizes
    activations per call in its hybrid kernels); no calibration;
  * ``float16``: float16 weights, float32 compute, inputs and outputs (half the size; no
    calibration).

* a float ``.tflite`` together with an already converted ``.tflite`` (``int8_path``): no
  TensorFlow needed; the pair is checked against ``mode`` (int8 inputs and outputs for
  full-integer, float ones with int8 or float16 weights for the other two), measured and
  bundled as above.

Calibration and held-out data work as for ONNX (:mod:`edge_agent_host.converter.neural.inputs`). The
report compares the float and converted models, both run with LiteRT in this process, and the
bundle is stepped as a device steps it before it is signed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from edge_agent.errors import EdgeAgentError, InputError, ModelError
from edge_agent.neural.backends import Session, get_backend
from edge_agent.neural.backends.litert import interpreter_class
from edge_agent_host.converter.common import Converter, ConvertOptions, add_common_options
from edge_agent_host.converter.formats.onnx import (
    NeuralOptions,
    Samples,
    check_calibration_size,
    check_labels,
    check_outputs,
    gather_data,
    infer_window,
    load_samples,
    size_warning,
)
from edge_agent_host.converter.neural.args import add_neural_options, read_neural_options
from edge_agent_host.converter.neural.bundle import ConvertedModel, finish_neural, perception_model
from edge_agent_host.converter.output import check_output
from edge_agent_host.converter.report import ConversionReport, progress

logger = logging.getLogger(__name__)

__all__ = [
    "CONVERTER",
    "TENSORFLOW_HINT",
    "TFLITE_MODES",
    "convert_tflite",
    "tflite_from_tensorflow",
]

TENSORFLOW_HINT = "pip install 'tensorflow-cpu>=2.16' (tested with 2.21)"
TFLITE_MODES = ("full-integer", "dynamic-range", "float16")
#: The manifest's ``quantization.scheme`` per mode.
SCHEMES = {
    "full-integer": "tflite-int8-full-integer",
    "dynamic-range": "tflite-dynamic-range",
    "float16": "tflite-float16",
}


def _tensorflow() -> Any:
    """Import TensorFlow (optional, host only); EdgeAgentError naming how to install it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return importlib.import_module("tensorflow")
    except ImportError as err:
        raise EdgeAgentError(
            f"converting a SavedModel or Keras model to .tflite needs TensorFlow: {TENSORFLOW_HINT}"
            ". Without it, pass a float .tflite and its int8 version (--int8) instead"
        ) from err


def _saved_model_dir(tf: Any, source: Path, tmp: Path) -> Path:
    if source.is_dir():
        return source
    if source.suffix == ".keras":
        model = tf.keras.models.load_model(str(source), compile=False)
        exported = tmp / "saved_model"
        model.export(str(exported), verbose=False)
        return exported
    raise InputError(f"{source}: expected a SavedModel directory, a .keras file or a float .tflite")


def tf_error_line(err: BaseException) -> str:
    """TensorFlow's converter error on one line: the text of its first ``error:``, without the
    MLIR location in front of it (``loc(callsite(...))``, often longer than the message)."""
    for line in str(err).splitlines():
        if "error: " in line:
            text = _without_location(line.split("error: ", 1)[1].strip())
            if text:
                return text[:300]
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:300]


def _without_location(text: str) -> str:
    """``text`` without a leading MLIR location ``loc(...)`` and the ``: `` after it; the
    location's parentheses nest, and its quoted names may hold anything but quotes."""
    if not text.startswith("loc("):
        return text
    depth, quoted = 0, False
    for i, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif not quoted and char in "()":
            depth += 1 if char == "(" else -1
            if depth == 0:
                rest = text[i + 1 :].lstrip()
                return rest.removeprefix(":").strip()
    return text


def _needs_unrolling(err: BaseException) -> bool:
    """Whether TFLite failed on a recurrent layer's loop over a dynamic batch: its tensor lists
    need a static element shape, which a ``(None, T, F)`` input does not give."""
    text = str(err)
    return "TensorListReserve" in text or "tensor list ops" in text


def _unrolled_export(tf: Any, source: Path, tmp: Path) -> tuple[Path, tuple[str, ...]]:
    """The Keras model at ``source`` with every recurrent layer rebuilt with ``unroll=True`` (same
    weights), exported as a SavedModel; and the names of the layers unrolled."""
    keras = tf.keras
    model = keras.models.load_model(str(source), compile=False)
    unrolled: list[str] = []

    def rebuild(layer: Any) -> Any:
        config = layer.get_config()
        if config.get("unroll") is False:
            config["unroll"] = True
            unrolled.append(str(layer.name))
        return layer.__class__.from_config(config)

    try:
        copy = keras.models.clone_model(model, clone_function=rebuild)
        copy.set_weights(model.get_weights())
    except Exception as err:  # Keras raises ValueError, TypeError, NotImplementedError
        raise ModelError(
            f"{source}: TFLite cannot convert the loop of a recurrent layer over a dynamic "
            f"batch, and unrolling it failed ({tf_error_line(err)}): give the model a fixed "
            "window (keras.Input((T, F))) and recurrent layers with unroll=True"
        ) from err
    if not unrolled:
        raise ModelError(
            f"{source}: TFLite cannot convert the loop of a recurrent layer over a dynamic "
            "batch, and no top-level layer of this model can be unrolled: build its recurrent "
            "layers with unroll=True (and a fixed window, keras.Input((T, F))) and save it again"
        )
    exported = tmp / "unrolled"
    copy.export(str(exported), verbose=False)
    return exported, tuple(unrolled)


@contextlib.contextmanager
def _native_stderr_to(sink: IO[bytes]) -> Iterator[None]:
    """Send what native code writes to file descriptor 2 into ``sink`` (TensorFlow's converter
    prints its MLIR diagnostics and progress lines there, not through Python)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(sink.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _tflite(source: Path, setup: Callable[[Any], None], what: str) -> tuple[bytes, tuple[str, ...]]:
    """Convert a SavedModel or ``.keras`` model with a converter that ``setup`` configures.

    TFLite converts no recurrent loop over a dynamic batch (Keras' LSTM and GRU as saved by
    default). For a ``.keras`` model the conversion is then tried again with the recurrent layers
    unrolled over the window, which computes the same values; their names are returned (empty
    when nothing was unrolled). Every failure is a ModelError of one line.
    """
    tf = _tensorflow()

    def convert(saved: Path) -> bytes:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        setup(converter)
        # The converter's own output is diagnostics for its developers; a failure's message is
        # in the exception (and the first try of a recurrent model is expected to fail).
        with tempfile.TemporaryFile() as sink, _native_stderr_to(sink):
            return bytes(converter.convert())

    with tempfile.TemporaryDirectory(prefix="edge-agent-tf-") as tmp:
        saved = _saved_model_dir(tf, source, Path(tmp))
        try:
            return convert(saved), ()
        except Exception as err:  # TensorFlow raises ConverterError and plain exceptions
            if not _needs_unrolling(err):
                raise ModelError(
                    f"{source}: TFLite {what} conversion failed: {tf_error_line(err)}"
                ) from err
            if source.suffix != ".keras":
                raise ModelError(
                    f"{source}: TFLite cannot convert the loop of a recurrent layer over a "
                    "dynamic batch (TensorList ops): pass the model as a .keras file (the "
                    "converter then unrolls its recurrent layers over the window) or build them "
                    "with unroll=True and export the SavedModel again"
                ) from err
        unrolled_dir, unrolled = _unrolled_export(tf, source, Path(tmp))
        try:
            return convert(unrolled_dir), unrolled
        except Exception as err:
            raise ModelError(
                f"{source}: TFLite {what} conversion failed with {', '.join(unrolled)} "
                f"unrolled: {tf_error_line(err)}"
            ) from err


def _quantized_setup(
    tf: Any, calibration: Samples, mode: str, per_channel: bool, show_progress: bool
) -> Callable[[Any], None]:
    def setup(converter: Any) -> None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif mode == "full-integer":
            _full_integer(tf, converter, calibration, show_progress=show_progress)
        if not per_channel:
            converter._experimental_disable_per_channel = True

    return setup


def tflite_from_tensorflow(
    source: str | Path,
    calibration: Samples,
    *,
    mode: str = "full-integer",
    per_channel: bool = True,
    show_progress: bool = False,
) -> bytes:
    """The ``mode`` ``.tflite`` of a SavedModel or ``.keras`` model (module docstring).

    ``calibration`` holds the representative inputs of ``full-integer`` (one array, the model has
    one input); the other modes need none. Recurrent layers are unrolled when TFLite needs it
    (see :func:`_tflite`).
    """
    if mode not in TFLITE_MODES:
        raise InputError(f"TFLite mode {mode!r}; choose one of {TFLITE_MODES}")
    return _quantized_tflite(Path(source), calibration, mode, per_channel, show_progress)[0]


def _quantized_tflite(
    source: Path, calibration: Samples, mode: str, per_channel: bool, show_progress: bool
) -> tuple[bytes, tuple[str, ...]]:
    """:func:`_tflite` with the converter set up for ``mode``."""
    if mode == "full-integer" and len(calibration) != 1:
        raise ModelError("full-integer conversion supports models with exactly one input")
    setup = _quantized_setup(_tensorflow(), calibration, mode, per_channel, show_progress)
    return _tflite(source, setup, mode)


def _full_integer(tf: Any, converter: Any, calibration: Samples, *, show_progress: bool) -> None:
    """Set ``converter`` up for int8 everything, calibrated on ``calibration`` (one array:
    :func:`_quantized_tflite` checked that before TensorFlow loaded the model)."""
    samples = next(iter(calibration.values())).astype(np.float32)

    def representative() -> Iterator[list[np.ndarray]]:
        for i in progress(
            range(len(samples)), total=len(samples), desc="calibration", enabled=show_progress
        ):
            yield [samples[i : i + 1]]

    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8


def float_tflite_from_tensorflow(source: str | Path) -> bytes:
    """The float32 ``.tflite`` of a SavedModel or ``.keras`` model: the accuracy reference."""
    return _tflite(Path(source), lambda converter: None, "float")[0]


def convert_tflite(
    options: ConvertOptions,
    neural: NeuralOptions | None = None,
    *,
    int8_path: Path | None = None,
) -> ConversionReport:
    """Convert (or take) a quantized ``.tflite`` of ``options.model``, compare it with the float
    model, bundle it. ``int8_path``: the already converted model of a float ``.tflite`` source
    (``--int8``)."""
    opts = neural or NeuralOptions()
    mode = "full-integer" if opts.mode == "auto" else opts.mode
    if mode not in TFLITE_MODES:
        raise InputError(f"--mode {opts.mode} is not a TFLite mode; choose one of {TFLITE_MODES}")
    if opts.method != "minmax":
        raise InputError(
            "the TFLite converter calibrates activations from their observed ranges only; "
            f"--method {opts.method} applies to ONNX models"
        )
    check_output(options.out)
    perception_model(opts)
    src = options.input("a SavedModel, a .keras file or a float .tflite")
    backend = get_backend("litert")
    prequantized = src.suffix == ".tflite"
    unrolled: tuple[str, ...] = ()
    if prequantized:
        if int8_path is None:
            raise InputError(
                f"{src}: a .tflite source is the float reference; pass its int8 version with "
                "--int8 (quantizing needs the SavedModel or .keras model and TensorFlow)"
            )
        float_bytes = _read(src)
    else:
        if int8_path is not None:
            raise InputError("--int8 goes with a float .tflite source, not with a SavedModel")
        float_bytes, unrolled = _tflite(src, lambda converter: None, "float")
    float_session = backend.load(float_bytes, opts.threads)
    inputs = float_session.input_specs
    window = infer_window(inputs, opts.window)
    check_outputs(float_session.output_specs, opts.output_kind)
    if (
        (prequantized or mode != "full-integer")
        and opts.heldout is not None
        and (opts.calibration is None and opts.input_range is None)
    ):
        calibration: Samples = {}
        heldout, labels = load_samples(opts.heldout, inputs)
        data_source = "prequantized" if prequantized else "none"
    else:
        calibration, heldout, labels, data_source = gather_data(
            inputs,
            calibration_path=opts.calibration,
            heldout_path=opts.heldout,
            input_range=opts.input_range,
            samples=opts.samples,
            seed=options.seed,
        )
    if opts.output_kind != "continuous":
        check_labels(labels, float_session.output_specs[0], "held-out labels")
    warnings: list[str] = []
    calibrated = not prequantized and mode == "full-integer"
    if calibrated:
        check_calibration_size(len(next(iter(calibration.values()))), warnings)
    if prequantized and int8_path is not None:
        int8_bytes = _read(Path(int8_path))
        data_source = "prequantized"
    else:
        int8_bytes, _ = _quantized_tflite(
            src, calibration, mode, opts.per_channel, options.show_progress
        )
    if unrolled:
        warnings.append(
            f"recurrent layer(s) {', '.join(unrolled)} unrolled over the window ({window} steps): "
            "TFLite converts no recurrent loop over a dynamic batch; the unrolled model computes "
            "the same values, and its file grows with the window"
        )
    int8_session = backend.load(int8_bytes, opts.threads)
    _check_mode(mode, int8_session, int8_bytes, int8_path or src, converted=not prequantized)
    hint = (
        "--mode dynamic-range (int8 weights only) or --mode float16 may give a smaller file"
        if mode == "full-integer"
        else ""
    )
    note = size_warning(
        len(float_bytes),
        len(int8_bytes),
        {},
        hint,
        overhead="the quantization bookkeeping of every tensor",
    )
    if note is not None:
        warnings.append(note)
    calibration_info: dict[str, Any] = {
        "method": "minmax" if mode == "full-integer" else None,
        "samples": len(next(iter(calibration.values()))) if calibrated and calibration else 0,
        "source": data_source,
    }
    quantization_info: dict[str, Any] = {"mode": mode, "mode_reason": _MODE_REASONS[mode]}
    if mode != "float16":
        quantization_info["per_channel"] = opts.per_channel
    converted = ConvertedModel(
        backend="litert",
        model_file="model.tflite",
        scheme=SCHEMES[mode],
        source=str(src),
        float_bytes=float_bytes,
        int8_bytes=int8_bytes,
        float_session=float_session,
        int8_session=int8_session,
        window=window,
        heldout=heldout,
        labels=labels,
        calibration=calibration,
        calibration_info=calibration_info,
        quantization_info=quantization_info,
        warnings=warnings,
    )
    return finish_neural(converted, options, opts)


_MODE_REASONS = {
    "full-integer": "int8 weights, activations, inputs and outputs",
    "dynamic-range": "int8 weights; float activations, inputs and outputs",
    "float16": "float16 weights; float32 compute, inputs and outputs",
}


def _tensor_dtypes(model_bytes: bytes) -> set[str]:
    """The element types of every tensor (weights included) of a ``.tflite`` model."""
    interpreter = interpreter_class()(model_content=model_bytes)
    return {np.dtype(detail["dtype"]).name for detail in interpreter.get_tensor_details()}


def _check_mode(
    mode: str, session: Session, model_bytes: bytes, path: str | Path, *, converted: bool
) -> None:
    """The converted model must be what ``mode`` says; ModelError in one line otherwise.
    ``converted``: TensorFlow made it here (else the user passed it with ``--int8``)."""
    io_dtype = "int8" if mode == "full-integer" else "float32"
    for spec in (*session.input_specs, *session.output_specs):
        if spec.dtype != io_dtype:
            what = (
                "a full-integer model has int8 inputs and outputs"
                if mode == "full-integer"
                else f"a {mode} model keeps float32 inputs and outputs"
            )
            raise ModelError(f"{path}: tensor {spec.name!r} is {spec.dtype}; {what}")
    weights = {"dynamic-range": "int8", "float16": "float16"}.get(mode)
    if weights is not None and weights not in _tensor_dtypes(model_bytes):
        if mode == "dynamic-range" and converted:
            # TensorFlow's dynamic-range pass quantizes only weight tensors of 1,024 values or
            # more (checked with 2.21: 32 x 32 is quantized, 31 x 32 is not).
            raise ModelError(
                f"{path}: TensorFlow's dynamic-range quantization left every weight in float (it "
                "skips weight tensors under 1,024 values, and this model has none larger): "
                "--mode full-integer or --mode float16 shrinks it"
            )
        raise ModelError(f"{path}: no tensor is {weights}: not a {mode} model (--mode {mode})")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise InputError(f"{path}: cannot read the model: {err.strerror or err}") from err


# ``convert tflite`` ----------------------------------------------------------------------------


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", type=Path, help="SavedModel directory, .keras file, or float .tflite (with --int8)"
    )
    parser.add_argument(
        "--int8",
        type=Path,
        default=None,
        metavar="INT8.tflite",
        help="already converted model of a float .tflite source (of --mode)",
    )
    add_common_options(parser)
    add_neural_options(parser)
    parser.add_argument(
        "--mode",
        choices=TFLITE_MODES,
        default="full-integer",
        help="full-integer: int8 weights, activations, inputs and outputs "
        "(default); dynamic-range: int8 weights, float activations; float16: "
        "float16 weights",
    )


def _convert(args: argparse.Namespace, options: ConvertOptions) -> ConversionReport:
    return convert_tflite(options, read_neural_options(args, mode=args.mode), int8_path=args.int8)


CONVERTER = Converter(
    name="tflite",
    help="SavedModel / Keras model to int8 or float16 .tflite (LiteRT)",
    description="Convert a SavedModel or .keras model (needs TensorFlow) to a full-integer "
    "int8, dynamic-range or float16 .tflite, or take a float .tflite and its converted "
    "version (--int8); compare them with LiteRT on held-out data, step the bundle as a "
    "device would, and write it.",
    configure=_configure,
    convert=_convert,
    needs=(("ai_edge_litert", "tflite_runtime"),),
)

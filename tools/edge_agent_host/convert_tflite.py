"""Convert a TensorFlow model to a full-integer int8 ``.tflite``, measure it with LiteRT, bundle it.

Sources:

* a **SavedModel** directory or a **Keras** ``.keras`` file: needs TensorFlow on the host
  (``pip install tensorflow-cpu``; tested with 2.21), imported only here and only then. The
  converter writes a float ``.tflite`` (the reference) and a full-integer one: int8 weights and
  activations (``TFLITE_BUILTINS_INT8``), **int8 inputs and outputs** with their scale and zero
  point recorded in the model and the manifest, weights per channel unless ``per_channel`` is off,
  activation ranges from a representative data set (the calibration samples).
* a float ``.tflite`` together with an already quantized int8 ``.tflite`` (``int8_path``):
  no TensorFlow needed; the pair is checked, measured and bundled as above.

Calibration and held-out data work as for ONNX (:mod:`edge_agent_host.convert_onnx`). The
report compares the float and int8 models, both run with LiteRT in this process.
"""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.settings import AifSettings
from edge_agent.errors import EdgeAgentError, InputError, ModelError
from edge_agent.neural.backends import get_backend
from edge_agent_host.convert_aif import AifThresholds
from edge_agent_host.convert_onnx import (
    NeuralOptions,
    NeuralThresholds,
    Samples,
    finish_neural,
    gather_data,
    infer_window,
    load_samples,
)
from edge_agent_host.output import check_output
from edge_agent_host.report import ConversionReport, progress

logger = logging.getLogger(__name__)

__all__ = ["TENSORFLOW_HINT", "convert_tflite", "tflite_from_tensorflow"]

TENSORFLOW_HINT = "pip install 'tensorflow-cpu>=2.16' (tested with 2.21)"


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
    raise InputError(
        f"{source}: expected a SavedModel directory, a .keras file or a float .tflite"
    )


def tflite_from_tensorflow(
    source: str | Path,
    calibration: Samples,
    *,
    per_channel: bool = True,
    show_progress: bool = False,
) -> bytes:
    """The full-integer int8 ``.tflite`` of a SavedModel or ``.keras`` model (module docstring).

    ``calibration`` holds the representative inputs (one array, the model has one input).
    """
    tf = _tensorflow()
    if len(calibration) != 1:
        raise ModelError("full-integer conversion supports models with exactly one input")
    samples = next(iter(calibration.values())).astype(np.float32)

    def representative() -> Iterator[list[np.ndarray]]:
        for i in progress(range(len(samples)), total=len(samples), desc="calibration",
                          enabled=show_progress):
            yield [samples[i : i + 1]]

    with tempfile.TemporaryDirectory(prefix="edge-agent-tf-") as tmp:
        saved = _saved_model_dir(tf, Path(source), Path(tmp))
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        if not per_channel:
            converter._experimental_disable_per_channel = True
        try:
            return bytes(converter.convert())
        except Exception as err:  # TensorFlow raises ConverterError and plain exceptions
            raise ModelError(f"{source}: TFLite int8 conversion failed: {err}") from err


def float_tflite_from_tensorflow(source: str | Path) -> bytes:
    """The float32 ``.tflite`` of a SavedModel or ``.keras`` model: the accuracy reference."""
    tf = _tensorflow()
    with tempfile.TemporaryDirectory(prefix="edge-agent-tf-") as tmp:
        saved = _saved_model_dir(tf, Path(source), Path(tmp))
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        try:
            return bytes(converter.convert())
        except Exception as err:
            raise ModelError(f"{source}: TFLite float conversion failed: {err}") from err


def convert_tflite(
    source: str | Path,
    out: str | Path,
    *,
    name: str,
    version: str = "1.0.0",
    int8_path: str | Path | None = None,
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
    """Convert (or take) an int8 ``.tflite``, compare it with the float model, bundle it."""
    opts = options or NeuralOptions()
    if opts.method != "minmax":
        raise InputError(
            "the TFLite converter calibrates activations from their observed ranges only; "
            f"--method {opts.method} applies to ONNX models"
        )
    check_output(out)
    src = Path(source)
    backend = get_backend("litert")
    prequantized = src.suffix == ".tflite"
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
        float_bytes = float_tflite_from_tensorflow(src)
    float_session = backend.load(float_bytes, opts.threads)
    inputs = float_session.input_specs
    window = infer_window(inputs, opts.window)
    if prequantized and heldout_path is not None and (
        calibration_path is None and input_range is None
    ):
        calibration: Samples = {}
        heldout, labels = load_samples(heldout_path, inputs)
        data_source = "prequantized"
    else:
        calibration, heldout, labels, data_source = gather_data(
            inputs, calibration_path=calibration_path, heldout_path=heldout_path,
            input_range=input_range, samples=samples, seed=seed,
        )
    if prequantized and int8_path is not None:
        int8_bytes = _read(Path(int8_path))
        data_source = "prequantized"
    else:
        int8_bytes = tflite_from_tensorflow(
            src, calibration, per_channel=opts.per_channel, show_progress=show_progress
        )
    int8_session = backend.load(int8_bytes, opts.threads)
    for spec in (*int8_session.input_specs, *int8_session.output_specs):
        if spec.dtype != "int8":
            raise ModelError(
                f"{int8_path or src}: tensor {spec.name!r} is {spec.dtype}; a full-integer model "
                "has int8 inputs and outputs"
            )
    calibration_info: dict[str, Any] = {
        "method": "minmax",
        "per_channel": opts.per_channel,
        "samples": 0 if prequantized or not calibration else len(next(iter(calibration.values()))),
        "source": data_source,
    }
    return finish_neural(
        backend_name="litert", model_file="model.tflite", scheme="tflite-int8-full-integer",
        source=str(src), out=out, name=name, version=version, options=opts,
        float_bytes=float_bytes, int8_bytes=int8_bytes, float_session=float_session,
        int8_session=int8_session, window=window, heldout=heldout, labels=labels,
        calibration_info=calibration_info, thresholds=thresholds, aif_model=aif_model,
        aif_settings=aif_settings, aif_thresholds=aif_thresholds, rollouts=rollouts,
        steps=steps, seed=seed, force=force, sign_key=sign_key, signer=signer,
        show_progress=show_progress,
    )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise InputError(f"{path}: cannot read the model: {err.strerror or err}") from err

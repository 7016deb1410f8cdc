"""``convert tflite`` on Keras models and SavedModels, converted by real TensorFlow.

The LiteRT fixtures of ``tests/unit/host/converter/formats/test_tflite.py`` were made by this
converter once; here TensorFlow runs every time: each mode of ``--mode`` on a Keras model, and
recurrent layers, which TFLite cannot convert over a dynamic batch as Keras saves them (their loop
needs a static element shape): a ``.keras`` model is converted with them unrolled, a SavedModel is
refused in one line that says what to change.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.bundle.loader import load_bundle
from edge_agent.errors import ModelError
from edge_agent.neural.backends import get_backend
from edge_agent_host.converter.formats.onnx import ConvertOptions, NeuralOptions, NeuralThresholds
from edge_agent_host.converter.formats.tflite import (
    convert_tflite,
    float_tflite_from_tensorflow,
    tflite_from_tensorflow,
)

WINDOW, FEATURES, CLASSES = 8, 4, 3


def keras_model(kind: str) -> Any:
    import tensorflow as tf

    keras = tf.keras
    keras.utils.set_random_seed(0)
    body = {
        # 32 x 32 weights: TensorFlow's dynamic-range pass quantizes tensors of 1,024 values up.
        "mlp": [keras.layers.Flatten(), keras.layers.Dense(32, activation="relu")],
        "tiny": [keras.layers.Flatten(), keras.layers.Dense(16, activation="relu")],
        "lstm": [keras.layers.LSTM(8)],
        "gru": [keras.layers.GRU(8)],
    }[kind]
    return keras.Sequential(
        [keras.Input((WINDOW, FEATURES), name="window"), *body, keras.layers.Dense(CLASSES)]
    )


def data(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    rng = np.random.default_rng(0)
    calibration = rng.normal(size=(200, WINDOW, FEATURES)).astype(np.float32)
    heldout = rng.normal(size=(300, WINDOW, FEATURES)).astype(np.float32)
    np.savez(tmp_path / "calibration.npz", window=calibration)
    np.savez(tmp_path / "heldout.npz", window=heldout)
    return tmp_path / "calibration.npz", tmp_path / "heldout.npz", heldout


def litert(model_bytes: bytes, X: np.ndarray) -> np.ndarray:
    session = get_backend("litert").load(model_bytes)
    session.set_batch(len(X))
    return np.array(session.run({session.input_specs[0].name: X})[session.output_specs[0].name])


def convert(source: Path, tmp_path: Path, mode: str, out: str = "bundle") -> Any:
    calibration, heldout, _ = data(tmp_path)
    return convert_tflite(
        ConvertOptions(model=source, out=tmp_path / out, name="m"),
        NeuralOptions(
            mode=mode, latency_repeats=1, calibration=calibration, heldout=heldout,
            thresholds=NeuralThresholds(min_top1=None),
        ),
    )


@pytest.mark.parametrize("mode", ["full-integer", "dynamic-range", "float16"])
def test_each_mode_converts_a_keras_model(tmp_path: Path, mode: str) -> None:
    model = keras_model("mlp")
    model.save(tmp_path / "mlp.keras")
    report = convert(tmp_path / "mlp.keras", tmp_path, mode)
    bundle = load_bundle(tmp_path / "bundle", trusted_keys=None, require_signature=False)
    neural = bundle.manifest.neural
    assert neural is not None
    assert bundle.manifest.quantization["scheme"] == {
        "full-integer": "tflite-int8-full-integer",
        "dynamic-range": "tflite-dynamic-range",
        "float16": "tflite-float16",
    }[mode]
    session = get_backend("litert").load(bundle.file_bytes(neural.model_file))
    io_types = {t.dtype for t in (*session.input_specs, *session.output_specs)}
    assert io_types == ({"int8"} if mode == "full-integer" else {"float32"})
    assert report.data["accuracy"]["top1_agreement"] >= 0.97
    assert not [w for w in report.warnings if "unrolled" in w]


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_keras_recurrent_model_converts_unrolled_and_computes_the_same(
    tmp_path: Path, kind: str
) -> None:
    model = keras_model(kind)
    model.save(tmp_path / "rnn.keras")
    _, _, heldout = data(tmp_path)
    float_bytes = float_tflite_from_tensorflow(tmp_path / "rnn.keras")
    # Unrolled over the window, the float model computes what Keras computes.
    np.testing.assert_allclose(litert(float_bytes, heldout), model(heldout).numpy(),
                               rtol=1e-4, atol=1e-5)
    report = convert(tmp_path / "rnn.keras", tmp_path, "full-integer")
    unrolled = [w for w in report.warnings if "unrolled" in w]
    assert unrolled == [
        f"recurrent layer(s) {model.layers[0].name} unrolled over the window ({WINDOW} steps): "
        "TFLite converts no recurrent loop over a dynamic batch; the unrolled model computes "
        "the same values, and its file grows with the window"
    ]
    assert report.data["accuracy"]["top1_agreement"] >= 0.95
    # The converter stepped the bundle as a device does before writing it.
    bundle = load_bundle(tmp_path / "bundle", trusted_keys=None, require_signature=False)
    assert bundle.manifest.neural is not None
    assert bundle.manifest.neural.window == WINDOW


def test_dynamic_range_that_quantizes_nothing_is_refused_with_what_to_use(
    tmp_path: Path,
) -> None:
    keras_model("tiny").save(tmp_path / "tiny.keras")  # 32 x 16 and 16 x 3 weights
    with pytest.raises(ModelError) as caught:
        convert(tmp_path / "tiny.keras", tmp_path, "dynamic-range")
    message = str(caught.value)
    assert "\n" not in message
    assert "skips weight tensors under 1,024 values" in message
    assert "--mode full-integer or --mode float16" in message
    assert not (tmp_path / "bundle").exists()
    convert(tmp_path / "tiny.keras", tmp_path, "float16")  # which converts it


def test_a_saved_model_with_a_recurrent_loop_is_refused_in_one_line(tmp_path: Path) -> None:
    model = keras_model("lstm")
    model.export(str(tmp_path / "saved"), verbose=False)
    with pytest.raises(ModelError) as caught:
        convert(tmp_path / "saved", tmp_path, "full-integer")
    message = str(caught.value)
    assert "\n" not in message
    assert "pass the model as a .keras file" in message
    assert "unroll=True" in message
    assert not (tmp_path / "bundle").exists()
    with pytest.raises(ModelError, match=r"^[^\n]*TensorList[^\n]*$"):
        tflite_from_tensorflow(tmp_path / "saved", {}, mode="dynamic-range")


def test_the_cli_converts_a_keras_lstm_and_prints_the_warning(tmp_path: Path) -> None:
    keras_model("lstm").save(tmp_path / "rnn.keras")
    calibration, heldout, _ = data(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent_host.cli", "convert", "tflite",
         str(tmp_path / "rnn.keras"), "--out", str(tmp_path / "bundle"),
         "--calibration", str(calibration), "--heldout", str(heldout),
         "--min-top1", "0", "--latency-repeats", "1", "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert any("unrolled over the window (8 steps)" in w for w in report["warnings"])
    assert (tmp_path / "bundle").exists()

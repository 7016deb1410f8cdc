"""Make the LiteRT fixtures: a sensor-world policy as a float and a full-integer int8 ``.tflite``.

The network is :func:`edge_agent_host.converter.builders.sensor_policy` for the default
:class:`edge_agent.sim.sensors.SensorWorld` with a window of 8 (a 32-unit hidden layer), built in
Keras with exactly those weights, exported as a SavedModel, and converted by the host tool's own
converter (:mod:`edge_agent_host.converter.formats.tflite`, TensorFlow's ``TFLiteConverter``),
calibrated on 512 windows from the world. Tests import this module (without TensorFlow) for the
weights and the data, so they can check LiteRT's output against an independent float computation.

TensorFlow is not a project dependency; make the fixtures in a separate venv::

    python -m venv .cache/tf-venv
    .cache/tf-venv/bin/pip install 'tensorflow-cpu==2.21.*' onnx pydantic cryptography psutil \\
        msgpack paho-mqtt tqdm ai-edge-litert
    PYTHONPATH=.:tools .cache/tf-venv/bin/python tests/data/make_tflite_fixture.py

It writes ``tests/data/sensor_policy_float.tflite`` and ``tests/data/sensor_policy_int8.tflite``
(full-integer), and the other two modes of ``convert tflite --mode``:
``tests/data/sensor_policy_dynamic_range.tflite`` (int8 weights, float activations) and
``tests/data/sensor_policy_float16.tflite`` (float16 weights).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from edge_agent.sim.sensors import SensorWorld
from edge_agent_host.converter.builders import Layers, sensor_policy

HERE = Path(__file__).resolve().parent
FLOAT_PATH = HERE / "sensor_policy_float.tflite"
INT8_PATH = HERE / "sensor_policy_int8.tflite"
DYNAMIC_RANGE_PATH = HERE / "sensor_policy_dynamic_range.tflite"
FLOAT16_PATH = HERE / "sensor_policy_float16.tflite"
WINDOW = 8
HIDDEN = 32
CALIBRATION_SAMPLES = 512
CALIBRATION_SEED = 11


def fixture_world(n_agents: int = 1, seed: int = 0) -> SensorWorld:
    """The sensor world the fixture policy solves (default parameters)."""
    return SensorWorld(n_agents, seed=seed)


def fixture_layers() -> Layers:
    """The policy's float weights: ``[(W1, b1), (W2, b2)]``, ReLU between."""
    world = fixture_world()
    return sensor_policy(world.prototypes, world.noise, WINDOW, hidden=HIDDEN)


def calibration_windows() -> np.ndarray:
    """The representative inputs the int8 model was calibrated with: ``(512, 8, F)``."""
    X, _ = fixture_world().sample_windows(CALIBRATION_SAMPLES, WINDOW, seed=CALIBRATION_SEED)
    return X


def main() -> int:
    from edge_agent_host.converter.formats.tflite import (
        _tensorflow,
        float_tflite_from_tensorflow,
        tflite_from_tensorflow,
    )

    tf = _tensorflow()
    keras = tf.keras
    layers = fixture_layers()
    features = fixture_world().num_features
    (W1, b1), (W2, b2) = layers
    model = keras.Sequential(
        [
            keras.Input((WINDOW, features), name="window"),
            keras.layers.Flatten(),
            keras.layers.Dense(W1.shape[1], activation="relu"),
            keras.layers.Dense(W2.shape[1]),
        ]
    )
    model.layers[1].set_weights([W1, b1])
    model.layers[2].set_weights([W2, b2])
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "saved_model"
        model.export(str(saved), verbose=False)
        float_bytes = float_tflite_from_tensorflow(saved)
        int8_bytes = tflite_from_tensorflow(saved, {"window": calibration_windows()})
        variants = {
            path: tflite_from_tensorflow(saved, {}, mode=mode)
            for path, mode in ((DYNAMIC_RANGE_PATH, "dynamic-range"), (FLOAT16_PATH, "float16"))
        }
    FLOAT_PATH.write_bytes(float_bytes)
    INT8_PATH.write_bytes(int8_bytes)
    for path, content in variants.items():
        path.write_bytes(content)
    print(f"wrote {FLOAT_PATH} ({len(float_bytes)} bytes), {INT8_PATH} ({len(int8_bytes)} bytes), "
          + ", ".join(f"{p} ({len(b)} bytes)" for p, b in variants.items())
          + f" with TensorFlow {tf.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

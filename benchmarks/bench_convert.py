"""The converter against onnxruntime's own quantization, per model family: size and agreement.

For each family the float model is built here (no downloads): scikit-learn's bundled digits for the
MLP, the logistic regression and the small CNN, its bundled wine and breast-cancer data for two more
logistic regressions (``logreg-wine``, ``logreg-cancer``: standardised features, 70 % to train and
calibrate, 30 % held out), the sensor world for the recurrent policies. Each is converted by
``edge_agent_host.converter.formats.onnx.convert_onnx`` (defaults: ``--mode auto``, per-channel
weights, MinMax) and, for comparison, quantized by a plain call of onnxruntime's
``quantize_static`` with its defaults (QDQ, int8, per-tensor, MinMax, no pre-processing) and, for
the recurrent families, ``quantize_dynamic``.

Families trained with the frameworks users train with (``--families`` names them; they need
TensorFlow and torch, which are not project dependencies: run them from a separate venv, see
``benchmarks/notes/neural-and-converter.md``):

* ``keras-mlp``, ``keras-cnn`` (digits as 8x8x1 frames), ``keras-lstm`` and ``keras-gru``
  (sensor windows), ``keras-logreg-wine`` and ``keras-logreg-cancer`` (one Dense layer): a Keras
  model trained here (seeded), converted by ``edge_agent_host.converter.formats.tflite`` in each of
  its modes (``full-integer``, ``dynamic-range``, ``float16``), against TensorFlow's own
  ``TFLiteConverter`` as its guide shows it: post-training integer quantization with float
  fallback (``Optimize.DEFAULT`` and a representative data set, float inputs and outputs),
  integer only (int8 inputs and outputs), dynamic range and float16. Every variant runs in
  LiteRT; agreement is with the float ``.tflite``.
* ``torch-mlp``, ``torch-lstm``, ``torch-logreg-wine``, ``torch-logreg-cancer``: a torch MLP
  trained on digits, an ``nn.LSTM`` with a Linear head trained on sensor windows, one
  ``nn.Linear`` on wine or breast cancer, exported by ``torch.onnx.export`` with a dynamic
  batch axis and torch's default exporter (weights in an external ``.onnx.data`` file),
  converted as the ONNX families are.

One JSON object per line and family:

* ``float_bytes``, ``ours_bytes`` (the bundled model), ``ort_static_bytes`` (and
  ``ort_dynamic_bytes``), each ratio to float;
* ``ours_top1`` and ``ort_static_top1`` (``ort_dynamic_top1``): top-1 agreement with the float
  model on held-out inputs; ``label_accuracy`` where the data have labels;
* ``ours_mode``, ``ours_mode_reason``, ``ours_bundled`` (``float`` when the int8 model did not
  pay), ``ours_warnings`` (the size warning, dropped outputs, fallbacks), and
  ``ort_static_error`` when onnxruntime's own call fails.

With ``--methods``: one ``method`` line per ONNX family and calibration method instead
(:func:`measure_method`): the converter in static mode with that method against
``quantize_static`` with that ``calibrate_method``, top-1 agreement and max/mean absolute output
error against float, and the time of each.

With ``--table``: the accuracy table (:func:`measure_table`): one ``table`` line per ONNX
family and method (``auto``, ``static-minmax``, ``static-entropy``, ``static-percentile``,
``dynamic``), the converter without ``--force`` (``ours_bundled``: int8 or float) beside
onnxruntime's own call, with label accuracy; a Keras family's line beside TensorFlow's own
converter.

    python benchmarks/bench_convert.py [--families mlp,logreg,cnn,lstm,gru]
    python benchmarks/bench_convert.py --methods minmax,entropy,percentile   # 'method' lines
    python benchmarks/bench_convert.py --table                               # 'table' lines
    PYTHONPATH=.:tools .cache/tf-venv/bin/python benchmarks/bench_convert.py \
        --families keras-mlp,keras-cnn,keras-lstm,keras-gru,torch-mlp

``ours_convert_s`` is the converter's own time in this process (calibration, the held-out
comparison, the device check; without the interpreter's start and imports).

``--smoke`` runs the table for ``logreg-wine`` and the mlp, cnn and gru families with a few
training iterations and small data sets: the code path, for CI
(tests/integration/benchmarks/test_smoke.py); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO))

FAMILIES = ("mlp", "logreg", "logreg-wine", "logreg-cancer", "cnn", "lstm", "gru")
TF_FAMILIES = ("keras-mlp", "keras-cnn", "keras-lstm", "keras-gru", "keras-logreg-wine",
               "keras-logreg-cancer")
TORCH_FAMILIES = ("torch-mlp", "torch-lstm", "torch-logreg-wine", "torch-logreg-cancer")
#: ``--table``: the methods measured per ONNX family (ours; onnxruntime's own call beside each
#: but auto) and per Keras family (ours; TensorFlow's own converter beside each).
TABLE_METHODS = ("auto", "static-minmax", "static-entropy", "static-percentile", "dynamic")
TABLE_TF_METHODS = ("full-integer", "dynamic-range", "float16")


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


def tabular(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled ``wine`` or ``breast_cancer`` data, shuffled (seeded), 70 % to
    train (and calibrate), 30 % held out, standardised with the training part's mean and std."""
    from sklearn.datasets import load_breast_cancer, load_wine

    X, y = (load_wine if name == "wine" else load_breast_cancer)(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(X))
    X, y = X[order], y[order]
    n = int(0.7 * len(X))
    X = ((X - X[:n].mean(axis=0)) / (X[:n].std(axis=0) + 1e-12)).astype(np.float32)
    return X[:n], y[:n], X[n:], y[n:]


def family_data(family: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """``(train X, y, held-out X, y, data set name)`` of a digits, wine or breast-cancer family."""
    if family.endswith("-wine"):
        return (*tabular("wine"), "wine")
    if family.endswith("-cancer"):
        return (*tabular("cancer"), "breast cancer")
    X, y = digits()
    return X[:1400], y[:1400], X[1400:], y[1400:], "digits"


def sklearn_model(kind: str, tmp: Path, smoke: bool = False) -> dict[str, Any]:
    """An MLPClassifier on digits or a LogisticRegression on digits, wine or breast cancer
    (``logreg``, ``logreg-wine``, ``logreg-cancer``), exported by skl2onnx as is standard."""
    from skl2onnx import to_onnx
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    X, y, Xh, yh, data = family_data(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if kind == "mlp":
            model = MLPClassifier((128,), max_iter=5 if smoke else 300, random_state=0)
        else:
            model = LogisticRegression(max_iter=20 if smoke else 2000)
        model.fit(X, y)
        path = tmp / f"{kind}.onnx"
        path.write_bytes(to_onnx(model, X[:1], options={"zipmap": False}).SerializeToString())
    return {"path": path, "calibration": X, "heldout": Xh, "labels": yh,
            "output": "probabilities", "model": f"skl2onnx {type(model).__name__} on {data}"}


def cnn_model(tmp: Path, smoke: bool = False) -> dict[str, Any]:
    """Conv 3x3 (8 filters) -> ReLU -> Flatten -> Gemm on 8x8 digit frames, head fitted."""
    import onnx
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from edge_agent_host.converter.builders import (
        ImageCnn,
        conv_features,
        image_cnn_onnx,
        random_image_cnn,
    )

    X, y = digits()
    frames = X.reshape(-1, 1, 8, 8)
    cnn = random_image_cnn(1, 8, 8, 10, filters=8, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        head = LogisticRegression(max_iter=20 if smoke else 1000).fit(
            conv_features(frames[:1400], cnn.conv_w, cnn.conv_b), y[:1400]
        )
    fitted = ImageCnn(cnn.conv_w, cnn.conv_b, head.coef_.T.astype(np.float32),
                      head.intercept_.astype(np.float32))
    path = tmp / "cnn.onnx"
    onnx.save(image_cnn_onnx(fitted, 1, 8, 8), path)
    return {"path": path, "calibration": frames[:1400], "heldout": frames[1400:],
            "labels": y[1400:], "output": "logits",
            "model": "onnx.helper CNN on 8x8 digit frames (N, 1, 8, 8)"}


def recurrent_model(cell: str, tmp: Path, smoke: bool = False) -> dict[str, Any]:
    """An LSTM or GRU (64 units) over windows of 16 sensor-world steps, seeded weights."""
    import onnx

    from edge_agent.sim.sensors import SensorWorld
    from edge_agent_host.converter.builders import recurrent_onnx

    world = SensorWorld(1)
    X, _ = world.sample_windows(64 if smoke else 512, 16, seed=1)
    Xh, _ = world.sample_windows(100 if smoke else 1000, 16, seed=2)
    path = tmp / f"{cell.lower()}.onnx"
    onnx.save(recurrent_onnx(cell, 16, world.num_features, 64, world.num_classes, seed=3), path)
    return {"path": path, "calibration": X, "heldout": Xh, "labels": None, "output": "logits",
            "model": f"onnx.helper {cell} (64 units) over 16 x 8 sensor windows, seeded weights"}


def torch_model(family: str, tmp: Path) -> dict[str, Any]:
    """A torch MLP (64 -> 64 -> 10) trained on digits (``torch-mlp``), an ``nn.LSTM`` (32 units)
    with a Linear head trained on sensor windows (``torch-lstm``), or a logistic regression (one
    ``nn.Linear``) on wine or breast cancer (``torch-logreg-wine``, ``-cancer``), exported the
    standard way."""
    import torch

    torch.manual_seed(0)
    if family == "torch-lstm":
        from edge_agent.sim.sensors import SensorWorld

        world = SensorWorld(1)
        X, y = world.sample_windows(1400, 16, seed=1)
        Xh, yh = world.sample_windows(1000, 16, seed=2)

        class LstmPolicy(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.lstm = torch.nn.LSTM(world.num_features, 32, batch_first=True)
                self.head = torch.nn.Linear(32, world.num_classes)

            def forward(self, x: Any) -> Any:
                return self.head(self.lstm(x)[0][:, -1])

        net: Any = LstmPolicy()
        what = "LSTM (32 units) with a Linear head over 16 x 8 sensor windows"
        steps = 150
    elif family.startswith("torch-logreg"):
        X, y, Xh, yh, data = family_data(family)
        net = torch.nn.Linear(X.shape[1], int(y.max()) + 1)
        what = f"logistic regression (one Linear layer) on {data}"
        steps = 200
    else:
        X, y, Xh, yh, _ = family_data("mlp")
        net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                  torch.nn.Linear(64, 10))
        what = "MLP on digits"
        steps = 200
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(X), torch.from_numpy(y).long()
    for _ in range(steps):  # full-batch steps: seconds on a CPU
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    net.eval()
    path = tmp / f"{family.replace('-', '_')}.onnx"
    # torch's default exporter (dynamo): the weights go to <model>.onnx.data next to it. The
    # example batch is 2: torch.export specialises a dimension of size 1, and the LSTM's output
    # is then declared (1, classes) whatever the batch.
    with quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (xt[:2],), str(path), input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    return {"path": path, "calibration": X, "heldout": Xh, "labels": yh,
            "output": "logits", "model": f"torch {torch.__version__.split('+')[0]} {what}, "
            "torch.onnx.export (default exporter, external data)"}


def keras_model(family: str, tmp: Path) -> dict[str, Any]:
    """A Keras model trained here (seeded) on digits, wine, breast cancer or sensor windows,
    saved as ``.keras``."""
    import tensorflow as tf

    from edge_agent.sim.sensors import SensorWorld

    keras = tf.keras
    keras.utils.set_random_seed(0)
    if family.startswith("keras-logreg"):
        X, y, Xh, yh, data = family_data(family)
        layers = [keras.Input((X.shape[1],), name="x"), keras.layers.Dense(int(y.max()) + 1)]
        what = f"Keras logistic regression (one Dense layer) on {data}"
    elif family in ("keras-lstm", "keras-gru"):
        cell = family.removeprefix("keras-").upper()
        world = SensorWorld(1)
        X, y = world.sample_windows(1400, 16, seed=1)
        Xh, yh = world.sample_windows(1000, 16, seed=2)
        layers = [keras.Input((16, world.num_features), name="window"),
                  getattr(keras.layers, cell)(32), keras.layers.Dense(world.num_classes)]
        what = f"Keras {cell} (32 units) over 16 x 8 sensor windows"
    else:
        D, labels = digits()
        if family == "keras-cnn":
            D = D.reshape(-1, 8, 8, 1)
            layers = [keras.Input((8, 8, 1), name="frame"),
                      keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.Flatten(),
                      keras.layers.Dense(10)]
            what = "Keras CNN on 8x8x1 digit frames (N, H, W, C)"
        else:
            layers = [keras.Input((64,), name="x"), keras.layers.Dense(64, activation="relu"),
                      keras.layers.Dense(10)]
            what = "Keras MLP (64 -> 64 -> 10) on digits"
        X, y, Xh, yh = D[:1400], labels[:1400], D[1400:], labels[1400:]
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(X, y, epochs=30, batch_size=64, verbose=0)
    path = tmp / f"{family}.keras"
    model.save(path)
    return {"path": path, "keras": model, "calibration": X, "heldout": Xh, "labels": yh,
            "model": what}


def litert_outputs(model_bytes: bytes, X: np.ndarray) -> np.ndarray:
    """The first output of a ``.tflite`` on ``X`` in LiteRT, as real values (the project's
    LiteRT session quantizes int8 inputs and dequantizes int8 outputs)."""
    from edge_agent.neural.backends import get_backend

    session = get_backend("litert").load(model_bytes, 1)
    session.set_batch(len(X))
    name = session.input_specs[0].name
    return np.array(session.run({name: X})[session.output_specs[0].name])


def tf_variant(kind: str, spec: dict[str, Any], ref: np.ndarray) -> dict[str, Any]:
    """TensorFlow's own post-training quantization, as its guide sets the converter up."""
    import tensorflow as tf

    from edge_agent_host.converter.formats.tflite import tf_error_line

    converter = tf.lite.TFLiteConverter.from_keras_model(spec["keras"])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    samples = spec["calibration"].astype(np.float32)

    def representative() -> Iterator[list[np.ndarray]]:
        for i in range(len(samples)):  # the same calibration samples as ours
            yield [samples[i : i + 1]]

    if kind in ("int8_fallback", "int8_only"):
        converter.representative_dataset = representative
    if kind == "int8_only":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    if kind == "float16":
        converter.target_spec.supported_types = [tf.float16]
    try:
        with quiet():
            model = bytes(converter.convert())
        got = litert_outputs(model, spec["heldout"])
    except Exception as err:  # TensorFlow raises ConverterError and plain exceptions
        return {f"tf_{kind}_error": tf_error_line(err)[:160]}
    line = {
        f"tf_{kind}_bytes": len(model),
        f"tf_{kind}_top1": round(float(np.mean(got.argmax(1) == ref.argmax(1))), 4),
    }
    if spec.get("labels") is not None:
        line[f"tf_{kind}_label_accuracy"] = round(float(np.mean(got.argmax(1) == spec["labels"])),
                                                  4)
    return line


def measure_keras(family: str, tmp: Path) -> dict[str, Any]:
    from edge_agent.errors import ModelError
    from edge_agent_host.converter.formats.onnx import (
        ConvertOptions,
        NeuralOptions,
        NeuralThresholds,
    )
    from edge_agent_host.converter.formats.tflite import (
        convert_tflite,
        float_tflite_from_tensorflow,
    )

    spec = keras_model(family, tmp)
    cal, held = tmp / f"{family}.cal.npz", tmp / f"{family}.held.npz"
    np.savez(cal, x=spec["calibration"])
    np.savez(held, x=spec["heldout"], labels=spec["labels"])
    with quiet():
        float_bytes = float_tflite_from_tensorflow(spec["path"])
    ref = litert_outputs(float_bytes, spec["heldout"])
    line: dict[str, Any] = {"family": family, "model": spec["model"],
                            "float_bytes": len(float_bytes)}
    for mode in ("full-integer", "dynamic-range", "float16"):
        key = mode.split("-")[0]
        start = time.perf_counter()
        try:
            with quiet():
                report = convert_tflite(
                    ConvertOptions(
                        model=spec["path"], out=tmp / f"{family}.{key}.bundle", name=family,
                    ),
                    NeuralOptions(
                        mode=mode, latency_repeats=1, calibration=cal, heldout=held,
                        thresholds=NeuralThresholds(min_top1=None),
                    ),
                )
        except ModelError as err:  # a refusal in one line (a mode that quantizes nothing)
            line[f"ours_{key}_error"] = str(err).split(": ", 1)[-1]
            continue
        size = report.data["size"]["int8_bytes"]
        line[f"ours_{key}_bundled"] = report.data["bundled"]
        line[f"ours_{key}_convert_s"] = round(time.perf_counter() - start, 2)
        line[f"ours_{key}_bytes"] = size
        line[f"ours_{key}_ratio"] = round(size / len(float_bytes), 4)
        line[f"ours_{key}_top1"] = round(report.data["accuracy"]["top1_agreement"], 4)
        accuracy = report.data["accuracy"].get("label_accuracy")
        if accuracy:
            line.setdefault("label_accuracy_float", round(accuracy["float"], 4))
            line[f"ours_{key}_label_accuracy"] = round(accuracy["int8"], 4)
        if report.warnings:
            line[f"ours_{key}_warnings"] = report.warnings
    for kind in ("int8_fallback", "int8_only", "dynamic", "float16"):
        line.update(tf_variant(kind, spec, ref))
    return line


class Reader:
    """onnxruntime calibration reader over one array."""

    def __init__(self, name: str, X: np.ndarray) -> None:
        self.name, self.X, self.i = name, X, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.X):
            return None
        self.i += 100
        return {self.name: self.X[self.i - 100 : self.i]}

    def rewind(self) -> None:
        self.i = 0


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)
    logging.getLogger().setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def run(path: Path, X: np.ndarray, output: str) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.asarray(session.run([output], {name: X})[0])


def model_bytes(path: Path) -> int:
    """A model's size with its external data file (``PATH.data``) if it has one."""
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def ort_variant(fn: str, spec: dict[str, Any], tmp: Path, ref: np.ndarray, *,
                method: str = "minmax", prefix: str | None = None) -> dict[str, Any]:
    """onnxruntime's own quantize_static (calibrated with ``method``) / quantize_dynamic with
    default arguments otherwise; keys ``ort_static_*`` / ``ort_dynamic_*`` (or ``prefix*``)."""
    import onnxruntime
    from onnxruntime import quantization

    key = "static" if fn == "quantize_static" else "dynamic"
    out = tmp / f"{spec['path'].stem}.ort-{fn}-{method}.onnx"
    name = onnxruntime.InferenceSession(
        str(spec["path"]), providers=["CPUExecutionProvider"]
    ).get_inputs()[0].name
    prefix = prefix if prefix is not None else f"ort_{key}_"
    try:
        with quiet():
            if key == "static":
                quantization.quantize_static(
                    str(spec["path"]), str(out), Reader(name, spec["calibration"]),
                    calibrate_method=getattr(quantization.CalibrationMethod, ORT_METHODS[method]),
                )
            else:
                quantization.quantize_dynamic(str(spec["path"]), str(out))
        got = run(out, spec["heldout"], spec["output"])
    except Exception as err:  # onnxruntime raises plain Exceptions of many kinds
        return {f"{prefix}error": " ".join(str(err).split())[:160]}
    line = {
        f"{prefix}bytes": model_bytes(out),
        f"{prefix}ratio": round(model_bytes(out) / model_bytes(spec["path"]), 4),
        f"{prefix}top1": round(float(np.mean(got.argmax(1) == ref.argmax(1))), 4),
        f"{prefix}max_abs_error": round(float(np.abs(got.astype(np.float64) - ref).max()), 5),
    }
    if spec.get("labels") is not None:
        line[f"{prefix}label_accuracy"] = round(float(np.mean(got.argmax(1) == spec["labels"])),
                                                4)
    return line


def family_spec(family: str, tmp: Path, smoke: bool = False) -> dict[str, Any]:
    """The float model of an ONNX family and its data (``cal`` and ``held`` ``.npz`` files)."""
    if family == "mlp" or family.startswith("logreg"):
        spec = sklearn_model(family, tmp, smoke)
    elif family in TORCH_FAMILIES:
        spec = torch_model(family, tmp)
    elif family == "cnn":
        spec = cnn_model(tmp, smoke)
    else:
        spec = recurrent_model(family.upper(), tmp, smoke)
    cal, held = tmp / f"{family}.cal.npz", tmp / f"{family}.held.npz"
    np.savez(cal, x=spec["calibration"])
    held_arrays = {"x": spec["heldout"]}
    if spec["labels"] is not None:
        held_arrays["labels"] = spec["labels"]
    np.savez(held, **held_arrays)
    return {**spec, "cal": cal, "held": held}


ORT_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def measure_method(family: str, method: str, tmp: Path, smoke: bool = False) -> dict[str, Any]:
    """Static quantization with one calibration method: the converter (``--mode static
    --method M``, its defaults otherwise) against onnxruntime's ``quantize_static`` with
    ``calibrate_method`` M and its other defaults; top-1 agreement and the largest absolute
    output error against the float model on the held-out set, and each one's time."""
    import onnxruntime
    from onnxruntime import quantization

    from edge_agent_host.converter.formats.onnx import (
        ConvertOptions,
        NeuralOptions,
        NeuralThresholds,
        convert_onnx,
    )

    spec = family_spec(family, tmp, smoke)
    ref = run(spec["path"], spec["heldout"], spec["output"])
    line: dict[str, Any] = {"bench": "method", "family": family, "method": method}
    start = time.perf_counter()
    with quiet():
        report = convert_onnx(
            ConvertOptions(
                model=spec["path"], out=tmp / f"{family}.{method}.bundle", name=family, force=True,
            ),
            NeuralOptions(
                latency_repeats=1, mode="static", method=method, calibration=spec["cal"],
                heldout=spec["held"], thresholds=NeuralThresholds(min_top1=None),
            ),
        )
    line["ours_s"] = round(time.perf_counter() - start, 2)
    acc = report.data["accuracy"]
    line["ours_ratio"] = round(report.data["size"]["ratio"], 4)
    line["ours_top1"] = round(acc["top1_agreement"], 4)
    line["ours_max_abs_error"] = round(acc["max_abs_error"], 5)
    line["ours_mean_abs_error"] = round(acc["mean_abs_error"], 6)
    out = tmp / f"{family}.{method}.ort.onnx"
    name = onnxruntime.InferenceSession(
        str(spec["path"]), providers=["CPUExecutionProvider"]
    ).get_inputs()[0].name
    start = time.perf_counter()
    try:
        with quiet():
            quantization.quantize_static(
                str(spec["path"]), str(out), Reader(name, spec["calibration"]),
                calibrate_method=getattr(quantization.CalibrationMethod, ORT_METHODS[method]),
            )
        got = run(out, spec["heldout"], spec["output"])
    except Exception as err:  # onnxruntime raises plain Exceptions of many kinds
        line["ort_error"] = " ".join(str(err).split())[:160]
        return line
    line["ort_s"] = round(time.perf_counter() - start, 2)
    diff = np.abs(got.astype(np.float64) - ref)
    line["ort_ratio"] = round(model_bytes(out) / model_bytes(spec["path"]), 4)
    line["ort_top1"] = round(float(np.mean(got.argmax(1) == ref.argmax(1))), 4)
    line["ort_max_abs_error"] = round(float(diff.max()), 5)
    line["ort_mean_abs_error"] = round(float(diff.mean()), 6)
    return line


def measure_table(family: str, tmp: Path, smoke: bool = False) -> Iterator[dict[str, Any]]:
    """``--table``: one ``table`` line per ONNX family and method of :data:`TABLE_METHODS`:
    the converter (``--mode auto``; ``--mode static --method M``; ``--mode dynamic``; no
    ``--force``, so ``ours_bundled`` says whether the bundle carries the int8 or the float
    model) beside onnxruntime's own ``quantize_static(calibrate_method=M)`` /
    ``quantize_dynamic`` with their defaults: size of the int8 model against the exporter's
    float file, label accuracy on the held-out set (float's as ``label_accuracy_float``), top-1
    agreement and largest output error against float. A Keras family gives its family line
    (:func:`measure_keras`: the converter's three modes beside TensorFlow's own converter)."""
    from edge_agent_host.converter.formats.onnx import (
        ConvertOptions,
        NeuralOptions,
        NeuralThresholds,
        convert_onnx,
    )

    if family in TF_FAMILIES:
        yield {"bench": "table", **measure_keras(family, tmp)}
        return
    spec = family_spec(family, tmp, smoke)
    ref = run(spec["path"], spec["heldout"], spec["output"])
    float_bytes = model_bytes(spec["path"])
    float_accuracy = None
    if spec["labels"] is not None:
        float_accuracy = round(float(np.mean(ref.argmax(1) == spec["labels"])), 4)
    for method in TABLE_METHODS:
        mode, _, calibrate = method.partition("-")
        with quiet():
            report = convert_onnx(
                ConvertOptions(model=spec["path"], out=tmp / f"{family}.{method}.table",
                               name=family),
                NeuralOptions(
                    latency_repeats=1, mode=mode, method=calibrate or "minmax",
                    calibration=spec["cal"], heldout=spec["held"],
                    thresholds=NeuralThresholds(min_top1=None),
                ),
            )
        acc = report.data["accuracy"]
        line: dict[str, Any] = {
            "bench": "table", "family": family, "method": method, "model": spec["model"],
            "float_bytes": float_bytes, "label_accuracy_float": float_accuracy,
            "ours_mode": report.data["quantization"]["mode"],
            "ours_bundled": report.data["bundled"],
            "ours_ratio": round(report.data["size"]["int8_bytes"] / float_bytes, 4),
            "ours_top1": round(acc["top1_agreement"], 4),
            "ours_max_abs_error": round(acc["max_abs_error"], 5),
        }
        if acc.get("label_accuracy"):
            line["ours_label_accuracy"] = round(acc["label_accuracy"]["int8"], 4)
        if method == "auto":
            line["ours_mode_reason"] = report.data["quantization"]["mode_reason"]
        else:
            fn = "quantize_dynamic" if mode == "dynamic" else "quantize_static"
            line.update(ort_variant(fn, spec, tmp, ref, method=calibrate or "minmax",
                                    prefix="ort_"))
        yield line


def measure(family: str, tmp: Path, smoke: bool = False) -> dict[str, Any]:
    from edge_agent_host.converter.formats.onnx import (
        ConvertOptions,
        NeuralOptions,
        NeuralThresholds,
        convert_onnx,
    )

    if family in TF_FAMILIES:
        return measure_keras(family, tmp)
    spec = family_spec(family, tmp, smoke)
    cal, held = spec["cal"], spec["held"]
    start = time.perf_counter()
    with quiet():
        report = convert_onnx(
            ConvertOptions(model=spec["path"], out=tmp / f"{family}.bundle", name=family),
            NeuralOptions(
                latency_repeats=1, calibration=cal, heldout=held,
                thresholds=NeuralThresholds(min_top1=None),
            ),
        )
    convert_s = time.perf_counter() - start
    ref = run(spec["path"], spec["heldout"], spec["output"])
    size = report.data["size"]
    line: dict[str, Any] = {
        "family": family,
        "model": spec["model"],
        "float_bytes": model_bytes(spec["path"]),  # the file(s) the exporter wrote
        "ours_bytes": size["int8_bytes"],
        "ours_ratio": round(size["int8_bytes"] / model_bytes(spec["path"]), 4),
        "ours_top1": round(report.data["accuracy"]["top1_agreement"], 4),
        "ours_mode": report.data["quantization"]["mode"],
        "ours_mode_reason": report.data["quantization"]["mode_reason"],
        "ours_bundled": report.data["bundled"],
        "ours_warnings": report.warnings,
        "ours_convert_s": round(convert_s, 2),
    }
    if report.data["accuracy"].get("label_accuracy"):
        line["label_accuracy"] = report.data["accuracy"]["label_accuracy"]
    line.update(ort_variant("quantize_static", spec, tmp, ref))
    if family in ("lstm", "gru"):
        line.update(ort_variant("quantize_dynamic", spec, tmp, ref))
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    every = (*FAMILIES, *TF_FAMILIES, *TORCH_FAMILIES)
    parser.add_argument("--families", default=",".join(FAMILIES),
                        help=f"comma-separated subset of {','.join(every)} (the keras and torch "
                        "families need TensorFlow and torch)")
    parser.add_argument("--smoke", action="store_true",
                        help="mlp,cnn,gru on tiny training and data: the code path, for CI")
    parser.add_argument("--methods", default="",
                        help="comma-separated calibration methods (minmax,entropy,percentile): "
                        "one 'method' line per ONNX family and method instead of the family "
                        "lines")
    parser.add_argument("--table", action="store_true",
                        help="the accuracy table: one 'table' line per ONNX family and method "
                        f"({','.join(TABLE_METHODS)}), ours beside onnxruntime's own call; a "
                        "Keras family's line beside TensorFlow's own converter")
    args = parser.parse_args(argv)
    if args.smoke:
        args.families = "mlp,cnn,gru"
    families = [f.strip() for f in args.families.split(",")]
    for family in families:
        if family not in every:
            parser.error(f"unknown family {family!r}; choose from {','.join(every)}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for method in methods:
        if method not in ORT_METHODS:
            parser.error(f"unknown method {method!r}; choose from {','.join(ORT_METHODS)}")
    with tempfile.TemporaryDirectory(prefix="bench-convert-") as tmp:
        for family in ("logreg-wine",) if args.smoke else families if args.table else ():
            for line in measure_table(family, Path(tmp), args.smoke):
                print(json.dumps(line), flush=True)
        for family in () if args.table else families:
            if not methods:
                print(json.dumps(measure(family, Path(tmp), args.smoke)), flush=True)
            for method in methods if family not in TF_FAMILIES else ():
                print(json.dumps(measure_method(family, method, Path(tmp), args.smoke)),
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

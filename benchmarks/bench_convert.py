"""The converter against onnxruntime's own quantization, per model family: size and agreement.

For each family the float model is built here (no downloads): scikit-learn's bundled digits for
the MLP, the logistic regression and the small CNN, the sensor world for the recurrent policies.
Each is converted by ``edge_agent_host.convert_onnx.convert_onnx`` (defaults: ``--mode auto``,
per-channel weights, MinMax) and, for comparison, quantized by a plain call of onnxruntime's
``quantize_static`` with its defaults (QDQ, int8, per-tensor, MinMax, no pre-processing) and, for
the recurrent families, ``quantize_dynamic``. One JSON object per line and family:

* ``float_bytes``, ``ours_bytes`` (the bundled model), ``ort_static_bytes`` (and
  ``ort_dynamic_bytes``), each ratio to float;
* ``ours_top1`` and ``ort_static_top1`` (``ort_dynamic_top1``): top-1 agreement with the float
  model on held-out inputs; ``label_accuracy`` where the data have labels;
* ``ours_mode``, ``ours_warnings`` (the size warning, dropped outputs, fallbacks), and
  ``ort_static_error`` when onnxruntime's own call fails.

    python benchmarks/bench_convert.py [--families mlp,logreg,cnn,lstm,gru]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO))

FAMILIES = ("mlp", "logreg", "cnn", "lstm", "gru")


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


def sklearn_model(kind: str, tmp: Path) -> dict[str, Any]:
    """An MLPClassifier or LogisticRegression on digits, exported by skl2onnx as is standard."""
    from skl2onnx import to_onnx
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    X, y = digits()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if kind == "mlp":
            model = MLPClassifier((128,), max_iter=300, random_state=0)
        else:
            model = LogisticRegression(max_iter=2000)
        model.fit(X[:1400], y[:1400])
        path = tmp / f"{kind}.onnx"
        path.write_bytes(to_onnx(model, X[:1], options={"zipmap": False}).SerializeToString())
    return {"path": path, "calibration": X[:1400], "heldout": X[1400:], "labels": y[1400:],
            "output": "probabilities", "model": f"skl2onnx {type(model).__name__} on digits"}


def cnn_model(tmp: Path) -> dict[str, Any]:
    """Conv 3x3 (8 filters) -> ReLU -> Flatten -> Gemm on 8x8 digit frames, head fitted."""
    import onnx
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from edge_agent_host.builders import (
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
        head = LogisticRegression(max_iter=1000).fit(
            conv_features(frames[:1400], cnn.conv_w, cnn.conv_b), y[:1400]
        )
    fitted = ImageCnn(cnn.conv_w, cnn.conv_b, head.coef_.T.astype(np.float32),
                      head.intercept_.astype(np.float32))
    path = tmp / "cnn.onnx"
    onnx.save(image_cnn_onnx(fitted, 1, 8, 8), path)
    return {"path": path, "calibration": frames[:1400], "heldout": frames[1400:],
            "labels": y[1400:], "output": "logits",
            "model": "onnx.helper CNN on 8x8 digit frames (N, 1, 8, 8)"}


def recurrent_model(cell: str, tmp: Path) -> dict[str, Any]:
    """An LSTM or GRU (64 units) over windows of 16 sensor-world steps, seeded weights."""
    import onnx

    from edge_agent.sim.sensors import SensorWorld
    from edge_agent_host.builders import recurrent_onnx

    world = SensorWorld(1)
    X, _ = world.sample_windows(512, 16, seed=1)
    Xh, _ = world.sample_windows(1000, 16, seed=2)
    path = tmp / f"{cell.lower()}.onnx"
    onnx.save(recurrent_onnx(cell, 16, world.num_features, 64, world.num_classes, seed=3), path)
    return {"path": path, "calibration": X, "heldout": Xh, "labels": None, "output": "logits",
            "model": f"onnx.helper {cell} (64 units) over 16 x 8 sensor windows, seeded weights"}


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


def ort_variant(fn: str, spec: dict[str, Any], tmp: Path, ref: np.ndarray) -> dict[str, Any]:
    """onnxruntime's own quantize_static / quantize_dynamic with default arguments."""
    import onnxruntime
    from onnxruntime import quantization

    out = tmp / f"{spec['path'].stem}.ort-{fn}.onnx"
    name = onnxruntime.InferenceSession(
        str(spec["path"]), providers=["CPUExecutionProvider"]
    ).get_inputs()[0].name
    key = "static" if fn == "quantize_static" else "dynamic"
    try:
        with quiet():
            if key == "static":
                quantization.quantize_static(str(spec["path"]), str(out),
                                             Reader(name, spec["calibration"]))
            else:
                quantization.quantize_dynamic(str(spec["path"]), str(out))
        got = run(out, spec["heldout"], spec["output"])
    except Exception as err:  # onnxruntime raises plain Exceptions of many kinds
        return {f"ort_{key}_error": " ".join(str(err).split())[:160]}
    return {
        f"ort_{key}_bytes": out.stat().st_size,
        f"ort_{key}_ratio": round(out.stat().st_size / spec["path"].stat().st_size, 4),
        f"ort_{key}_top1": round(float(np.mean(got.argmax(1) == ref.argmax(1))), 4),
    }


def measure(family: str, tmp: Path) -> dict[str, Any]:
    from edge_agent_host.convert_onnx import NeuralOptions, NeuralThresholds, convert_onnx

    if family in ("mlp", "logreg"):
        spec = sklearn_model(family, tmp)
    elif family == "cnn":
        spec = cnn_model(tmp)
    else:
        spec = recurrent_model(family.upper(), tmp)
    cal, held = tmp / f"{family}.cal.npz", tmp / f"{family}.held.npz"
    np.savez(cal, x=spec["calibration"])
    held_arrays = {"x": spec["heldout"]}
    if spec["labels"] is not None:
        held_arrays["labels"] = spec["labels"]
    np.savez(held, **held_arrays)
    with quiet():
        report = convert_onnx(spec["path"], tmp / f"{family}.bundle", name=family,
                              calibration_path=cal, heldout_path=held,
                              options=NeuralOptions(latency_repeats=1),
                              thresholds=NeuralThresholds(min_top1=None))
    ref = run(spec["path"], spec["heldout"], spec["output"])
    size = report.data["size"]
    line: dict[str, Any] = {
        "family": family,
        "model": spec["model"],
        "float_bytes": spec["path"].stat().st_size,
        "ours_bytes": size["int8_bytes"],
        "ours_ratio": round(size["int8_bytes"] / spec["path"].stat().st_size, 4),
        "ours_top1": round(report.data["accuracy"]["top1_agreement"], 4),
        "ours_mode": report.data["quantization"]["mode"],
        "ours_warnings": report.warnings,
    }
    if report.data["accuracy"].get("label_accuracy"):
        line["label_accuracy"] = report.data["accuracy"]["label_accuracy"]
    line.update(ort_variant("quantize_static", spec, tmp, ref))
    if family in ("lstm", "gru"):
        line.update(ort_variant("quantize_dynamic", spec, tmp, ref))
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES),
                        help=f"comma-separated subset of {','.join(FAMILIES)}")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-convert-") as tmp:
        for family in args.families.split(","):
            print(json.dumps(measure(family.strip(), Path(tmp))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

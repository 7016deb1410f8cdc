"""Models trained on scikit-learn's bundled data sets and exported the standard way by skl2onnx.

skl2onnx puts an int64 ``label`` output first (and by default a ZipMap of probabilities), declares
the standard opset twice for a LogisticRegression, and its MLP trips onnxruntime's per-channel
quantizer after shape pre-processing. Each converts the first time, with one warning line per
thing the converter changed, and the bundle runs on the device path; or it is refused in one line.
Real onnxruntime sessions throughout.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edge_agent.bundle.loader import load_bundle
from edge_agent.errors import InputError, ModelError
from edge_agent.neural.agents import NeuralAgentGroup
from edge_agent.neural.backends import available_backends
from edge_agent_host.cli import main
from edge_agent_host.converter.formats.onnx import (
    ConvertOptions,
    NeuralOptions,
    NeuralThresholds,
    convert_onnx,
)


@pytest.fixture(autouse=True)
def _runtimes() -> None:
    if not available_backends()["onnxruntime"]:
        pytest.fail("onnxruntime is not installed: pip install 'edge-agent-runtime[onnx]'")


def sklearn_modules() -> tuple[Any, Any]:
    try:
        import skl2onnx
        import sklearn
    except ImportError:
        pytest.fail("scikit-learn and skl2onnx are not installed: pip install -e '.[dev]' "
                    "(or pip install scikit-learn skl2onnx)")
    return sklearn, skl2onnx


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """MLPClassifier on digits (64 features, 10 classes) and LogisticRegression on iris and on
    digits, each exported with zipmap=False and with skl2onnx's default (a ZipMap)."""
    sklearn_modules()
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits, load_iris
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    root = tmp_path_factory.mktemp("sklearn")
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    Xi, yi = load_iris(return_X_y=True)
    Xi = Xi.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPClassifier((32,), max_iter=200, random_state=0).fit(X[:1400], y[:1400])
        lr_iris = LogisticRegression(max_iter=1000).fit(Xi, yi)
        lr_digits = LogisticRegression(max_iter=1000).fit(X[:1400], y[:1400])
        for stem, model, sample in (("mlp", mlp, X[:1]), ("lr_iris", lr_iris, Xi[:1]),
                                    ("lr_digits", lr_digits, X[:1])):
            onnx.save(to_onnx(model, sample, options={"zipmap": False}), root / f"{stem}.onnx")
            onnx.save(to_onnx(model, sample), root / f"{stem}_zipmap.onnx")
    np.savez(root / "digits_cal.npz", X=X[:1400])
    np.savez(root / "digits_held.npz", X=X[1400:], labels=y[1400:])
    np.savez(root / "iris.npz", X=Xi, labels=yi)
    np.savez(root / "digits_wrong_labels.npz", X=X[1400:], labels=y[1400:] + 1)
    return {p.stem: p for p in root.iterdir()}


def convert(model: Path, out: Path, calibration: Path, heldout: Path | None = None,
            **options: Any) -> Any:
    return convert_onnx(
        ConvertOptions(model=model, out=out, name="m"),
        NeuralOptions(latency_repeats=1, **options, calibration=calibration, heldout=heldout),
    )


def test_skl2onnx_mlp_converts_first_time_and_runs_on_the_device_path(
    models: dict[str, Path], tmp_path: Path
) -> None:
    onnx_model = onnx.load(models["mlp"])
    assert [o.name for o in onnx_model.graph.output] == ["label", "probabilities"]
    report = convert(models["mlp"], tmp_path / "b", models["digits_cal"], models["digits_held"],
                     mode="static")
    assert report.passed
    assert report.bundle is not None
    # The int64 label output is dropped with one line; per-channel quantization after
    # onnxruntime's shape pre-processing fails on this model, so it goes without pre-processing.
    assert report.warnings[0].startswith("output 'label' is int64 [-1]: class labels")
    assert "using 'probabilities' (--output NAME chooses)" in report.warnings[0]
    assert any("fails after its shape pre-processing" in w
               and "quantized without pre-processing" in w for w in report.warnings)
    assert report.data["quantization"]["preprocessed"] is False
    assert report.data["quantization"]["per_channel"] is True
    assert report.data["size"]["ratio"] < 0.75
    assert not [w for w in report.warnings if "size" in w]
    acc = report.data["accuracy"]
    assert acc["top1_agreement"] >= 0.99
    assert acc["label_accuracy"]["float"] > 0.85
    assert abs(acc["label_accuracy"]["int8"] - acc["label_accuracy"]["float"]) < 0.01
    bundle = load_bundle(tmp_path / "b", trusted_keys=None, require_signature=False)
    spec = bundle.manifest.neural
    assert spec is not None
    assert [(t.name, t.shape) for t in spec.outputs] == [("probabilities", (-1, 10))]
    assert bundle.manifest.quantization["warnings"] == report.warnings
    group = NeuralAgentGroup.from_bundle(bundle, 4)
    held = np.load(models["digits_held"])
    actions = group.step(held["X"][:4])
    assert np.mean(actions == held["labels"][:4]) >= 0.75


def test_the_zipmap_default_is_bundled_as_its_probabilities(
    models: dict[str, Path], tmp_path: Path
) -> None:
    report = convert(models["mlp_zipmap"], tmp_path / "b", models["digits_cal"],
                     models["digits_held"])
    assert report.passed
    assert report.warnings[0].startswith("output 'output_probability' is a ZipMap")
    assert "options={'zipmap': False}" in report.warnings[0]
    assert report.warnings[1].startswith("output 'output_label' is int64 [-1]")
    spec = load_bundle(tmp_path / "b", trusted_keys=None, require_signature=False).manifest.neural
    assert spec is not None
    assert [t.shape for t in spec.outputs] == [(-1, 10)]
    assert report.data["accuracy"]["top1_agreement"] >= 0.99


@pytest.mark.parametrize("stem", ["lr_iris", "lr_iris_zipmap"])
def test_logistic_regression_is_bundled_as_float_and_the_report_says_why(
    models: dict[str, Path], tmp_path: Path, stem: str
) -> None:
    """skl2onnx declares the ai.onnx opset twice (onnxruntime's quantizer refuses that) and
    writes a LinearClassifier, which onnxruntime quantizes in neither mode: nothing is
    quantized, so the bundle carries the float model (exit 0), and the warnings say so."""
    report = convert(models[stem], tmp_path / "b", models["iris"], models["iris"])
    assert report.passed
    assert report.data["accuracy"]["top1_agreement"] == 1.0
    assert report.data["quantization"]["quantized_share"] == 0.0
    assert (report.data["bundled"], report.data["scheme"]) == ("float", "onnx-float32")
    assert any(w.startswith("static quantization has nothing to quantize or calibrate in this "
                            "model: onnxruntime quantizes none of its op types (") for w in
               report.warnings)
    assert report.warnings[-1].startswith("the int8 model quantizes none of the float model's "
                                          "weights and is ")
    assert report.warnings[-1].endswith("the bundle carries the float model instead (exact, "
                                        "and smaller; --force bundles the int8 one)")
    bundle = load_bundle(tmp_path / "b", trusted_keys=None, require_signature=False)
    ops = {n.op_type for n in onnx.load_from_string(bundle.file_bytes("model.onnx")).graph.node}
    assert "QuantizeLinear" not in ops
    assert "LinearClassifier" in ops
    assert bundle.manifest.quantization["bundled"] == "float"


def test_percentile_on_a_model_with_nothing_to_calibrate_is_no_onnxruntime_error(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """onnxruntime's percentile calibrator raised "Histogram has not been collected" (naming a
    temporary copy of the model) when no tensor was calibrated."""
    code = main(["convert", "onnx", str(models["lr_iris"]), "--out", str(tmp_path / "b"),
                 "--calibration", str(models["iris"]), "--mode", "static", "--method",
                 "percentile", "--latency-repeats", "1", "--quiet"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "Histogram" not in out.out + out.err
    assert "warning: static quantization has nothing to quantize or calibrate" in out.out
    assert "the bundle carries the float model instead" in out.out


def test_labels_outside_the_classes_are_refused(
    models: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(InputError, match=r"labels range over 1\.\.10, but output 'probabilities' "
                       r"has 10 classes: labels must be class indices 0\.\.9"):
        convert(models["mlp"], tmp_path / "b", models["digits_cal"],
                models["digits_wrong_labels"])
    assert not (tmp_path / "b").exists()


def test_output_chooses_and_refuses_in_one_line(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = convert(models["mlp"], tmp_path / "a", models["digits_cal"],
                     outputs=("probabilities",))
    assert report.passed
    assert report.warnings[0] == (
        "output 'label' is int64 [-1]: class labels (one index per item), not scores per class: "
        "dropped from the bundle; using 'probabilities' (--output NAME chooses)"
    )
    with pytest.raises(ModelError, match=r"^output 'label' is int64 \[-1\]: class labels .*; it "
                       r"cannot be discrete output$"):
        convert(models["mlp"], tmp_path / "b", models["digits_cal"], outputs=("label",))
    with pytest.raises(InputError, match=r"--output 'logits': the model's outputs are "
                       r"\['label', 'probabilities'\]"):
        convert(models["mlp"], tmp_path / "b", models["digits_cal"], outputs=("logits",))
    code = main(["convert", "onnx", str(models["mlp"]), "--out", str(tmp_path / "c"),
                 "--calibration", str(models["digits_cal"]), "--output", "label"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1
    assert err.startswith("error: output 'label' is int64 [-1]")
    assert not (tmp_path / "b").exists()
    assert not (tmp_path / "c").exists()


def single_column_model(path: Path) -> Path:
    """A classifier-looking model with one (N, 1) output and one int64 (N,) output."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])
    label = helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"])
    w = onnx.numpy_helper.from_array(np.ones((4, 1), dtype=np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["score"]),
             helper.make_node("ArgMax", ["score"], ["am"], axis=1, keepdims=0),
             helper.make_node("Identity", ["am"], ["label"])]
    graph = helper.make_graph(nodes, "g", [x], [label, score], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_a_single_column_is_no_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = single_column_model(tmp_path / "one.onnx")
    np.savez(tmp_path / "cal.npz", x=np.random.default_rng(0).normal(size=(64, 4)))
    code = main(["convert", "onnx", str(model), "--out", str(tmp_path / "b"),
                 "--calibration", str(tmp_path / "cal.npz"), "--json"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert captured.err == (
        "error: no output of the model can be discrete output: 'label' is int64 [-1]: class "
        "labels (one index per item), not scores per class; 'score' has shape [-1, 1]: a single "
        "column, whose argmax is always 0 (no choice to make). Export per-class scores (logits) "
        "of shape [-1, A], A >= 2\n"
    )
    # As continuous actions a single column is fine: the label output is dropped.
    report = convert_onnx(
        ConvertOptions(model=model, out=tmp_path / "c", name="m"),
        NeuralOptions(
            output_kind="continuous", action_low=(-9.0,), action_high=(9.0,), latency_repeats=1,
            calibration=tmp_path / "cal.npz", thresholds=NeuralThresholds(min_top1=None),
        ),
    )
    assert report.bundle is not None
    assert report.warnings[0].startswith("output 'label' is int64 [-1]")


def test_cli_json_prints_the_warnings_on_stderr(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["convert", "onnx", str(models["mlp"]), "--out", str(tmp_path / "b"),
                 "--calibration", str(models["digits_cal"]), "--heldout",
                 str(models["digits_held"]), "--json", "--latency-repeats", "1"])
    captured = capsys.readouterr()
    assert code == 0
    printed = json.loads(captured.out)
    assert printed["warnings"]
    assert captured.err.splitlines() == [f"warning: {w}" for w in printed["warnings"]]


def test_a_failed_pre_processing_leaves_no_file_behind(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnxruntime saves sym_shape_infer_temp.onnx into the working directory when its shape
    inference is incomplete (skl2onnx's LinearClassifier); the converter runs it elsewhere."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    X, y = load_iris(return_X_y=True)
    X = X.astype(np.float32)
    # PCA (a MatMul, which static mode quantizes) in front of a LinearClassifier
    pipeline = make_pipeline(PCA(3), LogisticRegression(max_iter=1000)).fit(X, y)
    onnx.save(to_onnx(pipeline, X[:1], options={"zipmap": False}), tmp_path / "pca_lr.onnx")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    report = convert(tmp_path / "pca_lr.onnx", tmp_path / "b", models["iris"], models["iris"],
                     mode="static")
    assert any("pre-processing fails on this model" in w for w in report.warnings)
    assert list(work.iterdir()) == []

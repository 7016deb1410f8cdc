"""``edge-agent-host convert tflite`` with the shipped LiteRT fixtures (no TensorFlow needed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_agent.aif import agreement
from edge_agent.bundle.loader import load_bundle
from edge_agent.errors import EdgeAgentError, InputError, ModelError
from edge_agent.neural.agents import NeuralAgentGroup
from edge_agent.neural.backends import available_backends
from edge_agent_host.cli import main
from edge_agent_host.converter.builders import mlp_forward
from edge_agent_host.converter.formats.onnx import ConvertOptions, NeuralOptions
from edge_agent_host.converter.formats.tflite import convert_tflite, tflite_from_tensorflow

REPO = Path(__file__).resolve().parents[5]
sys.path.insert(0, str(REPO / "tests" / "data"))

import make_tflite_fixture as fixture  # noqa: E402


@pytest.fixture(autouse=True)
def _runtimes() -> None:
    if not available_backends()["litert"]:
        pytest.fail("LiteRT is not installed: pip install 'edge-agent-runtime[tflite]'")


@pytest.fixture
def heldout(tmp_path: Path) -> Path:
    X, y = fixture.fixture_world().sample_windows(500, fixture.WINDOW, seed=21)
    np.savez(tmp_path / "heldout.npz", window=X, labels=y)
    return tmp_path / "heldout.npz"


def test_fixtures_are_what_the_script_says() -> None:
    """The shipped float model computes the script's weights; the int8 one is full-integer."""
    X = fixture.calibration_windows()
    assert X.shape == (512, fixture.WINDOW, 8)
    from edge_agent.neural.backends import get_backend

    session = get_backend("litert").load(fixture.FLOAT_PATH.read_bytes())
    session.set_batch(len(X))
    out = session.run({session.input_specs[0].name: X})[session.output_specs[0].name]
    np.testing.assert_allclose(out, mlp_forward(fixture.fixture_layers(), X), rtol=1e-4,
                               atol=1e-4)
    int8 = get_backend("litert").load(fixture.INT8_PATH.read_bytes())
    assert {t.dtype for t in (*int8.input_specs, *int8.output_specs)} == {"int8"}
    # Calibrated on these windows: the input scale covers their range in 256 steps.
    spec = int8.input_specs[0]
    assert spec.scale is not None
    assert spec.zero_point is not None
    low, high = spec.scale * (-128 - spec.zero_point), spec.scale * (127 - spec.zero_point)
    assert low <= X.min() + spec.scale
    assert high >= X.max() - spec.scale


def test_prequantized_pair_report_matches_an_independent_run(
    heldout: Path, tmp_path: Path
) -> None:
    from ai_edge_litert.interpreter import Interpreter

    report = convert_tflite(
        ConvertOptions(model=fixture.FLOAT_PATH, out=tmp_path / "b.tar", name="sensor"),
        NeuralOptions(latency_repeats=3, heldout=heldout),
        int8_path=fixture.INT8_PATH,
    )
    assert report.passed
    assert report.bundle is not None
    held = np.load(heldout)
    X, labels = held["window"], held["labels"]
    reference = mlp_forward(fixture.fixture_layers(), X)  # float64 numpy, not LiteRT
    interp = Interpreter(model_content=fixture.INT8_PATH.read_bytes())
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.resize_tensor_input(inp["index"], list(X.shape))
    interp.allocate_tensors()
    scale, zero = inp["quantization"]
    interp.set_tensor(inp["index"], np.clip(np.rint(X / scale) + zero, -128, 127).astype(np.int8))
    interp.invoke()
    oscale, ozero = out["quantization"]
    got = oscale * (interp.get_tensor(out["index"]).astype(np.float64) - ozero)
    acc = report.data["accuracy"]
    diff = np.abs(reference - got)
    assert acc["max_abs_error"] == pytest.approx(diff.max(), rel=1e-4, abs=1e-4)
    assert acc["mean_abs_error"] == pytest.approx(diff.mean(), rel=1e-3)
    # The converter runs the float model in LiteRT (float32), not numpy: its rates lie within
    # the tie-aware bounds (the plain rate where no output has a near-tie).
    tol_ref = 1e-5 * max(1.0, float(np.abs(reference).max()))
    tol_got = 1e-5 * max(1.0, float(np.abs(got).max()))
    onehot = np.eye(reference.shape[1])[labels]
    for rate, a, b, tol_a, tol_b in (
        (acc["top1_agreement"], reference, got, tol_ref, tol_got),
        (acc["label_accuracy"]["int8"], got, onehot, tol_got, 0.0),
    ):
        low, high = agreement.argmax_agreement_bounds(a, b, tol_a=tol_a, tol_b=tol_b)
        assert low - 1e-12 <= rate <= high + 1e-12
        assert high - low <= 0.01, "near-ties are rare: the bounds stay tight"
    assert acc["top1_agreement"] >= 0.99
    assert report.data["size"] == {
        "float_bytes": fixture.FLOAT_PATH.stat().st_size,
        "int8_bytes": fixture.INT8_PATH.stat().st_size,
        "ratio": fixture.INT8_PATH.stat().st_size / fixture.FLOAT_PATH.stat().st_size,
    }
    assert report.data["scheme"] == "tflite-int8-full-integer"
    assert report.data["calibration"]["source"] == "prequantized"
    bundle = load_bundle(tmp_path / "b.tar", trusted_keys=None, require_signature=False)
    spec = bundle.manifest.neural
    assert spec is not None
    assert spec.backend == "litert"
    assert spec.model_file == "model.tflite"
    assert spec.inputs[0].dtype == "int8"
    assert spec.inputs[0].scale == pytest.approx(scale)
    assert spec.outputs[0].zero_point == ozero
    assert bundle.file_bytes("model.tflite") == fixture.INT8_PATH.read_bytes()


def test_cli_bundle_runs_int8_agents_with_litert(
    heldout: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_agent_host.keys import generate_keypair

    keys = generate_keypair(tmp_path / "keys", "ci")
    out = tmp_path / "sensor.tar"
    assert main(["convert", "tflite", str(fixture.FLOAT_PATH), "--int8",
                 str(fixture.INT8_PATH), "--heldout", str(heldout), "--out", str(out),
                 "--sign", str(keys.private_path), "--json", "--latency-repeats", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["bundle"]["key_id"] == keys.key_id
    from edge_agent.bundle.signing import TrustedKeys

    bundle = load_bundle(out, trusted_keys=TrustedKeys.from_dir(tmp_path / "keys"))
    group = NeuralAgentGroup.from_bundle(bundle, 300, threads=2)
    world = fixture.fixture_world(300, seed=22)
    obs = world.reset()
    rewards = []
    for tick in range(25):
        obs = world.step(group.step(obs))
        if tick >= fixture.WINDOW:
            rewards.append(float(world.reward.mean()))
    assert np.mean(rewards) > 0.9


def test_without_tensorflow_the_error_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    (tmp_path / "saved_model").mkdir()
    with pytest.raises(EdgeAgentError, match=r"needs TensorFlow: pip install 'tensorflow-cpu"):
        convert_tflite(
            ConvertOptions(model=tmp_path / "saved_model", out=tmp_path / "b", name="m"),
            NeuralOptions(input_range=(-1.0, 1.0)),
        )
    assert main(["convert", "tflite", str(tmp_path / "saved_model"), "--out",
                 str(tmp_path / "b"), "--input-range", "-1", "1"]) == 1
    assert "pip install 'tensorflow-cpu" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_full_integer_of_a_model_with_two_inputs_is_refused_before_tensorflow_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # refused before it would be needed
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(ModelError, match=r"^full-integer conversion supports models with "
                       r"exactly one input$"):
        tflite_from_tensorflow(tmp_path / "saved_model", {"a": x, "b": x}, mode="full-integer")


def test_option_errors(tmp_path: Path, heldout: Path) -> None:
    with pytest.raises(InputError, match=r"pass its int8 version with --int8"):
        convert_tflite(
            ConvertOptions(model=fixture.FLOAT_PATH, out=tmp_path / "b", name="m"),
            NeuralOptions(heldout=heldout),
        )
    with pytest.raises(InputError, match=r"--method entropy applies to ONNX models"):
        convert_tflite(
            ConvertOptions(model=fixture.FLOAT_PATH, out=tmp_path / "b", name="m"),
            NeuralOptions(method="entropy", heldout=heldout),
            int8_path=fixture.INT8_PATH,
        )
    with pytest.raises(ModelError, match=r"a full-integer model has int8 inputs and outputs"):
        convert_tflite(
            ConvertOptions(model=fixture.FLOAT_PATH, out=tmp_path / "b", name="m"),
            NeuralOptions(heldout=heldout),
            int8_path=fixture.FLOAT_PATH,
        )
    np.savez(tmp_path / "wrong.npz", window=np.load(heldout)["window"],
             labels=np.load(heldout)["labels"] + 100)
    with pytest.raises(InputError, match=r"labels range over 100\.\.\d+, but output .* has 4 "
                       r"classes"):
        convert_tflite(
            ConvertOptions(model=fixture.FLOAT_PATH, out=tmp_path / "b", name="m"),
            NeuralOptions(heldout=tmp_path / "wrong.npz"),
            int8_path=fixture.INT8_PATH,
        )
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("mode", "path", "scheme"),
    [("dynamic-range", fixture.DYNAMIC_RANGE_PATH, "tflite-dynamic-range"),
     ("float16", fixture.FLOAT16_PATH, "tflite-float16")],
)
def test_dynamic_range_and_float16_variants_convert_and_run(
    heldout: Path, tmp_path: Path, mode: str, path: Path, scheme: str
) -> None:
    """The fixture script's TensorFlow conversions in the other two modes: float inputs and
    outputs, int8 (dynamic-range) or float16 weights."""
    report = convert_tflite(
        ConvertOptions(model=fixture.FLOAT_PATH, out=tmp_path / "b", name="sensor"),
        NeuralOptions(mode=mode, latency_repeats=1, heldout=heldout),
        int8_path=path,
    )
    assert report.passed
    assert report.data["scheme"] == scheme
    assert report.data["quantization"]["mode"] == mode
    assert report.data["calibration"]["method"] is None
    assert report.data["size"]["ratio"] < 0.7
    assert report.warnings == []
    held = np.load(heldout)
    reference = mlp_forward(fixture.fixture_layers(), held["window"])
    acc = report.data["accuracy"]
    assert acc["top1_agreement"] >= 0.99
    assert acc["max_abs_error"] < 0.05 * float(np.abs(reference).max())
    bundle = load_bundle(tmp_path / "b", trusted_keys=None, require_signature=False)
    spec = bundle.manifest.neural
    assert spec is not None
    assert {t.dtype for t in (*spec.inputs, *spec.outputs)} == {"float32"}
    group = NeuralAgentGroup.from_bundle(bundle, 50)
    world = fixture.fixture_world(50, seed=23)
    obs = world.reset()
    for _ in range(fixture.WINDOW + 4):
        obs = world.step(group.step(obs))
    assert float(world.reward.mean()) > 0.8


def test_a_converted_model_must_be_what_the_mode_says(heldout: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"is int8; a float16 model keeps float32 inputs"):
        convert_tflite(
            ConvertOptions(model=fixture.FLOAT_PATH, out=tmp_path / "b", name="m"),
            NeuralOptions(mode="float16", heldout=heldout),
            int8_path=fixture.INT8_PATH,
        )
    with pytest.raises(ModelError, match=r"no tensor is float16: not a float16 model"):
        convert_tflite(
            ConvertOptions(model=fixture.FLOAT_PATH, out=tmp_path / "b", name="m"),
            NeuralOptions(mode="float16", heldout=heldout),
            int8_path=fixture.DYNAMIC_RANGE_PATH,
        )
    with pytest.raises(ModelError, match=r"is float32; a full-integer model has int8 inputs"):
        convert_tflite(
            ConvertOptions(model=fixture.FLOAT_PATH, out=tmp_path / "b", name="m"),
            NeuralOptions(heldout=heldout),
            int8_path=fixture.FLOAT16_PATH,
        )
    with pytest.raises(InputError, match=r"--mode dynamic is not a TFLite mode"):
        convert_tflite(
            ConvertOptions(model=fixture.FLOAT_PATH, out=tmp_path / "b", name="m"),
            NeuralOptions(mode="dynamic", heldout=heldout),
            int8_path=fixture.FLOAT16_PATH,
        )
    assert not (tmp_path / "b").exists()


def test_tensorflow_converter_errors_come_out_as_one_line() -> None:
    """TensorFlow's ConverterError text is MLIR diagnostics: each line a long ``loc(...)`` and
    then the message; the tool keeps the first message."""
    from edge_agent_host.converter.formats.tflite import tf_error_line

    text = (
        '<unknown>:0: error: loc(callsite(fused["TensorListReserve:", "sequential/lstm/'
        'TensorArrayV2_1@__inference___call___251"] at fused["StatefulPartitionedCall:", '
        "\"StatefulPartitionedCall_1\"])): 'tf.TensorListReserve' op requires element_shape to "
        "be static during TF Lite transformation pass\n"
        "<unknown>:0: note: loc(fused[...]): called from\n"
        "<unknown>:0: error: Lowering tensor list ops is failed.\n"
    )
    assert tf_error_line(RuntimeError(text)) == (
        "'tf.TensorListReserve' op requires element_shape to be static during TF Lite "
        "transformation pass"
    )
    # What the converter prints on stderr: the location first, then the error.
    assert tf_error_line(RuntimeError('loc(fused["a(b"]): error: not supported\n')) == (
        "not supported"
    )
    assert tf_error_line(ValueError("\n  plain message\nmore")) == "plain message"
    assert tf_error_line(RuntimeError("")) == "RuntimeError"

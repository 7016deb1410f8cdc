"""``edge-agent-host convert onnx``: static int8 QDQ, calibration, the report, bundles, errors."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from edge_agent.aif import agreement
from edge_agent.aif.model import GenerativeModel, save_npz
from edge_agent.bundle.loader import load_bundle
from edge_agent.bundle.signing import TrustedKeys
from edge_agent.errors import BundleError, InputError, ModelError, SignatureError
from edge_agent.neural.agents import NeuralAgentGroup
from edge_agent.neural.backends import available_backends
from edge_agent.neural.perception import PerceptionAifGroup
from edge_agent.sim.sensors import SensorWorld
from edge_agent_host.cli import main
from edge_agent_host.converter.aif.options import AifOptions
from edge_agent_host.converter.builders import conv_onnx, mlp_onnx, random_mlp, sensor_policy
from edge_agent_host.converter.formats.onnx import (
    CalibrationReader,
    ConvertOptions,
    NeuralOptions,
    NeuralThresholds,
    convert_onnx,
)
from edge_agent_host.converter.report import ConversionReport
from edge_agent_host.keys import generate_keypair

T, F = 8, 8
REPO = Path(__file__).resolve().parents[5]


@pytest.fixture(autouse=True)
def _runtimes() -> None:
    if not available_backends()["onnxruntime"]:
        pytest.fail("onnxruntime is not installed: pip install 'edge-agent-runtime[onnx]'")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A sensor-world policy as float ONNX, 400 calibration windows, 600 labelled held-out ones."""
    root = tmp_path_factory.mktemp("onnx")
    world = SensorWorld(1)
    layers = sensor_policy(world.prototypes, world.noise, T)
    onnx.save(mlp_onnx(layers, T, F), root / "policy.onnx")
    X, _ = world.sample_windows(400, T, seed=1)
    np.savez(root / "calibration.npz", window=X)
    Xh, yh = world.sample_windows(600, T, seed=2)
    np.savez(root / "heldout.npz", window=Xh, labels=yh)
    return {"model": root / "policy.onnx", "calibration": root / "calibration.npz",
            "heldout": root / "heldout.npz", "root": root}


def ort_run(model_bytes: bytes, X: np.ndarray) -> np.ndarray:
    """An independent run: a plain onnxruntime session, default options but the one that makes
    x86-64 int8 exact on CPUs without VNNI (as the device's ARM cores are; docs/host-tool.md),
    set as the backend sets it (only where the CPU needs it)."""
    import onnxruntime as ort

    from edge_agent.neural.backends.onnxruntime import x64_quant_precision

    options = ort.SessionOptions()
    if x64_quant_precision():
        options.add_session_config_entry("session.x64quantprecision", "1")
    session = ort.InferenceSession(
        model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    return np.asarray(session.run(None, {name: X.astype(np.float32)})[0])


def test_report_matches_an_independent_float_and_int8_run(
    data: dict[str, Path], tmp_path: Path
) -> None:
    report = convert_onnx(
        ConvertOptions(model=data["model"], out=tmp_path / "b.tar", name="policy"),
        NeuralOptions(latency_repeats=3, mode="static", calibration=data["calibration"],
                      heldout=data["heldout"]),
    )
    assert report.passed
    assert report.bundle is not None
    bundle = load_bundle(tmp_path / "b.tar", trusted_keys=None, require_signature=False)
    int8 = bundle.file_bytes("model.onnx")
    held = np.load(data["heldout"])
    ref = ort_run(data["model"].read_bytes(), held["window"])
    got = ort_run(int8, held["window"])
    acc = report.data["accuracy"]
    diff = np.abs(ref.astype(np.float64) - got)
    assert acc["heldout_samples"] == 600
    assert acc["max_abs_error"] == pytest.approx(diff.max(), rel=1e-5)
    assert acc["mean_abs_error"] == pytest.approx(diff.mean(), rel=1e-5)
    # The converter's sessions equal these independent runs to rounding, so each rate it reports
    # lies within the tie-aware bounds (the plain rate where no output has a near-tie).
    tol_ref = 1e-5 * max(1.0, float(np.abs(ref).max()))
    tol_got = 1e-5 * max(1.0, float(np.abs(got).max()))
    labels = np.eye(ref.shape[1])[held["labels"]]
    for rate, a, b, tol_a, tol_b in (
        (acc["top1_agreement"], ref, got, tol_ref, tol_got),
        (acc["label_accuracy"]["float"], ref, labels, tol_ref, 0.0),
        (acc["label_accuracy"]["int8"], got, labels, tol_got, 0.0),
    ):
        low, high = agreement.argmax_agreement_bounds(a, b, tol_a=tol_a, tol_b=tol_b)
        assert low - 1e-12 <= rate <= high + 1e-12
        assert high - low <= 0.01, "near-ties are rare: the bounds stay tight"
    assert acc["top1_agreement"] >= 0.99
    size = report.data["size"]
    assert size["float_bytes"] == data["model"].stat().st_size
    assert size["int8_bytes"] == len(int8)
    latency = report.data["latency_ms"]
    assert set(latency) == {"float", "int8"}
    assert set(latency["int8"]) == {"1", "64"}
    assert all(v > 0 for d in latency.values() for v in d.values())
    calibration = dict(report.data["calibration"])
    advice = calibration.pop("advice")
    assert calibration == {"method": "minmax", "samples": 400, "source": "npz:calibration.npz"}
    # The method's advice gives this model's own largest error.
    assert advice.startswith(
        f"minmax keeps every observed value, the cheapest method: largest output error "
        f"{acc['max_abs_error']:.3g} ("
    ), advice
    quant = report.data["quantization"]
    assert (quant["mode"], quant["per_channel"], quant["preprocessed"]) == ("static", True, True)
    assert quant["mode_reason"] == "as asked: 100 % of the weights quantized"
    assert quant["quantized_share"] == 1.0
    assert report.warnings == []
    assert report.data["device_check"] == {"agents": 8, "ticks": T}
    # The latency was measured with the kernels a device with this CPU uses.
    from edge_agent.neural.backends.onnxruntime import x64_quant_precision

    assert report.data["x64_quant_precision"] is x64_quant_precision()
    kernels = next(row for row in report.rows if row[0] == "int8 kernels")
    assert ("exact mode (this CPU has no VNNI" in kernels[1]) is x64_quant_precision()
    spec = bundle.manifest.neural
    assert spec is not None
    assert spec.backend == "onnxruntime"
    assert spec.window == T
    assert [(t.name, t.shape, t.dtype) for t in spec.inputs] == [("window", (-1, T, F), "float32")]
    assert bundle.manifest.quantization["accuracy"]["top1_agreement"] == acc["top1_agreement"]


def quant_nodes(model_bytes: bytes) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    model = onnx.load_from_string(model_bytes)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return model, inits


def test_the_static_int8_model_is_qdq_s8s8_per_channel_by_default(
    data: dict[str, Path], tmp_path: Path
) -> None:
    sizes = {}
    for label, per_channel in (("channel", True), ("tensor", False)):
        convert_onnx(
            ConvertOptions(model=data["model"], out=tmp_path / label, name="policy"),
            NeuralOptions(
                mode="static", per_channel=per_channel, latency_repeats=1,
                calibration=data["calibration"],
            ),
        )
        model, inits = quant_nodes((tmp_path / label / "model.onnx").read_bytes())
        ops = [n.op_type for n in model.graph.node]
        assert "QuantizeLinear" in ops
        assert "DequantizeLinear" in ops
        zero_points = [inits[n.input[2]] for n in model.graph.node
                       if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2
                       and n.input[2] in inits]
        int8_zp = [z for z in zero_points if z.dtype == np.int8]
        assert zero_points
        assert len(int8_zp) >= len(zero_points) - 2
        weights = [i for i in model.graph.initializer if i.data_type == TensorProto.INT8
                   and len(i.dims) == 2]
        assert len(weights) == 2  # both Gemm weights stored as int8
        weight_scales = [inits[n.input[1]] for n in model.graph.node
                         if n.op_type == "DequantizeLinear" and n.input[0] in
                         {w.name for w in weights}]
        sizes[label] = sorted(s.size for s in weight_scales)
    assert sizes["channel"] == [4, 32]  # one scale per output channel
    assert sizes["tensor"] == [1, 1]


def activation_scales(path: Path) -> dict[str, float]:
    model, inits = quant_nodes(path.read_bytes())
    return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and inits[n.input[1]].size == 1}


def test_calibration_methods_change_the_activation_scales(
    data: dict[str, Path], tmp_path: Path
) -> None:
    scales = {}
    for method in ("minmax", "percentile", "entropy"):
        report = convert_onnx(
            ConvertOptions(model=data["model"], out=tmp_path / method, name="policy"),
            NeuralOptions(
                mode="static", method=method, percentile=99.0, latency_repeats=1,
                calibration=data["calibration"], thresholds=NeuralThresholds(min_top1=0.9),
            ),
        )
        assert report.data["calibration"]["method"] == method
        scales[method] = activation_scales(tmp_path / method / "model.onnx")
    assert scales["minmax"].keys() == scales["percentile"].keys()
    # The 99th percentile clips the tails that MinMax keeps: smaller scales, never larger.
    minmax, percentile = scales["minmax"], scales["percentile"]
    assert all(percentile[k] <= minmax[k] * (1 + 1e-6) for k in minmax)
    assert any(scales["percentile"][k] < scales["minmax"][k] * 0.95 for k in scales["minmax"])


def test_calibration_reader_serves_equal_batches() -> None:
    samples = {"x": np.arange(70, dtype=np.float32).reshape(70, 1)}
    reader = CalibrationReader(samples, 32)
    batches = []
    while (batch := reader.get_next()) is not None:
        batches.append(batch["x"])
    assert {len(b) for b in batches} == {14}  # 70 = 5 x 14: no short last batch
    np.testing.assert_array_equal(np.concatenate(batches), samples["x"])
    reader.rewind()
    first = reader.get_next()
    assert first is not None
    assert first["x"][0, 0] == 0


def test_input_range_warns_and_heldout_defaults(
    data: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        report = convert_onnx(
            ConvertOptions(model=data["model"], out=tmp_path / "r", name="policy"),
            NeuralOptions(
                latency_repeats=1, input_range=(-3.0, 3.0), samples=64,
                thresholds=NeuralThresholds(min_top1=None),
            ),
        )
    warnings = [r.message for r in caplog.records if "uniformly" in r.message]
    assert len(warnings) == 1
    assert "--calibration X.npz" in warnings[0]
    assert report.data["calibration"]["source"] == "range:[-3, 3)"
    assert report.data["accuracy"]["heldout_samples"] == 64
    split = convert_onnx(
        ConvertOptions(model=data["model"], out=tmp_path / "s", name="policy"),
        NeuralOptions(latency_repeats=1, mode="static", calibration=data["calibration"]),
    )
    assert split.data["calibration"]["samples"] == 320
    assert split.data["accuracy"]["heldout_samples"] == 80


def test_conv_models_convert_too(tmp_path: Path, data: dict[str, Path]) -> None:
    model, _ = conv_onnx(T, F, 4, channels=32, seed=1)
    onnx.save(model, tmp_path / "conv.onnx")
    report = convert_onnx(
        ConvertOptions(model=tmp_path / "conv.onnx", out=tmp_path / "b", name="conv"),
        NeuralOptions(
            latency_repeats=1, calibration=data["calibration"], heldout=data["heldout"],
            thresholds=NeuralThresholds(min_top1=0.9),
        ),
    )
    assert report.bundle is not None
    # auto: static, whose fixed activation scales cost nothing per tick (dynamic quantizes only
    # the Gemm head, per row: never a Conv, whose ConvInteger takes one scale per batch).
    quant = report.data["quantization"]
    assert quant["mode"] == "static"
    assert "static's activation scales are fixed" in quant["mode_reason"]
    assert "ConvInteger" not in {
        n.op_type for n in onnx.load(tmp_path / "b" / "model.onnx").graph.node
    }
    static = convert_onnx(
        ConvertOptions(model=tmp_path / "conv.onnx", out=tmp_path / "s", name="conv", force=True),
        NeuralOptions(
            latency_repeats=1, mode="static", calibration=data["calibration"],
            heldout=data["heldout"], thresholds=NeuralThresholds(min_top1=0.9),
        ),
    )
    assert static.data["bundled"] == "int8"
    ops = {n.op_type for n in onnx.load(tmp_path / "s" / "model.onnx").graph.node}
    assert {"Conv", "QuantizeLinear", "DequantizeLinear"} <= ops


def test_data_errors_are_clear(data: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, window=np.zeros((10, T, F + 1)))
    with pytest.raises(InputError, match=r"window has shape \(10, 8, 9\), expected \(n, 8, 8\)"):
        convert_onnx(
            ConvertOptions(model=data["model"], out=tmp_path / "x", name="p"),
            NeuralOptions(calibration=bad),
        )
    np.savez(bad, a=np.zeros((10, T, F)), b=np.zeros((10, T, F)))
    with pytest.raises(InputError, match=r"has arrays \['a', 'b'\], the model's inputs are"):
        convert_onnx(
            ConvertOptions(model=data["model"], out=tmp_path / "x", name="p"),
            NeuralOptions(calibration=bad),
        )
    np.savez(bad, window=np.full((10, T, F), np.nan))
    with pytest.raises(InputError, match=r"must hold finite real numbers"):
        convert_onnx(
            ConvertOptions(model=data["model"], out=tmp_path / "x", name="p"),
            NeuralOptions(calibration=bad),
        )
    with pytest.raises(InputError, match=r"give calibration data .* or an input range"):
        convert_onnx(ConvertOptions(model=data["model"], out=tmp_path / "x", name="p"))
    with pytest.raises(InputError, match=r"LOW < HIGH"):
        convert_onnx(
            ConvertOptions(model=data["model"], out=tmp_path / "x", name="p"),
            NeuralOptions(input_range=(1.0, 1.0)),
        )
    fixed = onnx.load(data["model"])
    fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(fixed, tmp_path / "fixed.onnx")
    with pytest.raises(ModelError, match=r"the batch dimension must be dynamic"):
        convert_onnx(
            ConvertOptions(model=tmp_path / "fixed.onnx", out=tmp_path / "x", name="p"),
            NeuralOptions(calibration=data["calibration"]),
        )
    # An output whose batch the exporter fixed at 1 (torch.export does, for an LSTM exported
    # with an example batch of 1) though the input's is dynamic: said before anything runs.
    fixed = onnx.load(data["model"])
    fixed.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(fixed, tmp_path / "fixed_out.onnx")
    with pytest.raises(ModelError, match=r"^output 'logits' has shape \[1, 4\]: a fixed batch, "
                       r"where the rows must follow the input's batch \(torch.export fixes a "
                       r"dimension of size 1: export with an example batch of 2 or more\)$"):
        convert_onnx(
            ConvertOptions(model=tmp_path / "fixed_out.onnx", out=tmp_path / "x", name="p"),
            NeuralOptions(calibration=data["calibration"]),
        )
    with pytest.raises(InputError, match=r"continuous output needs action_low and action_high"):
        convert_onnx(
            ConvertOptions(model=data["model"], out=tmp_path / "x", name="p"),
            NeuralOptions(
                output_kind="continuous", latency_repeats=1, calibration=data["calibration"],
            ),
        )
    with pytest.raises(InputError, match=r"cannot read the model"):
        convert_onnx(ConvertOptions(model=tmp_path / "missing.onnx", out=tmp_path / "x", name="p"))
    assert not (tmp_path / "x").exists()


def test_the_documented_python_example_converts(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/host-tool.md "From Python", verbatim, on this module's model and data."""
    text = (REPO / "docs" / "host-tool.md").read_text()
    section = text.split("\n## From Python\n", 1)[1]
    snippet = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    shutil.copy(data["model"], tmp_path / "policy.onnx")
    shutil.copy(data["calibration"], tmp_path / "cal.npz")
    shutil.copy(data["heldout"], tmp_path / "held.npz")
    keys = generate_keypair(tmp_path / "keys", "release")
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(snippet, scope)  # the documented example, as written
    report = scope["report"]
    assert isinstance(report, ConversionReport)
    assert report.passed, report.render()
    assert report.data["quantization"]["mode"] == "static"
    assert report.data["calibration"]["method"] == "percentile"
    bundle = load_bundle(tmp_path / "out" / "policy.tar",
                         trusted_keys=TrustedKeys.from_dir(tmp_path / "keys"))
    assert (bundle.manifest.name, bundle.manifest.signer) == ("policy", "ci")
    assert bundle.key_id == keys.key_id


def test_cli_convert_sign_verify_and_run(
    data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = generate_keypair(tmp_path / "keys", "release")
    out = tmp_path / "policy.tar"
    code = main(["convert", "onnx", str(data["model"]), "--out", str(out),
                 "--calibration", str(data["calibration"]), "--heldout", str(data["heldout"]),
                 "--sign", str(keys.private_path), "--json", "--quiet",
                 "--latency-repeats", "2"])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0
    assert printed["passed"]
    assert printed["bundle"]["key_id"] == keys.key_id
    trusted = TrustedKeys.from_dir(tmp_path / "keys")
    bundle = load_bundle(out, trusted_keys=trusted)
    assert bundle.signature_verified
    assert bundle.manifest.name == "policy"
    group = NeuralAgentGroup.from_bundle(bundle, 256)
    world = SensorWorld(256, seed=3)
    obs = world.reset()
    for _ in range(T + 5):
        obs = world.step(group.step(obs))
    assert float(world.reward.mean()) > 0.85
    # The summary table, for people.
    assert main(["convert", "onnx", str(data["model"]), "--out", str(tmp_path / "d"),
                 "--calibration", str(data["calibration"]), "--latency-repeats", "2"]) == 0
    table = capsys.readouterr().out
    for row in ("model file (bytes)", "latency batch 1 (ms)", "latency batch 64 (ms)",
                "max abs error", "mean abs error", "top-1 agreement", "unsigned"):
        assert row in table


def test_cli_threshold_failure_exits_1(
    data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["convert", "onnx", str(data["model"]), "--out", str(tmp_path / "b"),
            "--calibration", str(data["calibration"]), "--max-abs-error", "1e-9",
            "--latency-repeats", "1"]
    assert main(args) == 1
    printed = capsys.readouterr().out
    assert "max abs error" in printed
    assert "--max-abs-error): FAILED" in printed
    assert not (tmp_path / "b").exists()
    assert main([*args, "--force"]) == 0
    assert (tmp_path / "b" / "model.onnx").exists()


def test_tampered_and_broken_bundles_are_refused(data: dict[str, Path], tmp_path: Path) -> None:
    keys = generate_keypair(tmp_path / "keys", "release")
    other = generate_keypair(tmp_path / "other", "other")
    from edge_agent_host.keys import load_signing_key

    convert_onnx(
        ConvertOptions(
            model=data["model"], out=tmp_path / "b", name="policy",
            sign_key=load_signing_key(keys.private_path),
        ),
        NeuralOptions(latency_repeats=1, calibration=data["calibration"]),
    )
    trusted = TrustedKeys.from_dir(tmp_path / "keys")
    with pytest.raises(SignatureError, match=r"untrusted key"):
        load_bundle(tmp_path / "b", trusted_keys=TrustedKeys.from_dir(tmp_path / "other"))
    assert other.key_id != keys.key_id
    tampered = tmp_path / "tampered"
    shutil.copytree(tmp_path / "b", tampered)
    blob = bytearray((tampered / "model.onnx").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (tampered / "model.onnx").write_bytes(bytes(blob))
    with pytest.raises(BundleError, match=r"model.onnx: sha256 mismatch"):
        load_bundle(tampered, trusted_keys=trusted)
    missing = tmp_path / "missing"
    shutil.copytree(tmp_path / "b", missing)
    (missing / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model.onnx: listed in manifest.json but missing"):
        load_bundle(missing, trusted_keys=trusted)
    group = NeuralAgentGroup.from_bundle(load_bundle(tmp_path / "b", trusted_keys=trusted), 4)
    with pytest.raises(InputError, match=r"obs has shape \(4, 7\), expected \(4, 8\)"):
        group.step(np.zeros((4, 7)))


def test_perception_bundle_pairs_an_observation_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = SensorWorld(1)
    K = world.num_classes
    onnx.save(mlp_onnx(sensor_policy(world.prototypes, world.noise, 1), 1, F),
              tmp_path / "obs.onnx")
    X, y = world.sample_windows(300, 1, seed=4)
    np.savez(tmp_path / "cal.npz", window=X, labels=y)
    A = np.full((K, K), 0.2 / (K - 1))
    np.fill_diagonal(A, 0.8)
    B = np.full((K, K), 0.005) + np.eye(K) * 0.98
    save_npz(GenerativeModel.from_arrays([A], [B[:, :, None]]), tmp_path / "aif.npz")
    out = tmp_path / "perception.tar"
    assert main(["convert", "onnx", str(tmp_path / "obs.onnx"), "--out", str(out),
                 "--calibration", str(tmp_path / "cal.npz"), "--output-kind", "observation",
                 "--aif", str(tmp_path / "aif.npz"), "--rollouts", "20", "--steps", "5",
                 "--min-top1", "0.95", "--latency-repeats", "1", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["kind"] == "aif+perception"
    # 36 weights: the int8 file is larger than float, so the float model is bundled and only
    # the Active Inference checks apply.
    assert printed["bundled"] == "float"
    assert {c["option"] for c in printed["checks"]} == {"--max-kl", "--min-action-agreement"}
    bundle = load_bundle(out, trusted_keys=None, require_signature=False)
    group = PerceptionAifGroup.from_bundle(bundle, 16)
    assert group.step(world.sample_windows(16, 1, seed=5)[0][:, 0]).shape == (16, 1)
    # An observation model must give one logits output per modality of the right size.
    three = GenerativeModel.from_arrays([np.full((3, 4), 1 / 3)], [np.eye(4)[:, :, None]])
    with pytest.raises(ModelError, match=r"modality 0 has 3 outcomes, expected \[-1, 3\]"):
        convert_onnx(
            ConvertOptions(model=tmp_path / "obs.onnx", out=tmp_path / "x", name="p"),
            NeuralOptions(
                output_kind="observation", latency_repeats=1, calibration=tmp_path / "cal.npz",
                aif=AifOptions(
                model=three,
            ),
            ),
        )
    with pytest.raises(InputError, match=r"needs --output-kind observation"):
        convert_onnx(
            ConvertOptions(model=tmp_path / "obs.onnx", out=tmp_path / "x", name="p"),
            NeuralOptions(
                calibration=tmp_path / "cal.npz",
                aif=AifOptions(
                model=three,
            ),
            ),
        )


def test_random_weights_are_reported_honestly(data: dict[str, Path], tmp_path: Path) -> None:
    """Random networks have near-ties: the report shows what int8 does to them."""
    onnx.save(mlp_onnx(random_mlp((T * F, 64, 64, 4), seed=9), T, F), tmp_path / "random.onnx")
    report = convert_onnx(
        ConvertOptions(model=tmp_path / "random.onnx", out=tmp_path / "b", name="random"),
        NeuralOptions(
            latency_repeats=1, calibration=data["calibration"], heldout=data["heldout"],
            thresholds=NeuralThresholds(min_top1=1.0),
        ),
    )
    top1 = report.data["accuracy"]["top1_agreement"]
    assert 0.9 < top1 < 1.0
    assert not report.passed
    assert report.bundle is None


def test_a_model_saved_with_a_newer_ir_version_converts_with_one_warning(
    tmp_path: Path, data: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """onnx 1.23 saves IR 14, which onnxruntime 1.31 refuses with a C++ signature: the converter
    relabels it as the newest IR onnxruntime reads and says so in one line."""
    import onnxruntime

    from edge_agent_host.converter.formats.onnx import max_onnxruntime_ir_version

    newest = max_onnxruntime_ir_version()
    model = onnx.load(data["model"])
    model.ir_version = newest + 1
    path = tmp_path / "policy.onnx"
    onnx.save(model, path)
    with pytest.raises(Exception, match="Unsupported model IR version"):
        ort_run(path.read_bytes(), np.zeros((1, T, F)))  # what onnxruntime itself says
    with caplog.at_level(logging.WARNING):
        report = convert_onnx(
            ConvertOptions(model=path, out=tmp_path / "b", name="policy"),
            NeuralOptions(calibration=data["calibration"], heldout=data["heldout"]),
        )
    assert report.passed
    lines = [r.getMessage() for r in caplog.records if "IR version" in r.getMessage()]
    assert lines == [
        f"{path}: ONNX IR version {newest + 1} is newer than onnxruntime "
        f"{onnxruntime.__version__} reads ({newest}); converting it as IR {newest}"
    ]

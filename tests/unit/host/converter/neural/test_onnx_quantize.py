"""``convert onnx`` quantization choices: dynamic and auto modes for recurrent models, real entropy
calibration, symmetric activations, excluded nodes and op types, pre-processing, the size
warning, and the calibration-set size rules. Real onnxruntime sessions throughout."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import numpy_helper

from edge_agent.bundle.loader import load_bundle
from edge_agent.errors import InputError
from edge_agent.neural.agents import NeuralAgentGroup
from edge_agent.neural.backends import available_backends
from edge_agent.neural.backends.onnxruntime import x64_quant_precision
from edge_agent.sim.sensors import SensorWorld
from edge_agent_host.cli import main
from edge_agent_host.converter.builders import mlp_onnx, recurrent_onnx, sensor_policy
from edge_agent_host.converter.formats.onnx import (
    ENTROPY_BINS,
    MIN_CALIBRATION_SAMPLES,
    ConvertOptions,
    NeuralOptions,
    NeuralThresholds,
    convert_onnx,
    pick_mode,
)
from edge_agent_host.converter.neural.onnx_quantize import (
    INDEPENDENT_ROWS,
    ModeResult,
    head_tensors,
)
from edge_agent_host.converter.report import ConversionReport

T, F = 8, 8


@pytest.fixture(autouse=True)
def _runtimes() -> None:
    if not available_backends()["onnxruntime"]:
        pytest.fail("onnxruntime is not installed: pip install 'edge-agent-runtime[onnx]'")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("modes")
    world = SensorWorld(1)
    onnx.save(mlp_onnx(sensor_policy(world.prototypes, world.noise, T), T, F),
              root / "policy.onnx")
    X, _ = world.sample_windows(400, T, seed=1)
    np.savez(root / "cal.npz", window=X)
    Xh, yh = world.sample_windows(300, T, seed=2)
    np.savez(root / "held.npz", window=Xh, labels=yh)
    for cell in ("LSTM", "GRU"):
        onnx.save(recurrent_onnx(cell, T, F, 64, 4, seed=3), root / f"{cell.lower()}.onnx")
    return {p.stem: p for p in root.iterdir()}


def convert(model: Path, out: Path, data: dict[str, Path], *, min_top1: float | None = 0.9,
            **options: Any) -> ConversionReport:
    return convert_onnx(
        ConvertOptions(model=model, out=out, name="m"),
        NeuralOptions(
            latency_repeats=1, **options, calibration=data["cal"], heldout=data["held"],
            thresholds=NeuralThresholds(min_top1=min_top1),
        ),
    )


def ops(path: Path) -> list[str]:
    return [node.op_type for node in onnx.load(path).graph.node]


def test_auto_quantizes_an_lstm_dynamically_and_it_shrinks(
    data: dict[str, Path], tmp_path: Path
) -> None:
    report = convert(data["lstm"], tmp_path / "auto", data)
    quant = report.data["quantization"]
    assert quant["mode"] == "dynamic"
    # auto measured both modes: static leaves the LSTM float, dynamic stores its weights in int8.
    assert re.fullmatch(
        r"auto: static 10\d\.\d % of float, 1 % of the weights quantized, top-1 [\d.]+ %; "
        r"dynamic 3\d\.\d % of float, 9\d % of the weights quantized, top-1 [\d.]+ %: "
        r"dynamic \((as accurate, top-1 within 0\.5 points, and static does not pay \(not "
        r"below 90 % of float\) where dynamic does: 3\d\.\d % against 10\d\.\d % of float|"
        r"more accurate: static's top-1 is [\d.]+ points lower, beyond the 0\.5-point "
        r"tolerance)\); " + re.escape(INDEPENDENT_ROWS),
        quant["mode_reason"],
    ), quant["mode_reason"]
    measured = {entry["mode"]: entry for entry in quant["auto"]}
    assert measured["static"]["size_ratio"] > 1.0
    assert measured["dynamic"]["size_ratio"] < 0.35
    assert quant["quantized_share"] == measured["dynamic"]["quantized_share"] > 0.9
    assert report.data["scheme"] == "onnx-dynamic-row-u8s8"
    assert report.data["calibration"]["method"] is None
    assert report.data["size"]["ratio"] < 0.35
    assert report.data["accuracy"]["top1_agreement"] >= 0.95
    assert report.warnings == []
    # The LSTM runs in float on int8 weights: onnxruntime's DynamicQuantizeLSTM, which
    # quantizes each step over the whole batch, is not used.
    graph = ops(tmp_path / "auto" / "model.onnx")
    assert "LSTM" in graph
    assert "DequantizeLinear" in graph
    assert not {"DynamicQuantizeLSTM", "DynamicQuantizeLinear"} & set(graph)
    bundle = load_bundle(tmp_path / "auto", trusted_keys=None, require_signature=False)
    assert bundle.manifest.quantization["quantization"]["mode"] == "dynamic"
    group = NeuralAgentGroup.from_bundle(bundle, 3)
    for _ in range(T):
        actions = group.step(np.zeros((3, F), dtype=np.float32))
    assert actions.shape == (3,)


def test_static_lstm_warns_that_it_did_not_shrink_and_says_what_to_do(
    data: dict[str, Path], tmp_path: Path
) -> None:
    report = convert(data["lstm"], tmp_path / "static", data, mode="static")
    assert report.data["quantization"]["mode"] == "static"
    assert report.data["quantization"]["mode_reason"] == "as asked: 1 % of the weights quantized"
    ratio = report.data["size"]["ratio"]
    assert ratio > 1.0
    assert report.warnings == [
        f"the int8 model is {100 * ratio:.1f} % of the float model's size and quantizes 1 % of "
        "its weights (a conversion that pays is below 90 %): weights left in float: LSTM 75,776 "
        "B; --mode dynamic quantizes LSTM",
        f"the int8 model is {100 * ratio:.1f} % of the float model's size: the bundle carries "
        "the float model instead (exact, and smaller; --force bundles the int8 one)",
    ]
    # Not smaller than float: the float model is bundled, and no int8 accuracy check applies.
    assert (report.data["bundled"], report.data["scheme"]) == ("float", "onnx-float32")
    assert report.checks == []
    assert (tmp_path / "static" / "model.onnx").read_bytes() == data["lstm"].read_bytes()
    forced = convert_onnx(
        ConvertOptions(model=data["lstm"], out=tmp_path / "forced", name="m", force=True),
        NeuralOptions(
            latency_repeats=1, mode="static", calibration=data["cal"], heldout=data["held"],
        ),
    )
    assert (forced.data["bundled"], forced.data["scheme"]) == ("int8", "onnx-qdq-s8s8")
    assert forced.warnings[-1].endswith("of the float model's size: bundled anyway because of "
                                        "--force")
    assert "QuantizeLinear" in ops(tmp_path / "forced" / "model.onnx")


def test_a_gru_is_quantized_by_neither_mode_and_the_warning_says_so(
    data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["convert", "onnx", str(data["gru"]), "--out", str(tmp_path / "b"),
                 "--calibration", str(data["cal"]), "--latency-repeats", "1",
                 "--min-top1", "0.9"])
    table = capsys.readouterr().out
    assert code == 0
    warning = next(line for line in table.splitlines() if line.startswith("warning: "))
    assert "weights left in float: GRU" in warning
    assert " and quantizes 2 % of its weights (" in warning  # the head
    assert warning.endswith("neither mode quantizes GRU")
    # The float model is bundled: the table's columns say which was bundled.
    head = next(line for line in table.splitlines() if line.endswith("int8/float"))
    assert head.split() == ["float", "(bundled)", "int8", "(not", "bundled)", "int8/float"]


def test_a_static_only_option_says_what_auto_would_have_done_for_an_lstm(
    data: dict[str, Path], tmp_path: Path
) -> None:
    """--method percentile makes auto static, which leaves an LSTM float: the warning says how
    little was quantized and that auto without the option measures dynamic too."""
    report = convert(data["lstm"], tmp_path / "p", data, method="percentile")
    assert report.data["quantization"]["mode_reason"] == (
        "auto: --method percentile calibrates static quantization: static"
    )
    assert report.warnings[0].endswith(
        "--mode dynamic quantizes LSTM (auto was static because of --method percentile: "
        "without it, auto measures dynamic too)"
    )
    assert " and quantizes 1 % of its weights (" in report.warnings[0]


def test_calibration_far_from_the_held_out_data_is_said_and_the_refusal_says_what_to_try(
    data: dict[str, Path], tmp_path: Path
) -> None:
    """A glitched calibration sample (one window x10,000) sets static's input range: static is
    refused, and the refusal names --mode auto, which passes (dynamic calibrates nothing); data
    in other units (x1e30) are said too, not passed over silently."""
    windows = np.load(data["cal"])["window"]
    glitched = windows.copy()
    glitched[7] *= 1e4
    np.savez(tmp_path / "glitch.npz", window=glitched)
    np.savez(tmp_path / "units.npz", window=windows * 1e30)
    peak = float(np.abs(np.load(data["held"])["window"]).max())
    for name, factor in (("glitch", 1e4), ("units", 1e30)):
        cal = float(np.abs(np.load(tmp_path / f"{name}.npz")["window"]).max())
        assert cal > factor  # far beyond the held-out data's few units
        line = (
            f"the calibration data reach |x| = {cal:.3g}, the held-out data {peak:.3g}: a "
            "calibration sample far outside the inputs (a glitch, or other units) sets static "
            "quantization's input range; check --calibration (dynamic quantization calibrates "
            "nothing)"
        )
        refused = convert_onnx(
            ConvertOptions(model=data["policy"], out=tmp_path / f"{name}-s", name="m"),
            NeuralOptions(latency_repeats=1, mode="static", calibration=tmp_path / f"{name}.npz",
                          heldout=data["held"], thresholds=NeuralThresholds(min_top1=0.9)),
        )
        assert not refused.passed
        assert refused.bundle is None
        assert line in refused.warnings
        assert refused.render().splitlines()[-1] == (
            "no bundle written: accuracy checks failed (try --mode auto (the default: it "
            "measures dynamic quantization too, which calibrates nothing), or use --force to "
            "write it)"
        )
        auto = convert_onnx(
            ConvertOptions(model=data["policy"], out=tmp_path / f"{name}-a", name="m"),
            NeuralOptions(latency_repeats=1, calibration=tmp_path / f"{name}.npz",
                          heldout=data["held"], thresholds=NeuralThresholds(min_top1=0.9)),
        )
        assert auto.passed
        assert auto.bundle is not None
        assert auto.data["quantization"]["mode"] == "dynamic"
        assert line in auto.warnings
        # A dynamic model calibrated nothing: the device counts against the held-out range.
        bundle = load_bundle(tmp_path / f"{name}-a", trusted_keys=None, require_signature=False)
        assert bundle.manifest.neural is not None
        bounds = bundle.manifest.neural.observation_range
        assert bounds is not None
        assert max(bounds.high) <= peak


def activation_scales(path: Path) -> dict[str, float]:
    model = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and inits[n.input[1]].size == 1}


def test_entropy_calibration_is_real_and_recorded(data: dict[str, Path], tmp_path: Path) -> None:
    """onnxruntime's quantize_static fixes the entropy histogram at 128 bins, which leaves one
    candidate threshold, the full range: the converter calibrates entropy itself."""
    scales = {}
    for method in ("minmax", "entropy"):
        report = convert(data["policy"], tmp_path / method, data, mode="static", method=method,
                         min_top1=None)
        scales[method] = activation_scales(tmp_path / method / "model.onnx")
        calibration = report.data["calibration"]
        assert calibration["method"] == method
    assert calibration["entropy_bins"] == ENTROPY_BINS
    minmax, entropy = scales["minmax"], scales["entropy"]
    assert minmax.keys() == entropy.keys()
    # KL-optimal thresholds clip tails that MinMax keeps: never larger, and smaller somewhere.
    assert all(entropy[k] <= minmax[k] * (1 + 1e-6) for k in minmax)
    assert sum(entropy[k] < minmax[k] * (1 - 1e-3) for k in minmax) >= 2
    assert min(entropy[k] / minmax[k] for k in minmax) < 0.8
    # ... except in the head: the logits keep their MinMax range (a clipped top logit is a
    # changed decision).
    assert head_tensors(onnx.load(data["policy"])) == ["logits"]
    assert entropy["logits_QuantizeLinear_Input"] == pytest.approx(
        minmax["logits_QuantizeLinear_Input"], rel=1e-6)
    assert (tmp_path / "entropy" / "model.onnx").read_bytes() != (
        tmp_path / "minmax" / "model.onnx").read_bytes()
    bundle = load_bundle(tmp_path / "entropy", trusted_keys=None, require_signature=False)
    assert bundle.manifest.quantization["calibration"]["method"] == "entropy"


def zero_points(path: Path) -> list[np.ndarray]:
    model = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [inits[n.input[2]] for n in model.graph.node
            if n.op_type == "QuantizeLinear" and len(n.input) > 2]


def test_symmetric_activations_have_zero_points_of_zero(
    data: dict[str, Path], tmp_path: Path
) -> None:
    convert(data["policy"], tmp_path / "asym", data, mode="static")
    report = convert(data["policy"], tmp_path / "sym", data, symmetric_activations=True)
    assert report.data["quantization"]["symmetric_activations"] is True
    assert any(np.any(z != 0) for z in zero_points(tmp_path / "asym" / "model.onnx"))
    assert all(np.all(z == 0) for z in zero_points(tmp_path / "sym" / "model.onnx"))


def test_excluded_op_types_and_nodes_stay_float(data: dict[str, Path], tmp_path: Path) -> None:
    report = convert(data["policy"], tmp_path / "ops", data, exclude_op_types=("Gemm",))
    model = onnx.load(tmp_path / "ops" / "model.onnx")
    assert {i.data_type for i in model.graph.initializer if len(i.dims) == 2} == {
        onnx.TensorProto.FLOAT}
    assert report.data["quantization"]["exclude_op_types"] == ["Gemm"]
    # Name one Gemm: only the other is quantized.
    named = onnx.load(data["policy"])
    for i, node in enumerate(named.graph.node):
        node.name = f"{node.op_type.lower()}{i}"
    onnx.save(named, tmp_path / "named.onnx")
    gemms = [n.name for n in named.graph.node if n.op_type == "Gemm"]
    convert(tmp_path / "named.onnx", tmp_path / "node", data, exclude_nodes=(gemms[-1],))
    model = onnx.load(tmp_path / "node" / "model.onnx")
    int8_weights = [i for i in model.graph.initializer
                    if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 2]
    assert len(int8_weights) == 1
    with pytest.raises(InputError, match=r"--exclude-nodes 'nope': the model has no node of that "
                       r"name \(its nodes: flatten0, gemm1"):
        convert(tmp_path / "named.onnx", tmp_path / "x", data, exclude_nodes=("nope",))
    with pytest.raises(InputError, match=r"--exclude-op-types 'Conv': the model has no such node "
                       r"\(its op types: Flatten, Gemm, Relu\)"):
        convert(data["policy"], tmp_path / "x", data, exclude_op_types=("Conv",))


def test_no_preprocess_is_recorded(data: dict[str, Path], tmp_path: Path) -> None:
    report = convert(data["policy"], tmp_path / "b", data, preprocess=False)
    assert report.data["quantization"]["preprocessed"] is False
    assert report.warnings == []
    assert report.data["accuracy"]["top1_agreement"] >= 0.99


def test_calibration_options_that_dynamic_mode_has_no_use_for_are_refused(
    data: dict[str, Path], tmp_path: Path
) -> None:
    # auto honours a static-only option: it quantizes statically, and says why.
    report = convert(data["lstm"], tmp_path / "auto", data, method="entropy", min_top1=None)
    assert report.data["quantization"]["mode"] == "static"
    assert report.data["quantization"]["mode_reason"] == (
        "auto: --method entropy calibrates static quantization: static")
    with pytest.raises(InputError, match=r"--method entropy calibrates static quantization, and "
                       r"this conversion is dynamic; pass --mode static \(or auto\) to use it"):
        convert(data["lstm"], tmp_path / "x", data, mode="dynamic", method="entropy")
    with pytest.raises(InputError, match=r"--symmetric-activations calibrates static"):
        convert(data["policy"], tmp_path / "x", data, mode="dynamic",
                symmetric_activations=True)


def test_one_calibration_sample_is_refused_and_few_are_warned_about(
    data: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    X = np.load(data["cal"])["window"]
    np.savez(tmp_path / "one.npz", window=X[:1])
    with pytest.raises(InputError, match=r"calibration uses 1 sample: .* give at least 16"):
        convert_onnx(
            ConvertOptions(model=data["policy"], out=tmp_path / "x", name="m"),
            NeuralOptions(calibration=tmp_path / "one.npz", heldout=data["held"]),
        )
    np.savez(tmp_path / "two.npz", window=X[:2])
    with pytest.raises(InputError, match=r"the calibration set has 2 sample\(s\): too few"):
        convert_onnx(
            ConvertOptions(model=data["policy"], out=tmp_path / "x", name="m"),
            NeuralOptions(calibration=tmp_path / "two.npz"),
        )
    with pytest.raises(InputError, match=r"calibration uses 1 sample"):
        convert_onnx(
            ConvertOptions(model=data["policy"], out=tmp_path / "x", name="m"),
            NeuralOptions(input_range=(-1.0, 1.0), samples=1),
        )
    np.savez(tmp_path / "few.npz", window=X[:5])
    with caplog.at_level(logging.WARNING):
        report = convert_onnx(
            ConvertOptions(model=data["policy"], out=tmp_path / "b", name="m"),
            NeuralOptions(
                latency_repeats=1, mode="static", calibration=tmp_path / "few.npz",
                heldout=data["held"], thresholds=NeuralThresholds(min_top1=None),
            ),
        )
    assert report.warnings == [
        f"calibration uses only 5 samples: activation ranges from so few inputs miss what the "
        f"model meets in use; give at least {MIN_CALIBRATION_SAMPLES} (a few hundred is typical)"
    ]
    assert report.bundle is not None
    assert not (tmp_path / "x").exists()
    # Dynamic quantization calibrates nothing: a small set is no concern there.
    report = convert_onnx(
        ConvertOptions(model=data["lstm"], out=tmp_path / "d", name="m"),
        NeuralOptions(
            latency_repeats=1, calibration=tmp_path / "few.npz", heldout=data["held"],
            thresholds=NeuralThresholds(min_top1=None),
        ),
    )
    assert report.warnings == []


def test_convert_help_names_every_new_option(capsys: pytest.CaptureFixture[str]) -> None:
    for kind, options in (
        ("onnx", ("--mode {auto,static,dynamic}", "--method {minmax,entropy,percentile}",
                  "--symmetric-activations", "--exclude-nodes NAME", "--exclude-op-types OP",
                  "--no-preprocess", "--output NAME", "below 90 % of")),
        ("tflite", ("--mode {full-integer,dynamic-range,float16}",)),
    ):
        with pytest.raises(SystemExit):
            main(["convert", kind, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for option in options:
            assert option in text, (kind, option)


def result(mode: str, size: float, quantized: float, top1: float | None,
           error: float = 0.01) -> ModeResult:
    return ModeResult(mode, size, quantized, top1, error)  # type: ignore[arg-type]


def test_auto_keeps_static_unless_it_is_less_accurate_or_does_not_pay() -> None:
    # Gemm in both modes (dynamic turns it into MatMulInteger): as accurate, dynamic 8 % smaller,
    # but its per-row scales cost every tick: static, and the reason says what dynamic offered.
    mode, why = pick_mode([result("static", 0.37, 1.0, 1.0), result("dynamic", 0.34, 0.97, 1.0)],
                          {})
    assert mode == "static"
    assert why == (
        "auto: static 37.0 % of float, 100 % of the weights quantized, top-1 100.00 %; dynamic "
        "34.0 % of float, 97 % of the weights quantized, top-1 100.00 %: static (as accurate, "
        "top-1 within 0.5 points; static's activation scales are fixed, dynamic computes each "
        "row's at every call, which costs every tick (dynamic is smaller: 34.0 % against 37.0 % "
        f"of float; --mode dynamic where size matters more)); {INDEPENDENT_ROWS}"
    )
    assert INDEPENDENT_ROWS == (
        "both keep each agent's result independent of the other agents in its batch (dynamic's "
        "activation scales per row, not per batch)"
    )
    # Smaller and a little less accurate, but within the tolerance: still static.
    assert pick_mode([result("static", 0.31, 1.0, 0.9950), result("dynamic", 0.28, 0.9, 0.9980)],
                     {})[0] == "static"
    # Less accurate beyond the tolerance: the other one, and by how much.
    mode, why = pick_mode([result("static", 0.28, 1.0, 0.980), result("dynamic", 0.31, 0.9, 1.0)],
                          {})
    assert mode == "dynamic"
    assert why.endswith(": dynamic (more accurate: static's top-1 is 2.00 points lower, beyond "
                        f"the 0.5-point tolerance); {INDEPENDENT_ROWS}")
    assert pick_mode([result("static", 0.30, 1.0, 1.0), result("dynamic", 0.28, 0.9, 0.98)],
                     {})[0] == "static"
    # An LSTM: static leaves it float (over 90 % of float: it does not pay), dynamic shrinks it.
    mode, why = pick_mode([result("static", 1.01, 0.01, 0.995),
                           result("dynamic", 0.32, 0.95, 0.996)], {})
    assert mode == "dynamic"
    assert why.endswith(": dynamic (as accurate, top-1 within 0.5 points, and static does not "
                        "pay (not below 90 % of float) where dynamic does: 32.0 % against 101.0 % "
                        f"of float); {INDEPENDENT_ROWS}")
    # ... but not when dynamic does not shrink it either (within 5 % of static's size).
    assert pick_mode([result("static", 0.95, 0.1, 1.0), result("dynamic", 0.92, 0.1, 1.0)],
                     {})[0] == "static"
    # Continuous outputs: mean abs error within 1.5x counts as accurate.
    assert pick_mode([result("static", 0.3, 1.0, None, 0.014), result("dynamic", 0.4, 0.99, None,
                                                                     0.010)], {})[0] == "static"
    mode, why = pick_mode([result("static", 0.3, 1.0, None, 0.016),
                           result("dynamic", 0.4, 0.99, None, 0.010)], {})
    assert mode == "dynamic"
    assert why.endswith(": dynamic (more accurate: static's mean abs error is 1.60x, beyond the "
                        f"1.5x tolerance); {INDEPENDENT_ROWS}")
    # Nothing quantized in either mode (skl2onnx's LinearClassifier): said so.
    mode, why = pick_mode([result("static", 1.0, 0.0, 1.0), result("dynamic", 0.99, 0.0, 1.0)],
                          {})
    assert (mode, why.endswith(": static (neither mode quantizes any of the weights); "
                               + INDEPENDENT_ROWS)) == ("static", True)
    # One mode measured: nothing to compare, no sentence about the two.
    mode, why = pick_mode([result("dynamic", 0.5, 0.9, 1.0)], {"static": "it broke"})
    assert mode == "dynamic"
    assert why.endswith("; static fails (it broke): dynamic (the only mode that quantizes it)")


def unrolled_lstm(window: int, features: int, hidden: int, outputs: int,
                  seed: int) -> onnx.ModelProto:
    """An LSTM unrolled over the window in MatMul, Sigmoid and Tanh nodes (as torch's exporter
    writes an ``nn.LSTM``), its weights shared by every step, with a Linear head (``Gemm``):
    static mode quantizes it too, unlike the ``LSTM`` op."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    s = 1.0 / np.sqrt(hidden)
    weights = {
        "W": rng.uniform(-s, s, (features, 4 * hidden)),
        "R": rng.uniform(-s, s, (hidden, 4 * hidden)),
        "B": rng.uniform(-s, s, 4 * hidden),
        "out_w": rng.normal(0, np.sqrt(2 / hidden), (hidden, outputs)),
        "out_b": rng.normal(0, 0.1, outputs),
    }
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    nodes = []
    h = c = ""
    for t in range(window):
        inits.append(numpy_helper.from_array(np.array(t, dtype=np.int64), f"t{t}"))
        nodes += [helper.make_node("Gather", ["window", f"t{t}"], [f"x{t}"], axis=1),
                  helper.make_node("MatMul", [f"x{t}", "W"], [f"xw{t}"])]
        gates = f"xw{t}"
        if h:
            nodes += [helper.make_node("MatMul", [h, "R"], [f"hr{t}"]),
                      helper.make_node("Add", [gates, f"hr{t}"], [f"sum{t}"])]
            gates = f"sum{t}"
        nodes += [
            helper.make_node("Add", [gates, "B"], [f"gates{t}"]),
            helper.make_node("Split", [f"gates{t}"], [f"i{t}", f"f{t}", f"g{t}", f"o{t}"],
                             axis=1, num_outputs=4),
            *(helper.make_node("Sigmoid", [f"{g}{t}"], [f"{g}s{t}"]) for g in "ifo"),
            helper.make_node("Tanh", [f"g{t}"], [f"gt{t}"]),
            helper.make_node("Mul", [f"is{t}", f"gt{t}"], [f"ig{t}"]),
        ]
        if c:
            nodes += [helper.make_node("Mul", [f"fs{t}", c], [f"fc{t}"]),
                      helper.make_node("Add", [f"fc{t}", f"ig{t}"], [f"c{t}"])]
            c = f"c{t}"
        else:
            c = f"ig{t}"
        nodes += [helper.make_node("Tanh", [c], [f"ct{t}"]),
                  helper.make_node("Mul", [f"os{t}", f"ct{t}"], [f"h{t}"])]
        h = f"h{t}"
    nodes.append(helper.make_node("Gemm", [h, "out_w", "out_b"], ["logits"]))
    graph = helper.make_graph(
        nodes, "lstm_unrolled",
        [helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", window, features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", outputs])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_an_unrolled_lstm_stays_static_under_auto_and_converts_dynamically_when_asked(
    data: dict[str, Path], tmp_path: Path
) -> None:
    """Both modes quantize the LSTM's MatMuls and the head's Gemm. Dynamic is a little smaller
    but computes each row's activation scales at every call: auto keeps static and says what
    dynamic offered. --mode dynamic asked for works, on onnxruntime 1.32 too, whose exact x86
    mode (this CPU without VNNI) cannot load the int8 weights the steps share: the model is
    loaded without it, and the report says so."""
    onnx.save(unrolled_lstm(T, F, 128, 4, seed=2), tmp_path / "lstm.onnx")
    report = convert(tmp_path / "lstm.onnx", tmp_path / "b", data)
    quant = report.data["quantization"]
    measured = {entry["mode"]: entry for entry in quant["auto"]}
    static, dynamic = measured["static"], measured["dynamic"]
    assert static["quantized_share"] == 1.0
    assert dynamic["quantized_share"] > 0.95
    assert dynamic["size_ratio"] < static["size_ratio"] < 0.5
    assert min(dynamic["top1_agreement"], static["top1_agreement"]) >= 0.99
    assert quant["mode"] == "static"
    assert quant["mode_reason"].endswith(
        f"(dynamic is smaller: {100 * dynamic['size_ratio']:.1f} % against "
        f"{100 * static['size_ratio']:.1f} % of float; --mode dynamic where size matters "
        f"more)); {INDEPENDENT_ROWS}"
    ), quant["mode_reason"]
    assert report.data["bundled"] == "int8"
    assert report.data["size"]["ratio"] == pytest.approx(static["size_ratio"], abs=1e-4)
    mode_row = next(row for row in report.rows if row[0] == "mode chosen")
    assert mode_row[1] == quant["mode_reason"]
    lost = (
        [f"onnxruntime {onnxruntime.__version__}'s exact int8 mode for x86 without VNNI "
         "(session.x64quantprecision) cannot load int8 weights that several nodes share: loaded "
         "without it, so int8 products may saturate on this CPU: the report's int8 numbers are "
         "that CPU's"]
        if x64_quant_precision() else []
    )
    assert report.warnings == lost
    asked = convert(tmp_path / "lstm.onnx", tmp_path / "d", data, mode="dynamic")
    assert asked.data["quantization"]["mode"] == "dynamic"
    assert asked.data["quantization"]["mode_reason"] == (
        "as asked: 98 % of the weights quantized; activation scales per row, so that no agent's "
        "input changes another's output (computed at every call: static's fixed scales cost "
        "less per tick)"
    )
    assert asked.data["scheme"] == "onnx-dynamic-row-u8s8"
    assert asked.data["accuracy"]["top1_agreement"] >= 0.99
    assert asked.warnings == lost
    graph = ops(tmp_path / "d" / "model.onnx")
    assert graph.count("MatMulInteger") == 2 * T
    assert "QuantizeLinear" in graph
    assert "DynamicQuantizeLinear" not in graph
    bundle = load_bundle(tmp_path / "d", trusted_keys=None, require_signature=False)
    group = NeuralAgentGroup.from_bundle(bundle, 4)
    for _ in range(T):
        actions = group.step(np.zeros((4, F), dtype=np.float32))
    assert actions.shape == (4,)


def test_auto_with_held_out_data_alone_quantizes_dynamically_and_says_why(
    data: dict[str, Path], tmp_path: Path
) -> None:
    report = convert_onnx(
        ConvertOptions(model=data["policy"], out=tmp_path / "b", name="m"),
        NeuralOptions(latency_repeats=1, heldout=data["held"],
                      thresholds=NeuralThresholds(min_top1=0.9)),
    )
    quant = report.data["quantization"]
    assert quant["mode"] == "dynamic"
    assert quant["mode_reason"] == (
        "auto: held-out data but no calibration data (--calibration or --input-range), which "
        "static quantization needs: dynamic, which needs none (give calibration data to measure "
        "static too)"
    )
    assert "auto" not in quant  # one mode measured
    assert report.data["calibration"]["samples"] == 0
    assert report.data["accuracy"]["heldout_samples"] == 300
    assert report.bundle is not None
    assert "MatMulInteger" in ops(tmp_path / "b" / "model.onnx")
    # A static-only option still needs calibration data, and says so.
    with pytest.raises(InputError, match=r"^static quantization calibrates on inputs"):
        convert_onnx(
            ConvertOptions(model=data["policy"], out=tmp_path / "x", name="m"),
            NeuralOptions(heldout=data["held"], method="percentile"),
        )


def test_dynamic_mode_needs_held_out_data_but_no_calibration(
    data: dict[str, Path], tmp_path: Path
) -> None:
    report = convert_onnx(
        ConvertOptions(model=data["lstm"], out=tmp_path / "held", name="m"),
        NeuralOptions(
            latency_repeats=1, mode="dynamic", heldout=data["held"],
            thresholds=NeuralThresholds(min_top1=0.9),
        ),
    )
    assert report.bundle is not None
    assert report.data["calibration"]["samples"] == 0
    assert report.data["accuracy"]["heldout_samples"] == 300
    # A calibration set alone is held out whole: dynamic mode calibrates nothing.
    report = convert_onnx(
        ConvertOptions(model=data["lstm"], out=tmp_path / "cal", name="m"),
        NeuralOptions(
            latency_repeats=1, mode="dynamic", calibration=data["cal"],
            thresholds=NeuralThresholds(min_top1=0.9),
        ),
    )
    assert report.data["accuracy"]["heldout_samples"] == 400
    with pytest.raises(InputError, match=r"^dynamic quantization calibrates nothing, but the "
                       r"report compares the float and int8 models on held-out inputs: give "
                       r"--heldout Y.npz \(or --input-range LOW HIGH\)$"):
        convert_onnx(
            ConvertOptions(model=data["lstm"], out=tmp_path / "x", name="m"),
            NeuralOptions(mode="dynamic"),
        )
    with pytest.raises(InputError, match=r"^static quantization calibrates on inputs: give "
                       r"calibration data \(--calibration X.npz\) or an input range "
                       r"\(--input-range LOW HIGH\); --mode dynamic needs neither"):
        convert_onnx(
            ConvertOptions(model=data["lstm"], out=tmp_path / "x", name="m"),
            NeuralOptions(mode="static", heldout=data["held"]),
        )
    with pytest.raises(InputError, match=r"or an input range \(--input-range LOW HIGH\), not "
                       r"both$"):
        convert_onnx(
            ConvertOptions(model=data["lstm"], out=tmp_path / "x", name="m"),
            NeuralOptions(calibration=data["cal"], input_range=(0.0, 1.0)),
        )

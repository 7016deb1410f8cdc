"""What ``convert onnx`` says of its calibration method: the cost, when another
method is expected to do better, and this model's own numbers; for entropy and percentile, minmax
measured on the same held-out data and a verdict. Real onnxruntime sessions throughout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge_agent.bundle.loader import load_bundle
from edge_agent.neural.backends import available_backends
from edge_agent.sim.sensors import SensorWorld
from edge_agent_host.cli import main
from edge_agent_host.converter.builders import mlp_onnx, recurrent_onnx, sensor_policy
from edge_agent_host.converter.formats.onnx import (
    ConvertOptions,
    NeuralOptions,
    NeuralThresholds,
    convert_onnx,
)
from edge_agent_host.converter.neural.calibration_advice import (
    MEASURED,
    MethodResult,
    method_advice,
    verdict,
)
from edge_agent_host.converter.report import ConversionReport

T, F = 8, 8


@pytest.fixture(autouse=True)
def _runtimes() -> None:
    if not available_backends()["onnxruntime"]:
        pytest.fail("onnxruntime is not installed: pip install 'edge-agent-runtime[onnx]'")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("methods")
    world = SensorWorld(1)
    onnx.save(mlp_onnx(sensor_policy(world.prototypes, world.noise, T), T, F),
              root / "policy.onnx")
    onnx.save(recurrent_onnx("LSTM", T, F, 32, 4, seed=3), root / "lstm.onnx")
    X, _ = world.sample_windows(400, T, seed=1)
    np.savez(root / "cal.npz", window=X)
    Xh, yh = world.sample_windows(300, T, seed=2)
    np.savez(root / "held.npz", window=Xh, labels=yh)
    return {p.stem: p for p in root.iterdir()}


def convert(data: dict[str, Path], out: Path, model: str = "policy", **options: object
            ) -> ConversionReport:
    return convert_onnx(
        ConvertOptions(model=data[model], out=out, name="m"),
        NeuralOptions(latency_repeats=1, calibration=data["cal"], heldout=data["held"],
                      thresholds=NeuralThresholds(min_top1=None), **options),  # type: ignore[arg-type]
    )


def result(method: str, top1: float | None, max_error: float) -> MethodResult:
    return MethodResult(method, top1, max_error, max_error / 10)


def test_the_verdict_goes_by_top1_then_the_largest_error_and_ties_go_to_minmax() -> None:
    minmax = result("minmax", 0.990, 0.100)
    assert verdict(result("entropy", 0.997, 0.200), minmax) == (
        "entropy does better here (top-1): worth its cost")
    assert verdict(result("entropy", 0.980, 0.050), minmax) == (
        "minmax does better here (top-1), and is cheaper: --method minmax")
    # Top-1 within half a point: the largest error decides, beyond 10 %.
    assert verdict(result("percentile", 0.992, 0.085), minmax) == (
        "percentile does better here (largest error): worth its cost")
    assert verdict(result("entropy", 0.990, 0.115), minmax) == (
        "minmax does better here (largest error), and is cheaper: --method minmax")
    assert verdict(result("entropy", 0.990, 0.095), minmax) == (
        "the same here within 10 %, and minmax is cheaper: --method minmax")
    # Continuous outputs: the error alone.
    assert verdict(result("entropy", None, 0.05), result("minmax", None, 0.1)).startswith(
        "entropy does better here (largest error)")


def test_the_advice_quotes_what_was_measured_and_this_models_numbers() -> None:
    text = method_advice(result("minmax", 0.9975, 0.174), None, 8.7)
    assert text.startswith(
        "minmax keeps every observed value, the cheapest method: largest output error 0.174 "
        "(2.0 % of the largest output), top-1 99.75 % here. entropy or percentile clip rare "
        "tails: expected to do better only where an activation has a few far outliers"
    )
    mlp, cnn = MEASURED["digits MLP"], MEASURED["digits CNN"]
    assert f"digits MLP: entropy {mlp['entropy']:.2g} against minmax {mlp['minmax']:.2g}" in text
    assert f"digits CNN: entropy {cnn['entropy']:.2g}" in text
    assert "entropy takes 10-30x minmax's time" in text
    text = method_advice(result("percentile", 0.99, 0.2), result("minmax", 0.99, 0.1), 1.0,
                         percentile=99.9)
    assert text == (
        "percentile 99.9 clips the tails past it, about minmax's time: largest output error 0.2 "
        "(20.0 % of the largest output), top-1 99.00 % here; minmax on the same data: largest "
        "output error 0.1, top-1 99.00 %: minmax does better here (largest error), and is "
        "cheaper: --method minmax"
    )


def test_entropy_is_measured_against_minmax_on_the_same_data_in_the_report(
    data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["convert", "onnx", str(data["policy"]), "--out", str(tmp_path / "e"),
                 "--calibration", str(data["cal"]), "--heldout", str(data["held"]),
                 "--method", "entropy", "--latency-repeats", "1", "--min-top1", "0.5", "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    calibration = printed["calibration"]
    assert calibration["method"] == "entropy"
    # The comparison is a real minmax conversion: the same numbers as converting with minmax.
    minmax = convert(data, tmp_path / "m", mode="static")
    for key in ("max_abs_error", "mean_abs_error", "top1_agreement"):
        assert calibration["minmax"][key] == pytest.approx(minmax.data["accuracy"][key],
                                                           rel=1e-6)
    acc = printed["accuracy"]
    used = MethodResult("entropy", acc["top1_agreement"], acc["max_abs_error"],
                        acc["mean_abs_error"])
    other = MethodResult("minmax", calibration["minmax"]["top1_agreement"],
                         calibration["minmax"]["max_abs_error"],
                         calibration["minmax"]["mean_abs_error"])
    advice = calibration["advice"]
    assert advice.startswith(
        f"entropy clips tails by a KL search, 10-30x minmax's time: largest output error "
        f"{acc['max_abs_error']:.3g} ("
    ), advice
    assert advice.endswith(
        f"; minmax on the same data: {other.describe()}: {verdict(used, other)}"), advice
    # The times are in the JSON and the table, not in the (signed) manifest.
    assert set(printed["quantize_s"]) == {"static", "minmax (comparison)"}
    assert all(t > 0 for t in printed["quantize_s"].values())
    recorded = load_bundle(tmp_path / "e", trusted_keys=None,
                           require_signature=False).manifest.quantization
    assert recorded["calibration"]["advice"] == advice
    assert "quantize_s" not in recorded
    # The table, for people.
    assert main(["convert", "onnx", str(data["policy"]), "--out", str(tmp_path / "t"),
                 "--calibration", str(data["cal"]), "--heldout", str(data["held"]),
                 "--method", "percentile", "--latency-repeats", "1", "--min-top1", "0.5"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines()
               if line.startswith("  calibration method"))
    assert "percentile 99.999 clips the tails past it, about minmax's time: largest output" in row
    assert "; minmax on the same data: largest output error " in row
    assert " (quantizing took " in row
    assert row.endswith(" s minmax (comparison))")


def test_no_advice_where_nothing_was_calibrated(data: dict[str, Path], tmp_path: Path) -> None:
    # auto keeps dynamic for the LSTM: no calibration, no advice.
    report = convert(data, tmp_path / "d", model="lstm")
    assert report.data["quantization"]["mode"] == "dynamic"
    assert "advice" not in report.data["calibration"]
    assert all(row[0] != "calibration method" for row in report.rows)
    assert set(report.data["quantize_s"]) == {"static", "dynamic"}


def test_method_help_says_when_each_method_pays(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["convert", "onnx", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    start = text.index("--method {minmax,entropy,percentile} static activation calibration")
    method = text[start:text.index("--percentile PERCENTILE", start)]
    for phrase in ("minmax (default: keeps every observed value; the cheapest",
                   "entropy (KL-optimal clipping; 10-30x minmax's time",
                   "doubled the largest error on a CNN", "pay where an activation has a few far "
                   "outliers", "for entropy or percentile, minmax's on the same data"):
        assert phrase in method, (phrase, method)

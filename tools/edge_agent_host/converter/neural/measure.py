"""Measure an int8 model against its float one (both converters): the report's numbers
(:func:`compare_models`), its checks (:func:`neural_checks`) and its table (:func:`neural_rows`).

The report compares the float and int8 models on a held-out set (``--heldout``; else the last 20 %
of the calibration ``.npz``, kept out of calibration; else fresh draws from the range): max and mean
absolute error over every output value, top-1 agreement of the first output (or of each output, for
perception models), file sizes (with a warning when the int8 model is not below
:data:`~edge_agent_host.converter.neural.onnx_quantize.SIZE_WARNING_RATIO` of the float one), and
latency at batch 1 and 64. An optional array ``labels`` ``(n,)`` in the held-out ``.npz`` adds the
top-1 accuracy of both models; labels must be class indices of the first output.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from edge_agent.neural.backends import Session
from edge_agent_host.converter.neural.inputs import Samples, sample_count, sample_slice
from edge_agent_host.converter.neural.options import NeuralThresholds
from edge_agent_host.converter.report import Check, median_latency_ms

__all__ = [
    "LATENCY_BATCHES",
    "Agreement",
    "agreement",
    "compare_models",
    "neural_checks",
    "neural_rows",
    "run_all",
]

LATENCY_BATCHES = (1, 64)


def _run_all(session: Session, samples: Samples, batch: int = 64) -> dict[str, np.ndarray]:
    """Outputs of ``session`` on every sample (in batches; the last batch is resized)."""
    n = sample_count(samples)
    results: dict[str, list[np.ndarray]] = {spec.name: [] for spec in session.output_specs}
    for start in range(0, n, batch):
        part = sample_slice(samples, slice(start, start + batch))
        session.set_batch(sample_count(part))
        for name, value in session.run(part).items():
            results[name].append(value.copy())
    return {name: np.concatenate(parts) for name, parts in results.items()}


run_all = _run_all


class Agreement(NamedTuple):
    """An int8 model against the float one on the held-out set (:func:`agreement`)."""

    top1: float | None  # the lowest over outputs; None: continuous outputs
    mean_abs_error: float  # over every output value
    max_abs_error: float


def agreement(
    ref: Mapping[str, np.ndarray], session: Session, heldout: Samples, *, classify: bool
) -> Agreement:
    """Top-1 agreement and mean and largest abs error of ``session`` on ``heldout`` against the
    float outputs ``ref`` (:func:`run_all` of the float session): the lowest agreement over
    outputs, ``None`` when not ``classify``; the errors over every output value."""
    got = _run_all(session, heldout)
    agree: list[float] = []
    total, count, worst = 0.0, 0, 0.0
    for name, want in ref.items():
        diff = np.abs(want.astype(np.float64) - got[name].astype(np.float64))
        total += float(diff.sum())
        count += diff.size
        worst = max(worst, float(diff.max(initial=0.0)))
        if classify:
            n = len(want)
            agree.append(
                float(
                    np.mean(
                        want.reshape(n, -1).argmax(axis=1)
                        == got[name].reshape(n, -1).argmax(axis=1)
                    )
                )
            )
    return Agreement(min(agree) if agree else None, total / max(1, count), worst)


def _latency(session: Session, samples: Samples, batch: int, repeats: int) -> float:
    n = sample_count(samples)
    index = np.arange(batch) % n
    feed = {k: v[index] for k, v in samples.items()}
    session.set_batch(batch)
    return median_latency_ms(lambda: session.run(feed), repeats)


def compare_models(
    float_session: Session,
    int8_session: Session,
    heldout: Samples,
    *,
    labels: np.ndarray | None = None,
    classify: bool = True,
    latency_repeats: int = 30,
) -> dict[str, Any]:
    """Float vs int8 on ``heldout``: errors, top-1 agreement, accuracy, latency (module doc)."""
    ref = _run_all(float_session, heldout)
    got = _run_all(int8_session, heldout)
    per_output: dict[str, dict[str, float | None]] = {}
    abs_sum = 0.0
    count = 0
    worst = 0.0
    for spec in float_session.output_specs:
        diff = np.abs(ref[spec.name].astype(np.float64) - got[spec.name].astype(np.float64))
        entry: dict[str, float | None] = {
            "max_abs_error": float(diff.max()),
            "mean_abs_error": float(diff.mean()),
            "float_abs_max": float(np.abs(ref[spec.name]).max()),
            "top1_agreement": None,
        }
        if classify:
            a = ref[spec.name].reshape(len(diff), -1).argmax(axis=1)
            b = got[spec.name].reshape(len(diff), -1).argmax(axis=1)
            entry["top1_agreement"] = float(np.mean(a == b))
        per_output[spec.name] = entry
        abs_sum += float(diff.sum())
        count += diff.size
        worst = max(worst, float(diff.max()))
    agreements = [
        e["top1_agreement"] for e in per_output.values() if e["top1_agreement"] is not None
    ]
    accuracy = None
    if labels is not None and classify:
        first = float_session.output_specs[0].name
        n = len(labels)
        accuracy = {
            "float": float(np.mean(ref[first].reshape(n, -1).argmax(axis=1) == labels)),
            "int8": float(np.mean(got[first].reshape(n, -1).argmax(axis=1) == labels)),
        }
    latency = {
        variant: {
            str(batch): _latency(session, heldout, batch, latency_repeats)
            for batch in LATENCY_BATCHES
        }
        for variant, session in (("float", float_session), ("int8", int8_session))
    }
    return {
        "heldout_samples": sample_count(heldout),
        "max_abs_error": worst,
        "mean_abs_error": abs_sum / max(1, count),
        "top1_agreement": min(agreements) if agreements else None,
        "outputs": per_output,
        "label_accuracy": accuracy,
        "latency_ms": latency,
    }


def neural_checks(data: Mapping[str, Any], thresholds: NeuralThresholds) -> list[Check]:
    accuracy = data["accuracy"]
    checks = []
    if thresholds.min_top1 is not None and accuracy["top1_agreement"] is not None:
        checks.append(
            Check(
                "top-1 agreement",
                accuracy["top1_agreement"],
                thresholds.min_top1,
                "min",
                "--min-top1",
            )
        )
    if thresholds.max_abs_error is not None:
        checks.append(
            Check(
                "max abs error",
                accuracy["max_abs_error"],
                thresholds.max_abs_error,
                "max",
                "--max-abs-error",
            )
        )
    return checks


def neural_rows(data: Mapping[str, Any]) -> list[tuple[str, ...]]:
    size = data["size"]
    acc = data["accuracy"]
    lat = data["latency_ms"]
    heads = ("float", "int8")
    if data.get("bundled") == "float":  # the int8 model was measured, not bundled
        heads = ("float (bundled)", "int8 (not bundled)")
    rows: list[tuple[str, ...]] = [
        ("", *heads, "int8/float"),
        (
            "model file (bytes)",
            f"{size['float_bytes']:,}",
            f"{size['int8_bytes']:,}",
            f"{100 * size['ratio']:.1f} %",
        ),
    ]
    quant = data.get("quantization")
    if quant:
        rows.append(
            ("quantization", _describe_quantization(data["scheme"], quant, data.get("calibration")))
        )
        if quant.get("mode_reason"):
            rows.append(("mode chosen", str(quant["mode_reason"])))
    calibration = data.get("calibration") or {}
    if calibration.get("advice"):
        rows.append(
            ("calibration method", str(calibration["advice"]) + _took(data.get("quantize_s")))
        )
    for batch in LATENCY_BATCHES:
        f, q = lat["float"][str(batch)], lat["int8"][str(batch)]
        rows.append((f"latency batch {batch} (ms)", f"{f:.3f}", f"{q:.3f}", f"{q / f:.2f}x"))
    if data.get("x64_quant_precision") is not None:
        rows.append(("int8 kernels", _describe_kernels(bool(data["x64_quant_precision"]))))
    rows.append(("held-out samples", f"{acc['heldout_samples']:,}"))
    rows.append(("max abs error", f"{acc['max_abs_error']:.4g}"))
    rows.append(("mean abs error", f"{acc['mean_abs_error']:.4g}"))
    if acc["top1_agreement"] is not None:
        rows.append(("top-1 agreement", f"{100 * acc['top1_agreement']:.2f} %"))
    if acc.get("label_accuracy"):
        la = acc["label_accuracy"]
        rows.append(("label accuracy", f"{100 * la['float']:.2f} %", f"{100 * la['int8']:.2f} %"))
    if data.get("bundled") == "float":
        rows.append(("bundled", "the float model (the int8 one does not pay: see the warning)"))
    return rows


def _took(seconds: Mapping[str, float] | None) -> str:
    """`` (quantizing took 1.2 s static, 0.3 s minmax (comparison))``: each quantization's time."""
    if not seconds:
        return ""
    return " (quantizing took " + ", ".join(f"{t:.2g} s {k}" for k, t in seconds.items()) + ")"


def _describe_kernels(x64_precision: bool) -> str:
    """What onnxruntime's int8 latency above was measured with (the device's own choice)."""
    if x64_precision:
        return (
            "onnxruntime's x86 exact mode (this CPU has no VNNI; a device with VNNI or an ARM "
            "CPU runs faster int8 kernels)"
        )
    return "native (this CPU's int8 dot products do not saturate: no x86 exact mode needed)"


def _describe_quantization(
    scheme: str, quant: Mapping[str, Any], calibration: Mapping[str, Any] | None
) -> str:
    """One line: what was done (``mode``, weights, calibration, pre-processing)."""
    parts = [str(quant.get("mode", scheme))]
    if "per_channel" in quant:
        parts.append("weights per channel" if quant["per_channel"] else "weights per tensor")
    if calibration and calibration.get("method"):
        method = calibration["method"]
        if method == "percentile":
            method += f" {calibration.get('percentile')}"
        parts.append(f"{method} calibration ({calibration.get('samples', 0):,} samples)")
    if quant.get("symmetric_activations"):
        parts.append("symmetric activations")
    if quant.get("preprocessed") is False:
        parts.append("no pre-processing")
    return ", ".join(parts)

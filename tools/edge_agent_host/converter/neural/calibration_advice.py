"""When each static calibration method pays: what ``convert onnx`` tells the user about the
``--method`` it used (:func:`method_advice`) and what ``--method``'s help says
(:data:`METHOD_HELP`).

The advice rests on what was measured (``benchmarks/bench_convert.py --methods``,
``benchmarks/notes/neural-and-converter.md``; :data:`MEASURED`): the largest absolute output
error of the int8 model against the float one on held-out data, per model family and method.

* ``minmax`` keeps every observed activation in range; it is the cheapest, and on every model
  measured it was the best or within 20 % of the best.
* ``entropy`` and ``percentile`` clip rare tails to spend the 256 levels on the bulk. That pays
  where an activation has a few outliers far from the rest (the digits MLP: entropy's largest
  error 0.055 against minmax's 0.066) and costs where the extremes carry the decision (the digits
  CNN: entropy 0.32, percentile 0.19, minmax 0.17). Entropy's KL search takes 10-30x minmax's
  time (8-32 s against 0.1-1.7 s there).

Beyond the table, the report measures the user's own model: the chosen method's largest output
error on the held-out set and, when the method is ``entropy`` or ``percentile``, minmax's on the
same set (one more static quantization: cheap beside entropy's search), with a verdict
(:func:`verdict`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ENTROPY_TIME_FACTOR",
    "MEASURED",
    "METHOD_HELP",
    "VERDICT_ERROR_MARGIN",
    "VERDICT_TOP1_TOLERANCE",
    "MethodResult",
    "method_advice",
    "verdict",
]

#: The largest absolute output error per model family and method (``bench_convert.py --methods``,
#: benchmarks/notes/neural-and-converter.md; the converter in static mode, per-channel weights,
#: entropy with the head kept at MinMax).
MEASURED: dict[str, dict[str, float]] = {
    "digits MLP": {"minmax": 0.0657, "entropy": 0.0548, "percentile": 0.0719},
    "digits CNN": {"minmax": 0.174, "entropy": 0.323, "percentile": 0.189},
    "LSTM": {"minmax": 0.0360, "entropy": 0.0360, "percentile": 0.0361},
    "GRU": {"minmax": 0.0465, "entropy": 0.0465, "percentile": 0.0468},
}
#: How much longer entropy calibration took than minmax on those models (8-32 s against
#: 0.1-1.7 s, same runs).
ENTROPY_TIME_FACTOR = "10-30x"
#: :func:`verdict`: a method "does better" when its largest error is below the other's by more
#: than this fraction (else the two are the same within the run-to-run spread of such numbers).
VERDICT_ERROR_MARGIN = 0.1
#: Top-1 agreement points that decide a verdict before the errors do (``auto``'s tolerance).
VERDICT_TOP1_TOLERANCE = 0.005

METHOD_HELP = (
    "static activation calibration: minmax (default: keeps every observed value; the cheapest, "
    "and the best or within 20 %% of it on every model measured), entropy (KL-optimal "
    f"clipping; {ENTROPY_TIME_FACTOR} minmax's time; paid on the digits MLP, doubled the "
    "largest error on a CNN) or percentile (clips values past --percentile; minmax's time). "
    "entropy and percentile pay where an activation has a few far outliers. The report "
    "gives the method's largest output error on your held-out data and, for entropy or "
    "percentile, minmax's on the same data"
)


@dataclass(frozen=True)
class MethodResult:
    """One calibration method's int8 model measured on the held-out set."""

    method: str
    top1_agreement: float | None  # None: continuous outputs
    max_abs_error: float
    mean_abs_error: float

    def describe(self, output_scale: float = 0.0) -> str:
        """Its numbers; with ``output_scale`` (the largest float output) the error's share of it."""
        text = f"largest output error {self.max_abs_error:.3g}"
        if output_scale > 0:
            text += f" ({100 * self.max_abs_error / output_scale:.1f} % of the largest output)"
        if self.top1_agreement is not None:
            text += f", top-1 {100 * self.top1_agreement:.2f} %"
        return text


def verdict(used: MethodResult, minmax: MethodResult) -> str:
    """Which of ``used`` (entropy or percentile) and ``minmax`` does better on this model: top-1
    agreement first (beyond :data:`VERDICT_TOP1_TOLERANCE`), then the largest output error
    (beyond :data:`VERDICT_ERROR_MARGIN`); minmax on a tie, being the cheaper."""
    if used.top1_agreement is not None and minmax.top1_agreement is not None:
        gap = used.top1_agreement - minmax.top1_agreement
        if gap > VERDICT_TOP1_TOLERANCE:
            return f"{used.method} does better here (top-1): worth its cost"
        if gap < -VERDICT_TOP1_TOLERANCE:
            return "minmax does better here (top-1), and is cheaper: --method minmax"
    if used.max_abs_error < (1 - VERDICT_ERROR_MARGIN) * minmax.max_abs_error:
        return f"{used.method} does better here (largest error): worth its cost"
    if minmax.max_abs_error < (1 - VERDICT_ERROR_MARGIN) * used.max_abs_error:
        return "minmax does better here (largest error), and is cheaper: --method minmax"
    return (
        f"the same here within {100 * VERDICT_ERROR_MARGIN:.0f} %, and minmax is cheaper: "
        "--method minmax"
    )


def method_advice(
    used: MethodResult,
    minmax: MethodResult | None,
    output_scale: float,
    *,
    percentile: float | None = None,
) -> str:
    """One line for the report: what ``used.method`` costs, what it gave on this model (its
    largest output error, also as a share of ``output_scale``, the largest float output), and
    when another method is expected to do better; with ``minmax`` (measured on the same held-out
    set, for entropy or percentile) the verdict on this model."""
    measured = used.describe(output_scale)
    mlp, cnn = MEASURED["digits MLP"], MEASURED["digits CNN"]
    if used.method == "minmax":
        return (
            f"minmax keeps every observed value, the cheapest method: {measured} here. "
            "entropy or percentile clip rare tails: expected to do better only where an "
            "activation has a few far outliers (digits MLP: entropy "
            f"{mlp['entropy']:.2g} against minmax {mlp['minmax']:.2g}), worse where the extremes "
            f"decide (digits CNN: entropy {cnn['entropy']:.2g}, percentile "
            f"{cnn['percentile']:.2g} against {cnn['minmax']:.2g}); entropy takes "
            f"{ENTROPY_TIME_FACTOR} minmax's time. Try --method percentile or entropy if this "
            "error is larger than the inputs suggest"
        )
    if used.method == "entropy":
        what = f"entropy clips tails by a KL search, {ENTROPY_TIME_FACTOR} minmax's time"
    else:
        kept = f" {percentile:g}" if percentile is not None else ""
        what = f"percentile{kept} clips the tails past it, about minmax's time"
    text = f"{what}: {measured} here"
    if minmax is None:
        return (
            f"{text}; it pays where an activation has a few far outliers, and costs where the "
            "extremes decide (then --method minmax)"
        )
    return f"{text}; minmax on the same data: {minmax.describe()}: {verdict(used, minmax)}"

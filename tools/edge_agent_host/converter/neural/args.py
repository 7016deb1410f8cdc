"""The command-line options the neural converters share (``convert onnx``, ``convert tflite``):
calibration and held-out data, how the device uses the model, the report's thresholds, and the
generative model of an ``aif+perception`` pairing; read back as the
:class:`~edge_agent_host.converter.neural.options.NeuralOptions` of ``convert_onnx`` /
``convert_tflite``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edge_agent_host.converter.aif.options import add_aif_options, aif_options
from edge_agent_host.converter.aif.source import load_aif_model
from edge_agent_host.converter.common import fraction, positive_int
from edge_agent_host.converter.neural.inputs import MIN_CALIBRATION_SAMPLES
from edge_agent_host.converter.neural.options import NeuralOptions, NeuralThresholds

__all__ = ["add_neural_options", "read_neural_options"]


def add_neural_options(parser: argparse.ArgumentParser) -> None:
    """The options of every neural ``convert`` subcommand, the generative model's included."""
    data = parser.add_argument_group("calibration and held-out data")
    data.add_argument(
        "--calibration",
        type=Path,
        default=None,
        metavar="X.npz",
        help="an .npz of real inputs keyed by input name (numpy.savez), (n, ...) "
        "per input: windows (n, T, F), vectors (n, F) or frames (n, C, H, W) / "
        f"(n, H, W, C); fewer than {MIN_CALIBRATION_SAMPLES} warn, 1 is refused",
    )
    data.add_argument(
        "--input-range",
        type=float,
        nargs=2,
        default=None,
        metavar=("LOW", "HIGH"),
        help="draw inputs uniformly from [LOW, HIGH) instead (warns)",
    )
    data.add_argument(
        "--heldout",
        type=Path,
        default=None,
        metavar="Y.npz",
        help="held-out inputs (and optional 'labels': class indices of the first "
        "output) for the report; default: the last 20%% of --calibration, or "
        "fresh draws from --input-range",
    )
    data.add_argument(
        "--samples",
        type=positive_int,
        default=256,
        help="inputs drawn per set with --input-range (default 256)",
    )
    quant = parser.add_argument_group("quantization")
    quant.add_argument(
        "--per-tensor",
        action="store_true",
        help="one weight scale per tensor instead of per channel",
    )
    use = parser.add_argument_group("how the device uses the model")
    use.add_argument(
        "--window",
        type=positive_int,
        default=None,
        help="history window T (default: from a (batch, T, F) input, else 1)",
    )
    use.add_argument(
        "--output-kind",
        choices=("discrete", "continuous", "observation"),
        default="discrete",
        help="action logits, continuous actions, or observation logits (perception)",
    )
    use.add_argument(
        "--action-low", type=float, nargs="+", default=None, help="continuous action lower bounds"
    )
    use.add_argument(
        "--action-high", type=float, nargs="+", default=None, help="continuous action upper bounds"
    )
    use.add_argument(
        "--aif",
        type=Path,
        default=None,
        metavar="MODEL",
        help="pair the observation model with this generative model (.npz/.json): "
        "an aif+perception bundle",
    )
    report = parser.add_argument_group("report and thresholds")
    report.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="inference threads for the measurements (default 1)",
    )
    report.add_argument(
        "--latency-repeats",
        type=positive_int,
        default=30,
        help="timed runs per latency measurement (default 30)",
    )
    report.add_argument(
        "--min-top1",
        type=fraction,
        default=NeuralThresholds.min_top1,
        help="smallest top-1 agreement accepted on the held-out set "
        f"(default {NeuralThresholds.min_top1}; not for continuous output)",
    )
    report.add_argument(
        "--max-abs-error",
        type=float,
        default=None,
        help="largest absolute output error accepted (default: not checked)",
    )
    add_aif_options(parser)


def read_neural_options(args: argparse.Namespace, **quantization: Any) -> NeuralOptions:
    """The :class:`NeuralOptions` of the options of :func:`add_neural_options`;
    ``quantization``: the format's own fields (``mode``, and ONNX's calibration method,
    exclusions ...)."""
    return NeuralOptions(
        output_kind=args.output_kind,
        window=args.window,
        action_low=tuple(args.action_low) if args.action_low else None,
        action_high=tuple(args.action_high) if args.action_high else None,
        per_channel=not args.per_tensor,
        threads=args.threads,
        latency_repeats=args.latency_repeats,
        calibration=args.calibration,
        heldout=args.heldout,
        input_range=tuple(args.input_range) if args.input_range else None,
        samples=args.samples,
        thresholds=NeuralThresholds(min_top1=args.min_top1, max_abs_error=args.max_abs_error),
        aif=aif_options(args, load_aif_model(args.aif)) if args.aif is not None else None,
        **quantization,
    )

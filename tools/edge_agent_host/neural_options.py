"""What a neural conversion is asked for: :class:`NeuralOptions` (how the model is used on the
device and how it is quantized) and :class:`NeuralThresholds` (the accuracy it must reach on the
held-out set). Shared by the ONNX and TFLite converters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["NeuralOptions", "NeuralThresholds", "OutputKind"]

OutputKind = Literal["discrete", "continuous", "observation"]


@dataclass(frozen=True)
class NeuralOptions:
    """How the neural model is used on the device and how it is quantized.

    ``mode``: ONNX ``auto`` | ``static`` | ``dynamic``; TFLite ``auto`` (= ``full-integer``) |
    ``full-integer`` | ``dynamic-range`` | ``float16``. ``outputs``: the model outputs to keep, in
    order (empty: every output that can be a policy or classifier).
    """

    output_kind: OutputKind = "discrete"
    window: int | None = None
    action_low: tuple[float, ...] | None = None
    action_high: tuple[float, ...] | None = None
    mode: str = "auto"
    method: str = "minmax"
    percentile: float = 99.999
    per_channel: bool = True
    preprocess: bool = True
    symmetric_activations: bool = False
    exclude_nodes: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    calibration_batch: int = 32
    threads: int = 1
    latency_repeats: int = 30


@dataclass(frozen=True)
class NeuralThresholds:
    """Accuracy a neural conversion must reach on the held-out set (``None``: not checked)."""

    min_top1: float | None = 0.99
    max_abs_error: float | None = None

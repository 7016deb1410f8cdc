"""What a neural conversion is asked for, beside the :class:`ConvertOptions` every conversion
shares: :class:`NeuralOptions` (how the model is used on the device, how it is quantized, the
data it is calibrated and measured on, the accuracy it must reach, and the generative model of an
``aif+perception`` pairing) and :class:`NeuralThresholds`. Shared by the ONNX and TFLite
converters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from edge_agent_host.converter.aif.options import AifOptions

__all__ = ["NeuralOptions", "NeuralThresholds", "OutputKind"]

OutputKind = Literal["discrete", "continuous", "observation"]


@dataclass(frozen=True)
class NeuralThresholds:
    """Accuracy a neural conversion must reach on the held-out set (``None``: not checked)."""

    min_top1: float | None = 0.99
    max_abs_error: float | None = None


@dataclass(frozen=True)
class NeuralOptions:
    """The neural formats' own options record (``convert onnx``, ``convert tflite``).

    How the device uses the model: ``output_kind``, ``window`` (``None``: from a ``(batch, T,
    F)`` input, else 1), ``action_low``/``action_high`` (continuous output).

    How it is quantized: ``mode``: ONNX ``auto`` | ``static`` | ``dynamic``; TFLite ``auto``
    (= ``full-integer``) | ``full-integer`` | ``dynamic-range`` | ``float16``. ``method``,
    ``percentile``, ``preprocess``, ``symmetric_activations``, ``exclude_nodes``,
    ``exclude_op_types``, ``outputs`` (the model outputs to keep, in order; empty: every output
    that can be a policy or classifier) and ``calibration_batch`` are ONNX's.

    The data: ``calibration`` and ``heldout`` (``.npz`` files keyed by input name), or
    ``input_range`` with ``samples`` draws per set. The report: ``threads``,
    ``latency_repeats`` and ``thresholds``. ``aif``: pair the network (``output_kind``
    ``observation``) with this generative model (:class:`~edge_agent_host.converter.formats.aif.
    AifOptions` with its ``model`` set): an ``aif+perception`` bundle.
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
    calibration: Path | None = None
    heldout: Path | None = None
    input_range: tuple[float, float] | None = None
    samples: int = 256
    thresholds: NeuralThresholds = field(default_factory=NeuralThresholds)
    aif: AifOptions | None = None

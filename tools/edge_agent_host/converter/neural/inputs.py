"""A neural model's inputs and the data fed to them (both converters).

Inputs: the batch dimension is dynamic and the only one; ``(batch, T, F)`` inputs give the history
window ``T``, flat ones take ``--window``, frames take window 1 (:func:`infer_window`).

Calibration data is an ``.npz`` of real inputs: one array per model input, keyed by the input's
name, shaped ``(n, *input_shape[1:])``: windows ``(n, T, F)``, feature vectors ``(n, F)`` or
camera frames ``(n, C, H, W)`` / ``(n, H, W, C)`` (a model with one input also accepts a single
array under any key). Without one, inputs are drawn uniformly from a declared range, with a logged
warning. One calibration sample is refused; fewer than :data:`MIN_CALIBRATION_SAMPLES` are warned
about.

Held-out data (the float/int8 comparison): ``--heldout``; else the last
:data:`HELDOUT_FRACTION` of the calibration ``.npz``, kept out of calibration; else fresh draws
from the range. Its optional ``labels`` must be class indices of the first output
(:func:`check_labels`). onnxruntime's calibrators read the calibration set through
:class:`CalibrationReader`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edge_agent.bundle.manifest import TensorSpec
from edge_agent.errors import InputError, ModelError
from edge_agent.neural.backends import get_backend
from edge_agent_host.converter.report import progress

logger = logging.getLogger(__name__)

__all__ = [
    "HELDOUT_FRACTION",
    "MIN_CALIBRATION_SAMPLES",
    "SCALE_MISMATCH_FACTOR",
    "CalibrationReader",
    "Samples",
    "check_calibration_size",
    "check_labels",
    "gather_data",
    "infer_window",
    "load_samples",
    "onnx_tensors",
    "range_samples",
    "scale_mismatch",
    "split_heldout",
]

HELDOUT_FRACTION = 0.2
#: Calibration and held-out data whose largest magnitudes differ by more than this factor are
#: told about (:func:`scale_mismatch`): a sample far outside the others sets static
#: quantization's input range, or the model is checked on inputs it was not calibrated for.
SCALE_MISMATCH_FACTOR = 100.0
#: Fewer calibration samples than this give a warning (activation ranges from a handful of
#: inputs miss what the model meets in use); a single sample is refused.
MIN_CALIBRATION_SAMPLES = 16
Samples = dict[str, np.ndarray]


# -- model inputs ----------------------------------------------------------------------------------
def onnx_tensors(model_bytes: bytes) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The model's inputs and outputs as a device sees them (ONNX Runtime session specs)."""
    session = get_backend("onnxruntime").load(model_bytes, 1)
    return session.input_specs, session.output_specs


def item_shape(spec: TensorSpec) -> tuple[int, ...]:
    """One sample's shape of input ``spec`` (its shape without the batch dimension, which must be
    dynamic); a fixed batch or an unknown dimension is a :class:`ModelError`."""
    dims = spec.shape[1:]
    if spec.shape[:1] != (-1,):
        raise ModelError(
            f"input {spec.name!r} has shape {list(spec.shape)}: the batch dimension must be "
            "dynamic (export with a dynamic batch axis, e.g. torch.onnx.export(dynamic_axes=...))"
        )
    if any(d < 0 for d in dims):
        raise ModelError(
            f"input {spec.name!r} has shape {list(spec.shape)}: only the batch "
            "dimension may be dynamic"
        )
    return tuple(dims)


def infer_window(inputs: tuple[TensorSpec, ...], window: int | None) -> int:
    """The history window: ``(batch, T, F)`` inputs give ``T``; flat ones need ``--window``;
    frames ``(batch, C, H, W)`` or ``(batch, H, W, C)`` are one observation each (window 1)."""
    if len(inputs) != 1:
        raise ModelError(
            f"the model has inputs {[t.name for t in inputs]}; neural agents feed exactly one "
            "(the observation window)"
        )
    spec = inputs[0]
    shape = spec.shape
    if len(shape) == 3:
        if window is not None and window != shape[1]:
            raise InputError(f"--window {window} does not match the model's input {list(shape)}")
        return int(shape[1])
    if len(shape) == 4:
        if window not in (None, 1):
            raise InputError(
                f"--window {window}: the model's input {list(shape)} is a frame (batch, C, H, W) "
                "or (batch, H, W, C), one per step; frames take window 1"
            )
        return 1
    if len(shape) not in (2, 3):
        raise ModelError(
            f"input {spec.name!r} has shape {list(shape)}; neural agents take (batch, F), "
            "(batch, T, F) or frames (batch, C, H, W) / (batch, H, W, C)"
        )
    return 1 if window is None else window


# -- data ------------------------------------------------------------------------------------------
def load_samples(
    path: str | Path, inputs: tuple[TensorSpec, ...]
) -> tuple[Samples, np.ndarray | None]:
    """Input arrays (and optional ``labels``) from an ``.npz``; InputError naming what is wrong."""
    source = Path(path)
    try:
        loaded = np.load(source, allow_pickle=False)
    except FileNotFoundError as err:
        raise InputError(f"{source}: no such file") from err
    except OSError as err:
        if err.errno is not None:  # the file system's answer: permission, a directory, ...
            raise InputError(f"{source}: cannot read: {err.strerror}") from err
        raise InputError(f"{source}: not an .npz file; {_npz_format(inputs)}") from err
    except ValueError as err:  # text (.csv), pickles, anything else
        raise InputError(f"{source}: not an .npz file; {_npz_format(inputs)}") from err
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise InputError(f"{source}: one .npy array, not an .npz; {_npz_format(inputs)}")
    try:
        with loaded as data:
            arrays = {key: np.asarray(data[key]) for key in data.files}
    except (OSError, ValueError) as err:
        raise InputError(f"{source}: not a plain-array .npz ({err})") from err
    labels = arrays.pop("labels", None)
    names = [spec.name for spec in inputs]
    if len(inputs) == 1 and len(arrays) == 1 and names[0] not in arrays:
        arrays = {names[0]: next(iter(arrays.values()))}
    if sorted(arrays) != sorted(names):
        raise InputError(f"{source}: has arrays {sorted(arrays)}, the model's inputs are {names}")
    count: int | None = None
    samples: Samples = {}
    for spec in inputs:
        arr = arrays[spec.name]
        shape = item_shape(spec)
        if arr.ndim != len(shape) + 1 or tuple(arr.shape[1:]) != shape:
            raise InputError(
                f"{source}: {spec.name} has shape {arr.shape}, expected (n, "
                f"{', '.join(map(str, shape))})"
            )
        if arr.dtype.kind not in "fiu" or not np.all(np.isfinite(arr)):
            raise InputError(f"{source}: {spec.name} must hold finite real numbers")
        if count is not None and arr.shape[0] != count:
            raise InputError(f"{source}: inputs have different sample counts")
        count = arr.shape[0]
        samples[spec.name] = arr.astype(np.float32)
    if not count:
        raise InputError(f"{source}: holds no samples")
    if labels is not None and (labels.shape != (count,) or labels.dtype.kind not in "iu"):
        raise InputError(f"{source}: labels must be ({count},) integers, got {labels.shape}")
    return samples, labels


def _npz_format(inputs: tuple[TensorSpec, ...]) -> str:
    """What calibration and held-out files hold, and how to write one, for these inputs."""
    shapes = ", ".join(
        f"{spec.name!r} (n, {', '.join(str(d) for d in spec.shape[1:])})" for spec in inputs
    )
    first = inputs[0].name if inputs and inputs[0].name.isidentifier() else "x"
    return (
        f"calibration and held-out data are an .npz with one array per model input, keyed by "
        f"its name: {shapes}, plus optional integer labels (n,); write it with "
        f"numpy.savez('data.npz', {first}=X)"
    )


def range_samples(
    inputs: tuple[TensorSpec, ...],
    low: float,
    high: float,
    n: int,
    seed: int,
    *,
    warn: bool = True,
) -> Samples:
    """``n`` inputs drawn uniformly from ``[low, high)`` (logs a warning: prefer real data)."""
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise InputError(f"input range must be finite with LOW < HIGH, got {low}, {high}")
    if warn:
        logger.warning(
            "generating %d inputs uniformly in [%g, %g): calibration from real inputs "
            "(--calibration X.npz) gives better int8 scales",
            n,
            low,
            high,
        )
    rng = np.random.default_rng(seed)
    return {
        spec.name: rng.uniform(low, high, size=(n, *item_shape(spec))).astype(np.float32)
        for spec in inputs
    }


def sample_count(samples: Samples) -> int:
    """How many samples ``samples`` holds (the first dimension of its arrays, which agree)."""
    return int(next(iter(samples.values())).shape[0])


def sample_slice(samples: Samples, sl: slice) -> Samples:
    """The samples ``sl`` selects, input by input (views, not copies)."""
    return {k: v[sl] for k, v in samples.items()}


def check_calibration_size(count: int, warnings: list[str]) -> None:
    """Refuse a single calibration sample; warn below :data:`MIN_CALIBRATION_SAMPLES`."""
    if count < 2:
        raise InputError(
            f"calibration uses {count} sample: activation ranges from one input are that "
            f"input's; give at least {MIN_CALIBRATION_SAMPLES} (a few hundred is typical)"
        )
    if count < MIN_CALIBRATION_SAMPLES:
        warnings.append(
            f"calibration uses only {count} samples: activation ranges from so few inputs miss "
            f"what the model meets in use; give at least {MIN_CALIBRATION_SAMPLES} "
            "(a few hundred is typical)"
        )


def scale_mismatch(calibration: Samples, heldout: Samples) -> str:
    """One line when the calibration and held-out data's largest magnitudes differ by more than
    :data:`SCALE_MISMATCH_FACTOR` (``""`` otherwise, or without calibration data): a glitched
    sample, or data in other units, would otherwise only show as a static model less accurate
    than it should be."""
    if not calibration or not heldout:
        return ""
    cal = max(float(np.abs(v).max(initial=0.0)) for v in calibration.values())
    held = max(float(np.abs(v).max(initial=0.0)) for v in heldout.values())
    low, high = min(cal, held), max(cal, held)
    if high <= SCALE_MISMATCH_FACTOR * max(low, float(np.finfo(np.float32).tiny)):
        return ""
    if cal > held:
        return (
            f"the calibration data reach |x| = {cal:.3g}, the held-out data {held:.3g}: a "
            "calibration sample far outside the inputs (a glitch, or other units) sets static "
            "quantization's input range; check --calibration (dynamic quantization calibrates "
            "nothing)"
        )
    return (
        f"the held-out data reach |x| = {held:.3g}, the calibration data {cal:.3g}: the model "
        "is checked on inputs far outside the range it is calibrated on; check --heldout and "
        "--calibration"
    )


def check_labels(labels: np.ndarray | None, output: TensorSpec, source: str = "labels") -> None:
    """Held-out ``labels`` must be class indices of ``output`` (its columns); else InputError."""
    if labels is None or labels.size == 0:
        return
    classes = int(output.shape[-1]) if output.shape and output.shape[-1] > 0 else 0
    low, high = int(labels.min()), int(labels.max())
    if classes and (low < 0 or high >= classes):
        raise InputError(
            f"{source}: labels range over {low}..{high}, but output {output.name!r} has "
            f"{classes} classes: labels must be class indices 0..{classes - 1}, in the order of "
            "its columns"
        )


class CalibrationReader:
    """ONNX Runtime calibration data reader over arrays, in batches, with a progress bar."""

    def __init__(self, samples: Samples, batch: int, *, show_progress: bool = False) -> None:
        self.samples = samples
        # Every batch has the same size: the histogram calibrators (Entropy, Percentile) stack
        # per-batch arrays and fail on a shorter last batch.
        n = sample_count(samples)
        self.batch = max(d for d in range(1, max(1, min(int(batch), n)) + 1) if n % d == 0)
        self.show_progress = show_progress
        self._iter: Iterator[Samples] | None = None

    def _batches(self) -> Iterator[Samples]:
        n = sample_count(self.samples)
        starts = range(0, n, self.batch)
        for start in progress(
            starts, total=len(starts), desc="calibration", enabled=self.show_progress
        ):
            yield sample_slice(self.samples, slice(start, start + self.batch))

    def get_next(self) -> Samples | None:
        if self._iter is None:
            self._iter = self._batches()
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = None


def split_heldout(
    calibration: Samples, labels: np.ndarray | None
) -> tuple[Samples, Samples, np.ndarray | None]:
    """Keep the last :data:`HELDOUT_FRACTION` of the calibration set out of calibration."""
    n = sample_count(calibration)
    if n < 3:
        raise InputError(
            f"the calibration set has {n} sample(s): too few to calibrate and hold some out; give "
            f"at least {MIN_CALIBRATION_SAMPLES} (or a separate --heldout set)"
        )
    cut = n - max(1, round(n * HELDOUT_FRACTION))
    logger.info("no --heldout: holding out %d of %d calibration samples", n - cut, n)
    held_labels = None if labels is None else labels[cut:]
    calibrate = sample_slice(calibration, slice(0, cut))
    held = sample_slice(calibration, slice(cut, n))
    return calibrate, held, held_labels


def gather_data(
    inputs: tuple[TensorSpec, ...],
    *,
    calibration_path: str | Path | None,
    heldout_path: str | Path | None,
    input_range: tuple[float, float] | None,
    samples: int,
    seed: int,
    calibrate: bool = True,
) -> tuple[Samples, Samples, np.ndarray | None, str]:
    """``(calibration, heldout, heldout labels, description)`` from the options.

    Without ``calibrate`` (dynamic quantization calibrates nothing) calibration data are
    optional: ``--heldout`` alone will do, and a ``--calibration`` set without ``--heldout`` is
    held out whole (the calibration returned is then empty).
    """
    if calibration_path is not None and input_range is not None:
        raise InputError(
            "give calibration data (--calibration X.npz) or an input range "
            "(--input-range LOW HIGH), not both"
        )
    if calibration_path is None and input_range is None:
        if calibrate:
            raise InputError(
                "static quantization calibrates on inputs: give calibration data "
                "(--calibration X.npz) or an input range (--input-range LOW HIGH); "
                "--mode dynamic needs neither, only held-out data (--heldout Y.npz)"
            )
        if heldout_path is None:
            raise InputError(
                "dynamic quantization calibrates nothing, but the report compares the float and "
                "int8 models on held-out inputs: give --heldout Y.npz (or --input-range LOW HIGH)"
            )
        held, held_labels = load_samples(heldout_path, inputs)
        return {}, held, held_labels, "none (dynamic)"
    if not calibrate and calibration_path is not None and heldout_path is None:
        held, held_labels = load_samples(calibration_path, inputs)
        return {}, held, held_labels, f"npz:{Path(calibration_path).name} (held out)"
    labels = None
    calibration: Samples = {}
    heldout: Samples = {}
    source = ""
    if calibration_path is not None:
        calibration, calib_labels = load_samples(calibration_path, inputs)
        source = f"npz:{Path(calibration_path).name}"
        if heldout_path is None:
            calibration, heldout, labels = split_heldout(calibration, calib_labels)
            return calibration, heldout, labels, source
    elif input_range is not None:
        calibration = range_samples(inputs, input_range[0], input_range[1], samples, seed)
        source = f"range:[{input_range[0]:g}, {input_range[1]:g})"
    if heldout_path is not None:
        heldout, labels = load_samples(heldout_path, inputs)
    elif input_range is not None:
        heldout = range_samples(
            inputs,
            input_range[0],
            input_range[1],
            samples,
            seed + 1,
            warn=calibration_path is not None,
        )
    return calibration, heldout, labels, source

"""What every inference backend provides: a :class:`Session` that runs real-valued batches.

A backend loads a model file into a :class:`Session`. Callers always see **real values**: inputs
are float arrays, outputs are ``float32`` arrays. When the model itself takes or produces int8
(or another integer type) with a quantization scale and zero point, the session quantizes inputs
(``q = clip(round(x / scale) + zero_point)``) and dequantizes outputs
(``x = scale * (q - zero_point)``) with the declared parameters.

Memory: a session owns one set of buffers for the current batch size, allocated by
:meth:`Session.set_batch` and reused by every :meth:`Session.run`; nothing that scales with the
batch is allocated per call (LiteRT resizes its tensors and re-plans its arena once per batch-size
change, never per tick). :meth:`Session.input_buffer` exposes the real-valued input staging array
so that a caller can write its batch there directly and skip one copy.

Sliding inputs: a caller that keeps a window of recent steps in an input (the neural groups keep
every agent's ``(T, F)`` window in the ``(N, T, F)`` input) moves it one step older per tick. Read
as one flat array, that move is a shift by ``F`` values towards the start. After
:meth:`Session.enable_slide`, :meth:`Session.slide_input` does it without moving the data: the
input is a view into a slightly longer buffer, and a slide moves the view ``F`` values on (the
onnxruntime session rebinds its input to the new view: a pointer, not a copy). Only once every
:func:`slide_room` slides are the values copied back to the start of the buffer. The extra room
(:meth:`Session.slide_nbytes`) is at most 64 steps and at most an eighth of the input.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from edge_agent.errors import InputError, ModelError

if TYPE_CHECKING:
    from edge_agent.bundle.manifest import TensorSpec

__all__ = [
    "FloatArray",
    "QuantParams",
    "Session",
    "dequantize_into",
    "quantize_into",
    "slide_room",
]

FloatArray = NDArray[np.float32]
#: ``(scale, zero_point)`` of a quantized tensor: ``real = scale * (q - zero_point)``.
QuantParams = tuple[float, int]

_INTEGER_KINDS = "iu"

#: Most slides a sliding input makes before its values are copied back to the start.
SLIDE_ROOM_MAX = 64


def slide_room(size: int, step: int) -> int:
    """Slides an input of ``size`` values moving ``step`` per slide gets before a copy back:
    at most :data:`SLIDE_ROOM_MAX`, and the room (``slides * step`` values) at most an eighth of
    the input. 0 means every slide is a copy (a tiny input)."""
    return max(0, min(SLIDE_ROOM_MAX, size // (8 * step)))


@dataclass(slots=True)
class _Slide:
    """A sliding input: ``views[k]`` is the input after ``k`` slides from the buffer's start."""

    step: int
    size: int
    backing: FloatArray
    views: list[FloatArray]
    at: int = 0


def quantize_into(
    real: np.ndarray, scale: float, zero_point: int, out: np.ndarray, scratch: FloatArray
) -> None:
    """``out = clip(round(real / scale) + zero_point)`` in ``out``'s integer dtype, no allocation.

    ``scratch`` is a float32 array of ``real``'s shape. Rounding is half-to-even (numpy's
    ``rint``), as TFLite and ONNX Runtime do.
    """
    info = np.iinfo(out.dtype)
    np.divide(real, np.float32(scale), out=scratch, casting="same_kind")
    np.rint(scratch, out=scratch)
    np.add(scratch, np.float32(zero_point), out=scratch)
    np.clip(scratch, info.min, info.max, out=scratch)
    np.copyto(out, scratch, casting="unsafe")


def dequantize_into(q: np.ndarray, scale: float, zero_point: int, out: FloatArray) -> None:
    """``out = scale * (q - zero_point)`` as float32, no allocation."""
    np.copyto(out, q, casting="unsafe")
    if zero_point:
        np.subtract(out, np.float32(zero_point), out=out)
    np.multiply(out, np.float32(scale), out=out)


def _static_dims(kind: str, spec: TensorSpec) -> tuple[int, ...]:
    """The dimensions after the batch axis, which must all be fixed."""
    if len(spec.shape) < 1:
        raise ModelError(
            f"{kind} {spec.name!r} is a scalar; edge-agent needs a leading batch dimension"
        )
    tail = spec.shape[1:]
    if any(dim < 0 for dim in tail):
        raise ModelError(
            f"{kind} {spec.name!r} has shape {list(spec.shape)}: every dimension after the batch "
            "must be fixed"
        )
    return tail


class Session(abc.ABC):
    """A loaded model that runs batches of real-valued inputs; see the module docstring.

    Subclasses set :attr:`backend`, call ``super().__init__`` with the model's tensors, and
    implement :meth:`_resize` (allocate the model-side buffers for a batch size) and
    :meth:`_invoke` (run the model from the staging inputs into the real-valued outputs).
    """

    backend: str = ""

    def __init__(
        self,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        threads: int,
    ) -> None:
        if not inputs or not outputs:
            raise ModelError(f"{self.backend} model has no inputs or no outputs")
        self.threads = threads
        self._input_specs = tuple(inputs)
        self._output_specs = tuple(outputs)
        self._input_dims = {t.name: _static_dims("input", t) for t in self._input_specs}
        for spec in self._input_specs:
            if is_integer_dtype(spec.dtype) and spec.scale is None:
                raise ModelError(
                    f"input {spec.name!r} is {spec.dtype} without a quantization scale and zero "
                    "point: edge-agent feeds real values and cannot quantize it"
                )
        self._batch = 0
        self._staging: dict[str, FloatArray] = {}
        self._outputs: dict[str, FloatArray] = {}
        self._outputs_view: Mapping[str, FloatArray] = MappingProxyType(self._outputs)
        self._slide_steps: dict[str, int] = {}
        self._slides: dict[str, _Slide] = {}

    # -- description ---------------------------------------------------------------------------
    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        """The model's inputs: name, shape (``-1`` for a dynamic batch), dtype, quantization."""
        return self._input_specs

    @property
    def output_specs(self) -> tuple[TensorSpec, ...]:
        """The model's outputs, as :attr:`input_specs`."""
        return self._output_specs

    @property
    def batch_size(self) -> int:
        """The batch size buffers are allocated for (0 before the first :meth:`set_batch`)."""
        return self._batch

    def input_shape(self, name: str) -> tuple[int, ...]:
        """Shape ``(batch, ...)`` an input must have at the current batch size."""
        return (self._batch, *self._input_dims[name])

    def nbytes_per_item(self) -> int:
        """Bytes of this session's own buffers per batch item (the runtime's arena not included).

        Per input element: 4 (float32 staging), plus for a non-float32 model input its own
        itemsize, plus 4 more (rounding scratch) when it is quantized. Per output element: 4
        (float32 result), plus the model's itemsize for a non-float32 output.
        """
        total = 0
        for spec in self._input_specs:
            items = math.prod(self._input_dims[spec.name])
            extra = 0
            if spec.dtype != "float32":
                extra = np.dtype(spec.dtype).itemsize + (4 if spec.scale is not None else 0)
            total += items * (4 + extra)
        for spec in self._output_specs:
            items = math.prod(_static_dims("output", spec))
            extra = 0 if spec.dtype == "float32" else np.dtype(spec.dtype).itemsize
            total += items * (4 + extra)
        return total

    # -- batch -----------------------------------------------------------------------------------
    def set_batch(self, n: int) -> None:
        """Allocate every buffer for batches of ``n`` (once per change of ``n``)."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise InputError(f"batch size must be an integer >= 1, got {n!r}")
        n = int(n)
        if n == self._batch:
            return
        for spec in self._input_specs:
            fixed = spec.shape[0]
            if fixed >= 0 and fixed != n:
                raise InputError(
                    f"{self.backend} model input {spec.name!r} has a fixed batch of {fixed} "
                    f"(shape {list(spec.shape)}); cannot run {n} items in one call. Export the "
                    "model with a dynamic batch dimension"
                )
        # Until everything is allocated the session has no batch: a failure leaves it unusable
        # until the next successful set_batch, never half-resized.
        self._batch = 0
        self._staging = {}
        self._outputs = {}
        self._slides = {}
        self._resize(n)
        for name, dims in self._input_dims.items():
            step = self._slide_steps.get(name)
            if step is None:
                self._staging[name] = np.zeros((n, *dims), dtype=np.float32)
                continue
            size = n * math.prod(dims)
            room = slide_room(size, step)
            backing = np.zeros(size + room * step, dtype=np.float32)
            views = [backing[k * step : k * step + size].reshape(n, *dims) for k in range(room + 1)]
            self._slides[name] = _Slide(step=step, size=size, backing=backing, views=views)
            self._staging[name] = views[0]
        self._allocate_model_buffers(n)
        self._batch = n

    # -- sliding inputs --------------------------------------------------------------------------
    def enable_slide(self, name: str, step: int) -> None:
        """Let input ``name`` slide by ``step`` values per :meth:`slide_input` (see the module
        docstring); call before the first :meth:`set_batch`."""
        if name not in self._input_dims:
            raise InputError(f"model has no input {name!r}; inputs are {sorted(self._input_dims)}")
        items = math.prod(self._input_dims[name])
        if isinstance(step, bool) or not isinstance(step, int) or not 0 < step < items:
            raise InputError(f"input {name!r}: a slide moves 1 to {items - 1} values, got {step!r}")
        if self._batch:
            raise InputError("enable_slide must come before the first set_batch")
        self._slide_steps[name] = step

    def input_views(self, name: str) -> list[FloatArray]:
        """Every array :meth:`input_buffer` may return for input ``name`` until the next
        :meth:`set_batch`: the positions of a sliding input, else the one staging array."""
        slide = self._slides.get(name)
        return list(slide.views) if slide is not None else [self.input_buffer(name)]

    def slide_nbytes(self, n: int) -> int:
        """Bytes of the sliding inputs' extra room at batch ``n`` (once per session)."""
        total = 0
        for name, step in self._slide_steps.items():
            total += 4 * step * slide_room(n * math.prod(self._input_dims[name]), step)
        return total

    def slide_input(self, name: str) -> FloatArray:
        """Move input ``name``, read as one flat array, one step towards its start and return its
        staging array (a new view: the one :meth:`input_buffer` returns from now on).

        The values of the first step drop out; every other value moves ``step`` places earlier;
        the last ``step`` values are stale until the caller writes them.
        """
        slide = self._slides.get(name)
        if slide is None:
            self._require_batch()
            raise InputError(f"input {name!r} does not slide: call enable_slide before set_batch")
        step = slide.step
        if slide.at + 1 < len(slide.views):
            slide.at += 1
        else:  # out of room: the values that stay go back to the start of the buffer
            start = slide.at * step + step
            kept = slide.size - step
            np.copyto(slide.backing[:kept], slide.backing[start : start + kept])
            slide.at = 0
        view = slide.views[slide.at]
        self._staging[name] = view
        self._slid(name, slide.at)
        return view

    def input_buffer(self, name: str) -> FloatArray:
        """The real-valued ``(batch, ...)`` float32 staging array of input ``name``.

        Write a batch here and pass this very array to :meth:`run` to skip the copy.
        """
        self._require_batch()
        try:
            return self._staging[name]
        except KeyError as err:
            raise InputError(
                f"model has no input {name!r}; inputs are {sorted(self._staging)}"
            ) from err

    def warm_up(self) -> None:
        """Run one batch of zeros (first calls are slow: allocation, kernel selection)."""
        self._require_batch()
        for buf in self._staging.values():
            buf.fill(0.0)
        self._invoke()

    # -- running -------------------------------------------------------------------------------
    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, FloatArray]:
        """Run one batch; ``inputs[name]`` is a real-valued ``(batch, ...)`` array.

        Returns real-valued float32 outputs by name. They are views of buffers this session reuses:
        valid until the next :meth:`run` or :meth:`set_batch`; copy them to keep them.
        """
        self._require_batch()
        if inputs.keys() != self._staging.keys():
            raise InputError(f"model inputs are {sorted(self._staging)}, got {sorted(inputs)}")
        for name, staging in self._staging.items():
            value = inputs[name]
            if value is staging:
                continue
            arr = np.asarray(value)
            if arr.shape != staging.shape:
                raise InputError(
                    f"input {name!r} has shape {arr.shape}, expected {staging.shape} "
                    f"(batch size {self._batch}; call set_batch to change it)"
                )
            if arr.dtype.kind not in "fiub":
                raise InputError(f"input {name!r} must be numeric, got dtype {arr.dtype}")
            np.copyto(staging, arr, casting="unsafe")
        self._invoke()
        return dict(self._outputs)

    def run_staged(self) -> Mapping[str, FloatArray]:
        """Run the batch already in the staging arrays (written through :meth:`input_buffer`
        or :meth:`slide_input`): :meth:`run` without its checks of the inputs, for a caller that
        owns those arrays. The outputs as :meth:`run` gives them, in a read-only mapping the
        session reuses."""
        self._require_batch()
        self._invoke()
        return self._outputs_view

    def _require_batch(self) -> None:
        if self._batch == 0:
            raise InputError(f"{self.backend} session: call set_batch(n) before running it")

    # -- for subclasses ----------------------------------------------------------------------------
    def _stage(self, spec: TensorSpec, dest: np.ndarray, scratch: FloatArray | None) -> None:
        """Convert input ``spec``'s staging array into the model's buffer ``dest``."""
        src = self._staging[spec.name]
        if dest is src:
            return
        if spec.scale is not None and spec.zero_point is not None:
            if scratch is None:
                raise ModelError(f"input {spec.name!r}: quantizing needs a scratch buffer")
            quantize_into(src, spec.scale, spec.zero_point, dest, scratch)
        else:
            np.copyto(dest, src, casting="unsafe")

    def _unstage(self, spec: TensorSpec, src: np.ndarray) -> None:
        """Convert the model's output ``src`` into the real-valued result of ``spec``."""
        dest = self._outputs[spec.name]
        if src is dest:
            return
        if spec.scale is not None and spec.zero_point is not None:
            dequantize_into(src, spec.scale, spec.zero_point, dest)
        else:
            np.copyto(dest, src, casting="unsafe")

    def _new_outputs(self, n: int) -> None:
        """Allocate the real-valued float32 output arrays for batch ``n``."""
        self._outputs = {
            spec.name: np.zeros((n, *_static_dims("output", spec)), dtype=np.float32)
            for spec in self._output_specs
        }
        self._outputs_view = MappingProxyType(self._outputs)

    @abc.abstractmethod
    def _slid(self, name: str, at: int) -> None:
        """Input ``name``'s staging array is now its slide view ``at``: a backend that reads
        the staging array itself (a float32 model input) follows it."""

    @abc.abstractmethod
    def _resize(self, n: int) -> None:
        """Prepare the runtime for batches of ``n`` (LiteRT: resize and allocate tensors)."""

    @abc.abstractmethod
    def _allocate_model_buffers(self, n: int) -> None:
        """Allocate model-dtype buffers for batch ``n`` and fill :attr:`_outputs`."""

    @abc.abstractmethod
    def _invoke(self) -> None:
        """Run the model from :attr:`_staging` into :attr:`_outputs`."""


def spec_dtype(dtype: Any) -> str:
    """A numpy dtype as a :class:`TensorSpec` dtype name; ModelError for unsupported ones."""
    name = str(np.dtype(dtype).name)
    allowed = ("bool", "int8", "uint8", "int16", "int32", "int64", "float16", "float32")
    if name not in allowed:
        raise ModelError(f"tensor type {name} is not supported (supported: {', '.join(allowed)})")
    return name


def is_integer_dtype(dtype: str) -> bool:
    """Whether a :class:`TensorSpec` dtype holds quantized integers (not bool)."""
    return np.dtype(dtype).kind in _INTEGER_KINDS

"""The ONNX Runtime backend (``pip install 'edge-agent-runtime[onnx]'``).

Sessions run on the CPU execution provider with ``threads`` intra-op threads (the caller passes
the firmware profile's ``inference_threads``), one inter-op thread, sequential execution and
**no spinning** unless asked (``spinning=True``, onnxruntime's own default): idle worker threads
sleep instead of burning a core between ticks, which matters on a 4-core Pi that also runs the
Active Inference kernels; a program calling a model back to back may prefer them spinning.

Inputs and outputs are bound once per batch size with an ``IOBinding`` to preallocated numpy
buffers, so a run writes into the same memory every tick; a sliding input (see
:mod:`edge_agent.neural.backends.base`) has one ``OrtValue`` per position of its view, and a
slide rebinds the input to the next one instead of moving the values. ONNX graph inputs carry no
quantization parameters: QDQ models (what ``edge-agent-host convert onnx`` writes) keep float32
inputs and outputs, and a model with int8 inputs needs ``quantization={name: (scale,
zero_point)}``.

**int8 on x86-64.** Without VNNI (AVX2 only) onnxruntime computes u8 x s8 products in pairs that
saturate at 16 bits (``VPMADDUBSW``): int8 models lose accuracy there that they do not lose on the
Pi's ARM cores or on VNNI machines (digits CNN: 98.0 % top-1 agreement instead of 99.7 %).
onnxruntime's ``session.x64quantprecision`` avoids it with a slower kernel, which on a CPU with
VNNI or AMX (exact 32-bit accumulation) only costs time: 2x for the digits CNN and 2.4x for its
MLP. :func:`x64_quant_precision` decides it once per process from the CPU (``/proc/cpuinfo``
flags): on only where it changes the result. The host tool's converter measures its int8 latency
through this backend, so its report and the device agree. onnxruntime 1.32's exact mode cannot
load an int8 weight that several nodes share (an LSTM unrolled over its steps: "Attempt to
replace the existing tensor"); such a model is loaded without it, with a warning
(``x64_precision_lost`` says why).
"""

from __future__ import annotations

import importlib
import logging
import platform
import re
from collections.abc import Callable, Mapping
from functools import cache, partial
from typing import Any

import numpy as np

from edge_agent.bundle.manifest import TensorSpec
from edge_agent.errors import BackendUnavailableError, InputError, ModelError
from edge_agent.neural.backends.base import FloatArray, QuantParams, Session, is_integer_dtype

logger = logging.getLogger(__name__)

__all__ = [
    "BACKEND",
    "EXACT_INT8_FLAGS",
    "SHARED_WEIGHT_FAILURE",
    "OnnxRuntimeBackend",
    "OnnxRuntimeSession",
    "cpu_flags",
    "needs_x64_quant_precision",
    "x64_quant_precision",
]

#: x86 CPU flags whose int8 dot products accumulate in 32 bits without saturating: with any of
#: them onnxruntime's int8 kernels are exact and ``session.x64quantprecision`` only slows them.
EXACT_INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
_X86_MACHINES = frozenset({"x86_64", "amd64", "x64", "i386", "i486", "i586", "i686", "x86"})

_ONNX_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


@cache
def _ort() -> Any:
    """Import onnxruntime once; BackendUnavailableError naming the extra if it is missing."""
    try:
        return importlib.import_module("onnxruntime")
    except ImportError as err:
        raise BackendUnavailableError(
            "inference backend 'onnxruntime' needs the onnxruntime package, which is not "
            "installed: pip install 'edge-agent-runtime[onnx]'"
        ) from err


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of the first CPU in ``/proc/cpuinfo`` text (x86: ``flags``; ARM:
    ``Features``); empty when there is no such line."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def needs_x64_quant_precision(machine: str, flags: frozenset[str]) -> bool:
    """Whether onnxruntime's int8 kernels need ``session.x64quantprecision`` on a CPU of this
    ``machine`` (``platform.machine()``) with these ``flags``: on x86 without VNNI or AMX (the
    16-bit saturation, module docstring) and on x86 whose flags are unknown; never elsewhere
    (ARM's int8 dot products do not saturate, and the option does nothing there)."""
    if machine.lower() not in _X86_MACHINES:
        return False
    return not (flags & EXACT_INT8_FLAGS)


@cache
def x64_quant_precision() -> bool:
    """:func:`needs_x64_quant_precision` for this machine (``/proc/cpuinfo``; an x86 machine
    without it, macOS or Windows, keeps the exact kernel)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            flags = cpu_flags(info.read())
    except OSError:
        flags = frozenset()
    return needs_x64_quant_precision(platform.machine(), flags)


@cache
def _errors() -> tuple[type[BaseException], ...]:
    """Every exception class onnxruntime raises from C++ (they derive from Exception only)."""
    state = importlib.import_module("onnxruntime.capi.onnxruntime_pybind11_state")
    found = [
        cls for cls in vars(state).values() if isinstance(cls, type) and issubclass(cls, Exception)
    ]
    return (RuntimeError, ValueError, *found)


# onnxruntime's C++ errors quote where they were raised: "/onnxruntime_src/.../model.cc:181
# onnxruntime::Model::Model(onnx::ModelProto&&, ...<300 characters>...) Unsupported model IR
# version: 14, max supported IR version: 13". The location and the signature go.
_CXX_LOCATION = re.compile(r"[/\\][^\s:]*\.(?:cc|cpp|cxx|h|hpp):\d+ ")


def ort_message(err: BaseException) -> str:
    """``str(err)`` on one line, without the C++ source location and function signature."""
    text = " ".join(str(err).split())
    while (match := _CXX_LOCATION.search(text)) is not None:
        start = text.find("(", match.end())  # the signature's argument list
        if start < 0:
            break
        depth, end = 0, -1
        for i in range(start, len(text)):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            if depth == 0:
                end = i + 1
                break
        if end < 0:
            break
        rest = text[end:].lstrip()
        rest = rest.removeprefix("const ").lstrip()
        text = f"{text[: match.start()].rstrip()} {rest}".strip()
    return text


def _dim(value: object) -> int:
    return value if isinstance(value, int) and value >= 0 else -1


def _spec(arg: Any, quant: QuantParams | None) -> TensorSpec:
    dtype = _ONNX_TYPES.get(str(arg.type))
    if dtype is None:
        raise ModelError(f"tensor {arg.name!r} has unsupported type {arg.type}")
    shape = tuple(_dim(d) for d in (arg.shape or ()))
    scale, zero_point = (None, None) if quant is None else (float(quant[0]), int(quant[1]))
    if quant is not None and not is_integer_dtype(dtype):
        raise ModelError(f"tensor {arg.name!r} is {dtype}; quantization applies to integer tensors")
    return TensorSpec(name=arg.name, shape=shape, dtype=dtype, scale=scale, zero_point=zero_point)


#: What onnxruntime (1.32) says when its exact x86 int8 mode meets an int8 weight that several
#: nodes share: it adds the converted weight once per node under one name.
SHARED_WEIGHT_FAILURE = "Attempt to replace the existing tensor"


def _new_session(model_bytes: bytes, threads: int, spinning: bool, x64_precision: bool) -> Any:
    """An ``InferenceSession`` with the backend's options (module docstring)."""
    ort = _ort()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle threads sleep unless asked to spin (module docstring).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if x64_precision:
        opts.add_session_config_entry("session.x64quantprecision", "1")
    # Errors come back as exceptions; with the exact mode on, the one it may raise (shared
    # weights, retried without it) stays off stderr too.
    opts.log_severity_level = 4 if x64_precision else 3
    return ort.InferenceSession(
        bytes(model_bytes), sess_options=opts, providers=["CPUExecutionProvider"]
    )


def _unbound(*_: object) -> None:
    raise InputError("onnxruntime session: call set_batch(n) before running it")


def _unbound_input(name: str, value: Any) -> None:
    _unbound(name, value)


def _direct_calls(
    session: Any, binding: Any, values: list[Any]
) -> tuple[Callable[[], object], Callable[[str, Any], object], bool]:
    """``(run, bind_input, direct)`` for ``binding`` of ``session``: one run on the binding, and
    a rebinding of an input (``bind_input(name, value)``). onnxruntime's Python wrappers check
    on every call what a CPU session with its own binding never needs (a WebGPU graph capture,
    a pinned binding, the OrtValue's session: 2 us of a 0.2 us rebind, 2026-11-28); where
    this onnxruntime has the compiled objects under them (``_sess``, ``_iobinding``,
    ``_ortvalue``, since 1.x), they are called directly (``direct``: a rebinding then takes
    the compiled OrtValue, ``value._ortvalue``), else the wrappers."""
    raw_session = getattr(session, "_sess", None)
    raw_binding = getattr(binding, "_iobinding", None)
    if (
        raw_session is None
        or raw_binding is None
        or not hasattr(raw_session, "run_with_iobinding")
        or not hasattr(raw_binding, "bind_ortvalue_input")
        or not all(hasattr(v, "_ortvalue") for v in values)
    ):
        return partial(session.run_with_iobinding, binding), binding.bind_ortvalue_input, False
    return (
        partial(raw_session.run_with_iobinding, raw_binding, None),
        raw_binding.bind_ortvalue_input,
        True,
    )


class OnnxRuntimeSession(Session):
    """An ONNX model in an ``onnxruntime.InferenceSession``; see :class:`Session`.

    ``x64_precision``: whether the session uses onnxruntime's exact int8 kernel on x86-64
    (``None``: :func:`x64_quant_precision`, what this CPU needs).
    """

    backend = "onnxruntime"

    def __init__(
        self,
        model_bytes: bytes,
        threads: int = 1,
        *,
        quantization: Mapping[str, QuantParams] | None = None,
        x64_precision: bool | None = None,
        spinning: bool = False,
    ) -> None:
        ort = _ort()
        if threads < 1:
            raise InputError(f"threads must be >= 1, got {threads}")
        # The exact int8 kernel where the CPU needs it (module docstring); None: this machine's.
        self.x64_precision = x64_quant_precision() if x64_precision is None else x64_precision
        #: Why the exact kernel could not be used although this CPU needs it ("": it could).
        self.x64_precision_lost = ""
        try:
            try:
                self._session = _new_session(model_bytes, threads, spinning, self.x64_precision)
            except _errors() as err:
                if not (self.x64_precision and SHARED_WEIGHT_FAILURE in str(err)):
                    raise
                # onnxruntime's exact mode rewrites each node's int8 weights and fails on one
                # that several nodes share (an unrolled LSTM's): load without it.
                self._session = _new_session(model_bytes, threads, spinning, x64_precision=False)
                self.x64_precision = False
                self.x64_precision_lost = (
                    f"onnxruntime {ort.__version__}'s exact int8 mode for x86 without VNNI "
                    "(session.x64quantprecision) cannot load int8 weights that several nodes "
                    "share: loaded without it, so int8 products may saturate on this CPU"
                )
                logger.warning("%s", self.x64_precision_lost)
        except _errors() as err:
            raise ModelError(f"onnxruntime cannot load the model: {ort_message(err)}") from err
        quant = dict(quantization or {})
        inputs = [_spec(a, quant.pop(a.name, None)) for a in self._session.get_inputs()]
        outputs = [_spec(a, quant.pop(a.name, None)) for a in self._session.get_outputs()]
        if quant:
            raise ModelError(f"quantization given for unknown tensors {sorted(quant)}")
        super().__init__(inputs, outputs, threads)
        self._output_specs = self._resolve_output_shapes()
        self._binding: Any = None
        self._values: list[Any] = []  # OrtValues that wrap our buffers: kept alive with them
        self._run: Callable[[], object] = _unbound  # one run on the binding (_direct_calls)
        self._bind_input: Callable[[str, Any], object] = _unbound_input
        self._model_in: dict[str, np.ndarray] = {}
        self._scratch: dict[str, FloatArray] = {}
        self._model_out: dict[str, np.ndarray] = {}
        # A sliding float32 input's OrtValues, one per view, as _bind_input takes them.
        self._slide_values: dict[str, list[Any]] = {}
        self._converted_inputs = [t for t in self._input_specs if t.dtype != "float32"]
        self._converted_outputs = [t for t in self._output_specs if t.dtype != "float32"]

    def _resolve_output_shapes(self) -> tuple[TensorSpec, ...]:
        """Outputs whose non-batch dimensions ONNX leaves symbolic get them from one probe run."""
        if all(d >= 0 for spec in self._output_specs for d in spec.shape[1:]):
            return self._output_specs
        feed = {
            spec.name: np.zeros((1, *self._input_dims[spec.name]), dtype=np.dtype(spec.dtype))
            for spec in self._input_specs
        }
        try:
            results = self._session.run(None, feed)
        except _errors() as err:
            raise ModelError(
                f"onnxruntime cannot run the model on a batch of 1: {ort_message(err)}"
            ) from err
        resolved = []
        for spec, value in zip(self._output_specs, results, strict=True):
            shape = (spec.shape[0] if spec.shape else -1, *np.shape(value)[1:])
            resolved.append(spec.model_copy(update={"shape": shape}))
        return tuple(resolved)

    def _resize(self, n: int) -> None:
        self._binding = None
        self._values = []
        self._run, self._bind_input = _unbound, _unbound_input

    def _allocate_model_buffers(self, n: int) -> None:
        ort = _ort()
        self._new_outputs(n)
        self._model_in, self._scratch, self._model_out = {}, {}, {}
        self._slide_values = {}
        binding = self._session.io_binding()
        values = []
        slides: dict[str, list[Any]] = {}
        for spec in self._input_specs:
            staging = self._staging[spec.name]
            slide = self._slides.get(spec.name)
            if spec.dtype == "float32" and slide is not None:
                # One OrtValue per view (the first is the staging array): a slide rebinds.
                wrapped = [ort.OrtValue.ortvalue_from_numpy(v) for v in slide.views]
                slides[spec.name] = wrapped
                self._model_in[spec.name] = staging
                binding.bind_ortvalue_input(spec.name, wrapped[0])
                values.extend(wrapped)
                continue
            if spec.dtype == "float32":
                buf: np.ndarray = staging
            else:
                buf = np.zeros(staging.shape, dtype=np.dtype(spec.dtype))
                if spec.scale is not None:
                    self._scratch[spec.name] = np.zeros(staging.shape, dtype=np.float32)
            self._model_in[spec.name] = buf
            value = ort.OrtValue.ortvalue_from_numpy(buf)
            binding.bind_ortvalue_input(spec.name, value)
            values.append(value)
        for spec in self._output_specs:
            result = self._outputs[spec.name]
            out = (
                result
                if spec.dtype == "float32"
                else np.zeros(result.shape, dtype=np.dtype(spec.dtype))
            )
            self._model_out[spec.name] = out
            value = ort.OrtValue.ortvalue_from_numpy(out)
            binding.bind_ortvalue_output(spec.name, value)
            values.append(value)
        self._binding = binding
        self._values = values
        self._run, self._bind_input, direct = _direct_calls(self._session, binding, values)
        for name, wrapped in slides.items():
            self._slide_values[name] = [v._ortvalue for v in wrapped] if direct else wrapped

    def _slid(self, name: str, at: int) -> None:
        wrapped = self._slide_values.get(name)
        if wrapped is not None:
            self._model_in[name] = self._staging[name]
            self._bind_input(name, wrapped[at])

    def _invoke(self) -> None:
        # float32 tensors are bound to the staging and result arrays themselves: only the
        # others are converted.
        for spec in self._converted_inputs:
            self._stage(spec, self._model_in[spec.name], self._scratch.get(spec.name))
        try:
            self._run()
        except _errors() as err:
            raise ModelError(f"onnxruntime run failed: {ort_message(err)}") from err
        for spec in self._converted_outputs:
            self._unstage(spec, self._model_out[spec.name])


class OnnxRuntimeBackend:
    """Loads ONNX models into :class:`OnnxRuntimeSession` objects."""

    name = "onnxruntime"
    extra = "onnx"

    def require(self) -> None:
        """Raise BackendUnavailableError if onnxruntime is not installed."""
        _ort()

    def version(self) -> str:
        return str(_ort().__version__)

    def load(
        self,
        model_bytes: bytes,
        threads: int = 1,
        *,
        quantization: Mapping[str, QuantParams] | None = None,
        spinning: bool = False,
    ) -> OnnxRuntimeSession:
        """A session for an ONNX model held in memory; ModelError if it does not load."""
        return OnnxRuntimeSession(
            model_bytes, threads, quantization=quantization, spinning=spinning
        )


BACKEND = OnnxRuntimeBackend()

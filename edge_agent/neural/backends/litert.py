"""The LiteRT (TensorFlow Lite) backend (``pip install 'edge-agent-runtime[tflite]'``).

Uses ``ai_edge_litert.interpreter.Interpreter``; only if ai-edge-litert is not installed does it
fall back to ``tflite_runtime.interpreter`` (older platforms without LiteRT wheels).

A full-integer model (what ``edge-agent-host convert tflite`` writes) has int8 inputs and outputs
with a per-tensor scale and zero point stored in the model; the session quantizes and dequantizes
with them, so callers pass and get real values. Changing the batch size resizes the inputs
(``resize_tensor_input``) and re-plans the tensor arena (``allocate_tensors``) once; runs at the
same batch size reuse everything.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from functools import cache
from typing import Any

import numpy as np

from edge_agent.bundle.manifest import TensorSpec
from edge_agent.errors import BackendUnavailableError, InputError, ModelError
from edge_agent.neural.backends.base import FloatArray, QuantParams, Session, spec_dtype

logger = logging.getLogger(__name__)

__all__ = ["BACKEND", "LiteRtBackend", "LiteRtSession"]


@cache
def interpreter_class() -> Any:
    """``Interpreter`` from ai-edge-litert, else tflite-runtime, else BackendUnavailableError."""
    try:
        module = importlib.import_module("ai_edge_litert.interpreter")
    except ImportError as litert_err:
        try:
            module = importlib.import_module("tflite_runtime.interpreter")
        except ImportError:
            raise BackendUnavailableError(
                "inference backend 'litert' needs ai-edge-litert (or tflite-runtime), which is "
                "not installed: pip install 'edge-agent-runtime[tflite]'"
            ) from litert_err
        logger.info("ai-edge-litert is not installed; using tflite_runtime instead")
    return module.Interpreter


def _quant_params(detail: Mapping[str, Any]) -> QuantParams | None:
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", ()), dtype=np.float64)
    zero_points = np.asarray(params.get("zero_points", ()), dtype=np.int64)
    if scales.size == 0:
        scale, zero_point = detail.get("quantization", (0.0, 0))
        return None if not scale else (float(scale), int(zero_point))
    if scales.size != 1:
        raise ModelError(
            f"tensor {detail['name']!r} is quantized per channel ({scales.size} scales); model "
            "inputs and outputs must be quantized per tensor"
        )
    return float(scales[0]), int(zero_points[0]) if zero_points.size else 0


def _spec(detail: Mapping[str, Any]) -> TensorSpec:
    signature = detail.get("shape_signature")
    dims = np.asarray(signature if signature is not None and len(signature) else detail["shape"])
    quant = _quant_params(detail)
    return TensorSpec(
        name=str(detail["name"]),
        shape=tuple(int(d) for d in dims),
        dtype=spec_dtype(detail["dtype"]),
        scale=None if quant is None else quant[0],
        zero_point=None if quant is None else quant[1],
    )


class LiteRtSession(Session):
    """A ``.tflite`` model in a LiteRT interpreter; see :class:`Session`."""

    backend = "litert"

    def __init__(self, model_bytes: bytes, threads: int = 1) -> None:
        interpreter = interpreter_class()
        if threads < 1:
            raise InputError(f"threads must be >= 1, got {threads}")
        try:
            self._interp = interpreter(model_content=bytes(model_bytes), num_threads=threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise ModelError(f"LiteRT cannot load the model: {err}") from err
        input_details = self._interp.get_input_details()
        output_details = self._interp.get_output_details()
        self._in_index = {str(d["name"]): int(d["index"]) for d in input_details}
        self._out_index = {str(d["name"]): int(d["index"]) for d in output_details}
        super().__init__(
            [_spec(d) for d in input_details], [_spec(d) for d in output_details], threads
        )
        self._model_in: dict[str, np.ndarray] = {}
        self._scratch: dict[str, FloatArray] = {}

    def _resize(self, n: int) -> None:
        try:
            for spec in self._input_specs:
                self._interp.resize_tensor_input(
                    self._in_index[spec.name], [n, *self._input_dims[spec.name]], strict=True
                )
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise ModelError(f"LiteRT cannot resize the model to a batch of {n}: {err}") from err
        shapes = self._output_shapes()
        if any(shapes[spec.name][:1] != (n,) for spec in self._output_specs):
            # Shapes computed at run time (e.g. a Flatten that reads the input's shape) are only
            # known after one invoke: probe once with zeros.
            for spec in self._input_specs:
                self._interp.set_tensor(
                    self._in_index[spec.name],
                    np.zeros((n, *self._input_dims[spec.name]), dtype=np.dtype(spec.dtype)),
                )
            try:
                self._interp.invoke()
            except (ValueError, RuntimeError) as err:
                raise ModelError(f"LiteRT cannot run the model at batch {n}: {err}") from err
            shapes = self._output_shapes()
        for spec in self._output_specs:
            shape = shapes[spec.name]
            if shape[:1] != (n,) or shape[1:] != spec.shape[1:]:
                raise ModelError(
                    f"output {spec.name!r} has shape {list(shape)} at batch {n}, expected "
                    f"{[n, *spec.shape[1:]]}"
                )

    def _output_shapes(self) -> dict[str, tuple[int, ...]]:
        return {
            str(d["name"]): tuple(int(x) for x in d["shape"])
            for d in self._interp.get_output_details()
        }

    def _allocate_model_buffers(self, n: int) -> None:
        self._new_outputs(n)
        self._model_in, self._scratch = {}, {}
        for spec in self._input_specs:
            staging = self._staging[spec.name]
            if spec.dtype == "float32":
                self._model_in[spec.name] = staging
                continue
            self._model_in[spec.name] = np.zeros(staging.shape, dtype=np.dtype(spec.dtype))
            if spec.scale is not None:
                self._scratch[spec.name] = np.zeros(staging.shape, dtype=np.float32)

    def _slid(self, name: str, at: int) -> None:
        if self._model_in[name].dtype == np.float32:  # the staging array itself: follow it
            self._model_in[name] = self._staging[name]

    def _invoke(self) -> None:
        interp = self._interp
        for spec in self._input_specs:
            buf = self._model_in[spec.name]
            self._stage(spec, buf, self._scratch.get(spec.name))
            interp.set_tensor(self._in_index[spec.name], buf)
        try:
            interp.invoke()
        except (ValueError, RuntimeError) as err:
            raise ModelError(f"LiteRT run failed: {err}") from err
        for spec in self._output_specs:
            # A view of the interpreter's own buffer: converted, then dropped before the next
            # invoke (LiteRT refuses to run while a view of its internal data is alive).
            view = interp.tensor(self._out_index[spec.name])()
            self._unstage(spec, view)
            del view


class LiteRtBackend:
    """Loads ``.tflite`` models into :class:`LiteRtSession` objects."""

    name = "litert"
    extra = "tflite"

    def require(self) -> None:
        """Raise BackendUnavailableError if neither ai-edge-litert nor tflite-runtime is present."""
        interpreter_class()

    def version(self) -> str:
        module = importlib.import_module(interpreter_class().__module__.split(".")[0])
        return str(getattr(module, "__version__", "unknown"))

    def load(
        self,
        model_bytes: bytes,
        threads: int = 1,
        *,
        quantization: Mapping[str, QuantParams] | None = None,
        spinning: bool = False,
    ) -> LiteRtSession:
        """A session for a ``.tflite`` model held in memory; ModelError if it does not load.

        ``quantization`` is accepted for interface symmetry and must agree with the model's own
        parameters (a ``.tflite`` file carries them). ``spinning`` has no equivalent: the
        interpreter's thread pool decides how its idle threads wait.
        """
        del spinning
        session = LiteRtSession(model_bytes, threads)
        for name, (scale, zero_point) in (quantization or {}).items():
            spec = next(
                (s for s in (*session.input_specs, *session.output_specs) if s.name == name), None
            )
            if spec is None:
                raise ModelError(f"quantization given for unknown tensor {name!r}")
            if (
                spec.scale is None
                or not np.isclose(spec.scale, scale, rtol=1e-6)
                or (spec.zero_point != zero_point)
            ):
                raise ModelError(
                    f"tensor {name!r}: the model has scale {spec.scale} zero_point "
                    f"{spec.zero_point}, expected {scale} and {zero_point}"
                )
        return session


BACKEND = LiteRtBackend()

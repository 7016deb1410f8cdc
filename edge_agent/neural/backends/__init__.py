"""Neural inference backends, looked up by name and imported only when selected.

* ``onnxruntime``: :mod:`edge_agent.neural.backends.onnxruntime` (``pip install
'edge-agent-runtime[onnx]'``) * ``litert``: :mod:`edge_agent.neural.backends.litert` (``pip install
'edge-agent-runtime[tflite]'``)

::

    backend = get_backend("onnxruntime")        # BackendUnavailableError if the extra is missing
    session = backend.load(model_bytes, threads=profile.inference_threads)
    session.set_batch(1000)                     # allocates buffers once per batch size
    outputs = session.run({"window": batch})    # real-valued float32 in and out

The names are the ``backend`` values a bundle's ``NeuralSpec`` may hold. Importing this package
imports neither onnxruntime nor LiteRT: :func:`get_backend` imports the plugin module, and the
plugin imports its runtime, on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from edge_agent.errors import BackendUnavailableError, InputError
from edge_agent.neural.backends.base import QuantParams, Session

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendEntry",
    "QuantParams",
    "Session",
    "available_backends",
    "get_backend",
]


@dataclass(frozen=True)
class BackendEntry:
    """Where a backend lives and which extra installs its runtime."""

    module: str
    extra: str


BACKENDS: dict[str, BackendEntry] = {
    "onnxruntime": BackendEntry("edge_agent.neural.backends.onnxruntime", "onnx"),
    "litert": BackendEntry("edge_agent.neural.backends.litert", "tflite"),
}
"""Backend name -> plugin module and extra. A plugin module defines ``BACKEND``."""


class Backend(Protocol):
    """What a plugin's ``BACKEND`` object provides."""

    name: str
    extra: str

    def require(self) -> None:
        """Raise BackendUnavailableError if the runtime is not installed."""

    def version(self) -> str:
        """The runtime's version string."""

    def load(
        self,
        model_bytes: bytes,
        threads: int = 1,
        *,
        quantization: Mapping[str, QuantParams] | None = None,
        spinning: bool = False,
    ) -> Session:
        """Load a model held in memory; ModelError if the runtime refuses it.

        ``spinning``: let idle threads spin between calls where the runtime offers the choice
        (faster back-to-back calls, a busy core in between)."""


def get_backend(name: str) -> Backend:
    """The backend registered as ``name``, with its runtime imported.

    Raises InputError for an unknown name and BackendUnavailableError (naming the extra to
    install) when its runtime is missing.
    """
    entry = BACKENDS.get(name)
    if entry is None:
        known = ", ".join(sorted(BACKENDS))
        raise InputError(f"unknown inference backend {name!r}; known: {known}")
    try:
        module = importlib.import_module(entry.module)
    except ImportError as err:  # the plugin module itself imports only numpy and edge_agent
        raise BackendUnavailableError(
            f"inference backend {name!r} cannot be imported ({err}): "
            f"pip install 'edge-agent-runtime[{entry.extra}]'"
        ) from err
    backend: Backend = module.BACKEND
    backend.require()
    return backend


def available_backends() -> dict[str, bool]:
    """Backend name -> whether its runtime can be imported here."""
    out: dict[str, bool] = {}
    for name in BACKENDS:
        try:
            get_backend(name)
        except BackendUnavailableError:
            out[name] = False
        else:
            out[name] = True
    return out

"""A neural group's work around its model's run, compiled: one call before the run, one after.

Before the run, :meth:`NeuralPass.observe` takes the tick's observations ``(N, F)`` float32 in
one call: each agent's row into its window's newest step (the model's ``(N, T, F)`` input, a row
every ``T * F`` values) and, on a checked tick, against the calibrated range
(:mod:`edge_agent.neural.input_range`: the agents out flagged and counted); every ``T`` ticks
:meth:`NeuralPass.gather` copies the windows' ``T`` steps into the history ring's rows, a row a
call (streaming stores: the ring is not read soon; ``observe`` can also copy the block to a
ring's row itself). After it, :meth:`NeuralPass.argmax` writes each agent's action, numpy's
argmax of its logits (the first of equal values; the first NaN of a row that has one). numpy
does the same in four to six calls (the strided write into the window, the ring's copy, two
comparisons, an ``or`` and a count, the argmax), each a microsecond or more of its own on a 40
us model call (``benchmarks/notes/neural-and-converter.md``, issue 56); here each is a loop in
C (``edge_agent/aif/kernels/native/neural_pass.c``).

The functions are in the compiled tick's library (:mod:`edge_agent.aif.kernels.native`, built by
``setup.py`` from ``recipe.py``'s units; loaded once its layout is checked). Plain arguments: the
caller (:class:`~edge_agent.neural.agents.NeuralAgentGroup`) passes addresses of arrays it has
checked (C-contiguous, float32, the shapes above), made once per batch size, and the
observations' (an array it checked this tick). :func:`unavailable` says why there is no pass
(the package installed without a C compiler, a library from other sources or older ones, or
``EDGE_AGENT_NATIVE_TICK=0`` in the environment, read when a group is made): the group then does
the same with numpy, :func:`observe_numpy` and :func:`argmax_numpy`, the twins the tests compare
the pass with (equal results: the values are copied and compared, nothing is computed).
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif.kernels.native import binding
from edge_agent.core.native_pass import library_refusal

__all__ = ["SYMBOLS", "NeuralPass", "argmax_numpy", "observe_numpy", "unavailable"]

#: The library's functions the pass calls (``neural_pass.h``).
SYMBOLS = ("edge_neural_observe", "edge_neural_gather", "edge_neural_argmax")

_p = ctypes.c_void_p
_i64 = ctypes.c_int64


def unavailable(library: ctypes.CDLL | None = None) -> str | None:
    """Why a group made now would do its work around the run with numpy (None: it would use
    the pass; ``library``: that library instead of the package's)."""
    return library_refusal(SYMBOLS, library)


class NeuralPass:
    """The two calls, typed once (``library``: default the package's; :func:`unavailable`
    must have said None for it)."""

    def __init__(self, library: ctypes.CDLL | None = None) -> None:
        lib = library or binding.load()
        observe = lib.edge_neural_observe
        observe.argtypes = [_p, _i64, _i64, _p, _i64, _p, _p, _p, _p]
        observe.restype = _i64
        gather = lib.edge_neural_gather
        gather.argtypes = [_p, _i64, _i64, _i64, _p]
        gather.restype = None
        argmax = lib.edge_neural_argmax
        argmax.argtypes = [_p, _i64, _i64, _p]
        argmax.restype = None
        #: ``observe(obs, n, f, newest, stride, ring, low, high, rows) -> agents out``:
        #: addresses (``ring`` None: no ring row this tick; ``low`` None: no range check, and
        #: ``rows`` is not written), the count of agents out (0 unchecked).
        self.observe: Any = observe
        #: ``gather(step, n, f, stride, row)``: one step of every agent's window (a row every
        #: ``stride`` values from ``step``) into the ring's ``(n, f)`` row at ``row``.
        self.gather: Any = gather
        #: ``argmax(logits, n, a, actions)``: addresses of ``(n, a)`` float32 and ``(n,)``
        #: int64.
        self.argmax: Any = argmax


def observe_numpy(
    obs: NDArray[np.float32],
    newest: np.ndarray,
    ring: np.ndarray | None,
    *,
    low: np.ndarray | None,
    high: np.ndarray,
    rows: NDArray[np.bool_],
) -> int:
    """What :meth:`NeuralPass.observe` does, with numpy: ``obs`` ``(N, F)`` into ``newest``
    ``(N, F)`` (a strided view of the window's newest step) and ``ring`` ``(N, F)`` (None:
    not this tick); with ``low`` ``(F,)`` (None: unchecked) and ``high``, ``rows`` ``(N,)``
    set to whether each agent has a value outside them, and their count returned."""
    np.copyto(newest, obs)
    if ring is not None:
        np.copyto(ring, obs)
    if low is None:
        return 0
    out = (obs < low) | (obs > high)
    np.logical_or.reduce(out, axis=1, out=rows)
    return int(np.count_nonzero(rows))


def argmax_numpy(logits: NDArray[np.float32], actions: NDArray[np.int64]) -> None:
    """What :meth:`NeuralPass.argmax` does: numpy's argmax of each row into ``actions``."""
    logits.argmax(axis=1, out=actions)

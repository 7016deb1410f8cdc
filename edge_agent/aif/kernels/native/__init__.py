"""The learning tick compiled: one pass over the agents per tick (``tick.c``), loaded with
:mod:`ctypes` from the library the wheel builds (``_tick``, see ``setup.py``).

:class:`NativeTick` holds what a model gives the pass once (the tables nobody learns, the
transitions as their non-zero entries, ``D``, ``ln C``, ``ln E``, the one-step policies and the
joint-outcome entries the information gain reads); the arrays the pass reads and writes (each
agent's learned tables and counts, the masks and experience of the counts, the agents' state)
belong to their owners and are bound on each call (:meth:`NativeTick.bind_learning`,
:meth:`NativeTick.step`). The pass does pymdp 0.0.7.1's maths for agents that learn the counts
of one or more likelihoods (``pA``), the tables following the counts every tick: the prior,
the fixed-point inference with each agent's own stop, the update of the counts (each agent its
own, or one set all teach), the tables normalised, utility, state information gain, ``q_pi``
and the first maximum of each factor's action marginal (``tick.c`` says how, and what it
leaves out of the arithmetic: nothing above rounding).

:func:`load` finds the library; a machine where the package was installed without a C
compiler has none (:func:`unavailable` says why), and its groups step with numpy.
"""

from __future__ import annotations

import ctypes
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.aif import per_agent
from edge_agent.aif.constants import EPS

__all__ = ["LIMITS", "NativeTick", "library_path", "load", "unavailable"]

#: tick.c's fixed limits (its stack arrays): a model above one steps with numpy.
LIMITS = {"factors": 4, "joint": 128, "modalities": 8, "policies": 64, "controls": 16}

_p = ctypes.c_void_p
_i64 = ctypes.c_int64


class _SparseB(ctypes.Structure):
    _fields_ = [(name, _p) for name in ("start", "row", "col", "value")]


class _Model(ctypes.Structure):
    _fields_ = [(name, _i64) for name in (
        "n", "factors", "modalities", "policies", "joint", "num_iter", "use_utility",
        "use_info_gain")] + [
        ("dF_tol", ctypes.c_double), ("gamma", ctypes.c_double), ("lr", ctypes.c_double)] + [
        (name, _p) for name in (
            "num_states", "num_controls", "num_obs", "state_index", "A", "A_agent_stride", "pA",
            "pA_mask", "experience", "B", "D", "lnC", "utility_shared", "lnE", "policies_first")
    ] + [("outcomes", _i64), ("entries", _i64)] + [
        (name, _p) for name in ("outcome_start", "entry_state", "entry_shared", "entry_index",
                                "scratch")] + [("shared_counts", _i64), ("learn", _i64)]


class _State(ctypes.Structure):
    _fields_ = [(name, _p) for name in ("obs", "start", "qs", "prior", "p_obs", "action",
                                        "has_action", "G", "q_pi", "next_prior")]


_LIBRARY: ctypes.CDLL | None = None


def library_path() -> Path | None:
    """The library the package was built with (None: built without a C compiler)."""
    spec = importlib.util.find_spec(f"{__name__}._tick")
    return None if spec is None or spec.origin is None else Path(spec.origin)


def unavailable() -> str | None:
    """Why there is no compiled tick here (None: there is one)."""
    if library_path() is None:
        return ("edge-agent was installed without its compiled tick (no C compiler then): "
                "reinstall it with gcc present (apt-get install gcc)")
    return None


def load(path: Path | None = None) -> ctypes.CDLL:
    """The library's functions, typed (``path``: another build of ``tick.c``, e.g. its
    baseline-only version; default: the package's, loaded once)."""
    global _LIBRARY  # noqa: PLW0603 - one handle per process, as ctypes keeps it anyway
    if path is None and _LIBRARY is not None:
        return _LIBRARY
    where = path or library_path()
    if where is None:
        raise RuntimeError(unavailable())
    lib = ctypes.CDLL(str(where))
    lib.edge_tick_scratch_doubles.argtypes = [ctypes.POINTER(_Model)]
    lib.edge_tick_scratch_doubles.restype = _i64
    lib.edge_tick.argtypes = [ctypes.POINTER(_Model), ctypes.POINTER(_State)]
    lib.edge_tick.restype = None
    if path is None:
        _LIBRARY = lib
    return lib


def _addr(a: np.ndarray, dtype: Any = np.float64) -> int:
    if not (a.flags.c_contiguous and a.dtype == dtype):
        raise ValueError(f"the compiled tick takes C-contiguous {np.dtype(dtype)} arrays, "
                         f"got {a.dtype} {'contiguous' if a.flags.c_contiguous else 'strided'}")
    return int(a.ctypes.data)


def too_large(num_states: Sequence[int], num_controls: Sequence[int], num_modalities: int,
              num_policies: int) -> str | None:
    """Which of :data:`LIMITS` a model is above (None: none)."""
    sizes = {"factors": len(num_states), "joint": int(np.prod(num_states)),
             "modalities": num_modalities, "policies": num_policies,
             "controls": max(num_controls)}
    for name, value in sizes.items():
        if value > LIMITS[name]:
            return f"{name} {value} above the compiled tick's {LIMITS[name]}"
    return None


class NativeTick:
    """The compiled tick of ``n`` agents of the model ``A``, ``B``, ``D`` (float64 lists, as
    pymdp takes them) with log preferences ``lnC`` (``ln softmax(C) + eps``) and policy prior
    ``lnE``, planning the one-step ``policies`` ``(P, 1, F)``, the modalities ``learned``
    (sorted) learning their counts: ``shared_counts`` False, each agent its own (tables and
    counts ``(N, O_m, S)``), True, one set (``(O_m, S)``) every agent teaches; ``supports[m]``
    ``(O_m, S)``: where modality ``m``'s table can be non-zero (its counts' support, a learned
    one's). Sizes within :data:`LIMITS` (:func:`too_large`); ``library``: :func:`load`'s."""

    def __init__(
        self, A: Sequence[np.ndarray], B: Sequence[np.ndarray], D: Sequence[np.ndarray], *,
        lnC: Sequence[np.ndarray], lnE: np.ndarray, policies: np.ndarray,
        learned: Sequence[int], supports: Sequence[np.ndarray], n: int, gamma: float,
        num_iter: int, dF_tol: float, lr: float, use_utility: bool, use_info_gain: bool,
        shared_counts: bool, library: ctypes.CDLL | None = None,
    ) -> None:
        num_states = [b.shape[0] for b in B]
        num_controls = [b.shape[2] for b in B]
        S = int(np.prod(num_states))
        M = len(A)
        if policies.shape[1] != 1:
            raise ValueError("the compiled tick plans one-step policies")
        found = too_large(num_states, num_controls, M, len(policies))
        if found is not None:
            raise ValueError(found)
        self.n = n
        self.learned = tuple(learned)
        self.lnC = [np.ascontiguousarray(c, dtype=np.float64) for c in lnC]
        outcomes = per_agent.possible_outcomes(list(supports))
        # The joint-outcome entries that can be non-zero, the shared modalities' product on them
        # (per_agent.joint_layout, as the per-agent group plans with).
        layout = per_agent.joint_layout([a.reshape(1, a.shape[0], S) for a in A],
                                        list(supports), outcomes, self.learned)
        # Each factor's transitions as their non-zero entries, action by action.
        self._b_arrays = []
        for b in B:
            u, row, col = np.nonzero(np.asarray(b, dtype=np.float64).transpose(2, 0, 1))
            start = np.searchsorted(u, np.arange(b.shape[2] + 1)).astype(np.int64)
            self._b_arrays.append((start, row.astype(np.int64), col.astype(np.int64),
                                   np.ascontiguousarray(b.transpose(2, 0, 1)[u, row, col],
                                                        dtype=np.float64)))
        self._b = (_SparseB * len(B))(*(_SparseB(*(_addr(a, a.dtype) for a in arrays))
                                        for arrays in self._b_arrays))
        self.D = [np.ascontiguousarray(d, dtype=np.float64) for d in D]
        self.lnE = np.ascontiguousarray(lnE, dtype=np.float64)
        self.policies_first = np.ascontiguousarray(policies[:, 0, :], dtype=np.int64)
        self.state_index = np.ascontiguousarray(
            np.indices(num_states).reshape(len(num_states), S), dtype=np.int64)
        entry_outcome = layout.to_outcome.argmax(axis=1)  # sorted (np.nonzero's order)
        self.outcome_start = np.searchsorted(
            entry_outcome, np.arange(len(outcomes) + 1)).astype(np.int64)
        # The shared modalities' utility, once: sum_m ln C_m . A_m over those not learned.
        self.utility_shared = np.zeros(S)
        self._shared_A: list[np.ndarray | None] = [None] * M
        for m, a in enumerate(A):
            if m in self.learned:
                continue
            shared = np.ascontiguousarray(a.reshape(a.shape[0], S), dtype=np.float64)
            self._shared_A[m] = shared
            if use_utility:
                self.utility_shared += self.lnC[m] @ shared
        self.entry_state = np.ascontiguousarray(layout.state_of, dtype=np.int64)
        self.entry_shared = np.ascontiguousarray(layout.shared, dtype=np.float64)
        learned_index = dict(layout.learned)
        self.entry_index = [None if m not in learned_index else np.ascontiguousarray(
            learned_index[m], dtype=np.int64) for m in range(M)]
        self.num_states = np.array(num_states, dtype=np.int64)
        self.num_controls = np.array(num_controls, dtype=np.int64)
        self.num_obs = np.array([a.shape[0] for a in A], dtype=np.int64)
        self.stride = np.array([a.shape[0] * S if m in self.learned and not shared_counts
                                else 0 for m, a in enumerate(A)], dtype=np.int64)
        # The pointers bound per call (learned tables, counts, masks, experience; the state's
        # factors).
        self._ptr = {name: np.zeros(count, dtype=np.uintp) for name, count in (
            ("A", M), ("pA", M), ("mask", M), ("experience", M), ("qs", len(B)),
            ("prior", len(B)), ("next_prior", len(B)))}
        for m, table in enumerate(self._shared_A):
            if table is not None:
                self._ptr["A"][m] = _addr(table)
        fixed = {name: np.array([0 if a is None else _addr(a, a.dtype) for a in arrays],
                                dtype=np.uintp)
                 for name, arrays in (("D", self.D), ("lnC", self.lnC),
                                      ("entry_index", self.entry_index))}
        self._fixed = fixed
        self._model = _Model(
            n, len(B), M, len(policies), S, num_iter, int(use_utility), int(use_info_gain),
            dF_tol, gamma, lr,
            _addr(self.num_states, np.int64), _addr(self.num_controls, np.int64),
            _addr(self.num_obs, np.int64), _addr(self.state_index, np.int64),
            _addr(self._ptr["A"], np.uintp), _addr(self.stride, np.int64),
            _addr(self._ptr["pA"], np.uintp), _addr(self._ptr["mask"], np.uintp),
            _addr(self._ptr["experience"], np.uintp), ctypes.addressof(self._b),
            _addr(fixed["D"], np.uintp), _addr(fixed["lnC"], np.uintp),
            _addr(self.utility_shared), _addr(self.lnE), _addr(self.policies_first, np.int64),
            len(outcomes), len(self.entry_state), _addr(self.outcome_start, np.int64),
            _addr(self.entry_state, np.int64), _addr(self.entry_shared),
            _addr(fixed["entry_index"], np.uintp), 0, int(shared_counts), 1)
        lib = library or load()
        self._lib = lib
        self._scratch: np.ndarray | None = None  # sized once the learned tables are bound
        self._tick = lib.edge_tick
        self._state = _State()
        self._model_ref = ctypes.byref(self._model)
        self._state_ref = ctypes.byref(self._state)
        #: The arrays bound last (their pointers are in the model's and the state's arrays).
        self._bound_learning: tuple[np.ndarray, ...] = ()
        self._bound_state: tuple[np.ndarray | None, ...] = ()

    def bind_learning(
        self, tables: Sequence[np.ndarray], counts: Sequence[np.ndarray],
        masks: Sequence[np.ndarray], experience: Sequence[np.ndarray],
    ) -> None:
        """The learned modalities' tables and counts (``(N, O_m, ...)`` per agent, ``(O_m,
        ...)`` shared), the masks their updates land on and the experience they add to, in the
        order of ``learned``: float64 (the masks bool), C-contiguous; read and written by the
        next :meth:`step` (bind again when one of them is replaced)."""
        bound = (*tables, *counts, *masks, *experience)
        if len(bound) == len(self._bound_learning) and all(
            a is b for a, b in zip(bound, self._bound_learning, strict=True)
        ):
            return  # the same arrays as last time (a tick's case): their pointers are in
        self._bound_learning = bound
        for m, table, count, mask, seen in zip(self.learned, tables, counts, masks, experience,
                                               strict=True):
            self._ptr["A"][m] = _addr(table)
            self._ptr["pA"][m] = _addr(count)
            self._ptr["mask"][m] = _addr(mask, np.bool_)
            self._ptr["experience"][m] = _addr(seen)
        if self._scratch is None:  # the block's temporaries (the learned tables' lanes too)
            self._scratch = np.zeros(self._lib.edge_tick_scratch_doubles(self._model_ref))
            self._model.scratch = _addr(self._scratch)

    def step(
        self, obs: np.ndarray, qs: Sequence[np.ndarray], action: np.ndarray,
        has_action: np.ndarray, *, G: np.ndarray, q_pi: np.ndarray,
        prior: Sequence[np.ndarray] | None = None, p_obs: np.ndarray | None = None,
        start: np.ndarray | None = None, learn: bool = True,
        next_prior: Sequence[np.ndarray] | None = None,
    ) -> None:
        """One tick of the agents, in place (as many as ``obs`` has rows, the scratch is the
        model's): ``obs`` ``(N, M)`` int64 outcomes;
        ``qs[f]`` ``(N, S_f)`` the beliefs (the last tick's in, this tick's out); ``action``
        ``(N, F)`` int64 and ``has_action`` ``(N,)`` bool (the prior is ``B`` after an action,
        else ``D``; out: the actions); ``G``, ``q_pi`` ``(N, P)``; ``prior[f]`` the tick's
        prior, ``p_obs`` ``(N, M)`` each outcome's probability under it and the tables before
        the update (both written when given); ``start`` ``(N,)`` bool: the agents whose episode
        starts (their prior is ``D``); ``learn`` False: the counts stay (learning frozen);
        ``next_prior[f]`` ``(N, S_f)``: the next tick's prior, ``B`` of the action chosen times
        the posterior (written when given)."""
        if self._scratch is None:
            raise RuntimeError("bind_learning before the first step")
        self._model.learn = int(learn)
        self._model.n = self.n = len(obs)  # a shared group may have been resized
        self._state.obs = _addr(obs, np.int64)  # a new array most ticks
        bound = (*qs, *(prior or ()), p_obs, start, action, has_action, G, q_pi,
                 *(next_prior or ()))
        if len(bound) != len(self._bound_state) or any(
            a is not b for a, b in zip(bound, self._bound_state, strict=True)
        ):  # arrays not bound yet (a group's: the same every tick)
            self._bind_state(qs, action, has_action, G, q_pi, prior, p_obs, start, next_prior)
            self._bound_state = bound
        self._tick(self._model_ref, self._state_ref)

    def _bind_state(  # noqa: PLR0917 - step's arrays, once each
        self, qs: Sequence[np.ndarray], action: np.ndarray, has_action: np.ndarray,
        G: np.ndarray, q_pi: np.ndarray, prior: Sequence[np.ndarray] | None,
        p_obs: np.ndarray | None, start: np.ndarray | None,
        next_prior: Sequence[np.ndarray] | None,
    ) -> None:
        st = self._state
        st.qs = self._bind_factors("qs", qs)
        st.prior = self._bind_factors("prior", prior)
        st.next_prior = self._bind_factors("next_prior", next_prior)
        st.p_obs = None if p_obs is None else _addr(p_obs)
        st.start = None if start is None else _addr(start, np.bool_)
        st.action = _addr(action, np.int64)
        st.has_action = _addr(has_action, np.bool_)
        st.G = _addr(G)
        st.q_pi = _addr(q_pi)

    def _bind_factors(self, name: str, arrays: Sequence[np.ndarray] | None) -> int | None:
        """Each factor's array of ``arrays`` into the pointer array ``name``; its address
        (None for no arrays: the kernel writes none)."""
        if arrays is None:
            return None
        ptr = self._ptr[name]
        for f, a in enumerate(arrays):
            ptr[f] = _addr(a)
        return _addr(ptr, np.uintp)


def log_preferences(C: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``ln softmax(C_m) + eps`` of each modality: the utility's log preferences."""
    return [np.log(per_agent.softmax_rows(np.asarray(c, dtype=np.float64)[None])[0] + EPS)
            for c in C]

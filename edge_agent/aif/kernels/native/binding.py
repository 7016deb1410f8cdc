"""The compiled tick's binding: the library (``_tick``, :func:`load`) and its pass
(:class:`NativeTick`), with :mod:`ctypes`. Imported only where a kernel is built or the library
loaded: what needs neither (the limits, the sizing formula, the installed check) is the
package's (:mod:`edge_agent.aif.kernels.native`), so that a daemon whose groups step with numpy
holds none of this (docs/memory.md).

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

The library's contract is ``tick.h`` (its structs, limits and functions): the structs are
declared again here, field by field beside the header's lists, and :func:`load` compares them
with the layout the library reports (:func:`layout`: every struct's size, every field's offset,
size and kind, every limit) before anything is passed to it. A library that differs (built from
other sources, or a binding edited without its header) is refused, never called:
:func:`unavailable` says why, and the groups step with numpy. The model sizes the pass takes
(:func:`limits`) are the library's own, read from it, for the limits ``LIMITS`` names; the
package's library's are ``PACKAGE_LIMITS`` (tick.h's values: a package library that reports
others is refused). :func:`load` finds the library; a machine where the package was installed
without a C compiler has none (``not_installed``, :func:`unavailable` say so).
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.aif import joint_outcomes
from edge_agent.aif.constants import EPS
from edge_agent.aif.kernels import native  # read there: library_path, LNL_TABLE (one value)
from edge_agent.aif.kernels.fast_tables import likelihood_table
from edge_agent.aif.kernels.inference import softmax_rows
from edge_agent.aif.kernels.native import (
    LIMITS,
    PACKAGE_LIMITS,
    TransitionEntries,
    outcome_twins,
    policy_reach,
    too_large,
)

__all__ = ["NativeTick", "declared", "layout", "limits", "load", "log_preferences", "mismatch",
           "unavailable"]

_p = ctypes.c_void_p
_i64 = ctypes.c_int64
_f64 = ctypes.c_double


class _SparseB(ctypes.Structure):
    """tick.h's ``sparse_b`` (``TICK_SPARSE_B_FIELDS``)."""

    _fields_ = [
        ("start", _p),  # const int64_t *: (U + 1)
        ("row", _p),  # const int64_t *: (nnz)
        ("col", _p),  # const int64_t *: (nnz)
        ("value", _p),  # const double *: (nnz)
    ]


class _Model(ctypes.Structure):
    """tick.h's ``tick_model`` (``TICK_MODEL_FIELDS``)."""

    _fields_ = [
        ("n", _i64),  # int64_t
        ("factors", _i64),  # int64_t
        ("modalities", _i64),  # int64_t
        ("policies", _i64),  # int64_t
        ("joint", _i64),  # int64_t
        ("num_iter", _i64),  # int64_t
        ("use_utility", _i64),  # int64_t
        ("use_info_gain", _i64),  # int64_t
        ("dF_tol", _f64),  # double
        ("gamma", _f64),  # double
        ("lr", _f64),  # double
        ("num_states", _p),  # const int64_t *: (F)
        ("num_controls", _p),  # const int64_t *: (F)
        ("num_obs", _p),  # const int64_t *: (M)
        ("state_index", _p),  # const int64_t *: (F, S)
        ("A", _p),  # double *const *: (M)
        ("A_agent_stride", _p),  # const int64_t *: (M)
        ("pA", _p),  # double *const *: (M)
        ("pA_mask", _p),  # const uint8_t *const *: (M)
        ("experience", _p),  # double *const *: (M)
        ("B", _p),  # const sparse_b *: (F)
        ("D", _p),  # const double *const *: (F)
        ("lnC", _p),  # const double *const *: (M)
        ("utility_shared", _p),  # const double *: (S)
        ("lnE", _p),  # const double *: (P)
        ("policies_first", _p),  # const int64_t *: (P, F)
        ("outcomes", _i64),  # int64_t
        ("entries", _i64),  # int64_t
        ("entry_outcome", _p),  # const int64_t *: (E)
        ("entry_state", _p),  # const int64_t *: (E)
        ("state_start", _p),  # const int64_t *: (S + 1)
        ("state_entry", _p),  # const int64_t *: (E)
        ("reach_start", _p),  # const int64_t *: (P + 1)
        ("reach", _p),  # const int64_t *: each policy's outcomes
        ("entry_shared", _p),  # const double *: (E)
        ("entry_index", _p),  # const int64_t *const *: (M)
        ("scratch", _p),  # double *
        ("shared_counts", _i64),  # int64_t
        ("learn", _i64),  # int64_t
        ("state_f32", _i64),  # int64_t
        ("prior_given", _i64),  # int64_t
        ("lr_B", _f64),  # double
        ("B_values", _p),  # double *const *: (F)
        ("B_agent_stride", _p),  # const int64_t *: (F)
        ("pB", _p),  # double *const *: (F)
        ("pB_mask", _p),  # const uint8_t *const *: (F)
        ("B_experience", _p),  # double *const *: (F)
        ("B_flat", _p),  # const int64_t *const *: (F)
        ("normalise_all", _i64),  # int64_t
        ("lnL", _p),  # const double *: (prod_m O_m, S)
        ("lnQ1", _p),  # const double *: (prod_m O_m, sum S_f)
        ("quantise", _i64),  # int64_t
        ("A_float", _p),  # double *const *: (M) or NULL
        ("policy_len", _i64),  # int64_t: 2 two-step policies, else one-step
        ("first_joints", _i64),  # int64_t: J1
        ("first_policy", _p),  # const int64_t *: (J1)
        ("policy_first_joint", _p),  # const int64_t *: (P)
        ("second_start", _p),  # const int64_t *: (F + 1)
        ("second_parent", _p),  # const int64_t *: (nodes)
        ("second_action", _p),  # const int64_t *: (nodes)
        ("second_joints", _i64),  # int64_t: J2
        ("second_joint", _p),  # const int64_t *: (J2, F)
        ("policy_second_joint", _p),  # const int64_t *: (P)
        ("reach2_start", _p),  # const int64_t *: (J2 + 1)
        ("reach2", _p),  # const int64_t *: or NULL
        ("outcome_twin", _p),  # const int64_t *: (K) or NULL
        ("shared_tables", _i64),  # int64_t: 1 the pass makes lnL, lnQ1 once a tick (shared A)
        ("A_kept", _p),  # const int64_t *const *: (M) or NULL: tables on their support
    ]


class _State(ctypes.Structure):
    """tick.h's ``tick_state`` (``TICK_STATE_FIELDS``)."""

    _fields_ = [
        ("obs", _p),  # const int64_t *: (N, M)
        ("start", _p),  # const uint8_t *: (N)
        ("qs", _p),  # void *const *: (F)
        ("prior", _p),  # void *const *: (F)
        ("p_obs", _p),  # double *: (N, M)
        ("action", _p),  # int64_t *: (N, F)
        ("has_action", _p),  # uint8_t *: (N)
        ("G", _p),  # void *: (N, P)
        ("q_pi", _p),  # void *: (N, P)
        ("next_prior", _p),  # void *const *: (F)
        ("qs_prev", _p),  # void *const *: (F)
        ("measure_rows", _p),  # const int64_t *: (K)
        ("measure_count", _i64),  # int64_t: K
        ("measures", _p),  # double *: (4, K)
        ("measure_entropy", _p),  # double *: (K) or NULL
        ("measure_lnC", _p),  # const double *: (sum O_m) or NULL
        ("measure_preference", _p),  # double *: (K)
        ("measure_sums", _p),  # double *: (2, W) or NULL
    ]


class _LayoutEntry(ctypes.Structure):
    """tick.h's ``tick_layout_entry``: a row of the table the library reports."""

    _fields_ = [("name", ctypes.c_char_p), ("kind", _i64), ("value", _i64), ("size", _i64)]


#: The structs the binding passes, by tick.h's names.
_STRUCTS: dict[str, type[ctypes.Structure]] = {
    "sparse_b": _SparseB, "tick_model": _Model, "tick_state": _State}
#: A field's kind in the layout table, by its ctypes type.
_KINDS: dict[Any, str] = {_i64: "i", _f64: "f", _p: "p"}
_KIND_NAMES = {"i": "int64_t", "f": "double", "p": "a pointer"}

#: The agents a shared table serves (any number).
_ANY = 1 << 62

_LIBRARY: ctypes.CDLL | None = None
_REFUSED: str | None = None  # why the package's library was refused (None: not refused)


def declared() -> dict[str, tuple[str, int, int]]:
    """The layout the binding passes: ``{name: (kind, value, size)}`` as :func:`layout` reports
    it (the structs' sizes and their fields' offsets; the limits, whose values are the
    library's, as ``("l", 0, 0)``)."""
    rows: dict[str, tuple[str, int, int]] = {}
    for struct_name, struct in _STRUCTS.items():
        rows[struct_name] = ("s", ctypes.sizeof(struct), ctypes.sizeof(struct))
        for field, ctype, *_ in struct._fields_:
            where = getattr(struct, field)
            rows[f"{struct_name}.{field}"] = (_KINDS[ctype], where.offset, where.size)
    rows.update((name, ("l", 0, 0)) for name in LIMITS.values())
    return rows


def layout(lib: ctypes.CDLL) -> dict[str, tuple[str, int, int]]:
    """The layout ``lib`` reports (``edge_tick_layout``): ``{name: (kind, value, size)}``, as
    :func:`declared`'s (a limit with its value)."""
    entries = ctypes.POINTER(_LayoutEntry)()
    count = lib.edge_tick_layout(ctypes.byref(entries))
    rows = {}
    for i in range(count):
        entry = entries[i]
        rows[(entry.name or b"").decode()] = (chr(entry.kind), entry.value, entry.size)
    return rows


def mismatch(reported: dict[str, tuple[str, int, int]]) -> str | None:
    """How a library's layout (``reported``, :func:`layout`'s) differs from the binding's
    (:func:`declared`), the first few differences (None: it does not)."""
    ours = declared()
    problems = [f"{name} only in the library" for name in reported if name not in ours]
    problems += [f"{name} not in the library" for name in ours if name not in reported]
    for name, row in ours.items():
        theirs = reported.get(name)
        if theirs is not None and row[0] != "l" and theirs != row:
            problems.append(f"{name}: {_described(theirs)} in the library, {_described(row)} "
                            "here")
    if not problems:
        return None
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more


def _described(row: tuple[str, int, int]) -> str:
    """A layout row in words: ``280 bytes`` (a struct), ``int64_t at 40 (8 bytes)`` (a
    field)."""
    kind, value, size = row
    if kind == "s":
        return f"{value} bytes"
    return f"{_KIND_NAMES.get(kind, repr(kind))} at {value} ({size} bytes)"


def unavailable() -> str | None:
    """Why there is no compiled tick here (None: there is one, its layout the binding's; the
    package's library is loaded to know it)."""
    missing = native.not_installed()
    if missing is not None:
        return missing
    if _LIBRARY is None and _REFUSED is None:
        with contextlib.suppress(RuntimeError):  # _REFUSED says why
            load()
    return _REFUSED


def load(path: Path | None = None) -> ctypes.CDLL:
    """The library's functions, typed, once its layout is checked (``path``: another build of
    the sources, e.g. the tests' baseline or sanitized one; default: the package's, loaded
    once). A library that cannot be loaded or whose layout is not the binding's raises
    :class:`RuntimeError` saying why (the package's: :func:`unavailable` says it after)."""
    global _LIBRARY, _REFUSED  # noqa: PLW0603 - one handle per process, as ctypes keeps it anyway
    if path is None and _LIBRARY is not None:
        return _LIBRARY
    if path is None and _REFUSED is not None:
        raise RuntimeError(_REFUSED)
    where = path or native.library_path()
    if where is None:
        raise RuntimeError(unavailable())
    try:
        lib = _checked(where)
        if path is None:
            _check_limits(lib, where)
    except RuntimeError as refused:
        if path is None:
            _REFUSED = str(refused)
        raise
    if path is None:
        _LIBRARY = lib
    return lib


def _checked(where: Path) -> ctypes.CDLL:
    """The library at ``where``, typed, its layout the binding's (else RuntimeError)."""
    rebuild = ("reinstall edge-agent so that the library is built from its own sources: "
               "scripts/bootstrap.sh in a checkout, else pip install --force-reinstall "
               "edge-agent-runtime")
    try:
        lib = ctypes.CDLL(str(where))
    except OSError as err:
        raise RuntimeError(f"the compiled tick {where.name} cannot be loaded ({err}): "
                           f"{rebuild}") from None
    if not hasattr(lib, "edge_tick_layout"):
        raise RuntimeError(f"the compiled tick {where.name} reports no layout (built from "
                           f"older sources): {rebuild}")
    lib.edge_tick_layout.argtypes = [ctypes.POINTER(ctypes.POINTER(_LayoutEntry))]
    lib.edge_tick_layout.restype = _i64
    differs = mismatch(layout(lib))
    missing = [name for name in ("edge_tick", "edge_tick_scratch_doubles",
                                 "edge_tick_first_step") if not hasattr(lib, name)]
    if differs is None and missing:
        differs = f"{', '.join(missing)} not exported"
    if differs is not None:
        raise RuntimeError(f"the compiled tick {where.name} does not match its binding "
                           f"({differs}): {rebuild}")
    lib.edge_tick_scratch_doubles.argtypes = [ctypes.POINTER(_Model)]
    lib.edge_tick_scratch_doubles.restype = _i64
    lib.edge_tick.argtypes = [ctypes.POINTER(_Model), ctypes.POINTER(_State)]
    lib.edge_tick.restype = None
    lib.edge_tick_first_step.argtypes = [ctypes.POINTER(_Model), ctypes.c_void_p]
    lib.edge_tick_first_step.restype = None
    return lib


def _check_limits(lib: ctypes.CDLL, where: Path) -> None:
    """The package's library's limits are :data:`PACKAGE_LIMITS` (else RuntimeError)."""
    reported = limits(lib)
    if reported != PACKAGE_LIMITS:
        raise RuntimeError(f"the compiled tick {where.name} reports the limits {reported}, the "
                           f"binding's are {PACKAGE_LIMITS}: reinstall edge-agent so that the "
                           "library is built from its own sources")


def limits(library: ctypes.CDLL | None = None) -> dict[str, int]:
    """The model sizes the pass takes, by :data:`LIMITS`' names: the values ``library``
    reports for tick.h's limits (default: the package's, :data:`PACKAGE_LIMITS`, its library
    not loaded)."""
    if library is None:
        return dict(PACKAGE_LIMITS)
    reported = layout(library)
    return {size: reported[limit][1] for size, limit in LIMITS.items()}


def _addr(a: np.ndarray, dtype: Any = np.float64, size: int | None = None) -> int:
    """``a``'s address, once it is what the pass reads: C-contiguous ``dtype``, ``size``
    values (when given: the pass reads and writes that many)."""
    if not (a.flags.c_contiguous and a.dtype == dtype):
        raise ValueError(f"the compiled tick takes C-contiguous {np.dtype(dtype)} arrays, "
                         f"got {a.dtype} {'contiguous' if a.flags.c_contiguous else 'strided'}")
    if size is not None and a.size != size:
        raise ValueError(f"the compiled tick takes {size} values here, got {a.shape}")
    return int(a.ctypes.data)


def _kept_tables(
    A: Sequence[np.ndarray], S: int, learned: Sequence[int],
    cells: Mapping[int, np.ndarray] | None, shared_counts: bool,
) -> tuple[list[np.ndarray | None], np.ndarray]:
    """Each modality's ``A_kept`` (:func:`_kept`; None: kept whole, or not each agent's) and
    its values an agent (``A_agent_stride``: 0 for a table every agent shares)."""
    kept = [None if cells is None or m not in cells or m not in learned or shared_counts
            else _kept(np.asarray(cells[m]).reshape(a.shape[0], S)) for m, a in enumerate(A)]
    stride = np.array([0 if m not in learned or shared_counts
                       else a.shape[0] * S if k is None else len(k) - a.shape[0] - 1
                       for m, (a, k) in enumerate(zip(A, kept, strict=True))], dtype=np.int64)
    return kept, stride


def _kept(cell: np.ndarray) -> np.ndarray:
    """tick.h's ``A_kept`` of a table kept on its support, from ``cell`` ``(O, S)`` (each
    cell's index into an agent's values, in row-major order; -1 off the support): the ``O + 1``
    starts of each row's values, then each value's cell ``o S + s``."""
    flat = cell.reshape(-1)
    on = np.flatnonzero(flat >= 0)
    if not np.array_equal(flat[on], np.arange(len(on))):
        raise ValueError("a table kept on its support holds its values in row-major order")
    starts = np.searchsorted(on // cell.shape[1], np.arange(cell.shape[0] + 1))
    return np.ascontiguousarray(np.concatenate([starts, on]), dtype=np.int64)


def _without_pads(
    b_arrays: Sequence[tuple[np.ndarray, ...]], flats: Sequence[np.ndarray | None]
) -> list[tuple[np.ndarray, ...]]:
    """Each factor's ``sparse_b`` arrays without a learned factor's pads (``flats[f]``: its
    entries' indices into the counts, -1 a pad; None: no pads), whose rows no action reaches
    (what :func:`~edge_agent.aif.kernels.native.policy_reach` reads: the support's image)."""
    out: list[tuple[np.ndarray, ...]] = []
    for arrays, flat in zip(b_arrays, flats, strict=True):
        if flat is None or bool(np.all(flat >= 0)):
            out.append(arrays)
            continue
        start, row, col, value = arrays
        keep = flat >= 0
        action = native.entry_actions(start)[keep]
        out.append((np.searchsorted(action, np.arange(len(start))).astype(np.int64),
                    row[keep], col[keep], value[keep]))
    return out


def _factor_entries(
    B: Sequence[np.ndarray], learned_B: Mapping[int, TransitionEntries]
) -> list[tuple[np.ndarray, ...]]:
    """Each factor's ``sparse_b`` arrays (start, row, col, value): its non-zero entries action
    by action, or a learned factor's entries with a placeholder for its values (bound per
    call)."""
    out: list[tuple[np.ndarray, ...]] = []
    for f, b in enumerate(B):
        entries = learned_B.get(f)
        if entries is not None:
            if len(entries.start) != b.shape[2] + 1:
                raise ValueError(f"factor {f}'s entries are for {len(entries.start) - 1} "
                                 f"actions, its B has {b.shape[2]}")
            out.append((*(np.ascontiguousarray(a, dtype=np.int64) for a in entries[:3]),
                        np.zeros(max(entries.size, 1))))
            continue
        u, row, col = np.nonzero(np.asarray(b, dtype=np.float64).transpose(2, 0, 1))
        start = np.searchsorted(u, np.arange(b.shape[2] + 1)).astype(np.int64)
        out.append((start, row.astype(np.int64), col.astype(np.int64),
                    np.ascontiguousarray(b.transpose(2, 0, 1)[u, row, col], dtype=np.float64)))
    return out


def _check_steps(policies: np.ndarray, learned: Sequence[int],
                 learned_B: Mapping[int, TransitionEntries] | None) -> None:
    """``policies`` ``(P, L, F)`` are what the pass plans: one step, or two for a pass that
    learns nothing (else ValueError)."""
    if policies.shape[1] not in (1, 2):
        raise ValueError("the compiled tick plans policies of one or two steps")
    if policies.shape[1] == 2 and (learned or learned_B):
        raise ValueError("the compiled tick plans two-step policies for a pass that learns "
                         "nothing")


class NativeTick:
    """The compiled tick of ``n`` agents of the model ``A``, ``B``, ``D`` (float64 lists, as
    pymdp takes them; an int8 group's decoded from its codes) with log preferences ``lnC`` (``ln
    softmax(C) + eps``) and policy prior ``lnE``, planning the one-step ``policies`` ``(P, 1,
    F)``, the modalities ``learned`` (sorted) learning their counts and the factors
    ``learned_B`` (each with its entries, :class:`TransitionEntries`) theirs, at ``lr`` and
    ``lr_B``: ``shared_counts`` False, each agent its own (tables and counts ``(N, ...)``), True,
    one set every agent teaches; ``supports[m]`` ``(O_m, S)``: where modality ``m``'s table can
    be non-zero (its counts' support, a learned one's). Nothing learned: the agents infer, plan
    and act (a frozen group). ``state_dtype``: the agents' beliefs, priors, ``G`` and ``q_pi``
    (float64, or an int8 group's float32: read and written as they are). ``quantise`` (shared
    counts, an int8 group): each learned column of ``A`` and ``B`` that follows its counts is
    then its log-u8 codes decoded, as the group's numpy twin keeps it (tick.h; the float tables
    its surprise reads: :meth:`bind_float`). ``policies`` ``(P, 2, F)``: two-step policies, a
    pass that learns nothing (the work they share once: ``native.two_steps``). ``cells[m]``
    (each agent its own counts): learned modality ``m``'s tables kept on their support, each
    agent's ``K`` values (``(N, K)``, bound with :meth:`bind_learning`), ``(O_m, S)`` each cell's
    index into them, -1 off the support (0 there, always). Sizes within the
    library's limits (:func:`limits`, ``too_large``); ``library``: :func:`load`'s (default: the
    package's)."""

    def __init__(
        self, A: Sequence[np.ndarray], B: Sequence[np.ndarray], D: Sequence[np.ndarray], *,
        lnC: Sequence[np.ndarray], lnE: np.ndarray, policies: np.ndarray,
        learned: Sequence[int], supports: Sequence[np.ndarray], n: int, gamma: float,
        num_iter: int, dF_tol: float, lr: float, use_utility: bool, use_info_gain: bool,
        shared_counts: bool, library: ctypes.CDLL | None = None,
        learned_B: Mapping[int, TransitionEntries] | None = None, lr_B: float = 0.0,
        state_dtype: type[np.floating] = np.float64, quantise: bool = False,
        cells: Mapping[int, np.ndarray] | None = None,
    ) -> None:
        num_states = [b.shape[0] for b in B]
        num_controls = [b.shape[2] for b in B]
        S = int(np.prod(num_states))
        M, F = len(A), len(B)
        _check_steps(policies, learned, learned_B)
        lib = library or load()
        found = too_large(num_states, num_controls, M, len(policies), limits(lib))
        if found is not None:
            raise ValueError(found)
        self.n = n
        self.learned = tuple(learned)
        self.learned_B = dict(sorted((learned_B or {}).items()))
        self.state_dtype = np.dtype(state_dtype)
        self.lnC = [np.ascontiguousarray(c, dtype=np.float64) for c in lnC]
        outcomes = joint_outcomes.possible_outcomes(list(supports))
        # The joint-outcome entries that can be non-zero, the shared modalities' product on them
        # (joint_outcomes.joint_layout, as the per-agent group plans with).
        layout = joint_outcomes.joint_layout([a.reshape(1, a.shape[0], S) for a in A],
                                        list(supports), outcomes, self.learned)
        # Each factor's transitions as their non-zero entries, action by action (a learned
        # factor's: its entries, the values bound with bind_transitions).
        self._b_arrays = _factor_entries(B, self.learned_B)
        self._b = (_SparseB * F)(*(_SparseB(*(_addr(a, a.dtype) for a in arrays))
                                   for arrays in self._b_arrays))
        self.D = [np.ascontiguousarray(d, dtype=np.float64) for d in D]
        self.lnE = np.ascontiguousarray(lnE, dtype=np.float64)
        self.policies_first = np.ascontiguousarray(policies[:, 0, :], dtype=np.int64)
        self.state_index = np.ascontiguousarray(
            np.indices(num_states).reshape(len(num_states), S), dtype=np.int64)
        self.entry_outcome = np.ascontiguousarray(layout.outcome_of, dtype=np.int64)
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
        self.state_entry = np.argsort(self.entry_state, kind="stable").astype(np.int64)
        self.state_start = np.searchsorted(self.entry_state[self.state_entry],
                                           np.arange(S + 1)).astype(np.int64)
        self.entry_shared = np.ascontiguousarray(layout.shared, dtype=np.float64)
        self.reach_start, self.reach = policy_reach(_without_pads(self._b_arrays, self._flats()),
                                              self.policies_first,
                                              self.state_index, self.entry_state,
                                              self.entry_outcome)
        learned_index = dict(layout.learned)
        self.entry_index = [None if m not in learned_index else np.ascontiguousarray(
            learned_index[m], dtype=np.int64) for m in range(M)]
        self.num_states, self.num_controls = (np.array(num_states, dtype=np.int64),
                                              np.array(num_controls, dtype=np.int64))
        self.num_obs = np.array([a.shape[0] for a in A], dtype=np.int64)
        # Each learned table's values an agent (none shared), and those each agent keeps on
        # their support: tick.h's A_kept (its rows' starts, each value's cell).
        self.kept, self.stride = _kept_tables(A, S, self.learned, cells, shared_counts)
        self.stride_B = np.array([self.learned_B[f].size if f in self.learned_B and
                                  not shared_counts else 0 for f in range(F)], dtype=np.int64)
        self._shared_counts = shared_counts
        # The pointers bound per call (learned tables, counts, masks, experience; the state's
        # factors).
        self._ptr = {name: np.zeros(count, dtype=np.uintp) for name, count in (
            ("A", M), ("pA", M), ("mask", M), ("experience", M), ("qs", F), ("prior", F),
            ("next_prior", F), ("qs_prev", F), ("B_values", F), ("pB", F), ("pB_mask", F),
            ("B_experience", F), ("A_float", M))}
        for m, table in enumerate(self._shared_A):
            if table is not None:
                self._ptr["A"][m] = _addr(table)
        self._flat = [np.ascontiguousarray(self.learned_B[f].flat, dtype=np.int64)
                      if f in self.learned_B else None for f in range(F)]
        fixed = {name: np.array([0 if a is None else _addr(a, a.dtype) for a in arrays],
                                dtype=np.uintp)
                 for name, arrays in (("D", self.D), ("lnC", self.lnC),
                                      ("entry_index", self.entry_index), ("B_flat", self._flat),
                                      ("A_kept", self.kept))}
        self._fixed = fixed
        # A model nobody learns: the log likelihood of every joint outcome once (numpy's
        # table, fast_tables.likelihood_table), a row gathered per agent and tick in place of
        # the modalities' product and its S logs (T-maze: 24 x 8 values).
        self.lnL: np.ndarray | None = None
        joint_obs = int(np.prod([a.shape[0] for a in A]))
        if not self.learned and joint_obs * S <= native.LNL_TABLE:
            self.lnL = np.ascontiguousarray(likelihood_table(
                tuple(a.reshape(a.shape[0], S) for a in self._shared_A if a is not None),
                np.dtype(np.float64)))
        self._model = _Model(
            n, F, M, len(policies), S, num_iter, int(use_utility), int(use_info_gain),
            dF_tol, gamma, lr,
            _addr(self.num_states, np.int64), _addr(self.num_controls, np.int64),
            _addr(self.num_obs, np.int64), _addr(self.state_index, np.int64),
            _addr(self._ptr["A"], np.uintp), _addr(self.stride, np.int64),
            _addr(self._ptr["pA"], np.uintp), _addr(self._ptr["mask"], np.uintp),
            _addr(self._ptr["experience"], np.uintp), ctypes.addressof(self._b),
            _addr(fixed["D"], np.uintp), _addr(fixed["lnC"], np.uintp),
            _addr(self.utility_shared), _addr(self.lnE), _addr(self.policies_first, np.int64),
            len(outcomes), len(self.entry_state), _addr(self.entry_outcome, np.int64),
            _addr(self.entry_state, np.int64), _addr(self.state_start, np.int64),
            _addr(self.state_entry, np.int64), _addr(self.reach_start, np.int64),
            None if self.reach_start[-1] == len(policies) * len(outcomes) else
            _addr(self.reach, np.int64), _addr(self.entry_shared),
            _addr(fixed["entry_index"], np.uintp), 0, int(shared_counts), 1,
            int(self.state_dtype == np.float32), 0, lr_B,
            _addr(self._ptr["B_values"], np.uintp), _addr(self.stride_B, np.int64),
            _addr(self._ptr["pB"], np.uintp), _addr(self._ptr["pB_mask"], np.uintp),
            _addr(self._ptr["B_experience"], np.uintp), _addr(fixed["B_flat"], np.uintp), 0,
            None if self.lnL is None else _addr(self.lnL), None, int(quantise), None,
            # shared counts learning A: the pass makes lnL and lnQ1 of the tables every agent
            # infers with once a tick (in its scratch), a row gathered per agent in place of
            # the modalities' rows, their product and its S logs (the same bits: tick.c's
            # shared_likelihood)
            shared_tables=int(bool(shared_counts) and bool(self.learned)
                              and joint_obs * S <= native.LNL_TABLE),
            A_kept=_addr(fixed["A_kept"], np.uintp) if any(
                k is not None for k in self.kept) else None)
        self.outcome_twin = self._twins(len(outcomes))
        self._plan_two_steps(B, policies, len(outcomes))
        if self.state_dtype not in (np.float32, np.float64):
            raise ValueError(f"the compiled tick's state is float32 or float64, not "
                             f"{self.state_dtype}")
        self._start(lib)
        self.lnQ1 = self._first_steps()

    def _plan_two_steps(self, B: Sequence[np.ndarray], policies: np.ndarray,
                        outcomes: int) -> None:
        """Two-step policies: the two-step fields of the model (``native.two_steps``: the
        first steps, each factor's second-step nodes, the joint nodes; each second-step joint
        node's outcomes, as ``reach`` of its second actions). One-step: none."""
        self.two: native.TwoSteps | None = None
        self._two_arrays: tuple[np.ndarray, ...] = ()
        if policies.shape[1] == 1:
            return
        two = native.two_steps(policies, [np.asarray(b, dtype=np.float64) for b in B])
        reach_start, reach = policy_reach(self._b_arrays, two.second_actions, self.state_index,
                                          self.entry_state, self.entry_outcome)
        self.two = two
        self._two_arrays = (*two, reach_start, reach)
        J2 = len(two.second_joint)
        model = self._model
        model.policy_len, model.first_joints, model.second_joints = 2, len(two.first_policy), J2
        (model.first_policy, model.policy_first_joint, model.second_start, model.second_parent,
         model.second_action, model.second_joint, model.policy_second_joint,
         model.reach2_start) = (_addr(a, np.int64) for a in self._two_arrays[:8])
        model.reach2 = None if reach_start[-1] == J2 * outcomes else _addr(reach, np.int64)

    def _twins(self, outcomes: int) -> np.ndarray | None:
        """The outcomes whose predicted probability is always an earlier one's (the pass sums
        and logs it once: :func:`~edge_agent.aif.kernels.native.outcome_twins`), bound."""
        twin = outcome_twins(self.entry_outcome, self.entry_state, self.state_entry,
                             entry_shared=self.entry_shared, entry_index=self.entry_index,
                             outcomes=outcomes)
        if twin is not None:
            self._model.outcome_twin = _addr(twin, np.int64)
        return twin

    def _flats(self) -> list[np.ndarray | None]:
        """Each factor's learned entries' indices into its counts (None: not learned)."""
        return [self.learned_B[f].flat if f in self.learned_B else None
                for f in range(len(self._b_arrays))]

    def _first_steps(self) -> np.ndarray | None:
        """With ``lnL`` and more than one factor, the mean-field iteration's first step of every
        joint outcome less the log prior (its beliefs start uniform: the step is the
        observation's), made once by the library (``edge_tick_first_step``: the pass's own sums
        in its order, bit for bit) and given to the pass (``tick_model.lnQ1``): a row gathered
        per agent and tick in place of the first step's joint, products and sums."""
        if self.lnL is None or len(self.num_states) < 2:
            return None
        table = np.zeros((self.lnL.shape[0], int(self.num_states.sum())))
        self._lib.edge_tick_first_step(self._model_ref, _addr(table))
        self._model.lnQ1 = _addr(table)
        return table

    def _start(self, lib: ctypes.CDLL) -> None:
        """The library's call, the state's struct and what is bound per call (nothing yet)."""
        self._lib = lib
        self._scratch: np.ndarray | None = None  # sized once the learned tables are bound
        self._tick = lib.edge_tick
        self._state = _State()
        self._model_ref = ctypes.byref(self._model)
        self._state_ref = ctypes.byref(self._state)
        #: The arrays bound last (their pointers are in the model's and the state's arrays).
        self._bound_learning: tuple[np.ndarray, ...] = ()
        self._bound_transitions: tuple[np.ndarray, ...] = ()
        #: Their ids (held there: no other array can have them), compared at each bind.
        self._learning_ids: tuple[int, ...] = ()
        self._transition_ids: tuple[int, ...] = ()
        self._bound_float: tuple[np.ndarray, ...] = ()  # kept alive while the pass reads them
        self._bound_state: tuple[np.ndarray | bool | None, ...] = ()
        self._bound_ids: tuple[int, ...] = ()
        self._has_prior = False
        #: The episode starts the runs read (held while they do; None: nobody's).
        self._starts: np.ndarray | None = None
        #: health's sampled agents and their measures' array while a run measures them
        self._measured: tuple[np.ndarray | None, ...] = ()
        self._measured_ids: tuple[int, ...] = ()
        self._obs = np.zeros((0, len(self.num_obs)), dtype=np.int64)
        #: The outcomes array the last run was given (held: no other array can be it) and
        #: whether the state reads it where it is (given twice in a row, C-contiguous int64)
        #: rather than the copy in :attr:`_obs`.
        self._given: np.ndarray | None = None
        self._reads_given = False
        #: The last run's agents and flags, as set in the model (set again when they change).
        self._flags: tuple[int, bool, bool, bool] = (-1, True, False, False)
        #: The agents the bound arrays hold (a step of more is refused: the pass would read
        #: and write past them).
        self._rows = 0
        self._learned_rows = _ANY  # shared tables: any number of agents
        self._learned_B_rows = _ANY
        self._modalities = len(self.num_obs)
        if not self.learned:  # the scratch's size is known now (no learned table's lanes)
            self._make_scratch()

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays the pass holds (the model's tables as it takes them, its
        scratch): the group's, whatever its agents (of a pass that learns nothing:
        ``frozen_nbytes``, its twin from the model alone: an array added here is counted
        there too)."""
        arrays = [*(a for arrays in self._b_arrays for a in arrays), *self.D, self.lnE,
                  self.policies_first, self.state_index, self.entry_outcome, self.state_start,
                  self.state_entry, self.reach_start, self.reach,
                  self.utility_shared, self.entry_state, self.entry_shared, *self.lnC,
                  *(a for a in self._shared_A if a is not None),
                  *(a for a in self.entry_index if a is not None),
                  *(a for a in self._flat if a is not None),
                  *(() if self.lnL is None else (self.lnL,)),
                  *(() if self.lnQ1 is None else (self.lnQ1,)), *self._two_arrays]
        scratch = 0 if self._scratch is None else self._scratch.nbytes
        return int(sum(a.nbytes for a in arrays)) + scratch

    def _make_scratch(self) -> None:
        # scratch_doubles is its twin (the bytes planned without the library)
        self._scratch = np.zeros(self._lib.edge_tick_scratch_doubles(self._model_ref))
        self._model.scratch = _addr(self._scratch)

    def bind_learning(
        self, tables: Sequence[np.ndarray], counts: Sequence[np.ndarray],
        masks: Sequence[np.ndarray], experience: Sequence[np.ndarray],
    ) -> None:
        """The learned modalities' tables and counts (``(N, O_m, ...)`` per agent, ``(O_m,
        ...)`` shared), the masks their updates land on and the experience they add to, in the
        order of ``learned``: float64 (the masks bool), C-contiguous; read and written by the
        next :meth:`step` (bind again when one of them is replaced)."""
        bound = (*tables, *counts, *masks, *experience)
        ids = tuple(map(id, bound))
        if ids == self._learning_ids:
            return  # the same arrays as last time (a tick's case): their pointers are in
        self._bound_learning, self._learning_ids = (), ()  # until every pointer is the new's
        S = int(self.state_index.shape[1])
        for m, table, count, mask, seen in zip(self.learned, tables, counts, masks, experience,
                                               strict=True):
            one = int(self.num_obs[m]) * S  # a table's values (a table on its support: K)
            copies = 1 if self.stride[m] == 0 else len(table)
            kept = one if self.kept[m] is None else int(self.stride[m])
            self._ptr["A"][m] = _addr(table, size=copies * kept)
            self._ptr["pA"][m] = _addr(count, size=copies * one)
            self._ptr["mask"][m] = _addr(mask, np.bool_, size=one)
            self._ptr["experience"][m] = _addr(seen, size=one)
        self._learned_rows = min(
            (len(t) for m, t in zip(self.learned, tables, strict=True) if self.stride[m]),
            default=_ANY)
        self._bound_learning, self._learning_ids = bound, ids
        if self._scratch is None:  # the block's temporaries (the learned tables' lanes too)
            self._make_scratch()

    def bind_float(self, tables: Sequence[np.ndarray]) -> None:
        """An int8 group learning ``A`` (``quantise``): every modality's float table ``(O_m,
        S)`` (float64, C-contiguous; a learned one's written every tick with its rounded one,
        its counts' expectation), under which the pass takes ``p_obs`` (the surprise's, as its
        numpy twin reads its float model); read and written by the next :meth:`step` (bind
        again when one is replaced)."""
        S = int(self.state_index.shape[1])
        for m, table in enumerate(tables):
            self._ptr["A_float"][m] = _addr(table, size=int(self.num_obs[m]) * S)
        self._bound_float = tuple(tables)
        self._model.A_float = _addr(self._ptr["A_float"], np.uintp)

    def bind_transitions(
        self, values: Sequence[np.ndarray], counts: Sequence[np.ndarray],
        masks: Sequence[np.ndarray], experience: Sequence[np.ndarray],
    ) -> None:
        """The learned factors' values (``(N, nnz)`` per agent, ``(1, nnz)`` shared: their
        entries' order), counts (``(N, S, S, U)`` per agent, ``(S, S, U)`` shared), the masks
        their updates land on and the experience they add to (``(S, S, U)``), in the order of
        ``learned_B``: float64 (the masks bool), C-contiguous; read and written by the next
        :meth:`step` (bind again when one of them is replaced)."""
        bound = (*values, *counts, *masks, *experience)
        ids = tuple(map(id, bound))
        if ids == self._transition_ids:
            return
        self._bound_transitions, self._transition_ids = (), ()
        for f, value, count, mask, seen in zip(self.learned_B, values, counts, masks,
                                               experience, strict=True):
            nnz = self.learned_B[f].size
            S, U = int(self.num_states[f]), int(self.num_controls[f])
            copies = 1 if self.stride_B[f] == 0 else len(value)
            self._ptr["B_values"][f] = address = _addr(value, size=copies * nnz)
            self._b[f].value = address
            self._ptr["pB"][f] = _addr(count, size=copies * S * S * U)
            self._ptr["pB_mask"][f] = _addr(mask, np.bool_, size=S * S * U)
            self._ptr["B_experience"][f] = _addr(seen, size=S * S * U)
        self._learned_B_rows = min(
            (len(v) for f, v in zip(self.learned_B, values, strict=True) if self.stride_B[f]),
            default=_ANY)
        self._bound_transitions, self._transition_ids = bound, ids

    def step(
        self, obs: np.ndarray, qs: Sequence[np.ndarray], action: np.ndarray,
        has_action: np.ndarray, *, G: np.ndarray, q_pi: np.ndarray,
        prior: Sequence[np.ndarray] | None = None, p_obs: np.ndarray | None = None,
        start: np.ndarray | None = None, learn: bool = True,
        next_prior: Sequence[np.ndarray] | None = None,
        qs_prev: Sequence[np.ndarray] | None = None, normalise_all: bool = False,
        prior_given: bool = False,
    ) -> None:
        """One tick of the agents, in place: :meth:`bind_state` of these arrays (nothing when
        they are those bound last), then :meth:`run` of ``obs``."""
        self.bind_state(qs, action, has_action, G=G, q_pi=q_pi, prior=prior, p_obs=p_obs,
                        start=start, next_prior=next_prior, qs_prev=qs_prev)
        self.run(obs, learn=learn, normalise_all=normalise_all, prior_given=prior_given)

    def bind_state(
        self, qs: Sequence[np.ndarray], action: np.ndarray, has_action: np.ndarray, *,
        G: np.ndarray, q_pi: np.ndarray, prior: Sequence[np.ndarray] | None = None,
        p_obs: np.ndarray | None = None, start: np.ndarray | None = None,
        next_prior: Sequence[np.ndarray] | None = None,
        qs_prev: Sequence[np.ndarray] | None = None,
    ) -> None:
        """The agents' arrays the next :meth:`run` reads and writes (bind again when one of
        them is replaced; the same arrays as last time bind nothing): ``qs[f]`` ``(N, S_f)`` the
        beliefs (the last tick's in, this tick's out); ``action`` ``(N, F)`` int64 and
        ``has_action`` ``(N,)`` bool (the prior is ``B`` after an action, else ``D``; out: the
        actions); ``G``, ``q_pi`` ``(N, P)``; ``prior[f]`` the tick's prior (read with
        ``run``'s ``prior_given``: the one the caller keeps; else made, and written when given),
        ``p_obs`` ``(N, M)`` each outcome's probability under it and the tables before the
        update (written when given); ``start`` ``(N,)`` bool: the agents whose episode starts
        (their prior is ``D``, made or ``prior_given``; None: nobody's; bound on its own, its
        address alone when it is another array than last time, as a caller's per-tick flags
        are); ``next_prior[f]`` ``(N, S_f)``: the next tick's prior, ``B`` of
        the action chosen times the posterior (written when given; it may be ``prior``);
        ``qs_prev[f]`` ``(N, S_f)``: the posteriors a learned ``B`` learns from, this tick's
        written (needed when one is). The state's floats are ``state_dtype``."""
        bound = (*qs, *(prior or ()), p_obs, action, has_action, G, q_pi,
                 *(next_prior or ()), *(qs_prev or ()), prior is not None,
                 next_prior is not None, qs_prev is not None)
        if tuple(map(id, bound)) != self._bound_ids:
            if self.learned_B and qs_prev is None:
                raise ValueError("a pass that learns B needs qs_prev")
            self._bound_state, self._bound_ids = (), ()  # until every pointer is the new ones'
            self._bind_state(qs, action, has_action, G, q_pi, prior, p_obs, next_prior,
                             qs_prev)
            self._has_prior = prior is not None
            self._bound_state, self._bound_ids = bound, tuple(map(id, bound))
        if start is not self._starts:  # (a caller's array each tick: its address alone)
            self._state.start = None if start is None else _addr(
                start, np.bool_, size=len(has_action))
            self._starts = start  # (held: the runs read it)

    def run(self, obs: np.ndarray, *, learn: bool = True, normalise_all: bool = False,
            prior_given: bool = False) -> None:
        """One tick of the agents of the arrays bound last (:meth:`bind_state`), in place: as
        many as ``obs`` ``(N, M)`` (integer outcomes: copied into the pass's own, or read where
        they are when they are the last run's array again, :meth:`_outcomes`) has rows.
        ``learn`` False: the counts stay (learning frozen); ``normalise_all``: every column of a
        learned ``B`` follows its counts (the first refresh); ``prior_given``: the tick's prior
        is the bound ``prior``."""
        if self._scratch is None:
            raise RuntimeError("bind_learning before the first step")
        if self.learned_B and not self._bound_transitions:
            raise RuntimeError("bind_transitions before the first step")
        if not self._bound_state:
            raise RuntimeError("bind_state before the first run")
        n = len(obs)
        if n > self._held:
            held = min(self._learned_rows, self._learned_B_rows)
            tables = "" if held == _ANY else f" (tables of {held})"
            raise ValueError(f"{n} agents' outcomes for arrays of {self._rows} agents{tables}")
        if prior_given and not self._has_prior:
            raise ValueError("a pass given its prior needs prior")
        self._outcomes(obs, n)
        flags = (n, learn, normalise_all, prior_given)
        if flags != self._flags:
            model = self._model
            model.n, model.learn, model.normalise_all, model.prior_given = map(int, flags)
            self.n, self._flags = n, flags
        self._tick(self._model_ref, self._state_ref)

    def _outcomes(self, obs: np.ndarray, n: int) -> None:
        """The run's ``n`` agents' outcomes where the state reads them: the array of the last
        run again (a group's own buffer, a world's that it writes each tick), C-contiguous
        int64 of ``n`` rows, read where it is (its address bound once); any other copied into
        the pass's own (:attr:`_obs`, read from then on)."""
        if obs is self._given:  # (its shape the same: an array's size cannot change)
            if not self._reads_given:  # (its address, once: the same array from now on)
                self._state.obs = _addr(obs, np.int64, size=n * self._modalities)
                self._reads_given = True
            return
        if self._reads_given:  # another array: back to the pass's own
            self._state.obs = _addr(self._obs, np.int64)
            self._reads_given = False
        np.copyto(self._obs if n == self._rows else self._obs[:n], obs, casting="safe")
        fits = (obs.dtype == np.int64 and obs.flags.c_contiguous
                and obs.shape == (n, self._modalities))
        self._given = obs if fits else None

    def measure(
        self, rows: np.ndarray, out: np.ndarray, *, entropy: np.ndarray | None = None,
        lnC: np.ndarray | None = None, preference: np.ndarray | None = None,
        sums: np.ndarray | None = None,
    ) -> None:
        """The next runs (:meth:`run`) measure health's sampled agents ``rows`` (``(K,)`` int64,
        ascending, each below the agents run): each one's surprise, excess surprise, free energy
        and belief change (:func:`edge_agent.aif.health.tick_measures`' rows, under the tables
        the agents inferred with: a learned ``A`` that learns, before the tick's update) written
        into ``out`` ``(4, K)`` float64, until :meth:`unmeasure`. Health's fold beside them,
        after the tick (each given or None): ``entropy`` ``(K,)`` each one's policy entropy
        (:func:`edge_agent.aif.health.entropy` of its ``q_pi``); ``lnC`` ``(sum O_m,)``
        health's ``ln softmax(C_m)`` side by side with ``preference`` ``(K,)`` each one's
        :func:`~edge_agent.aif.health.preference`; ``sums`` ``(2, W)`` the sum and the sum of
        squares over the agents of each row taken (the entropy's, the preference's, then
        ``out``'s four). Every array is read and written in place (kept alive here); the same
        arrays as the last call's are bound again without a look at their layout, their rows
        checked."""
        k = len(rows)
        # the pass reads each row in its agent's block, from its block's first agent: a row
        # below 0 or out of order would be read out of the block's lanes
        if k and (rows[0] < 0 or (k > 1 and bool((rows[1:] < rows[:-1]).any()))):
            raise ValueError("measured rows must be ascending and at least 0")
        arrays = (rows, out, entropy, lnC, preference, sums)
        st = self._state
        if tuple(map(id, arrays)) != self._measured_ids:
            self._measured, self._measured_ids = (), ()  # until every pointer is the new ones'
            if out.shape != (4, k):
                raise ValueError(f"measures of shape {out.shape} for {k} agents")
            if (lnC is None) != (preference is None):
                raise ValueError("a preference needs lnC, and lnC a preference")
            width = 4 + (entropy is not None) + (lnC is not None)
            st.measure_rows = _addr(rows, np.int64, size=k)
            st.measures = _addr(out, size=4 * k)
            st.measure_entropy = None if entropy is None else _addr(entropy, size=k)
            st.measure_lnC = None if lnC is None else _addr(lnC, size=sum(self.num_obs))
            st.measure_preference = None if preference is None else _addr(preference, size=k)
            st.measure_sums = None if sums is None else _addr(sums, size=2 * width)
            self._measured, self._measured_ids = arrays, tuple(map(id, arrays))
        st.measure_count = k

    def unmeasure(self) -> None:
        """The next runs (:meth:`run`) measure nobody (the default; the arrays :meth:`measure`
        bound stay bound, unread, until it binds others)."""
        self._state.measure_count = 0

    @property
    def _held(self) -> int:
        """The agents the bound arrays hold (a run of more is refused)."""
        return min(self._rows, self._learned_rows, self._learned_B_rows)

    def _bind_state(  # noqa: PLR0917 - step's arrays, once each
        self, qs: Sequence[np.ndarray], action: np.ndarray, has_action: np.ndarray,
        G: np.ndarray, q_pi: np.ndarray, prior: Sequence[np.ndarray] | None,
        p_obs: np.ndarray | None, next_prior: Sequence[np.ndarray] | None,
        qs_prev: Sequence[np.ndarray] | None,
    ) -> None:
        st = self._state
        rows, F, M, P = len(has_action), len(self.num_states), len(self.num_obs), len(self.lnE)
        if G.shape[-1] != P:
            raise ValueError(f"G of {G.shape[-1]} policies for a pass of {P}")
        st.qs = self._bind_factors("qs", qs, rows)
        st.prior = self._bind_factors("prior", prior, rows)
        st.next_prior = self._bind_factors("next_prior", next_prior, rows)
        st.qs_prev = self._bind_factors("qs_prev", qs_prev, rows)
        st.p_obs = None if p_obs is None else _addr(p_obs, size=rows * M)
        st.action = _addr(action, np.int64, size=rows * F)
        st.has_action = _addr(has_action, np.bool_, size=rows)
        st.G = _addr(G, self.state_dtype, size=rows * P)
        st.q_pi = _addr(q_pi, self.state_dtype, size=rows * P)
        if self._rows != rows:  # the outcomes are copied into the pass's own array
            self._obs = np.zeros((rows, M), dtype=np.int64)
            st.obs = _addr(self._obs, np.int64)
            self._given, self._reads_given = None, False
        self._rows = rows

    def _bind_factors(self, name: str, arrays: Sequence[np.ndarray] | None,
                      rows: int) -> int | None:
        """Each factor's array of ``arrays`` (``(rows, S_f)``, the state's dtype) into the
        pointer array ``name``; its address (None for no arrays: the kernel writes none)."""
        if arrays is None:
            return None
        if len(arrays) != len(self.num_states):
            raise ValueError(f"{len(arrays)} factors' {name} for a model of "
                             f"{len(self.num_states)}")
        ptr = self._ptr[name]
        for f, a in enumerate(arrays):
            ptr[f] = _addr(a, self.state_dtype, size=rows * int(self.num_states[f]))
        return _addr(ptr, np.uintp)


def log_preferences(C: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``ln softmax(C_m) + eps`` of each modality: the utility's log preferences."""
    return [np.log(softmax_rows(np.asarray(c, dtype=np.float64)[None])[0] + EPS) for c in C]

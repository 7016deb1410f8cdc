"""A measured prototype of issue 45's design change: the learning tick as one compiled pass over
the agents (``compiled_tick.c``), built here with the machine's C compiler and loaded with
:mod:`ctypes`. Not part of the package: it measures what the change would reach before the
package builds and ships a compiled extension per architecture.

:class:`CompiledTick` steps ``N`` agents that learn the counts of one or more likelihoods
(``pA``), the tables following them every tick, the rest of the model shared: each agent its own
counts (``scope="per_agent"``), what ``AifAgentGroup(..., learning=LearningSpec(pA=...,
settings=LearningSettings(scope="per_agent")), precision="float64")`` does, or one set of counts
every agent teaches (``scope="shared"``, ``refresh_every=1``), as the shared scope does in
float64; with one-step policies, utility, state information gain and deterministic marginal
action selection (``tests/unit/benchmarks/test_compiled_tick.py`` checks each equal to the
group up to rounding). ``CC`` names the compiler (``cc`` by default); the library
(``compiled_tick.c``, and its logs and exps, ``compiled_tick_vmath.c``, each with its flags) is
cached under ``${EDGE_AGENT_BENCH_CACHE:-.cache}/prototypes`` by the sources' and flags' hash.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[1] / "edge_agent" / "aif" / "kernels" / "native" / "tick.c"
REPO = HERE.parents[1]
VMATH_SOURCE = SOURCE.with_name("tick_vmath.c")
#: The flags the kernel is compiled with (no fast-math: pymdp's results up to rounding; no
#: -march: the baseline instruction set a package would ship; compiled_tick.c says why -O3).
CFLAGS = ("-O3", "-fPIC", "-std=c11")
#: Its logs and exps alone (compiled_tick_vmath.c): fast-math for glibc's vector variants.
VMATH_CFLAGS = (*CFLAGS, "-ffast-math")
#: compiled_tick.c's fixed limits (its stack arrays).
LIMITS = {"factors": 4, "joint": 128, "modalities": 8, "policies": 64, "controls": 16}
EPS = 1e-16

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
                                "scratch")] + [("shared_counts", _i64)]


class _State(ctypes.Structure):
    _fields_ = [(name, _p) for name in ("obs", "start", "qs", "action", "has_action", "G",
                                        "q_pi")]


def cache_dir() -> Path:
    return Path(os.environ.get("EDGE_AGENT_BENCH_CACHE", str(REPO / ".cache"))) / "prototypes"


def build(*, baseline_only: bool = False) -> Path:
    """The shared library of ``compiled_tick.c`` (built once per source and compiler);
    ``baseline_only``: without the x86-64-v3 version the CPU would otherwise choose."""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise RuntimeError(f"the compiled-tick prototype needs a C compiler ({cc!r} not found): "
                           "apt-get install gcc, or set CC")
    only = ("-DTICK_BASELINE_ONLY",) if baseline_only else ()
    key = hashlib.sha256(b"\0".join([
        SOURCE.read_bytes(), VMATH_SOURCE.read_bytes(), cc.encode(), " ".join(CFLAGS).encode(),
        " ".join(VMATH_CFLAGS).encode(), *map(str.encode, only)])).hexdigest()[:16]
    out = cache_dir() / f"compiled_tick-{key}.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        objects = [tmp.with_suffix(".kernel.o"), tmp.with_suffix(".vmath.o")]
        # Each unit with its own flags; linked without -ffast-math (no crtfastmath.o).
        for flags, source, obj in ((CFLAGS, SOURCE, objects[0]),
                                   (VMATH_CFLAGS, VMATH_SOURCE, objects[1])):
            subprocess.run([cc, *flags, *only, "-c", "-o", str(obj), str(source)], check=True,
                           capture_output=True, timeout=300)
        subprocess.run([cc, "-shared", "-o", str(tmp), *map(str, objects), "-lm"], check=True,
                       capture_output=True, timeout=300)
        for obj in objects:
            obj.unlink()
        tmp.replace(out)
    return out


def _addr(a: np.ndarray) -> int:
    assert a.flags.c_contiguous
    return int(a.ctypes.data)


def _pointers(arrays: list[np.ndarray | None]) -> np.ndarray:
    return np.array([0 if a is None else _addr(a) for a in arrays], dtype=np.uintp)


def _kernel(model: _Model, baseline_only: bool) -> tuple[ctypes._CFuncPtr, np.ndarray]:
    """The library's ``edge_tick`` and the scratch it needs for ``model`` (allocated once,
    set in ``model.scratch``: the temporaries of a block of agents)."""
    lib = ctypes.CDLL(str(build(baseline_only=baseline_only)))
    lib.edge_tick_scratch_doubles.argtypes = [ctypes.POINTER(_Model)]
    lib.edge_tick_scratch_doubles.restype = _i64
    scratch = np.zeros(lib.edge_tick_scratch_doubles(ctypes.byref(model)))
    model.scratch = _addr(scratch)
    tick = lib.edge_tick
    tick.argtypes = [ctypes.POINTER(_Model), ctypes.POINTER(_State)]
    tick.restype = None
    return tick, scratch


class CompiledTick:
    """``n`` agents of the model ``A``, ``B``, ``C``, ``D`` (lists of float64 arrays as pymdp
    takes them), learning ``pA[m]`` (prior counts), learning rate ``lr``: ``scope``
    ``"per_agent"``, each agent its own counts and table; ``"shared"``, one set of counts every
    agent teaches, the table following them every tick (infer, learn, refresh, plan: the shared
    scope's tick). ``baseline_only``: the kernel's baseline version even where the CPU has
    x86-64-v3's (the test checks both)."""

    def __init__(
        self, A: list[np.ndarray], B: list[np.ndarray], C: list[np.ndarray],
        D: list[np.ndarray], pA: dict[int, np.ndarray], *, n: int, gamma: float = 16.0,
        num_iter: int = 10, dF_tol: float = 0.001, lr: float = 1.0,
        use_utility: bool = True, use_info_gain: bool = True, baseline_only: bool = False,
        scope: str = "per_agent",
    ) -> None:
        from edge_agent.aif import per_agent
        from edge_agent.aif.policies import construct_policies

        num_states = [b.shape[0] for b in B]
        num_controls = [b.shape[2] for b in B]
        S = int(np.prod(num_states))
        policies = construct_policies(num_controls, 1, None)
        sizes = {"factors": len(B), "joint": S, "modalities": len(A),
                 "policies": len(policies), "controls": max(num_controls)}
        supports = [(a > 0).reshape(a.shape[0], S) | (
            pA[m].reshape(a.shape[0], S) > 0 if m in pA else False) for m, a in enumerate(A)]
        outcomes = per_agent.possible_outcomes(supports)
        # The joint-outcome entries that can be non-zero, the shared modalities' product on them
        # (edge_agent.aif.per_agent.joint_layout, as the per-agent group plans with).
        layout = per_agent.joint_layout([a.reshape(1, a.shape[0], S) for a in A], supports,
                                        outcomes, sorted(pA))
        for name, value in sizes.items():
            if value > LIMITS[name]:
                raise ValueError(f"{name} {value} above the prototype's limit {LIMITS[name]}")
        if scope not in ("per_agent", "shared"):
            raise ValueError(f"scope {scope!r}: per_agent or shared")
        self.n = n
        copies = n if scope == "per_agent" else 1
        self.lnC = [np.log(per_agent.softmax_rows(np.asarray(c, dtype=np.float64)[None])[0] + EPS)
                    for c in C]
        # Every table flattened to (O_m, S); the learned ones with their counts, one copy per
        # agent (per_agent) or one for all (shared).
        self.A = [np.ascontiguousarray(np.repeat(a.reshape(1, a.shape[0], S), copies, axis=0)
                                       if m in pA else a.reshape(a.shape[0], S), dtype=np.float64)
                  for m, a in enumerate(A)]
        self.pA: list[np.ndarray | None] = [
            np.ascontiguousarray(np.repeat(pA[m].reshape(1, a.shape[0], S), copies, axis=0),
                                 dtype=np.float64) if m in pA else None
            for m, a in enumerate(A)]
        self.mask = [None if m not in pA else np.ascontiguousarray(
            pA[m].reshape(a.shape[0], S) > 0, dtype=np.uint8) for m, a in enumerate(A)]
        self.experience = [None if m not in pA else np.zeros((a.shape[0], S))
                           for m, a in enumerate(A)]
        # Each factor's transitions as their non-zero entries, action by action.
        self._b_arrays = []
        for b in B:
            u, row, col = np.nonzero(np.asarray(b, dtype=np.float64).transpose(2, 0, 1))
            start = np.searchsorted(u, np.arange(b.shape[2] + 1)).astype(np.int64)
            self._b_arrays.append((start, row.astype(np.int64), col.astype(np.int64),
                                   np.ascontiguousarray(b.transpose(2, 0, 1)[u, row, col],
                                                        dtype=np.float64)))
        self._b = (_SparseB * len(B))(*(_SparseB(*(_addr(a) for a in arrays))
                                        for arrays in self._b_arrays))
        self.D = [np.ascontiguousarray(d, dtype=np.float64) for d in D]
        self.lnE = np.log(np.full(len(policies), 1.0 / len(policies)) + EPS)
        self.policies_first = np.ascontiguousarray(policies[:, 0, :], dtype=np.int64)
        self.state_index = np.ascontiguousarray(
            np.indices(num_states).reshape(len(num_states), S), dtype=np.int64)
        entry_outcome = layout.to_outcome.argmax(axis=1)  # sorted (np.nonzero's order)
        assert np.all(np.diff(entry_outcome) >= 0)
        self.outcome_start = np.searchsorted(
            entry_outcome, np.arange(len(outcomes) + 1)).astype(np.int64)
        # The shared modalities' utility, once: sum_m ln C_m . A_m over those not learned.
        self.utility_shared = np.zeros(S)
        for m, a in enumerate(A):
            if m not in pA and use_utility:
                self.utility_shared += self.lnC[m] @ a.reshape(a.shape[0], S)
        self.entry_state = np.ascontiguousarray(layout.state_of, dtype=np.int64)
        self.entry_shared = np.ascontiguousarray(layout.shared, dtype=np.float64)
        learned_index = dict(layout.learned)
        self.entry_index = [None if m not in learned_index else np.ascontiguousarray(
            learned_index[m], dtype=np.int64) for m in range(len(A))]
        self.num_states = np.array(num_states, dtype=np.int64)
        self.num_controls = np.array(num_controls, dtype=np.int64)
        self.num_obs = np.array([a.shape[0] for a in A], dtype=np.int64)
        self.stride = np.array([a.shape[1] * S if m in pA and scope == "per_agent" else 0
                                for m, a in enumerate(self.A)], dtype=np.int64)
        # The agents' state.
        self.qs = np.ascontiguousarray(np.concatenate([np.tile(d, (n, 1)) for d in D], axis=1),
                                       dtype=np.float64)
        self.action = np.zeros((n, len(B)), dtype=np.int64)
        self.has_action = np.zeros(n, dtype=np.uint8)
        self.G = np.zeros((n, len(policies)))
        self.q_pi = np.zeros((n, len(policies)))
        self._obs = np.zeros((n, len(A)), dtype=np.int16)
        self._start = np.zeros(n, dtype=np.uint8)
        self._ptrs = {name: _pointers(arrays) for name, arrays in (
            ("A", self.A), ("pA", self.pA), ("mask", self.mask), ("experience", self.experience),
            ("D", self.D), ("lnC", self.lnC), ("entry_index", self.entry_index))}
        self._model = _Model(
            n, len(B), len(A), len(policies), S, num_iter, int(use_utility), int(use_info_gain),
            dF_tol, gamma, lr,
            _addr(self.num_states), _addr(self.num_controls), _addr(self.num_obs),
            _addr(self.state_index), _addr(self._ptrs["A"]), _addr(self.stride),
            _addr(self._ptrs["pA"]), _addr(self._ptrs["mask"]), _addr(self._ptrs["experience"]),
            ctypes.addressof(self._b), _addr(self._ptrs["D"]), _addr(self._ptrs["lnC"]),
            _addr(self.utility_shared), _addr(self.lnE), _addr(self.policies_first),
            len(outcomes), len(self.entry_state), _addr(self.outcome_start),
            _addr(self.entry_state), _addr(self.entry_shared), _addr(self._ptrs["entry_index"]),
            0, int(scope == "shared"))
        self._state = _State(*(_addr(a) for a in (self._obs, self._start, self.qs, self.action,
                                                  self.has_action, self.G, self.q_pi)))
        self._tick, self._scratch = _kernel(self._model, baseline_only)
        self._model_ref = ctypes.byref(self._model)
        self._state_ref = ctypes.byref(self._state)

    def act(self, obs: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
        """One tick: ``obs`` ``(N, M)`` outcomes; ``start`` ``(N,)`` bool, the agents whose
        episode starts (their prior is ``D``). Returns the actions ``(N, F)`` (a view)."""
        np.copyto(self._obs, obs, casting="same_kind")
        if start is None:
            self._start.fill(0)
        else:
            np.copyto(self._start, start, casting="unsafe")
        self._tick(self._model_ref, self._state_ref)
        return self.action

    def bytes_per_agent(self) -> int:
        """What each agent holds: its state (beliefs, action, G, q_pi) and its learned tables
        with their counts."""
        own = sum(a.nbytes for a in self.A if a.ndim == 3) + sum(
            c.nbytes for c in self.pA if c is not None)
        state = self.qs.nbytes + self.action.nbytes + self.has_action.nbytes + self.G.nbytes \
            + self.q_pi.nbytes
        return (own + state) // self.n

"""The package's compiled tick (:mod:`edge_agent.aif.kernels.native`) driven on its own, over
arrays of its own: what ``tests/unit/benchmarks/test_compiled_tick.py`` checks against the
float64 group of each scope kept on numpy, its baseline version included (the groups themselves
step with the package's library: ``tests/unit/core/test_native_pass.py``).

:class:`CompiledTick` steps ``N`` agents that learn the counts of one or more likelihoods
(``pA``), the tables following them every tick, the rest of the model shared: each agent its own
counts (``scope="per_agent"``: what ``AifAgentGroup(..., learning=LearningSpec(pA=...,
settings=LearningSettings(scope="per_agent")), precision="float64")`` steps with the same
kernel), or one set of counts every agent teaches (``scope="shared"``, ``refresh_every=1``: a
float64 shared group's learning tick); with one-step policies, utility, state information gain
and deterministic marginal action selection. ``baseline_only``: the kernel's baseline version,
built here with the machine's C compiler (``CC``, ``cc`` by default) and cached under
``${EDGE_AGENT_BENCH_CACHE:-.cache}/prototypes`` by the sources' and flags' hash, where the
package's library would let an x86-64-v3 CPU choose its AVX2 version.
"""

from __future__ import annotations

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
#: -march: the baseline instruction set the package ships; tick.c says why -O3).
CFLAGS = ("-O3", "-fPIC", "-std=c11")
#: Its logs and exps alone (tick_vmath.c): fast-math for glibc's vector variants.
VMATH_CFLAGS = (*CFLAGS, "-ffast-math")


def cache_dir() -> Path:
    return Path(os.environ.get("EDGE_AGENT_BENCH_CACHE", str(REPO / ".cache"))) / "prototypes"


def build(*, baseline_only: bool = False) -> Path:
    """A shared library of ``tick.c`` (built once per source and compiler);
    ``baseline_only``: without the x86-64-v3 version the CPU would otherwise choose."""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise RuntimeError(f"the compiled tick's baseline build needs a C compiler ({cc!r} not "
                           "found): apt-get install gcc, or set CC")
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
        from edge_agent.aif.kernels import native
        from edge_agent.aif.policies import construct_policies

        if scope not in ("per_agent", "shared"):
            raise ValueError(f"scope {scope!r}: per_agent or shared")
        num_states = [b.shape[0] for b in B]
        S = int(np.prod(num_states))
        policies = construct_policies([b.shape[2] for b in B], 1, None)
        learned = sorted(pA)
        supports = [(a > 0).reshape(a.shape[0], S) | (
            pA[m].reshape(a.shape[0], S) > 0 if m in pA else False) for m, a in enumerate(A)]
        self.n = n
        copies = (n,) if scope == "per_agent" else ()
        # The learned tables with their counts, one copy per agent (per_agent) or one for all
        # (shared), flattened to (O_m, S).
        self.A = [np.ascontiguousarray(np.broadcast_to(A[m].reshape(A[m].shape[0], S),
                                                       (*copies, A[m].shape[0], S)))
                  for m in learned]
        self.pA = [np.ascontiguousarray(np.broadcast_to(pA[m].reshape(A[m].shape[0], S),
                                                        (*copies, A[m].shape[0], S)),
                                        dtype=np.float64) for m in learned]
        self.mask = [pA[m].reshape(A[m].shape[0], S) > 0 for m in learned]
        self.experience = [np.zeros((A[m].shape[0], S)) for m in learned]
        uniform = np.full(len(policies), 1.0 / len(policies))
        self.kernel = native.NativeTick(
            A, B, D, lnC=native.log_preferences(C), lnE=np.log(uniform + native.EPS),
            policies=policies, learned=learned, supports=supports, n=n, gamma=gamma,
            num_iter=num_iter, dF_tol=dF_tol, lr=lr, use_utility=use_utility,
            use_info_gain=use_info_gain, shared_counts=scope == "shared",
            library=native.load(build(baseline_only=True)) if baseline_only else None,
        )
        self.kernel.bind_learning(self.A, self.pA, self.mask, self.experience)
        # The agents' state.
        self.qs = [np.ascontiguousarray(np.tile(d, (n, 1)), dtype=np.float64) for d in D]
        self.action = np.zeros((n, len(B)), dtype=np.int64)
        self.has_action = np.zeros(n, dtype=bool)
        self.G = np.zeros((n, len(policies)))
        self.q_pi = np.zeros((n, len(policies)))
        self._obs = np.zeros((n, len(A)), dtype=np.int64)
        self._start = np.zeros(n, dtype=bool)

    def act(self, obs: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
        """One tick: ``obs`` ``(N, M)`` outcomes; ``start`` ``(N,)`` bool, the agents whose
        episode starts (their prior is ``D``). Returns the actions ``(N, F)`` (a view)."""
        np.copyto(self._obs, obs, casting="same_kind")
        if start is None:
            self._start.fill(False)
        else:
            np.copyto(self._start, start, casting="unsafe")
        self.kernel.step(self._obs, self.qs, self.action, self.has_action, G=self.G,
                         q_pi=self.q_pi, start=self._start)
        return self.action

    def bytes_per_agent(self) -> int:
        """What each agent holds: its state (beliefs, action, G, q_pi) and its learned tables
        with their counts."""
        own = sum(a.nbytes for a in self.A if a.ndim == 3) + sum(
            c.nbytes for c in self.pA if c.ndim == 3)
        state = sum(q.nbytes for q in self.qs) + self.action.nbytes + self.has_action.nbytes \
            + self.G.nbytes + self.q_pi.nbytes
        return (own + state) // self.n

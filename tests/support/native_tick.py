"""The compiled tick's equality suite's worlds, the agents each is stepped with, and its driver
of the pass (tests/unit/aif/kernels/native/test_equality.py; test_recipe.py runs its sanitized
cases in a subprocess, test_binding.py drives the pass for its refusals).

The T-maze and grid10 are the learning benchmark's workloads (benchmarks/bench_learning_peers.py,
stepped in closed loop by benchmarks/peers/world.py); the others are random models seeded here,
one at every limit the library reports (tick.h's)."""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_learning_peers import write_workload  # noqa: E402
from peers.learning import GAMMA, NUM_ITER, load  # noqa: E402
from peers.world import ClosedLoopWorld, load_workload  # noqa: E402

from edge_agent.aif.constants import EPS  # noqa: E402
from edge_agent.aif.kernels.native import binding  # noqa: E402
from edge_agent.aif.policies import construct_policies  # noqa: E402
from edge_agent.aif.settings import AifSettings  # noqa: E402

if TYPE_CHECKING:
    from edge_agent.core.agents import AifAgentGroup

#: The equality suite (the sanitizer run starts it in a subprocess).
SUITE = REPO / "tests" / "unit" / "aif" / "kernels" / "native" / "test_equality.py"
#: The sanitized build's path, in that subprocess (its cases exist only there).
SANITIZED_ENV = "EDGE_AGENT_TEST_SANITIZED_TICK"
#: The settings of every side: the benchmark's (one-step policies, deterministic marginal
#: action selection: what the pass does).
SETTINGS = AifSettings(policy_len=1, gamma=GAMMA, num_iter=NUM_ITER, use_utility=True,
                       use_states_info_gain=True, action_selection="deterministic",
                       sampling_mode="marginal")


class World(NamedTuple):
    """A model (pymdp's lists of float64 arrays), the prior counts of the modalities it learns
    and the learning rate; ``workload``: the benchmark's world it is (None: a random one, its
    outcomes and episode starts drawn)."""

    A: list[np.ndarray]
    B: list[np.ndarray]
    C: list[np.ndarray]
    D: list[np.ndarray]
    pA: dict[int, np.ndarray]
    lr: float
    workload: Path | None = None


def _bench_world(world: str, index: int, path: Path) -> World:
    write_workload(world, "A", index, 40, path)
    w = load(str(path))
    return World(w["A"], w["B"], w["C"], w["D"], {w["m"]: w["p"]}, 1.0, path)


def _random_world(
    num_states: tuple[int, ...], num_controls: tuple[int, ...], num_obs: tuple[int, ...],
    learned: tuple[int, ...], seed: int,
) -> World:
    """A random model: each ``A_m`` zero on about a fifth of its entries (its support matters),
    each ``B_f`` with one to three next states a column, preferences and ``D`` drawn; the
    learned modalities' prior counts on their table's support plus a few entries beyond it."""
    rng = np.random.default_rng(seed)
    A = []
    for o in num_obs:
        a = rng.dirichlet(np.ones(o), size=num_states).transpose(-1, *range(len(num_states)))
        a = np.where(rng.random(a.shape) < 0.2, 0.0, a)
        a[0] += a.sum(axis=0) == 0  # no column without an outcome
        A.append(a / a.sum(axis=0))
    B = []
    for s, u in zip(num_states, num_controls, strict=True):
        b = np.zeros((s, s, u))
        for col in range(s):
            for act in range(u):
                rows = rng.choice(s, size=int(rng.integers(1, min(s, 3) + 1)), replace=False)
                b[rows, col, act] = rng.dirichlet(np.ones(len(rows)))
        B.append(b)
    C = [rng.normal(0.0, 1.5, size=o) for o in num_obs]
    D = [rng.dirichlet(np.ones(s)) for s in num_states]
    pA = {m: A[m] * 2.0 + 0.5 * (A[m] > 0) + 0.3 * (rng.random(A[m].shape) < 0.05)
          for m in learned}
    return World(A, B, C, D, pA, 0.7)


def _limits_world() -> World:
    """A model at every limit of the library: 4 factors of 4, 4, 4 and 2 states (128 joint),
    16 controls of the first factor and 2, 2, 1 of the others (64 one-step policies), 8
    modalities of 2 outcomes, three of them learned."""
    world = _random_world((4, 4, 4, 2), (16, 2, 2, 1), (2,) * 8, (1, 4, 6), seed=57)
    limits = binding.limits()
    reached = {"factors": len(world.B), "joint": int(np.prod([b.shape[0] for b in world.B])),
               "modalities": len(world.A),
               "policies": int(np.prod([b.shape[2] for b in world.B])),
               "controls": max(b.shape[2] for b in world.B)}
    assert reached == limits, f"tick.h's limits are now {limits}: make this world reach them"
    return world


def make_world(name: str, tmp_path: Path) -> World:
    if name == "factors3":
        return _random_world((3, 4, 2), (3, 2, 3), (3, 4, 2), (0, 2), seed=3)
    if name == "limits":
        return _limits_world()
    if name == "odd":  # 15 joint states, tables of 45 and 75 values: no multiple of four
        return _random_world((5, 3), (2, 2), (3, 5), (0, 1), seed=15)
    world, table = name.split("-")
    return _bench_world(world, int(table[1:]), tmp_path / f"{name}.npz")


class RandomOutcomes:
    """A random world's outcomes and episode starts (about one agent in ten a tick), seeded;
    ``peers.world.ClosedLoopWorld``'s two calls."""

    def __init__(self, num_obs: list[int], n: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.num_obs, self.n = num_obs, n

    def reset(self) -> tuple[np.ndarray, np.ndarray]:
        return self.step(None)

    def step(self, actions: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        del actions
        obs = np.stack([self.rng.integers(0, o, size=self.n) for o in self.num_obs], axis=1)
        return obs, self.rng.random(self.n) < 0.1


def outcomes(world: World, n: int) -> ClosedLoopWorld | RandomOutcomes:
    """What ``n`` agents of ``world`` observe: the benchmark's world stepped by their actions
    (seed 1), or a random world's draws (seed ``n``)."""
    if world.workload is None:
        return RandomOutcomes([a.shape[0] for a in world.A], n, seed=n)
    return ClosedLoopWorld(load_workload(str(world.workload)), n, seed=1)


class Pass:
    """``n`` agents of ``world`` stepped by the compiled pass of ``library`` over arrays of
    their own: each agent its own counts (``per_agent``) or one set (``shared``)."""

    def __init__(self, world: World, n: int, scope: str, library: ctypes.CDLL) -> None:
        A, B = world.A, world.B
        num_states = [b.shape[0] for b in B]
        S = int(np.prod(num_states))
        policies = construct_policies([b.shape[2] for b in B], 1, None)
        self.learned = sorted(world.pA)
        supports = [(a > 0).reshape(a.shape[0], S) | (
            world.pA[m].reshape(a.shape[0], S) > 0 if m in world.pA else False)
            for m, a in enumerate(A)]
        copies = (n,) if scope == "per_agent" else ()
        prior = {m: world.pA[m].reshape(A[m].shape[0], S) for m in self.learned}
        #: The learned tables (the model's until the first update) and their counts, one copy
        #: per agent or one for all, (O_m, S).
        self.counts = [np.array(np.broadcast_to(prior[m], (*copies, *prior[m].shape)),
                                dtype=np.float64, order="C") for m in self.learned]
        self.A = [np.array(np.broadcast_to(A[m].reshape(prior[m].shape),
                                           (*copies, *prior[m].shape)), dtype=np.float64,
                           order="C") for m in self.learned]
        #: Where an update lands: the table's support (pymdp's ``A > 0``), the model's until
        #: the first update, then the counts' (the learned table's from then on).
        self.mask = [A[m].reshape(prior[m].shape) > 0 for m in self.learned]
        self._counts_support = [prior[m] > 0 for m in self.learned]
        self.experience = [np.zeros_like(prior[m]) for m in self.learned]
        uniform = np.full(len(policies), 1.0 / len(policies))
        self.kernel = binding.NativeTick(
            A, B, world.D, lnC=binding.log_preferences(world.C), lnE=np.log(uniform + EPS),
            policies=policies, learned=self.learned, supports=supports, n=n, gamma=GAMMA,
            num_iter=NUM_ITER, dF_tol=SETTINGS.dF_tol, lr=world.lr, use_utility=True,
            use_info_gain=True, shared_counts=scope == "shared", library=library)
        self.kernel.bind_learning(self.A, self.counts, self.mask, self.experience)
        self.qs = [np.tile(d, (n, 1)) for d in world.D]
        self.prior = [np.zeros((n, s)) for s in num_states]
        self.next_prior = [np.zeros((n, s)) for s in num_states]
        self.p_obs = np.zeros((n, len(A)))
        self.action = np.zeros((n, len(B)), dtype=np.int64)
        self.has_action = np.zeros(n, dtype=bool)
        self.G = np.zeros((n, len(policies)))
        self.q_pi = np.zeros((n, len(policies)))
        self.policies_first = policies[:, 0, :]

    def step(self, obs: np.ndarray, start: np.ndarray, *, learn: bool) -> None:
        self.kernel.step(np.ascontiguousarray(obs, dtype=np.int64), self.qs, self.action,
                         self.has_action, G=self.G, q_pi=self.q_pi, prior=self.prior,
                         p_obs=self.p_obs, start=np.ascontiguousarray(start, dtype=bool),
                         learn=learn, next_prior=self.next_prior)
        if learn:  # the tables are their counts' expectation now: the counts' support
            for mask, support in zip(self.mask, self._counts_support, strict=True):
                np.copyto(mask, support)

    def follow(self, group: AifAgentGroup, actions: np.ndarray) -> None:
        """Go on from the numpy twin's numbers (equal up to rounding, checked), its actions
        taken: each tick is compared from the same state. (Left to themselves the two drift
        apart as the maths amplifies rounding: the 4-factor fixed point of the limits world
        makes the 1e-11 its shared counts differ by after a few ticks 1e-7 in a posterior,
        whichever side computes it.)"""
        self.action[...] = actions
        for mine, theirs in zip(self.qs, group.state.qs, strict=True):
            np.copyto(mine, theirs)
        pA = group.learning.learner.pA  # type: ignore[union-attr]
        assert pA is not None
        for slot in range(len(self.learned)):
            counts = pA.counts[slot].reshape(self.counts[slot].shape)
            np.copyto(self.counts[slot], counts)
            np.copyto(self.A[slot], counts / counts.sum(axis=-2, keepdims=True))
            np.copyto(self.experience[slot], pA.experience[slot].reshape(
                self.experience[slot].shape))


#: The agents each world is stepped with.
SIZES = {"tmaze-A1": (1, 13, 40), "tmaze-A2": (1, 13, 40), "grid10-A0": (13, 40),
         "factors3": (13,), "limits": (13,), "odd": (13,)}
SCOPES = ("per_agent", "shared", "per_agent-frozen", "shared-frozen")
#: The worlds whose group that does not learn the compiled tick can take: every one (grid10's
#: too, whose numpy path is the local one-step planner: the group measures which is cheaper).
FROZEN_WORLDS = tuple(SIZES)


def sizes(world: str, build: str) -> tuple[int, ...]:
    """The agents ``world`` is stepped with in ``build``: the package's library every size,
    the others all but the five whole blocks."""
    return SIZES[world] if build == "installed" else tuple(n for n in SIZES[world] if n < 40)


#: The agents a world's group that does not learn is stepped with where not :data:`SIZES`'s:
#: grid10's frozen group takes the compiled tick where it measures cheaper, at a few agents
#: (core/native_pass.py): one agent (seven padding lanes), a partial block, and (the package's
#: library) whole blocks and a partial one.
FROZEN_SIZES = {"grid10-A0": (1, 13, 40)}


#: The worlds whose group that does not learn is stepped planning two-step policies (policy_len
#: 2): the T-maze (16 policies: 4 x 4 moves), grid2f (two factors, 25 policies) and grid10 (25).
FROZEN_L2_WORLDS = ("tmaze-A1", "grid2f-A0", "grid10-A0")


def frozen_l2_sizes(build: str) -> tuple[int, ...]:
    """The agents a two-step world's group is stepped with in ``build``: 1, 13 and 40 with the
    package's library, 1 and 13 with the others."""
    return (1, 13, 40) if build == "installed" else (1, 13)


def frozen_sizes(world: str, build: str) -> tuple[int, ...]:
    """The agents ``world``'s group that does not learn is stepped with in ``build`` (as
    :func:`sizes`: the package's library every size, the others those under 40)."""
    found = FROZEN_SIZES.get(world, SIZES[world])
    return found if build == "installed" else tuple(n for n in found if n < 40)

"""The compiled tick's one equality suite: the pass (tick.c through its binding, driven here
over arrays of its own) does its numpy twin's work, up to rounding (``TOL``), tick after tick,
for every world x scope x build:

- worlds: the T-maze learning its cue or its reward modality and grid10 its observation model
  (the benchmark's workloads, closed loop: the world steps with the actions, episode starts
  included), a random 3-factor model of 18 policies learning two modalities, and a random model
  at every limit the binding admits (tick.h's, read from the library: 4 factors, 128 joint
  states, 8 modalities, 64 policies, 16 controls of a factor) learning three; 1, 13 (a whole
  block of the pass's 8 and a partial one) or 40 agents (five whole blocks);
- scopes: each agent its own counts (``per_agent``), one set every agent teaches (``shared``),
  and each of them frozen for a third of the ticks (the pass's ``learn`` off: the tables as they
  are), then learning again;
- builds: the package's library, its baseline version alone (built here with the recipe,
  warnings as errors: on x86-64 the package's library runs its AVX2 version), and, in the
  subprocess tests/unit/aif/kernels/native/test_recipe.py starts with the AddressSanitizer
  runtime preloaded, the sanitized build (``EDGE_AGENT_TEST_SANITIZED_TICK``: its path); the
  last two every world and scope at 1 and 13 agents.

The twin is the group on numpy (``EDGE_AGENT_NATIVE_TICK=0``), float64, the same settings:
posteriors, the tick's prior (and a shared group's next prior where the actions agree),
``p(o_m)`` under the prior and the tables before the update, ``G``, ``q_pi``, the counts, the
learned tables (their counts' expectation), the experience every agent added; the pass's
actions optimal under the group's posterior (a tie may be broken either way: both then go on
with the group's). Each per-agent agent is also its own float64 reference agent (pymdp
0.0.7.1's maths, aif/reference_learning.py) at every world.

The baseline build needs a C compiler (``cc``; ``apt-get install gcc libc6-dev``; scripts/test
installs one)."""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[5]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_learning_peers import write_workload  # noqa: E402
from peers.learning import GAMMA, NUM_ITER, load  # noqa: E402
from peers.world import ClosedLoopWorld, load_workload  # noqa: E402

from edge_agent.aif.kernels import native  # noqa: E402
from edge_agent.aif.learning import LearningSettings, LearningSpec  # noqa: E402
from edge_agent.aif.model import GenerativeModel  # noqa: E402
from edge_agent.aif.policies import construct_policies  # noqa: E402
from edge_agent.aif.reference_learning import LearningReferenceAgent  # noqa: E402
from edge_agent.aif.settings import AifSettings  # noqa: E402
from edge_agent.core.agents import AifAgentGroup  # noqa: E402
from edge_agent.core.native_pass import NATIVE_ENV  # noqa: E402
from tests.support import native_builds  # noqa: E402

TOL = 1e-9
#: The sanitized build's path, in test_recipe.py's subprocess (its cases exist only there).
SANITIZED_ENV = "EDGE_AGENT_TEST_SANITIZED_TICK"
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
    limits = native.limits()
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
    world, table = name.split("-")
    return _bench_world(world, int(table[1:]), tmp_path / f"{name}.npz")


class RandomOutcomes:
    """A random world's outcomes and episode starts (about one agent in ten a tick), seeded;
    :class:`ClosedLoopWorld`'s two calls."""

    def __init__(self, num_obs: list[int], n: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.num_obs, self.n = num_obs, n

    def reset(self) -> tuple[np.ndarray, np.ndarray]:
        return self.step(None)

    def step(self, actions: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        del actions
        obs = np.stack([self.rng.integers(0, o, size=self.n) for o in self.num_obs], axis=1)
        return obs, self.rng.random(self.n) < 0.1


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
        self.kernel = native.NativeTick(
            A, B, world.D, lnC=native.log_preferences(world.C), lnE=np.log(uniform + native.EPS),
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


def numpy_twin(world: World, n: int, scope: str, monkeypatch: pytest.MonkeyPatch
               ) -> AifAgentGroup:
    """The group of ``world`` learning in ``scope``, float64, kept on numpy."""
    monkeypatch.setenv(NATIVE_ENV, "0")
    spec = LearningSpec(pA=world.pA, refresh_every=1,
                        settings=LearningSettings(lr_pA=world.lr, scope=scope))  # type: ignore[arg-type]
    group = AifAgentGroup(GenerativeModel.from_arrays(world.A, world.B, world.C, world.D), n,
                          settings=SETTINGS, precision="float64", learning=spec)
    monkeypatch.delenv(NATIVE_ENV)
    assert group.learning is not None
    assert group.learning.describe()["stepping"] == f"numpy: {NATIVE_ENV}=0"
    return group


def library(build: str) -> ctypes.CDLL:
    """The library of ``build``: the package's, its baseline version, or (in test_recipe.py's
    subprocess) the sanitized one."""
    if build == "installed":
        return native.load()
    if build == "sanitized":
        return native.load(Path(os.environ[SANITIZED_ENV]))
    return native.load(native_builds.build(build))


#: The agents each world is stepped with.
SIZES = {"tmaze-A1": (1, 13, 40), "tmaze-A2": (1, 13, 40), "grid10-A0": (13, 40),
         "factors3": (13,), "limits": (13,)}
SCOPES = ("per_agent", "shared", "per_agent-frozen", "shared-frozen")
BUILDS = ("installed", "baseline", *(("sanitized",) if SANITIZED_ENV in os.environ else ()))


def sizes(world: str, build: str) -> tuple[int, ...]:
    """The agents ``world`` is stepped with in ``build``: the package's library every size,
    the others all but the five whole blocks."""
    return SIZES[world] if build == "installed" else tuple(n for n in SIZES[world] if n < 40)


class Case(NamedTuple):
    """One equality case: the world, its agents, the scope and the build."""

    world: str
    n: int
    scope: str
    build: str


def _cases() -> Iterator[Any]:
    for build in BUILDS:
        for world in SIZES:
            for n in sizes(world, build):
                for scope in SCOPES:
                    yield pytest.param(Case(world, n, scope, build),
                                       id=f"{world}-n{n}-{scope}-{build}")


def _optimal(actions: np.ndarray, q_pi: np.ndarray, policies_first: np.ndarray,
             num_controls: list[int]) -> None:
    """Each agent's action of every factor is a maximum of its marginal under ``q_pi``."""
    for f, u in enumerate(num_controls):
        marginal = q_pi @ np.eye(u)[policies_first[:, f]]
        chosen = marginal[np.arange(len(actions)), actions[:, f]]
        assert np.all(chosen >= marginal.max(axis=1) - TOL), f"factor {f}"


def _joint(qs: list[np.ndarray]) -> np.ndarray:
    joint = qs[0]
    for q in qs[1:]:
        joint = (joint[:, :, None] * q[:, None, :]).reshape(len(q), -1)
    return joint


@pytest.mark.parametrize("case", list(_cases()))
def test_the_compiled_tick_is_its_numpy_twin_up_to_rounding(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world_name, n, scope, build = case
    world = make_world(world_name, tmp_path)
    counting = scope.removesuffix("-frozen")
    frozen = scope.endswith("-frozen")
    group = numpy_twin(world, n, counting, monkeypatch)
    tick = Pass(world, n, counting, library(build))
    num_obs = [a.shape[0] for a in world.A]
    env: Any = (RandomOutcomes(num_obs, n, seed=n) if world.workload is None
                else ClosedLoopWorld(load_workload(str(world.workload)), n, seed=1))
    ticks = 12 if world_name == "limits" else 36
    pA = group.learning.learner.pA  # type: ignore[union-attr]
    assert pA is not None
    assert list(pA.tables) == tick.learned
    obs, start = env.reset()
    starts = 0
    for t in range(ticks):
        learn = not (frozen and ticks // 3 <= t < 2 * ticks // 3)
        if frozen and t == ticks // 3:
            assert group.freeze_learning()
        if frozen and t == 2 * ticks // 3:
            assert group.resume_learning()
        starts += int(start.sum())
        if start.any():
            group.reset(start)
        before = [a.copy() for a in tick.A]  # the tables the tick's p(o_m) is under
        prior_in = [p.copy() for p in group.state.prior]  # a shared group's: this tick's
        actions = group.step(obs).copy()
        tick.step(obs, start, learn=learn)

        for mine, theirs in zip(tick.qs, group.state.qs, strict=True):
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=TOL)
        np.testing.assert_allclose(tick.G, group.state.G, rtol=0, atol=TOL)
        np.testing.assert_allclose(tick.q_pi, group.state.q_pi, rtol=0, atol=TOL)
        prior = group.state.prior if counting == "per_agent" else prior_in
        for mine, theirs in zip(tick.prior, prior, strict=True):
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=TOL)
        # p(o_m): each modality's table before the update (a learned one's from the pass's
        # tables of the last tick, checked then) under the joint prior
        joint = _joint(tick.prior)
        for m, a in enumerate(world.A):
            table = (before[tick.learned.index(m)] if m in world.pA
                     else a.reshape(a.shape[0], -1))
            rows = table[np.arange(n), obs[:, m]] if table.ndim == 3 else table[obs[:, m]]
            np.testing.assert_allclose(tick.p_obs[:, m], (rows * joint).sum(axis=1), rtol=0,
                                       atol=TOL)
        for slot, _ in enumerate(tick.learned):
            theirs = pA.counts[slot].reshape(tick.counts[slot].shape)
            np.testing.assert_allclose(tick.counts[slot], theirs, rtol=0, atol=TOL)
            np.testing.assert_allclose(tick.A[slot], theirs / theirs.sum(axis=-2, keepdims=True),
                                       rtol=0, atol=TOL)
            seen = pA.experience[slot].reshape(tick.experience[slot].shape)
            np.testing.assert_allclose(tick.experience[slot], seen, rtol=0, atol=TOL * n)
        _optimal(tick.action, group.state.q_pi, tick.policies_first,
                 [b.shape[2] for b in world.B])
        if counting == "shared":  # the next prior, of the pass's actions where they agree
            same = (tick.action == actions).all(axis=1)
            for mine, theirs in zip(tick.next_prior, group.state.prior, strict=True):
                np.testing.assert_allclose(mine[same], theirs[same], rtol=0, atol=TOL)
        tick.follow(group, actions)
        obs, start = env.step(actions)
    assert starts > n  # the episodes' starts were stepped through, not only the first


@pytest.mark.parametrize("world_name", list(SIZES))
def test_each_agent_is_its_float64_reference_agent(world_name: str, tmp_path: Path) -> None:
    """The pass of each agent's own counts, agent by agent the oracle of pymdp 0.0.7.1's
    learning (its posteriors, ``q_pi`` and counts; the pass's actions optimal under its
    marginals, then the oracle's)."""
    world = make_world(world_name, tmp_path)
    n, ticks = 3, 8
    model = GenerativeModel.from_arrays(world.A, world.B, world.C, world.D)
    tick = Pass(world, n, "per_agent", native.load())
    refs = [LearningReferenceAgent(model, SETTINGS, pA=world.pA, lr_pA=world.lr)
            for _ in range(n)]
    rng = np.random.default_rng(11)
    for _ in range(ticks):
        obs = np.stack([rng.integers(0, a.shape[0], size=n) for a in world.A], axis=1)
        tick.step(obs, np.zeros(n, dtype=bool), learn=True)
        for i, ref in enumerate(refs):
            ref.infer_states(obs[i])
            ref.update_A(obs[i])
            ref.infer_policies()
            for f, q in enumerate(ref.qs):
                np.testing.assert_allclose(tick.qs[f][i], q, rtol=0, atol=TOL)
            assert ref.q_pi is not None
            np.testing.assert_allclose(tick.q_pi[i], ref.q_pi, rtol=0, atol=TOL)
            for slot, m in enumerate(tick.learned):
                np.testing.assert_allclose(tick.counts[slot][i],
                                           ref.pA[m].reshape(tick.counts[slot][i].shape),
                                           rtol=0, atol=TOL)
            for f, marginal in enumerate(ref.action_marginals()):
                assert marginal[tick.action[i, f]] >= marginal.max() - TOL
            ref.action = tick.action[i].copy()  # the pass's choice, optimal under the oracle's


def test_the_pass_refuses_a_model_above_the_library_s_limits() -> None:
    states = native.limits()["joint"] + 72  # a joint state above the pass's stack arrays
    A = [np.full((2, states), 0.5)]
    world = World(A, [np.eye(states)[:, :, None]], [np.zeros(2)],
                  [np.full(states, 1.0 / states)], {0: A[0] * 2}, 1.0)
    with pytest.raises(ValueError, match=f"joint {states} above the compiled tick's 128"):
        Pass(world, 2, "per_agent", native.load())

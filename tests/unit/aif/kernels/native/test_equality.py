"""The compiled tick's one equality suite: the pass (tick.c through its binding, driven here
over arrays of its own) does its numpy twin's work, up to rounding (``TOL``), tick after tick,
for every world x scope x build:

- worlds: the T-maze learning its cue or its reward modality and grid10 its observation model
  (the benchmark's workloads, closed loop: the world steps with the actions, episode starts
  included), a random 3-factor model of 18 policies learning two modalities, a random model
  at every limit the binding admits (tick.h's, read from the library: 4 factors, 128 joint
  states, 8 modalities, 64 policies, 16 controls of a factor) learning three, and a random
  2-factor model of 15 joint states learning both its modalities (tables of 45 and 75 values:
  the pass moves a block's rows four values at a time, and the rest one by one); 1, 13 (a whole
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
with the group's). Each tick starts from the same numbers (the pass takes the twin's: left
alone they drift apart as the maths amplifies rounding, ``Pass.follow`` says how far). The
worlds, their sizes and the driver are tests/support/native_tick.py's. Each per-agent agent is
also its own float64 reference agent (pymdp 0.0.7.1's maths, aif/reference_learning.py) at
every world.

The baseline build needs a C compiler (``cc``; ``apt-get install gcc libc6-dev``; scripts/test
installs one)."""

from __future__ import annotations

import ctypes
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from edge_agent.aif.constants import EPS
from edge_agent.aif.kernels import native
from edge_agent.aif.kernels.native import binding
from edge_agent.aif.learning import LearningSettings, LearningSpec
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.policies import construct_policies
from edge_agent.aif.reference_learning import LearningReferenceAgent
from edge_agent.aif.settings import AifSettings
from edge_agent.core import agents
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.native_pass import NATIVE_ENV, compiled_nbytes, frozen_kernel
from edge_agent.core.path_choice import TickCosts
from edge_agent.sim.registry import BUILTIN_WORKLOADS, builtin_model
from tests.support import native_builds
from tests.support.native_tick import (
    FROZEN_L2_WORLDS,
    FROZEN_WORLDS,
    SANITIZED_ENV,
    SCOPES,
    SETTINGS,
    SIZES,
    Pass,
    World,
    frozen_l2_sizes,
    frozen_sizes,
    make_world,
    outcomes,
    sizes,
)
from tests.support.per_agent_prior import per_agent_prior

TOL = 1e-9


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
        return binding.load()
    if build == "sanitized":
        return binding.load(Path(os.environ[SANITIZED_ENV]))
    return binding.load(native_builds.build(build))


BUILDS = ("installed", "baseline", *(("sanitized",) if SANITIZED_ENV in os.environ else ()))


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
             num_controls: list[int], tol: float = TOL) -> None:
    """Each agent's action of every factor is a maximum of its marginal under ``q_pi``."""
    for f, u in enumerate(num_controls):
        marginal = q_pi @ np.eye(u)[policies_first[:, f]]
        chosen = marginal[np.arange(len(actions)), actions[:, f]]
        assert np.all(chosen >= marginal.max(axis=1) - tol), f"factor {f}"


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
    env = outcomes(world, n)
    ticks = 12 if world_name == "limits" else 36
    pA = group.learning.learner.pA  # type: ignore[union-attr]
    assert pA is not None
    assert list(pA.tables) == tick.learned
    obs, start = env.reset()
    starts = 0
    for t in range(ticks):
        learn = not (frozen and ticks // 3 <= t < 2 * ticks // 3)
        if frozen and t == ticks // 3:
            assert group.learning.freeze()
        if frozen and t == 2 * ticks // 3:
            assert group.learning.resume()
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
        # the next prior, of the pass's actions where they agree (per agent, what a group's
        # pass keeps in its state and takes at its next tick: ``B`` of the action chosen times
        # the posterior, the twin's state holding the tick's prior, made at inference)
        same = (tick.action == actions).all(axis=1)
        following = group.state.prior if counting == "shared" else per_agent_prior(group)
        for mine, theirs in zip(tick.next_prior, following, strict=True):
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
    tick = Pass(world, n, "per_agent", binding.load())
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
    states = binding.limits()["joint"] + 72  # a joint state above the pass's stack arrays
    A = [np.full((2, states), 0.5)]
    world = World(A, [np.eye(states)[:, :, None]], [np.zeros(2)],
                  [np.full(states, 1.0 / states)], {0: A[0] * 2}, 1.0)
    with pytest.raises(ValueError, match=f"joint {states} above the compiled tick's 128"):
        Pass(world, 2, "per_agent", binding.load())


class FrozenCase(NamedTuple):
    """One equality case of a group that does not learn: the world, its agents, the group's
    precision and the build."""

    world: str
    n: int
    precision: str
    build: str


def _frozen_cases() -> Iterator[Any]:
    for build in BUILDS:
        for world in FROZEN_WORLDS:
            for n in frozen_sizes(world, build):
                for precision in ("float64", "int8"):
                    yield pytest.param(FrozenCase(world, n, precision, build),
                                       id=f"{world}-n{n}-{precision}-{build}")


def frozen_group(world: World, n: int, precision: str,
                 settings: AifSettings = SETTINGS) -> AifAgentGroup:
    """The group of ``world``'s model that does not learn, at ``precision``."""
    return AifAgentGroup(GenerativeModel.from_arrays(world.A, world.B, world.C, world.D), n,
                         settings=settings, precision=precision)  # type: ignore[arg-type]


#: How far a frozen group's compiled tick is from its numpy twin: rounding of float64, or of
#: the float32 state an int8 group keeps (the pass reads and writes it, its arithmetic double;
#: numpy's arithmetic is float32): far inside docs/quantization.md's bound.
FROZEN_TOL = {"float64": TOL, "int8": 2e-4}


@pytest.mark.parametrize("case", list(_frozen_cases()))
def test_a_frozen_group_s_compiled_tick_is_its_numpy_twin_up_to_rounding(
    case: FrozenCase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group that does not learn steps on the compiled tick (the build's library as the
    package's, taken unmeasured: ``EDGE_AGENT_NATIVE_TICK=1``), its numpy twin on numpy
    (``EDGE_AGENT_NATIVE_TICK=0``): the same stored codes or tables, the same posteriors,
    priors, ``G`` and ``q_pi`` up to rounding, the compiled group's actions optimal under the
    twin's ``q_pi`` (each tick both go on from the twin's numbers and actions)."""
    _frozen_side_by_side(case, SETTINGS, tmp_path, monkeypatch)


#: The settings of the two-step cases: the suite's, planning policies of two steps.
SETTINGS_L2 = dataclasses.replace(SETTINGS, policy_len=2)


def _frozen_l2_cases() -> Iterator[Any]:
    for build in BUILDS:
        for world in FROZEN_L2_WORLDS:
            for n in frozen_l2_sizes(build):
                for precision in ("float64", "int8"):
                    yield pytest.param(FrozenCase(world, n, precision, build),
                                       id=f"{world}-n{n}-{precision}-{build}")


@pytest.mark.parametrize("case", list(_frozen_l2_cases()))
def test_a_frozen_group_s_two_step_plan_is_its_numpy_twin_up_to_rounding(
    case: FrozenCase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the one-step cases above, with policies of two steps (policy_len 2): the pass's
    ``G`` (each policy's two steps' utility and information gain) and ``q_pi`` are the twin's
    (its policy tree, merged joint nodes and all) up to rounding, its actions optimal under the
    twin's ``q_pi``, through the episodes' resets."""
    _frozen_side_by_side(case, SETTINGS_L2, tmp_path, monkeypatch)


def _frozen_side_by_side(case: FrozenCase, settings: AifSettings, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A frozen group of ``case`` with ``settings`` on the compiled tick and its numpy twin,
    tick after tick (the tests above)."""
    world_name, n, precision, build = case
    world = make_world(world_name, tmp_path)
    tol = FROZEN_TOL[precision]
    monkeypatch.setenv(NATIVE_ENV, "0")
    twin = frozen_group(world, n, precision, settings)
    monkeypatch.delenv(NATIVE_ENV)
    assert twin.stepping == f"numpy: {NATIVE_ENV}=0"
    monkeypatch.setattr(binding, "_LIBRARY", library(build))
    monkeypatch.setenv(NATIVE_ENV, "1")  # the compiled tick, unmeasured: its results the subject
    group = frozen_group(world, n, precision, settings)
    monkeypatch.delenv(NATIVE_ENV)
    assert group.stepping == "native"
    if precision == "int8":  # the same stored codes, decoded the same way
        assert group.quantized is not None
        assert twin.quantized is not None
        for mine, theirs in zip(group.quantized.A, twin.quantized.A, strict=True):
            np.testing.assert_array_equal(mine.codes, theirs.codes)
    policies_first = construct_policies([b.shape[2] for b in world.B],
                                        settings.policy_len)[:, 0, :]
    env = outcomes(world, n)
    obs, start = env.reset()
    ticks = 12 if world_name == "limits" else 36
    starts = 0
    # docs/quantization.md, several factors: float32 (numpy) and double (the pass) arithmetic
    # on the same decoded tables may stop the mean-field iteration at another step or reach
    # another fixed point (the 4-factor limits world: one agent of 13, 0.0076 apart); there
    # the documented rule holds, the median per-agent belief KL below 1e-4, and the agents
    # that agree agree to rounding
    fixed_point_may_differ = precision == "int8" and len(world.B) > 3
    kl: list[np.ndarray] = []
    for _ in range(ticks):
        starts += int(start.sum())
        if start.any():
            twin.reset(start)
            group.reset(start)
        actions = twin.step(obs).copy()
        mine = group.step(obs).copy()
        close = np.ones(n, dtype=bool)  # the agents whose posteriors agree to rounding
        for a, b in zip(group.state.qs, twin.state.qs, strict=True):
            assert a.dtype == b.dtype
            close &= (np.abs(a - b) <= tol).all(axis=1)
            kl.append((b * (np.log(b + 1e-16) - np.log(a + 1e-16))).sum(axis=1))
        if not fixed_point_may_differ:
            assert close.all(), f"{np.flatnonzero(~close)}: posteriors apart"
        same = (mine == actions).all(axis=1) & close  # the next prior, where the actions agree
        for a, b in zip(group.state.prior, twin.state.prior, strict=True):
            np.testing.assert_allclose(a[same], b[same], rtol=0, atol=tol)
        np.testing.assert_allclose(group.state.G[close], twin.state.G[close], rtol=0,
                                   atol=tol * 10)
        # q_pi is the softmax of -gamma G: where an agent's G are delta apart at most, each
        # policy's probability is within a factor exp(+-2 gamma delta) of the twin's, and
        # rounding's tol beyond that (arm64's float32 numpy, gamma 16: 2.1e-4 at 0.165, the
        # 4-factor limits world, with G inside its bound)
        delta = np.abs(group.state.G - twin.state.G).max(axis=1, keepdims=True)
        bound = twin.state.q_pi * np.expm1(2 * SETTINGS.gamma * delta) + tol
        apart = np.abs(group.state.q_pi - twin.state.q_pi) > bound
        assert not apart[close].any(), (
            f"q_pi apart beyond the softmax of G's bound: {np.argwhere(apart & close[:, None])}")
        _optimal(mine[close], twin.state.q_pi[close].astype(np.float64), policies_first,
                 [b.shape[2] for b in world.B], tol=tol)
        # both go on from the twin's numbers (left alone they drift as rounding is amplified)
        for name in ("qs", "prior"):
            for a, b in zip(getattr(group.state, name), getattr(twin.state, name),
                            strict=True):
                a[...] = b
        for name in ("action", "has_action", "G", "q_pi"):
            getattr(group.state, name)[...] = getattr(twin.state, name)
        obs, start = env.step(actions)
    assert starts > n  # the episodes' starts were stepped through, not only the first
    assert float(np.median(np.concatenate(kl))) < 1e-4


def _float_state(n: int, num_states: list[int], factors: int, policies: int
                 ) -> dict[str, Any]:
    """A frozen int8 group's state for ``n`` agents as the pass writes it (float beliefs, priors,
    ``G`` and ``q_pi``), zeroed: what two kernels stepped side by side each keep."""
    return {"qs": [np.zeros((n, s), dtype=np.float32) for s in num_states],
            "prior": [np.zeros((n, s), dtype=np.float32) for s in num_states],
            "action": np.zeros((n, factors), dtype=np.int64),
            "has_action": np.zeros(n, dtype=np.bool_),
            "G": np.zeros((n, policies), dtype=np.float32),
            "q_pi": np.zeros((n, policies), dtype=np.float32)}


@pytest.mark.parametrize("build", BUILDS)
def test_a_frozen_model_s_likelihood_table_steps_as_the_product_and_its_logs(
    build: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model nobody learns gives the pass the log likelihood of every joint outcome once
    (``NativeTick.lnL``: numpy's ``ln(prod_m A_m[o_m] + eps)``, C order), a row gathered per
    agent and tick; the pass given it steps as the pass that takes the modalities' product and
    its logs (``lnL`` NULL), up to rounding, the same actions; a model that learns, or whose
    table is above ``LNL_TABLE``, gives none."""
    world = make_world("tmaze-A1", tmp_path)
    n = 13
    cm = frozen_group(world, n, "int8").cm
    with_table, without = frozen_kernel(cm, SETTINGS), frozen_kernel(cm, SETTINGS)
    assert isinstance(with_table, binding.NativeTick)
    assert isinstance(without, binding.NativeTick)
    kernels_ = (with_table, without)
    assert with_table.lnL is not None
    num_obs = [a.shape[0] for a in cm.A_rows]
    for j, o in enumerate(np.ndindex(*num_obs)):
        product = np.prod([np.asarray(a[o_m], dtype=np.float64)
                           for a, o_m in zip(cm.A_rows, o, strict=True)], axis=0)
        np.testing.assert_allclose(with_table.lnL[j], np.log(product + 1e-16), rtol=1e-15)
    without._model.lnL = None  # the product and its logs, per agent
    lib = library(build)
    for kernel in kernels_:
        kernel._tick = lib.edge_tick
    S, F, P = cm.A_rows[0].shape[1], len(cm.num_states), len(cm.tree.policies)

    states = [_float_state(n, cm.num_states, F, P) for _ in kernels_]
    env = outcomes(world, n)
    obs, start = env.reset()
    for _ in range(24):
        for kernel, st in zip(kernels_, states, strict=True):
            kernel.step(obs, st["qs"], st["action"], st["has_action"], G=st["G"],
                        q_pi=st["q_pi"], prior=st["prior"], start=start)
        ours, theirs = states
        for name in ("qs", "prior"):
            for a, b in zip(ours[name], theirs[name], strict=True):
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
        np.testing.assert_allclose(ours["G"], theirs["G"], rtol=0, atol=1e-5)
        np.testing.assert_array_equal(ours["action"], theirs["action"])
        obs, start = env.step(theirs["action"])
    assert with_table.lnL.shape == (int(np.prod(num_obs)), S)
    # a learning kernel's tables move: no table; above the bound: none either
    learning = binding.NativeTick(
        [np.asarray(a, dtype=np.float64) for a in cm.A_rows],
        [np.asarray(b) for b in world.B], [np.asarray(d) for d in world.D],
        lnC=with_table.lnC, lnE=with_table.lnE, policies=cm.tree.policies, learned=(1,),
        supports=[np.asarray(a) > 0 for a in cm.A_rows], n=n, gamma=16.0, num_iter=10,
        dF_tol=0.001, lr=1.0, use_utility=True, use_info_gain=True, shared_counts=True)
    assert learning.lnL is None
    monkeypatch.setattr(native, "LNL_TABLE", with_table.lnL.size - 1)
    above = frozen_kernel(cm, SETTINGS)
    assert isinstance(above, binding.NativeTick)
    assert above.lnL is None


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("world_name", ["tmaze-A1", "factors3", "limits"])
def test_a_frozen_model_s_first_step_table_and_policies_outcomes_step_bit_for_bit_as_made(
    build: str, world_name: str, tmp_path: Path
) -> None:
    """A model nobody learns gives the pass, beside ``lnL``, the mean-field iteration's first
    step of every joint outcome less the log prior (``NativeTick.lnQ1``, made once by the
    library's ``edge_tick_first_step``: from uniform beliefs the step is the observation's):
    each factor's ``S_f / S`` times the sums of ``lnL``'s row over its states; and every model
    each policy's outcomes its predicted states can give (``reach``: the states in the image of
    its actions' transitions). The pass given both (and its outcomes' twins, ``outcome_twin``)
    steps as the pass that makes the first step per agent (``lnQ1`` NULL) and sums and logs
    every outcome for every policy, bit for bit (the same sums in the same order; the outcomes
    left out are exactly 0): 2, 3 and 4 factors, whole and partial blocks, episode starts."""
    world = make_world(world_name, tmp_path)
    n = 13
    cm = frozen_group(world, n, "int8").cm
    with_table, without = frozen_kernel(cm, SETTINGS), frozen_kernel(cm, SETTINGS)
    assert isinstance(with_table, binding.NativeTick)
    assert isinstance(without, binding.NativeTick)
    assert with_table.lnL is not None
    assert with_table.lnQ1 is not None
    num_states = [int(s) for s in cm.num_states]
    F = len(num_states)
    S = int(np.prod(num_states))
    index = np.indices(num_states).reshape(len(num_states), S)
    expected = np.concatenate(
        [np.stack([with_table.lnL[:, index[f] == i].sum(axis=1) * s_f / S for i in range(s_f)],
                  axis=1) for f, s_f in enumerate(num_states)], axis=1)
    np.testing.assert_allclose(with_table.lnQ1, expected, rtol=1e-12, atol=1e-12)
    without._model.lnQ1 = None  # the first step made per agent
    without._model.outcome_twin = None  # and every outcome summed and logged
    P, K = len(cm.tree.policies), int(with_table._model.outcomes)
    for p, actions in enumerate(with_table.policies_first):  # reach: the brute force's
        moved = [np.asarray(b)[:, :, u].any(axis=1) for b, u in zip(world.B, actions, strict=True)]
        reached = np.flatnonzero(np.logical_and.reduce(
            [moved[f][with_table.state_index[f, with_table.entry_state]] for f in range(F)]))
        np.testing.assert_array_equal(
            with_table.reach[with_table.reach_start[p]:with_table.reach_start[p + 1]],
            np.unique(with_table.entry_outcome[reached]))
    if world_name == "tmaze-A1":  # some outcome left out (of 12: 10, 8, 8, 10)
        assert with_table.reach_start[-1] < P * K
    every = (np.arange(P + 1, dtype=np.int64) * K, np.tile(np.arange(K, dtype=np.int64), P))
    without._model.reach_start, without._model.reach = (a.ctypes.data for a in every)
    lib = library(build)
    kernels_ = (with_table, without)
    for kernel in kernels_:
        kernel._tick = lib.edge_tick

    states = [_float_state(n, num_states, F, P) for _ in kernels_]
    env = outcomes(world, n)
    obs, start = env.reset()
    for _ in range(12 if world_name == "limits" else 24):
        for kernel, st in zip(kernels_, states, strict=True):
            kernel.step(obs, st["qs"], st["action"], st["has_action"], G=st["G"],
                        q_pi=st["q_pi"], prior=st["prior"], start=start)
        ours, theirs = states
        for name in ("qs", "prior"):
            for a, b in zip(ours[name], theirs[name], strict=True):
                np.testing.assert_array_equal(a, b)
        for name in ("G", "q_pi", "action", "has_action"):
            np.testing.assert_array_equal(ours[name], theirs[name])
        obs, start = env.step(theirs["action"])
    # one factor: no iteration, no table
    assert binding.NativeTick(
        [np.ones((2, 3)) / 2], [np.eye(3)[:, :, None]], [np.ones(3) / 3], lnC=[np.zeros(2)],
        lnE=np.zeros(1), policies=np.zeros((1, 1, 1), dtype=np.int64), learned=(),
        supports=[np.ones((2, 3), dtype=bool)], n=1, gamma=16.0, num_iter=10, dF_tol=0.001,
        lr=1.0, use_utility=True, use_info_gain=True, shared_counts=False).lnQ1 is None


def _kernel_of(group: AifAgentGroup) -> binding.NativeTick:
    """The compiled tick a group steps with: its learning pass's, else its frozen one."""
    if group.learning is not None:
        found = group.learning.scope.tick_pass()
        assert found is not None
        kernel = found._kernel  # type: ignore[attr-defined]
    else:
        kernel = group._native
    assert isinstance(kernel, binding.NativeTick)
    return kernel


def _step_bit_for_bit(
    groups: list[AifAgentGroup], env: Any, *, ticks: int, learns: bool
) -> None:
    """Two groups stepped ``ticks`` times on the same outcomes (the first one's actions move the
    world): actions, posteriors, ``G``, ``q_pi`` and, when they learn, their counts equal to the
    bit every tick."""
    ours, theirs = groups
    obs, start = env.reset()
    for _ in range(ticks):
        actions = []
        for group in groups:
            if start.any():
                group.reset(start)
            actions.append(group.step(obs))
        np.testing.assert_array_equal(*actions)
        for a, b in zip(ours.qs, theirs.qs, strict=True):
            np.testing.assert_array_equal(a, b)
        for name in ("G", "q_pi"):
            np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name))
        if learns:
            assert ours.learning is not None
            assert theirs.learning is not None
            for a, b in zip(ours.learning.learner.counts, theirs.learning.learner.counts,
                            strict=True):
                for x, y in zip(a.counts, b.counts, strict=True):
                    np.testing.assert_array_equal(x, y)
        obs, start = env.step(actions[0])


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("group_kind", [
    ("per_agent", "float64", 1), ("shared", "int8", 1), ("shared", "float64", 1),
    (None, "int8", 2)], ids=["per_agent-float64", "shared-int8", "shared-float64", "frozen-L2"])
def test_an_outcome_whose_prediction_is_another_s_is_summed_and_logged_once_bit_for_bit(
    build: str, group_kind: tuple[str | None, str, int], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The joint outcomes whose entries, in the order the pass sums them, are of the same
    states with the same values in every lane (``outcome_twin``: the same shared factor, the
    same learned tables' indices) are found (the T-maze learning its reward: each cue outcome
    away from the cue, 5 of 12, the twin of the other's) and summed and logged once; the group
    stepping so is the group whose pass sums and logs every outcome (``outcome_twin`` NULL), bit
    for bit: posteriors, ``G``, ``q_pi``, actions and the learned tables, per agent and shared
    (float64, int8), frozen with two-step policies, 60 ticks through the episodes' resets."""
    scope, precision, policy_len = group_kind
    world = make_world("tmaze-A1", tmp_path)
    n = 13
    settings = dataclasses.replace(SETTINGS, policy_len=policy_len)
    monkeypatch.setattr(binding, "_LIBRARY", library(build))
    monkeypatch.setenv(NATIVE_ENV, "1")
    spec = None if scope is None else LearningSpec(
        pA=world.pA, refresh_every=1,
        settings=LearningSettings(lr_pA=world.lr, scope=scope))  # type: ignore[arg-type]
    groups = [AifAgentGroup(GenerativeModel.from_arrays(world.A, world.B, world.C, world.D), n,
                            settings=settings, precision=precision,  # type: ignore[arg-type]
                            learning=spec) for _ in range(2)]
    monkeypatch.delenv(NATIVE_ENV)
    twins, every = (_kernel_of(group) for group in groups)
    twin = twins.outcome_twin
    assert twin is not None
    # each twin's entries, in the order summed: its first's states and values (brute force)
    first = np.flatnonzero(twin < 0)
    assert len(twin) == 12
    assert len(first) == 7
    keys = []
    for k in range(len(twin)):
        order = [e for e in twins.state_entry if twins.entry_outcome[e] == k]
        keys.append([(int(twins.entry_state[e]), float(twins.entry_shared[e]),
                      *(int(index[e]) for index in twins.entry_index if index is not None))
                     for e in order])
    for k, j in enumerate(twin):
        assert (j < 0 and all(keys[i] != keys[k] for i in range(k))) or (
            0 <= j < k and twin[j] < 0 and keys[j] == keys[k]), k
    every._model.outcome_twin = None
    _step_bit_for_bit(groups, outcomes(world, n), ticks=60, learns=scope is not None)


@pytest.mark.parametrize("build", BUILDS)
def test_a_log_is_the_same_bits_wherever_tick_log_inplace_takes_it(build: str) -> None:
    """The shared pass's once-a-tick log likelihood (tick.c's ``shared_likelihood``) is each
    agent's to the bit only if ``tick_log_inplace`` gives a value the same log wherever it lies
    in an array of whole lanes (BLK values: a block's ``S`` lanes, the table's rows padded to
    whole lanes): its loop's vector body takes them all, 2 (baseline) or 4 (x86-64-v3) a call,
    and a vector log's lane is its own value's. Values as the likelihood's products are (in
    (0, 1], zeros, the smallest normal ones, ones): each one's log alone in a block of 8 (among
    others' values), in a block of 64 and in a table of 8 x 24 at every whole-lane offset is the
    same bits as in the first call."""
    lib = library(build)
    log_inplace = lib.tick_log_inplace
    log_inplace.restype = None
    log_inplace.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_double]
    rng = np.random.default_rng(58)
    values = np.concatenate([rng.random(120), rng.random(40) ** 20,
                             [0.0, 1.0, 2.2250738585072014e-308, 0.5, 1e-16, 0.25, 1.0, 0.0]])
    assert len(values) % 8 == 0

    def logs(x: np.ndarray) -> np.ndarray:
        out = np.ascontiguousarray(x, dtype=np.float64).copy()
        log_inplace(out.ctypes.data, len(out), EPS)
        return out

    first = logs(values)
    for width in (8, 64, 192):  # a block's lane, a block's S lanes (T-maze), the T-maze table
        for at in range(0, len(values), 8):
            chunk = np.resize(np.roll(values, -at), width)
            np.testing.assert_array_equal(
                logs(chunk).view(np.uint64), np.resize(np.roll(first, -at), width).view(np.uint64))


@pytest.mark.parametrize("build", BUILDS)
def test_the_pass_s_logs_of_x_plus_eps_are_tick_log_s_quads_of_zeros_included(build: str) -> None:
    """The pass's ``log(x + 1e-16)`` of the log prior, the likelihood and the predicted outcomes
    (tick.c's ``vm_log_eps``, through ``edge_tick_log_eps`` as this CPU's version takes it: on
    x86-64-v3 libmvec's AVX2 log called in the pass, a quad of zeros given the log of
    ``0 + 1e-16`` made once, without a call) is ``tick_log``'s, bit for bit: values as theirs
    are (in (0, 1], quads of +0 and -0, quads with one to three zeros, the smallest normal and
    subnormal values, 1e-16, 1), in arrays of whole lanes (8 to 192 values) at every quad's
    offset, in place and into another array, and a count that is not whole lanes."""
    lib = library(build)
    log_eps, log = lib.edge_tick_log_eps, lib.tick_log
    log_eps.restype = log.restype = None
    log_eps.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    log.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_double]
    rng = np.random.default_rng(14)
    some_zeros = rng.random(64)
    some_zeros[rng.random(64) < 0.4] = 0.0
    values = np.concatenate([
        rng.random(40), some_zeros, np.zeros(16), [-0.0, 0.0, -0.0, -0.0],
        [0.0, 0.0, 0.0, 1e-16], [2.2250738585072014e-308, 0.0, 5e-324, 0.0], [1.0, 0.0, 0.0, 0.5],
        rng.random(16) ** 30, [0.0] * 4, [1.0, 1e-16, 0.25, 0.0]])
    assert len(values) % 8 == 0

    def applied(x: np.ndarray, fn: Any, in_place: bool) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float64).copy()
        y = x if in_place else np.full_like(x, np.nan)
        if fn is log:
            fn(x.ctypes.data, y.ctypes.data, len(x), EPS)
        else:
            fn(x.ctypes.data, y.ctypes.data, len(x))
        return y

    for width in (8, 16, 64, 112, 192, 12):
        for at in range(0, len(values), 4):
            chunk = np.resize(np.roll(values, -at), width)
            made = applied(chunk, log, in_place=False)
            for in_place in (False, True):
                np.testing.assert_array_equal(
                    applied(chunk, log_eps, in_place).view(np.uint64), made.view(np.uint64))


@pytest.mark.parametrize("build", BUILDS)
def test_an_exp_and_a_log_are_the_same_bits_wherever_the_iteration_s_softmaxes_take_them(
    build: str,
) -> None:
    """Where the tick takes several arrays' exps or logs in one call of whole lanes (the log
    prior's and the likelihood's logs in one ``tick_log_inplace`` call), and where it took one
    call of every factor's softmax values (the iteration's, before its softmax was made in
    quads): the same bits as a call each only if a value's exp, and its log, is the same
    wherever it lies in an array of whole lanes
    (the vector bodies take them all; a vector lane is its own value's). Values as the softmax's
    are (``x - max``: 0, small and large negatives, the exp's underflow) and as its totals are
    (in [1, S_f]): each one's exp, and log, in arrays of one to eight factors' lanes (8 to 64
    values, the T-maze's 6 lanes: 48) at every whole-lane offset, the same bits as in the first
    call."""
    lib = library(build)
    exp_inplace, log_inplace = lib.tick_exp_inplace, lib.tick_log_inplace
    exp_inplace.restype = log_inplace.restype = None
    exp_inplace.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    log_inplace.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_double]
    rng = np.random.default_rng(11)
    steps = np.concatenate([-rng.random(64) * 3.0, -rng.random(40) * 40.0, -rng.random(8) * 800.0,
                            [0.0, -0.0, -1e-300, -708.0, -745.2, -1.0, 0.0, -36.8]])
    totals = np.concatenate([1.0 + rng.random(112) * 7.0, [1.0, 2.0, 8.0, 1.0 + 2**-52] * 2])

    def applied(x: np.ndarray, exp: bool) -> np.ndarray:
        out = np.ascontiguousarray(x, dtype=np.float64).copy()
        if exp:
            exp_inplace(out.ctypes.data, len(out))
        else:
            log_inplace(out.ctypes.data, len(out), 0.0)
        return out

    for values, exp in ((steps, True), (totals, False)):
        assert len(values) % 8 == 0
        first = applied(values, exp)
        for width in (8, 16, 32, 48, 64):
            for at in range(0, len(values), 8):
                chunk = np.resize(np.roll(values, -at), width)
                np.testing.assert_array_equal(
                    applied(chunk, exp).view(np.uint64),
                    np.resize(np.roll(first, -at), width).view(np.uint64))


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("world_name", ["tmaze-A1", "tmaze-A2", "factors3", "grid10-A0"])
@pytest.mark.parametrize("precision", ["float64", "int8"])
def test_a_shared_pass_s_likelihood_tables_made_once_a_tick_step_bit_for_bit_as_each_agent_s(
    build: str, world_name: str, precision: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shared counts learning ``A`` (``tick_model.shared_tables``): the pass makes ``lnL`` and
    ``lnQ1`` of the tables every agent infers with once a tick, and each agent's likelihood is
    a row gathered; the group stepping so is the group whose pass gathers each agent's rows,
    multiplies them and takes their logs (``shared_tables`` 0), bit for bit: posteriors,
    ``G``, ``q_pi``, actions and counts, 30 ticks through the episodes' resets,
    with more agents than the table's rows (the pass makes it) and one agent (it does not:
    the table's logs would be more than the block's)."""
    world = make_world(world_name, tmp_path)
    monkeypatch.setattr(binding, "_LIBRARY", library(build))
    spec = LearningSpec(pA=world.pA, refresh_every=1,
                        settings=LearningSettings(lr_pA=world.lr, scope="shared"))
    model = GenerativeModel.from_arrays(world.A, world.B, world.C, world.D)
    rows = int(np.prod([a.shape[0] for a in world.A]))
    for n in (rows + 3, 1):
        monkeypatch.setenv(NATIVE_ENV, "1")
        groups = [AifAgentGroup(model, n, settings=SETTINGS,
                                precision=precision,  # type: ignore[arg-type]
                                learning=spec) for _ in range(2)]
        monkeypatch.delenv(NATIVE_ENV)
        tables, each = (_kernel_of(group) for group in groups)
        assert tables._model.shared_tables == 1
        each._model.shared_tables = 0
        _step_bit_for_bit(groups, outcomes(world, n), ticks=30, learns=True)


@pytest.mark.parametrize("native_faster", [True, False])
def test_a_frozen_group_of_a_local_planner_s_model_keeps_the_path_measured_cheaper(
    native_faster: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """grid10's group that does not learn (numpy steps it with the local one-step planner)
    measures both paths and keeps the cheaper (the compiled tick at a few agents, numpy's local
    planner from a few dozen up: benchmarks/notes/learning.md); the costs here are the test's
    own, not the machine's. Either way it reserves its compiled tick's bytes with its agents."""
    world = make_world("grid10-A0", tmp_path)
    costs = TickCosts(native_s=0.001 if native_faster else 0.005, numpy_s=0.002, agents=13)
    monkeypatch.setattr(agents, "measure_costs", lambda *a, **k: costs)
    monkeypatch.delenv(NATIVE_ENV, raising=False)
    for precision in ("float64", "int8"):
        group = frozen_group(world, 13, precision)
        assert group.cm.local is not None  # numpy's path is the local planner
        assert group.memory.compiled_nbytes > 0
        if native_faster:
            assert group.stepping == "native"
        else:
            assert group.stepping.startswith("numpy: measured faster (numpy 2 ms a tick")


def test_a_local_planner_s_group_above_the_measured_sizes_steps_numpy_unmeasured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above ``LOCAL_MEASURED`` agents a grid10 group that does not learn steps numpy's local
    planner without measuring (the two paths are close from about 48 agents: a busy moment
    must not put groups of one size on different paths) and says why; it reserves its compiled
    tick's bytes all the same (a model's groups reserve alike whatever their size); at
    ``LOCAL_MEASURED`` it still measures."""
    from edge_agent.core.native_pass import LOCAL_MEASURED

    world = make_world("grid10-A0", tmp_path)
    measured: list[int] = []

    def measure(*args: Any, n_agents: int, **kwargs: Any) -> TickCosts:
        measured.append(n_agents)
        return TickCosts(native_s=0.001, numpy_s=0.002, agents=n_agents)

    monkeypatch.setattr(agents, "measure_costs", measure)
    monkeypatch.delenv(NATIVE_ENV, raising=False)
    above = frozen_group(world, LOCAL_MEASURED + 1, "int8")
    assert measured == []
    assert above.memory.compiled_nbytes > 0
    assert above.stepping == (
        f"numpy: the local one-step planner (numpy) outruns the compiled tick's dense plan "
        f"above {LOCAL_MEASURED} agents"
    )
    at = frozen_group(world, LOCAL_MEASURED, "int8")
    assert measured == [LOCAL_MEASURED]
    assert at.stepping == "native"


def _shipped_model(name: str, tmp_path: Path) -> GenerativeModel:
    """A model the repository ships: a built-in workload's (``builtin:<name>``) or the equality
    suite's world's."""
    kind, _, which = name.partition(":")
    if kind == "builtin":
        return builtin_model(which)
    world = make_world(name, tmp_path)
    return GenerativeModel.from_arrays(world.A, world.B, world.C, world.D)


@pytest.mark.parametrize("policy_len", [1, 2])
@pytest.mark.parametrize("precision", ["float64", "int8"])
@pytest.mark.parametrize("name", [*(f"builtin:{n}" for n in BUILTIN_WORKLOADS), *FROZEN_WORLDS,
                                  "grid2f-A0"])
def test_a_frozen_compiled_tick_s_bytes_are_planned_exactly_from_the_model(
    name: str, precision: str, policy_len: int, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a group that does not learn reserves for its compiled tick, planned from its model
    alone (``compiled_nbytes``: ``native.frozen_nbytes``, the scratch by ``scratch_doubles``;
    nothing built, the library not needed) is exactly the ``nbytes`` of the compiled tick
    ``frozen_kernel`` builds, for every model the repository ships (its built-in workloads and
    the equality suite's worlds) at either precision, planning one-step or two-step policies
    (a two-step plan's arrays and scratch); a group made only to be sized reserves it and
    builds none."""
    monkeypatch.delenv(NATIVE_ENV, raising=False)
    model = _shipped_model(name, tmp_path)
    settings = dataclasses.replace(SETTINGS, policy_len=policy_len)
    probe = AifAgentGroup(model, 1, settings=settings, precision=precision,  # type: ignore[arg-type]
                          sizing_only=True)
    above = native.too_large(model.num_states, model.num_controls, model.num_modalities,
                             len(probe.cm.tree.policies))
    if above is not None:  # two-step policies above the limits: numpy, nothing reserved
        assert probe.stepping == f"numpy: {above}"
        assert probe.memory.compiled_nbytes == compiled_nbytes(probe.cm, settings) == 0
        return
    assert probe.stepping == "numpy: made to be sized only (admission's plan)"
    kernel = frozen_kernel(probe.cm, settings)
    assert isinstance(kernel, binding.NativeTick), kernel
    assert probe.memory.compiled_nbytes == compiled_nbytes(probe.cm, settings) == kernel.nbytes


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("world_name", list(SIZES))
def test_the_scratch_s_python_twin_is_the_library_s_learning_or_not(
    world_name: str, build: str, tmp_path: Path
) -> None:
    """``native.scratch_doubles`` (the bytes planned without the library) is what the library
    says its pass needs (``edge_tick_scratch_doubles``), with the learned tables' lanes of a pass
    that learns (per agent or shared) and without them."""
    world = make_world(world_name, tmp_path)
    for scope in ("per_agent", "shared"):
        kernel = Pass(world, 13, scope, library(build)).kernel
        S = int(np.prod(kernel.num_states))
        assert kernel._scratch is not None
        assert kernel._scratch.size == native.scratch_doubles(
            kernel.num_states.tolist(), kernel.num_controls.tolist(), policies=len(kernel.lnE),
            outcomes=kernel._model.outcomes, entries=kernel._model.entries,
            learned_values=sum(int(kernel.num_obs[m]) * S for m in kernel.learned),
            shared_table=int(np.prod(kernel.num_obs)) if kernel._model.shared_tables else 0)


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("world_name", ["tmaze-A1", "tmaze-A2", "factors3", "odd"])
def test_each_agent_s_table_is_its_counts_expectation_to_the_bit_made_in_the_block_s_lanes(
    build: str, world_name: str, tmp_path: Path,
) -> None:
    """Each agent its own counts: they gain ``lr`` times its posterior's joint on the mask of
    the outcome it saw, and the experience the agents' gains in agent order, bit for bit; the
    pass makes the block's tables in its lanes (the counts
    moved in four values of four agents at a time, the rest one by one; each column's total
    over the outcomes summed in order, its reciprocal, the products) and writes them back, and
    each agent's table is then its counts' expectation as agent by agent makes it, bit for
    bit: ``counts * (1 / (counts[0] + counts[1] + ...))``, every agent (13: a whole block and
    a partial one) after every tick of 30 through the episodes' starts, the middle ten frozen
    (the tables as they are, read into the lanes; the tick's results then the same as a
    learning pass's whose counts did not move would give: checked by the equality suite)."""
    world = make_world(world_name, tmp_path)
    n = 13
    driver = Pass(world, n, "per_agent", library(build))
    env = outcomes(world, n)
    obs, start = env.reset()
    for tick in range(30):
        learn = not 10 <= tick < 20
        before = [a.copy() for a in driver.A]
        counted = [c.copy() for c in driver.counts]
        seen_before = [e.copy() for e in driver.experience]
        masks = [mask.copy() for mask in driver.mask]
        driver.step(obs, start, learn=learn)
        # the update: each agent's counts of the outcome it saw gain lr q(s) (its posterior's
        # joint, the factors' product in factor order) where the mask is set, +0 elsewhere;
        # the experience gains the agents' gains one agent after another (learn_counts:
        # four states of four agents at a time, a partial block's and the states past the
        # last whole quad one by one), bit for bit
        joint = _joint(driver.qs)
        for slot, m in enumerate(driver.learned):
            made, seen = counted[slot].copy(), seen_before[slot].copy()
            for agent in range(n if learn else 0):
                o = obs[agent, m]
                gain = np.where(masks[slot][o], world.lr * joint[agent], 0.0)
                made[agent, o] = made[agent, o] + gain
                seen[o] = seen[o] + gain
            np.testing.assert_array_equal(driver.counts[slot].view(np.uint64),
                                          made.view(np.uint64))
            np.testing.assert_array_equal(driver.experience[slot].view(np.uint64),
                                          seen.view(np.uint64))
        for counts, table, was in zip(driver.counts, driver.A, before, strict=True):
            total = counts[:, 0].copy()
            for o in range(1, counts.shape[1]):
                total = total + counts[:, o]
            made = counts * (1.0 / total)[:, None, :]
            np.testing.assert_array_equal(table.view(np.uint64),
                                          (made if learn else was).view(np.uint64))
        assert np.all(np.isfinite(driver.G))
        obs, start = env.step(driver.action.copy())


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("world_name", ["tmaze-A1", "factors3", "limits"])
def test_q_pi_is_the_softmax_of_its_g_to_the_bit_as_the_pass_makes_it(
    build: str, world_name: str, tmp_path: Path,
) -> None:
    """Each agent's ``q_pi`` is, bit for bit, the pass's softmax (tick.c's ``softmax_lanes``,
    its lanes in quads) of the ``G`` it wrote: ``x = G gamma + ln E``; the largest ``x``; the
    differences ``x - top``; their exps by the library's own ``tick_exp_inplace`` (a value's
    exp in its vector body is its own, as a log's is: test_a_log_is_the_same_bits_wherever_
    tick_log_inplace_takes_it); their total summed in policy order from 0; each exp times
    ``1 / total``. Every agent (13: a whole block and a partial one) after every tick of 30
    through the episodes' starts, float64 (``G`` and ``q_pi`` as the pass made them)."""
    world = make_world(world_name, tmp_path)
    n = 13
    lib = library(build)
    exp_inplace = lib.tick_exp_inplace
    exp_inplace.restype = None
    exp_inplace.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    driver = Pass(world, n, "per_agent", lib)
    gamma = driver.kernel._model.gamma
    ln_e = np.log(np.full(driver.G.shape[1], 1.0 / driver.G.shape[1]) + EPS)  # Pass's
    env = outcomes(world, n)
    obs, start = env.reset()
    for _ in range(30):
        driver.step(obs, start, learn=True)
        x = driver.G * gamma + ln_e
        top = x[:, 0].copy()
        for p in range(1, x.shape[1]):
            top = np.where(x[:, p] > top, x[:, p], top)
        exps = np.zeros(-(-x.size // 8) * 8)  # whole lanes: every value in the vector body
        exps[:x.size] = (x - top[:, None]).ravel()
        exp_inplace(exps.ctypes.data, len(exps))
        e = exps[:x.size].reshape(x.shape)
        total = np.zeros(n)
        for p in range(x.shape[1]):
            total = total + e[:, p]
        made = e * (1.0 / total)[:, None]
        np.testing.assert_array_equal(driver.q_pi.view(np.uint64), made.view(np.uint64))
        obs, start = env.step(driver.action.copy())

"""``group.step(obs, starts=mask)`` is ``group.reset(mask)`` then ``group.step(obs)``, to the
bit: beliefs, priors, plans, actions, counts, the surprise and health, tick after tick, whichever
path the group steps (the compiled passes start the trials inside the tick: edge_agent/core/
agents.py's ``_start_trials``, tick.c's ``start`` flags; every other path, and soft evidence,
has the group reset them first).

The library is the package's own (built by ``pip install -e .``): its absence fails here, saying
how to get it (test_native_pass.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_agent.aif.kernels.native import binding
from edge_agent.aif.learning import LearningSettings, LearningSpec
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.native_pass import NATIVE_ENV
from edge_agent.errors import InputError
from edge_agent.sim.registry import make_env
from edge_agent.sim.tmaze_reversal import tmaze_reversal_model
from tests.support.native_tick import SANITIZED_ENV


@pytest.fixture(autouse=True)
def _the_sanitized_library(monkeypatch: pytest.MonkeyPatch) -> None:
    """In test_recipe.py's sanitized subprocess, the AddressSanitizer + UBSan build."""
    where = os.environ.get(SANITIZED_ENV)
    if where is not None:
        monkeypatch.setattr(binding, "_LIBRARY", binding.load(Path(where)))


def _tmaze_learning_a(n: int, scope: str = "per_agent") -> AifAgentGroup:
    model = tmaze_reversal_model()
    spec = LearningSpec(pA={1: model.A[1] * 2.0 + 0.5}, refresh_every=1,
                        settings=LearningSettings(scope=scope, lr_pA=0.7))  # type: ignore[arg-type]
    return AifAgentGroup(model, n, learning=spec, precision="float64")


def _grid_learning_b(n: int) -> AifAgentGroup:
    """grid10 learning ``pB`` per agent, its prior a learner's unsure where its moves lead
    (its learned columns move every tick)."""
    model = make_env("grid10", 1, seed=0).model
    B = model.B[0]
    reach = np.broadcast_to((B.sum(axis=2) > 0)[:, :, None], B.shape)
    spec = LearningSpec(pB={0: B * 2.0 + 0.25 * reach}, refresh_every=1,
                        settings=LearningSettings(scope="per_agent", lr_pB=0.8))
    return AifAgentGroup(model, n, learning=spec, precision="float64")


def _learning_d(n: int) -> AifAgentGroup:
    """``pD`` learned at each trial's end (the daemon's kind: ``trial_ends_at_reset``)."""
    model = tmaze_reversal_model()
    spec = LearningSpec(pA={1: model.A[1] * 2.0 + 0.5}, pD={1: np.full(2, 1.0)},
                        refresh_every=1,
                        settings=LearningSettings(scope="per_agent", lr_pA=0.7))
    return AifAgentGroup(model, n, learning=spec, precision="float64", trial_ends_at_reset=True)


def _frozen(n: int) -> AifAgentGroup:
    return AifAgentGroup(tmaze_reversal_model(), n, precision="int8")


def _frozen_no_prior(n: int) -> AifAgentGroup:
    """A group that keeps no prior (the pass makes it from the beliefs and actions, ``D`` where
    the state's ``prior_reset`` says): grid10 in blocks of 16 (its prior follows from them)."""
    group = AifAgentGroup(make_env("grid10", 1, seed=0).model, n, precision="int8",
                          block_size=16, keep_prior=False)
    assert not group.state.keeps_prior
    return group


#: Each case: how its groups are made, the path they step, whether it starts trials in the tick.
CASES: dict[str, tuple[Callable[[int], AifAgentGroup], str, bool, bool]] = {
    "per-agent pA, compiled": (_tmaze_learning_a, "PassTick", True, True),
    "per-agent pA, numpy": (_tmaze_learning_a, "StagesTick", False, False),
    "per-agent pB, compiled": (_grid_learning_b, "PassTick", True, True),
    # (the compiled tick learns pA and pB: a pD group steps the stages, its trials' ends
    # learned and its tables refreshed before the tick)
    "per-agent pD at the trial's end": (_learning_d, "StagesTick", True, False),
    "shared pA, compiled": (lambda n: _tmaze_learning_a(n, "shared"), "PassTick", True, False),
    "frozen int8, compiled": (_frozen, "CompiledTick", True, True),
    "frozen int8 keeping no prior, compiled": (_frozen_no_prior, "CompiledTick", True, True),
    "frozen int8, numpy": (_frozen, "FusedTick", False, False),
}


def _made(case: str, n: int, monkeypatch: pytest.MonkeyPatch) -> AifAgentGroup:
    make, path, native, _ = CASES[case]
    monkeypatch.setenv(NATIVE_ENV, "1" if native else "0")
    group = make(n)
    monkeypatch.delenv(NATIVE_ENV)
    assert type(group.path).__name__ == path
    return group


def _state(group: AifAgentGroup) -> list[np.ndarray]:
    s = group.state
    return [*s.qs, *s.prior, s.G, s.q_pi, s.action, s.has_action]


def _assert_same(reset: AifAgentGroup, started: AifAgentGroup, *, whole: bool = True) -> None:
    """The groups' state arrays the same (read where they are: a per-agent pass's kept prior
    stays its next tick's), and with ``whole`` their state dicts (which ask the state for
    writable arrays: the next tick makes its prior again) and surprise."""
    for a, b in zip(_state(reset), _state(started), strict=True):
        np.testing.assert_array_equal(a, b)
    if not whole:
        return
    ours, theirs = reset.state_dict(), started.state_dict()
    assert ours.keys() == theirs.keys()
    for key, value in ours.items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(theirs[key]), err_msg=key)
    if reset.learning is not None and started.learning is not None:
        assert reset.learning.surprise.value == started.learning.surprise.value


@pytest.mark.parametrize("n", [13, 48])
@pytest.mark.parametrize("case", list(CASES))
def test_starts_in_the_tick_are_a_reset_before_it(
    case: str, n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random outcomes, and on some ticks every agent's trial starts, on some a few agents',
    on the others nobody's (the first tick too: a fresh group's health then measures it):
    a group told ``starts`` steps to the bit as one reset just before, and its path starts
    them inside its tick where the case says it does. The state dicts are compared every 9th
    tick only: reading them makes the next tick's prior again, and the ticks between take the
    prior the pass kept (D put in for the agents starting: the path a world's loop takes)."""
    reset, started = _made(case, n, monkeypatch), _made(case, n, monkeypatch)
    assert started.path.starts_in_tick is CASES[case][3]
    n = reset.n_agents
    rng = np.random.default_rng(11)
    num_obs = reset.cm.num_obs
    for t in range(36):
        obs = np.stack([rng.integers(0, o, size=n) for o in num_obs], axis=1)
        starts = (np.ones(n, dtype=bool) if t % 6 == 0 else rng.random(n) < 0.3 if t % 6 == 3
                  else np.zeros(n, dtype=bool))
        if starts.any():
            reset.reset(starts)
        np.testing.assert_array_equal(reset.step(obs), started.step(obs, starts=starts))
        _assert_same(reset, started, whole=t % 9 == 8)
    ours, theirs = reset.health_summary(), started.health_summary()
    assert ours is not None
    assert theirs is not None
    assert ours.measures
    assert (ours.agent_steps, ours.measures) == (theirs.agent_steps, theirs.measures)
    assert (ours.drift is None) == (theirs.drift is None)
    if ours.drift is not None and theirs.drift is not None:  # (not its wall clock)
        assert (ours.drift.alarm, ours.drift.statistic) == (theirs.drift.alarm,
                                                            theirs.drift.statistic)


def test_starts_with_soft_evidence_are_a_reset_before_the_numpy_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A compiled frozen group given soft evidence steps numpy's blocks: the group resets the
    agents of ``starts`` before them, as ``reset`` would."""
    n = 12
    reset, started = (_made("frozen int8, compiled", n, monkeypatch) for _ in range(2))
    rng = np.random.default_rng(3)
    for t in range(12):
        soft = [rng.dirichlet(np.ones(o), size=n) for o in reset.cm.num_obs]
        starts = rng.random(n) < (1.0 if t % 4 == 0 else 0.4)
        reset.reset(starts)
        np.testing.assert_array_equal(reset.step(soft), started.step(soft, starts=starts))
        _assert_same(reset, started)


def test_starts_of_another_shape_are_refused_and_nothing_is_stepped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    group = _made("per-agent pA, compiled", 5, monkeypatch)
    obs = np.zeros((5, group.cm.num_modalities), dtype=np.int64)
    with pytest.raises(InputError, match=r"starts has shape \(4,\), expected \(5,\)"):
        group.step(obs, starts=np.ones(4, dtype=bool))
    assert group.ticks == 0
    group.step(obs, starts=[1, 0, 0, 1, 0])  # (any array-like of truth values)
    assert group.ticks == 1

"""A per-agent group's compiled pass takes as its tick's prior the next prior it kept in
``state.prior`` at its last tick, only while nothing else wrote the state since
(:meth:`~edge_agent.core.agent_state.AgentState.wrote`): every other writer makes it make the
prior again, and the group steps on as its numpy twin (which makes every tick's prior)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from edge_agent.aif import kernels
from edge_agent.aif.learning import LearningSettings, LearningSpec
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.native_pass import NATIVE_ENV, NativePass
from edge_agent.sim.tmaze_reversal import tmaze_reversal_model

TOL = {"rtol": 0.0, "atol": 1e-9}
N = 13


def _group(*, native_tick: bool, monkeypatch: pytest.MonkeyPatch) -> AifAgentGroup:
    monkeypatch.setenv(NATIVE_ENV, "1" if native_tick else "0")
    model = tmaze_reversal_model()
    spec = LearningSpec(pA={1: model.A[1] * 2.0 + 0.5}, refresh_every=1,
                        settings=LearningSettings(scope="per_agent", lr_pA=0.7))
    group = AifAgentGroup(model, N, learning=spec, precision="float64")
    monkeypatch.delenv(NATIVE_ENV)
    return group


def _pass(group: AifAgentGroup) -> NativePass:
    assert group.learning is not None
    found = group.learning.scope.tick_pass()
    assert isinstance(found, NativePass)
    return found


def _obs(rng: np.random.Generator, group: AifAgentGroup) -> np.ndarray:
    return np.stack([rng.integers(0, o, size=N) for o in group.cm.num_obs], axis=1)


def _step(mine: AifAgentGroup, theirs: AifAgentGroup, obs: np.ndarray) -> None:
    """Both step ``obs`` (read through ``state``: nothing handed out); the same posteriors,
    ``G``, ``q_pi`` and counts up to rounding; then the twin takes the pass's actions (a tie
    may be broken either way)."""
    mine.step(obs)
    theirs.step(obs)
    a, b = mine.state, theirs.state
    for x, y in zip(a.qs, b.qs, strict=True):
        np.testing.assert_allclose(x, y, **TOL)
    np.testing.assert_allclose(a.G, b.G, **TOL)
    np.testing.assert_allclose(a.q_pi, b.q_pi, **TOL)
    pa, pb = mine.learning.learner.pA, theirs.learning.learner.pA  # type: ignore[union-attr]
    assert pa is not None
    assert pb is not None
    np.testing.assert_allclose(pa.counts[0], pb.counts[0], **TOL)
    if not np.array_equal(a.action, b.action):
        theirs.set_action(a.action)


def _kept_is_the_next_prior(mine: AifAgentGroup, theirs: AifAgentGroup) -> None:
    """The prior the pass kept is the twin's next prior (``B`` of the action taken times the
    posterior)."""
    b = theirs.state
    for kept, made in zip(mine.state.prior,
                          kernels.next_prior(theirs.cm, b.qs, b.action, None), strict=True):
        np.testing.assert_allclose(kept, made, **TOL)


def _pair(monkeypatch: pytest.MonkeyPatch, ticks: int = 6, seed: int = 0
          ) -> tuple[AifAgentGroup, AifAgentGroup, np.random.Generator]:
    mine = _group(native_tick=True, monkeypatch=monkeypatch)
    theirs = _group(native_tick=False, monkeypatch=monkeypatch)
    rng = np.random.default_rng(seed)
    for _ in range(ticks):
        _step(mine, theirs, _obs(rng, mine))
    assert _pass(mine).takes_kept(mine.state, N)
    _kept_is_the_next_prior(mine, theirs)
    return mine, theirs, rng


def test_the_pass_takes_its_kept_prior_through_resets_as_the_numpy_twin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mine, theirs, rng = _pair(monkeypatch, ticks=1)
    taken = 0
    for _ in range(30):
        start = rng.random(N) < 0.2
        if start.any():  # D into the reset agents' prior rows: their next prior, kept
            mine.reset(start)
            theirs.reset(start)
        taken += _pass(mine).takes_kept(mine.state, N)
        _step(mine, theirs, _obs(rng, mine))
        _kept_is_the_next_prior(mine, theirs)
    assert taken == 30


def test_the_pass_takes_the_state_s_prior_while_marked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mark is what is taken: a prior changed behind it (the state's arrays, not the group's
    views) is the tick's prior (the posteriors move away from the twin's)."""
    mine, theirs, rng = _pair(monkeypatch)
    for p in mine.state.prior:
        p[...] = np.eye(p.shape[1])[0]
    with pytest.raises(AssertionError):
        _step(mine, theirs, _obs(rng, mine))


def _infer_stage_by_stage(group: AifAgentGroup, obs: np.ndarray) -> None:
    group.infer_states(obs)
    group.learn(obs)
    group.infer_policies()
    group.sample_action()


def _restore_another(group: AifAgentGroup, snapshot: dict[str, np.ndarray]) -> None:
    group.load_state_dict(snapshot)


def _write_prior(group: AifAgentGroup) -> None:
    # (the coordination engine's fuse writes ``group.prior`` so: engine.py)
    for p in group.prior:
        p[...] = 1.0 / p.shape[1]


def _write_beliefs(group: AifAgentGroup) -> None:
    for q in group.qs:
        q[...] = np.roll(q, 1, axis=1)


def _write_actions(group: AifAgentGroup) -> None:
    group.action[...] = (group.state.action + 1) % np.asarray(group.cm.num_controls)


WRITERS = ["stages", "restore", "prior", "beliefs", "actions", "set_action"]


@pytest.mark.parametrize("writer", WRITERS)
def test_every_other_writer_of_the_state_makes_the_pass_make_its_prior(
    writer: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    mine, theirs, rng = _pair(monkeypatch)
    if writer == "restore":  # another group's snapshot, stepped elsewhere
        other, _, _ = _pair(monkeypatch, ticks=9, seed=5)
        snapshot = {k: np.array(v, copy=True) for k, v in other.state_dict().items()}
    write: Callable[[AifAgentGroup], None] = {
        "stages": lambda g: _infer_stage_by_stage(g, _obs(np.random.default_rng(9), g)),
        "restore": lambda g: _restore_another(g, snapshot),
        "prior": _write_prior,
        "beliefs": _write_beliefs,
        "actions": _write_actions,
        "set_action": lambda g: g.set_action(np.zeros((N, len(g.cm.num_controls)), np.int64)),
    }[writer]
    write(mine)
    write(theirs)
    assert not _pass(mine).takes_kept(mine.state, N)
    for _ in range(3):
        _step(mine, theirs, _obs(rng, mine))
    assert _pass(mine).takes_kept(mine.state, N)  # kept again from the pass's tick on

"""The verbs on a learning group: freeze (the counts stop changing, the agents
infer with what was learned), resume (learning goes on from the frozen counts, the transition
across the freeze included) and reset (counts back to the priors, tables back to the model's as
loaded, the version bumped), shared in float64 and int8 and per agent."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.aif.learning import LearningSettings, LearningSpec
from edge_agent.aif.learning_kernels import b_increment_shared
from edge_agent.aif.quant import encode_log_u8, encode_transition
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.native_pass import NATIVE_ENV
from edge_agent.core.per_agent_learning import AgentTables
from edge_agent.sim.tmaze_reversal import ReversalTMazeEnv, tmaze_reversal_model

N = 30


def counts() -> dict[str, dict[int, np.ndarray]]:
    model = tmaze_reversal_model()
    return {
        "A": {1: model.A[1] * 2.0 + 0.5 * (model.A[1] > 0)},
        "B": {0: model.B[0] * 5.0 + 0.5 * (model.B[0] > 0)},
        "D": {1: np.array([1.0, 1.0])},
    }


def make(precision: str, scope: str = "shared", refresh_every: int = 4) -> AifAgentGroup:
    c = counts()
    spec = LearningSpec(
        pA=c["A"], pB=c["B"], pD=c["D"],
        settings=LearningSettings(lr_pA=0.5, lr_pB=0.3, forgetting=0.05, scope=scope),  # type: ignore[arg-type]
        refresh_every=1 if scope == "per_agent" else refresh_every,
    )
    return AifAgentGroup(tmaze_reversal_model(), N, learning=spec, precision=precision, seed=3)


def run(
    group: AifAgentGroup, env: ReversalTMazeEnv, obs: np.ndarray, ticks: int
) -> np.ndarray:
    for _ in range(ticks):
        if env.episode_start.any():
            group.end_trial(env.episode_start)
        obs = env.step(group.step(obs))
    return obs


def snapshot_counts(group: AifAgentGroup) -> list[np.ndarray]:
    return [c.copy() for kind in group.learning.learner.counts for c in kind.counts]


@pytest.mark.parametrize(("precision", "scope"),
                         [("float64", "shared"), ("int8", "shared"), ("float64", "per_agent")])
def test_freeze_keeps_the_counts_and_infers_with_what_was_learned(
    precision: str, scope: str
) -> None:
    group = make(precision, scope)
    env = ReversalTMazeEnv(N, seed=5, reverse_every=4)
    obs = run(group, env, env.reset(), 9)  # 9 ticks: learning not yet in the tables (every 4)
    assert group.learning.freeze()
    assert not group.learning.freeze()  # already frozen
    frozen = snapshot_counts(group)
    versions = [c.version for c in group.learning.learner.counts]
    # What was learned is in the tables the agents infer with from the freeze on.
    if scope == "shared":
        assert group.learning.learner.pA is not None
        np.testing.assert_allclose(group.learning.model.A[1],
                                   group.learning.learner.pA.normalised(0), atol=1e-12)
        if precision == "int8":
            assert group.quantized is not None
            np.testing.assert_array_equal(group.quantized.A[1].codes,
                                          encode_log_u8(group.learning.model.A[1]).codes)
    refreshes = group.learning.refreshes
    obs = run(group, env, obs, 12)  # trials end meanwhile: no pD either
    assert group.ticks == 21
    for now, then in zip(snapshot_counts(group), frozen, strict=True):
        np.testing.assert_array_equal(now, then)
    assert [c.version for c in group.learning.learner.counts] == versions
    assert group.learning.refreshes == refreshes
    # Resume: learning goes on from the frozen counts.
    assert group.learning.resume()
    assert not group.learning.resume()
    run(group, env, obs, 3)
    assert all(c.version > v for c, v in zip(group.learning.learner.counts, versions, strict=True))


def test_the_first_tick_after_resume_learns_the_transition_across_the_freeze() -> None:
    """While frozen the posteriors still move on, so the transition that leads into the first
    tick after a resume is the last frozen tick's: pB learns exactly it."""
    group = make("float64", refresh_every=100)
    env = ReversalTMazeEnv(N, seed=6, reverse_every=100)
    obs = run(group, env, env.reset(), 2)
    group.learning.freeze()
    obs = run(group, env, obs, 2)
    assert not env.episode_start.any()
    qs_prev = [q.copy() for q in group.qs]
    actions, acted = group.action.copy(), group.state.has_action.copy()
    assert acted.all()
    pB = group.learning.learner.pB
    assert pB is not None
    before = pB.counts[0].copy()
    group.learning.resume()
    group.step(obs)
    decayed = pB.prior[0] + (1 - 0.05) * (before - pB.prior[0])
    inc = b_increment_shared(group.qs[0], qs_prev[0], actions[:, 0], 4)
    np.testing.assert_allclose(pB.counts[0], decayed + 0.3 * pB.mask[0] * inc, atol=1e-10)


@pytest.mark.parametrize(("precision", "scope"),
                         [("float64", "shared"), ("int8", "shared"), ("float64", "per_agent")])
def test_reset_goes_back_to_the_priors_and_the_loaded_tables(precision: str, scope: str) -> None:
    group = make(precision, scope)
    loaded = tmaze_reversal_model()
    given = group.quantized
    cm = group.cm
    env = ReversalTMazeEnv(N, seed=7, reverse_every=3)
    obs = run(group, env, env.reset(), 13)
    assert group.learning.refreshes > 0
    versions = [c.version for c in group.learning.learner.counts]
    group.learning.freeze()
    group.learning.forget()
    assert group.learning.frozen  # a reset does not resume
    for c, v in zip(group.learning.learner.counts, versions, strict=True):
        assert c.version == c.reset_at == v + 1
        assert not c.learned
        for slot, index in enumerate(c.tables):
            prior = np.broadcast_to(c.prior[slot], c.counts[slot].shape)
            np.testing.assert_array_equal(c.counts[slot], prior)
            if c.kind != "D":
                table = (loaded.A if c.kind == "A" else loaded.B)[index]
                np.testing.assert_array_equal(c.mask[slot], table > 0)
        assert c.take_delta()[0] == c.version  # the next delta starts at the reset
    if scope == "per_agent":
        assert group.learning.scope.name == "per_agent"
        scope = group.learning.scope
        assert isinstance(scope, AgentTables)
        A1 = scope.likelihood(np.arange(group.n_agents))[1]  # each agent's, whole
        np.testing.assert_array_equal(A1, np.broadcast_to(
            loaded.A[1].reshape(loaded.A[1].shape[0], -1), A1.shape))
        B0 = scope.transition_table(0)  # each agent's, kept on its support
        np.testing.assert_array_equal(B0, np.broadcast_to(loaded.B[0], B0.shape))
    else:
        learned = group.learning.model
        for mine, theirs in zip((*learned.A, *learned.B, *learned.D),
                                (*loaded.A, *loaded.B, *loaded.D), strict=True):
            np.testing.assert_array_equal(mine, theirs)
        assert group.cm is cm  # the loaded compilation again, nothing recompiled
        assert group.quantized is given  # int8: the loaded codes, not the learned ones
    # Learning again starts from the priors: the tables follow the new counts.
    group.learning.resume()
    run(group, env, obs, 4)
    assert all(c.learned for c in group.learning.learner.counts if c.kind != "D")
    if scope == "shared" and precision == "int8":
        assert group.quantized is not given
        assert group.quantized is not None
        np.testing.assert_array_equal(group.quantized.A[1].codes,
                                      encode_log_u8(group.learning.model.A[1]).codes)
        np.testing.assert_array_equal(group.quantized.B[0].index,  # type: ignore[union-attr]
                                      encode_transition(group.learning.model.B[0]).index)  # type: ignore[union-attr]
        assert given is not None  # the loaded codes were not written over
        np.testing.assert_array_equal(given.A[1].codes,
                                      encode_log_u8(loaded.A[1]).codes)


def test_a_snapshot_carries_the_freeze_and_the_reset() -> None:
    group = make("int8")
    env = ReversalTMazeEnv(N, seed=8, reverse_every=3)
    run(group, env, env.reset(), 6)
    group.learning.forget()
    group.learning.freeze()
    state = group.state_dict()
    other = make("int8")
    other.load_state_dict(state)
    assert other.learning.frozen
    mine_counts, their_counts = other.learning.learner.counts, group.learning.learner.counts
    for mine, theirs in zip(mine_counts, their_counts, strict=True):
        assert (mine.version, mine.reset_at) == (theirs.version, theirs.reset_at)
        assert not mine.learned


@pytest.mark.parametrize("precision", ["float64", "int8"])
def test_a_frozen_group_steps_as_a_plain_group_on_the_learned_model(
    precision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While frozen, beliefs and actions are exactly those of a group that never learned,
    given the learned model (its int8 codes) and the same beliefs (both on numpy: on one
    process the plain group would take the compiled tick, compared with numpy in the equality
    suite)."""
    monkeypatch.setenv(NATIVE_ENV, "0")
    group = make(precision)
    env = ReversalTMazeEnv(N, seed=9, reverse_every=3)
    obs = run(group, env, env.reset(), 10)
    group.learning.freeze()
    learned = group.quantized if precision == "int8" else group.learning.model
    assert learned is not None
    plain = AifAgentGroup(learned, N, precision=precision, seed=3)  # type: ignore[arg-type]
    plain.load_state_dict({k: v for k, v in group.state_dict().items()
                           if not k.startswith("learn.")})
    for _ in range(12):
        if env.episode_start.any():
            group.end_trial(env.episode_start)
            plain.reset(env.episode_start)
        actions = group.step(obs)
        np.testing.assert_array_equal(plain.step(obs), actions)
        for mine, theirs in zip(group.qs, plain.qs, strict=True):
            np.testing.assert_array_equal(mine, theirs)
        obs = env.step(actions)

"""A learning group's life in the daemon: trials ended by the world's resets,
a warm-up that teaches nothing, snapshots restored only into the same learning, and the numbers
status, telemetry and Prometheus show (updates, divergence from the prior, surprise)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from edge_agent.aif.learning import LearningSettings, LearningSpec
from edge_agent.aif.learning_kernels import normalise
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.learning import divergence_from_prior
from edge_agent.sim.tmaze_reversal import ReversalTMazeEnv, tmaze_reversal_model


def spec(scale: float = 2.0, scope: str = "shared") -> LearningSpec:
    model = tmaze_reversal_model()
    return LearningSpec(
        pA={1: model.A[1] * scale}, pD={1: model.D[1] * scale},  # pD of the context
        settings=LearningSettings(lr_pA=0.5, scope=scope),  # type: ignore[arg-type]
        refresh_every=2,
    )


def run(group: AifAgentGroup, ticks: int, seed: int = 1) -> None:
    env = ReversalTMazeEnv(group.n_agents, seed=seed, reverse_every=2)
    obs = env.reset()
    for _ in range(ticks):
        if env.episode_start.any():
            group.reset(env.episode_start)
        obs = env.step(group.step(obs))


def test_a_reset_ends_the_trials_of_the_agents_that_acted() -> None:
    group = AifAgentGroup(tmaze_reversal_model(), 6, learning=spec(), trial_ends_at_reset=True)
    assert group.learning.learner.pD is not None
    group.reset()  # nobody acted yet: no trial to sum up
    assert group.learning.learner.pD.version == 0
    run(group, 3)
    before = group.learning.learner.pD.counts[0].copy()
    posterior = np.asarray(group.qs[1], dtype=np.float64)
    mask = np.array([True, False, True, False, False, False])
    group.reset(mask)
    learned = group.learning.learner.pD.counts[0] - before
    assert np.allclose(learned, 1.0 * posterior[mask].sum(axis=0))  # lr_pD 1, last posteriors
    assert learned.sum() == pytest.approx(2.0)
    # Without the flag (the API's reset), trials end only at end_trial().
    plain = AifAgentGroup(tmaze_reversal_model(), 6, learning=spec())
    run(plain, 3)
    assert plain.learning.learner.pD is not None
    assert plain.learning.learner.pD.version == 0


def test_the_numbers_are_updates_divergence_and_surprise() -> None:
    group = AifAgentGroup(tmaze_reversal_model(), 20, learning=spec(), trial_ends_at_reset=True)
    numbers = group.metrics()
    assert numbers["learning_updates"] == 0
    assert numbers["learning_divergence"] == 0.0
    run(group, 9)
    numbers = group.metrics()
    learner = group.learning.learner
    assert learner.pA is not None
    assert learner.pD is not None
    assert numbers["learning_updates"] == learner.pA.version + learner.pD.version
    assert learner.pA.version == 9
    # The divergence is the mean over learned columns of KL(E[counts] || E[prior]).
    kls = []
    for table in learner.counts:
        for now, prior in zip(table.counts, table.prior, strict=True):
            p, q = normalise(now), normalise(prior)
            with np.errstate(divide="ignore", invalid="ignore"):
                kl = np.where(p > 0, p * np.log(p / q), 0.0).sum(axis=0)
            kls.extend(np.ravel(kl))
    assert numbers["learning_divergence"] == pytest.approx(float(np.mean(kls)), abs=1e-9)
    assert numbers["learning_divergence"] > 0
    assert divergence_from_prior(learner.counts) == pytest.approx(float(np.mean(kls)))
    surprise = numbers["learning_surprise"]
    assert isinstance(surprise, float)
    assert 0 < surprise < 3 * np.log(4)  # three modalities of at most 4 outcomes
    described = group.describe()["learning"]
    assert described["tables"] == ["pA1", "pD1"]
    assert described["counts_from"] == "priors"
    assert described["updates"] == numbers["learning_updates"]


def test_the_surprise_of_one_tick_is_minus_ln_p_of_the_outcome_under_the_prior() -> None:
    model = tmaze_reversal_model()
    group = AifAgentGroup(model, 5, learning=spec())
    obs = np.array([[0, 1, 0], [1, 0, 1], [2, 2, 0], [3, 1, 2], [0, 0, 0]])
    obs = np.minimum(obs, np.array(model.num_obs) - 1)
    joint = np.einsum("ni,nj->nij", group.prior[0], group.prior[1]).reshape(5, -1)
    expected = sum(
        float(-np.log((a.reshape(a.shape[0], -1)[obs[:, m]] * joint).sum(axis=1) + 1e-16).mean())
        for m, a in enumerate(model.A)
    )
    group.step(obs)
    assert group.metrics()["learning_surprise"] == pytest.approx(expected, rel=1e-5)


def test_a_warm_up_teaches_nothing() -> None:
    group = AifAgentGroup(tmaze_reversal_model(), 8, learning=spec(), precision="int8")
    run(group, 4)
    counts = {k: v.copy() for k, v in group.state_dict().items() if k.startswith("learn.")}
    experience = [e.copy() for c in group.learning.learner.counts for e in c.experience]
    numbers = group.metrics()
    group.warm_up(np.zeros((8, 3), dtype=np.int64))
    after = group.state_dict()
    for key, value in counts.items():
        assert np.array_equal(after[key], value), key
    kept = [e for c in group.learning.learner.counts for e in c.experience]
    for e, before in zip(kept, experience, strict=True):
        assert np.array_equal(e, before)
    assert group.metrics()["learning_updates"] == numbers["learning_updates"]
    assert group.learning.counts_origin == "priors"
    assert group.learning.learner.pA is not None
    assert group.learning.learner.pA.agent_ticks.tolist() == [4 * 8]


@pytest.mark.parametrize("scope", ["shared", "per_agent"])
def test_the_increments_taken_are_what_the_agents_learned_since_the_last_take(scope: str) -> None:
    """The ticks a small shared group keeps are learned first; the increments (summed over the
    agents, sparse by column) are the counts' distance from their prior, then start anew."""
    kwargs = {"precision": "float64"} if scope == "per_agent" else {}
    group = AifAgentGroup(tmaze_reversal_model(), 8, learning=spec(scope=scope), **kwargs)
    run(group, 5)
    (table,) = group.learning.take_increments()  # pD learns at trials' ends: none here
    pA = group.learning.learner.pA
    assert pA is not None
    assert (table.table, table.shape, table.agent_ticks, table.lr) == (
        "A1", pA.prior[0].shape, 5 * 8, 0.5)
    learned = pA.counts[0] - pA.prior[0]
    if scope == "per_agent":
        learned = learned.sum(axis=0)
    flat = learned.reshape(learned.shape[0], -1)
    dense = np.zeros(flat.shape)
    dense[:, table.columns] = table.values.T
    np.testing.assert_allclose(dense, flat, rtol=1e-6, atol=1e-6)
    # every column that moved is there (one that moved by less than the counts' rounding too)
    assert set(np.flatnonzero(np.any(flat != 0, axis=0))) <= set(table.columns.tolist())
    assert table.values.sum() == pytest.approx(5 * 8 * 0.5, rel=1e-6)  # lr per agent-tick
    assert group.learning.take_increments() == []
    run(group, 1, seed=3)
    (again,) = group.learning.take_increments()
    assert again.agent_ticks == 8


@pytest.mark.parametrize("scope", ["shared", "per_agent"])
def test_counts_are_restored_only_into_the_same_learning(
    scope: str, caplog: pytest.LogCaptureFixture
) -> None:
    model = tmaze_reversal_model()
    kwargs = {"precision": "float64"} if scope == "per_agent" else {}
    group = AifAgentGroup(model, 6, learning=spec(scope=scope), name="maze", **kwargs)
    run(group, 5)
    state = {k: np.array(v, copy=True) for k, v in group.state_dict().items()}
    assert state["learn.identity"].shape == (32,)
    caplog.set_level(logging.INFO, logger="edge_agent.core.learning")
    same = AifAgentGroup(model, 6, learning=spec(scope=scope), name="maze", **kwargs)
    same.load_state_dict(state)
    assert same.learning.counts_origin == "snapshot"
    assert same.learning.learner.pA is not None
    assert group.learning.learner.pA is not None
    assert np.array_equal(same.learning.learner.pA.counts[0], group.learning.learner.pA.counts[0])
    assert "group 'maze': learned counts restored (pA after 5 updates" in caplog.text
    other = AifAgentGroup(model, 6, learning=spec(scale=3.0, scope=scope), name="maze",
                           **kwargs)
    other.load_state_dict(state)
    assert other.learning.counts_origin == "priors"
    assert other.learning.learner.pA is not None
    assert (other.learning.learner.pA.counts[0] == other.learning.learner.pA.prior[0]).all()
    assert np.array_equal(other.qs[0], group.qs[0])  # the beliefs are restored all the same
    assert "another table, prior or scope), learning starts from the priors" in caplog.text
    frozen = {k: v for k, v in state.items() if not k.startswith("learn.")}
    fresh = AifAgentGroup(model, 6, learning=spec(scope=scope), name="maze", **kwargs)
    fresh.load_state_dict(frozen)  # a snapshot of the group before it learned
    assert fresh.learning.counts_origin == "priors"
    assert "(none at all), learning starts from the priors" in caplog.text
    assert fresh.learning.scope.name == scope

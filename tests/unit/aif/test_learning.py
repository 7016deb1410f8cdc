"""Dirichlet learning of A, B and D (edge_agent/aif/learning.py: the ``Learner``; the oracle
edge_agent/aif/reference_learning.py) against pymdp 0.0.7.1.

The float64 reference agent must give pymdp's learned counts to 1e-10 and its beliefs and policy
posteriors after learning to 1e-6 (``tests/data/pymdp_learning_golden.npz``, read through
tests/support/pymdp_learning_golden.py); the learner must give, for every agent at once, what the
reference gives one at a time. The pure kernels are tested in test_learning_kernels.py, the counts
in test_learning_counts.py, the group that learns in tests/unit/core/test_learning.py and
``edge-agent replay`` with learning in tests/unit/core/test_replay.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.aif import agreement, learning_kernels
from edge_agent.aif.learning import Learner, LearningSettings
from edge_agent.aif.learning_kernels import b_increment_shared, transition_support
from edge_agent.aif.reference_learning import LearningReferenceAgent
from tests.support.learning_random import priors, random_model, random_qs
from tests.support.pymdp_learning_golden import (
    BELIEF_TOL,
    COUNTS_TOL,
    SCENARIOS,
    golden,
    indexed,
    reference_for,
)


@pytest.mark.parametrize("name", SCENARIOS)
def test_reference_learns_as_pymdp(name: str) -> None:
    g = golden()
    agent = reference_for(name)
    obs, starts = g[f"{name}/obs"], g[f"{name}/trial_start"]
    qs_golden = indexed(name, "qs")
    onehots = [
        np.eye(u)[agent.policies[:, 0, f]] for f, u in enumerate(agent.model.num_controls)
    ]
    for t in range(obs.shape[0]):
        if starts[t] and t > 0:
            agent.update_D(agent.qs)  # the finished trial's last posterior
            agent.reset()
        qs_prev = [q.copy() for q in agent.qs]
        agent.infer_states(obs[t])
        agent.update_A(obs[t])
        if not starts[t]:
            agent.update_B(qs_prev)
        q_pi, _ = agent.infer_policies()
        agent.sample_action()
        for f, qs in qs_golden.items():
            np.testing.assert_allclose(agent.qs[f], qs[t], **BELIEF_TOL, err_msg=f"qs{f} t={t}")
        np.testing.assert_allclose(q_pi, g[f"{name}/q_pi"][t], **BELIEF_TOL, err_msg=f"t={t}")
        # pymdp's action is optimal under our posterior (the recorded margins exclude ties).
        assert agreement.actions_agree(q_pi[None], onehots, g[f"{name}/action"][t][None]).all()
    agent.update_D(agent.qs)
    for key, counts in (("pA", agent.pA), ("pB", agent.pB), ("pD", agent.pD)):
        final = indexed(name, f"final_{key}")
        assert sorted(final) == sorted(counts), key
        for i, want in final.items():
            np.testing.assert_allclose(counts[i], want, **COUNTS_TOL, err_msg=f"{key}{i}")


def test_novelty_changes_the_choice_it_should() -> None:
    """The golden novelty scenario is one where the parameter information gain matters: without
    it the same agent's first policy posterior differs by far more than rounding."""
    name = "learn_novelty"
    with_gain, without = reference_for(name), reference_for(name)
    without.use_param_info_gain = False
    obs = golden()[f"{name}/obs"][0]
    for agent in (with_gain, without):
        agent.infer_states(obs)
        agent.infer_policies()
    assert with_gain.q_pi is not None
    assert without.q_pi is not None
    assert np.abs(with_gain.q_pi - without.q_pi).max() > 1e-3


# -- the learner against the reference, one agent at a time ------------------------------
@pytest.mark.parametrize("forgetting", [0.0, 0.2])
def test_per_agent_counts_are_each_agents_own_reference(forgetting: float) -> None:
    rng = np.random.default_rng(5)
    model = random_model(rng)
    pA, pB, pD = priors(model)
    n, steps = 7, 6
    settings = LearningSettings(lr_pA=0.7, lr_pB=0.4, lr_pD=1.5, forgetting=forgetting,
                                scope="per_agent")
    learner = Learner(model.A, model.B, model.D, pA=pA, pB=pB, pD=pD, settings=settings,
                      n_agents=n)
    refs = [
        LearningReferenceAgent(model, pA=pA, pB=pB, pD=pD, lr_pA=0.7, lr_pB=0.4, lr_pD=1.5,
                               forgetting=forgetting)
        for _ in range(n)
    ]
    qs_prev = random_qs(rng, n, model.num_states)
    for step in range(steps):
        obs = np.stack([rng.integers(0, o, size=n) for o in model.num_obs], axis=1)
        actions = np.stack([rng.integers(0, u, size=n) for u in model.num_controls], axis=1)
        qs = random_qs(rng, n, model.num_states)
        learner.learn_A(obs, qs)
        for i, ref in enumerate(refs):
            ref.qs = [q[i] for q in qs]
            ref.update_A(obs[i])
        if step > 0:
            learner.learn_B(qs, qs_prev, actions)
            for i, ref in enumerate(refs):
                ref.action = actions[i]
                ref.update_B([q[i] for q in qs_prev])
        for counts in learner.counts:  # the agents infer with the new tables every tick
            counts.mark_refreshed()
        qs_prev = qs
    learner.learn_D(qs_prev)
    for i, ref in enumerate(refs):
        ref.update_D([q[i] for q in qs_prev])
    assert learner.pA is not None
    assert learner.pB is not None
    assert learner.pD is not None
    for slot, m in enumerate(learner.pA.tables):
        for i, ref in enumerate(refs):
            np.testing.assert_allclose(learner.pA.counts[slot][i], ref.pA[m], **COUNTS_TOL)
            np.testing.assert_allclose(learner.pA.normalised(slot)[i], ref.model.A[m], atol=1e-12)
    for slot, f in enumerate(learner.pB.tables):
        for i, ref in enumerate(refs):
            np.testing.assert_allclose(learner.pB.counts[slot][i], ref.pB[f], **COUNTS_TOL)
    for slot, f in enumerate(learner.pD.tables):
        for i, ref in enumerate(refs):
            np.testing.assert_allclose(learner.pD.counts[slot][i], ref.pD[f], **COUNTS_TOL)


@pytest.mark.parametrize("forgetting", [0.0, 0.3])
def test_shared_counts_sum_every_agents_experience(forgetting: float) -> None:
    rng = np.random.default_rng(9)
    model = random_model(rng)
    pA, pB, pD = priors(model)
    n = 50
    settings = LearningSettings(lr_pA=0.5, lr_pB=2.0, lr_pD=0.25, forgetting=forgetting)
    shared = Learner(model.A, model.B, model.D, pA=pA, pB=pB, pD=pD, settings=settings,
                     n_agents=n)
    expected_A = {m: p.copy() for m, p in pA.items()}
    expected_B = {f: p.copy() for f, p in pB.items()}
    for step in range(4):
        obs = np.stack([rng.integers(0, o, size=n) for o in model.num_obs], axis=1)
        actions = np.stack([rng.integers(0, u, size=n) for u in model.num_controls], axis=1)
        qs, qs_prev = random_qs(rng, n, model.num_states), random_qs(rng, n, model.num_states)
        mask_A = {m: (model.A[m] if step == 0 else pA[m]) > 0 for m in pA}
        mask_B = {f: (model.B[f] if step == 0 else pB[f]) > 0 for f in pB}
        shared.learn_A(obs, qs)
        shared.learn_B(qs, qs_prev, actions)
        for counts in shared.counts:
            counts.mark_refreshed()
        for m, e in expected_A.items():  # one agent at a time, the textbook way
            e[...] = pA[m] + (1 - forgetting) * (e - pA[m])
            for i in range(n):
                joint = np.multiply.outer(qs[0][i], qs[1][i])
                e[obs[i, m]] += 0.5 * joint * mask_A[m][obs[i, m]]
        for f, e in expected_B.items():
            e[...] = pB[f] + (1 - forgetting) * (e - pB[f])
            for i in range(n):
                a = actions[i, f]
                e[:, :, a] += 2.0 * np.outer(qs[f][i], qs_prev[f][i]) * mask_B[f][:, :, a]
    assert shared.pA is not None
    assert shared.pB is not None
    for slot, m in enumerate(shared.pA.tables):
        np.testing.assert_allclose(shared.pA.counts[slot], expected_A[m], rtol=1e-12, atol=1e-12)
    for slot, f in enumerate(shared.pB.tables):
        np.testing.assert_allclose(shared.pB.counts[slot], expected_B[f], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("forgetting", "chunk"), [(0.0, None), (0.1, None), (0.1, 7 * 30)])
def test_a_sparse_transition_learns_on_its_support_what_the_dense_products_give(
    dtype: type, forgetting: float, chunk: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``B`` whose columns have few targets (here 1 to 3 of 30, padded to 3) learns by
    gathering each agent's posterior at its action's targets (``b_increment_support``, a chunk
    of agents at a time: here all 60, or 7): the counts, the experience and the touched
    columns are what the masked dense products give, also when some agents did not act; a
    dense mask takes the dense products."""
    if chunk is not None:
        monkeypatch.setattr(learning_kernels, "B_CHUNK", chunk)
    rng = np.random.default_rng(11)
    S, U, n = 30, 4, 60
    mask = np.zeros((S, S, U), dtype=bool)
    for u in range(U):
        for s in range(S):
            mask[rng.choice(S, size=1 + (s + u) % 3, replace=False), s, u] = True
    B = mask / mask.sum(axis=0, keepdims=True)
    A = [np.full((2, S), 0.5)]
    D = [np.full(S, 1.0 / S)]
    prior = B * 2.0 + 0.5 * mask
    support = transition_support(mask)
    assert support is not None
    assert support.targets.shape == (3, U, S)
    assert transition_support(np.ones_like(mask)) is None
    learner = Learner(A, [B], D, pB={0: prior}, n_agents=n,
                      settings=LearningSettings(lr_pB=0.4, forgetting=forgetting))
    want, experience = prior.copy(), np.zeros_like(prior)
    touched = np.zeros((S, U), dtype=bool)
    for tick in range(4):
        qs = [rng.dirichlet(np.full(S, 0.2), size=n).astype(dtype)]
        qs_prev = [rng.dirichlet(np.full(S, 0.2), size=n).astype(dtype)]
        actions = rng.integers(0, U, size=(n, 1))
        acted = rng.random(n) < (1.0 if tick == 0 else 0.7)
        learner.learn_B(qs, qs_prev, actions, acted=acted)
        inc = b_increment_shared(qs[0][acted].astype(np.float64),
                                 qs_prev[0][acted].astype(np.float64), actions[acted, 0], U)
        gain = 0.4 * mask * inc
        touched |= (gain != 0).any(axis=0) | ((want != prior).any(axis=0) & (forgetting > 0))
        want = prior + (1 - forgetting) * (want - prior) + gain
        experience += gain
    pB = learner.pB
    assert pB is not None
    tol = {"rtol": 1e-12, "atol": 1e-14} if dtype == np.float64 else {"rtol": 1e-5, "atol": 1e-8}
    np.testing.assert_allclose(pB.counts[0], want, **tol)
    np.testing.assert_allclose(pB.experience[0], experience, **tol)
    np.testing.assert_array_equal(pB.touched[0], touched)
    assert pB.version == 4
    # Its scratch is within what a group reserves: per agent, and one model's worth.
    held = sum(buf.nbytes for buf in learner._scratch.values())
    assert 0 < held <= n * learner.scratch_bytes_per_agent(np.dtype(dtype).itemsize)
    support_bytes = sum(found.nbytes + sum(a.nbytes for a in scratch.values())
                        for _, found, scratch in learner._b_supports.values() if found)
    assert 0 < support_bytes <= learner.gain_nbytes - prior.size * 8


@pytest.mark.parametrize("n", [1, 3, 4])
def test_a_few_agents_learn_a_sparse_transition_term_by_term(n: int) -> None:
    """At most ``U`` agents (fewer terms than the support has entries) add each agent's own
    terms where they fall (``b_entries_support``): near-certain float32 posteriors (the products
    multiplied in float64, so none is subnormal), columns with 1 to 3 targets (pads), agents
    that did not act: the counts, the experience and the touched columns are what the masked
    dense float64 products give."""
    rng = np.random.default_rng(23)
    S, U = 30, 4
    mask = np.zeros((S, S, U), dtype=bool)
    for u in range(U):
        for s in range(S):
            mask[rng.choice(S, size=1 + (s + u) % 3, replace=False), s, u] = True
    B = mask / mask.sum(axis=0, keepdims=True)
    prior = B * 2.0 + 0.5 * mask
    learner = Learner([np.full((2, S), 0.5)], [B], [np.full(S, 1.0 / S)], pB={0: prior},
                      n_agents=n, settings=LearningSettings(lr_pB=0.3))
    want, experience = prior.copy(), np.zeros_like(prior)
    touched = np.zeros((S, U), dtype=bool)

    def near_certain() -> np.ndarray:
        q = 10.0 ** rng.uniform(-30, -20, size=(n, S))
        q[np.arange(n), rng.integers(0, S, n)] = 1.0
        return (q / q.sum(axis=1, keepdims=True)).astype(np.float32)

    for tick in range(3):
        qs, qs_prev = [near_certain()], [near_certain()]
        actions = rng.integers(0, U, size=(n, 1))
        acted = np.arange(n) != tick  # one agent sits out (the only one, at n = 1, tick 0)
        learner.learn_B(qs, qs_prev, actions, acted=acted)
        inc = b_increment_shared(qs[0][acted].astype(np.float64),
                                 qs_prev[0][acted].astype(np.float64), actions[acted, 0],
                                 U) if acted.any() else np.zeros_like(prior)
        gain = 0.3 * mask * inc
        touched |= (gain != 0).any(axis=0)
        want += gain
        experience += gain
    pB = learner.pB
    assert pB is not None
    np.testing.assert_allclose(pB.counts[0], want, rtol=1e-12, atol=0)
    np.testing.assert_allclose(pB.experience[0], experience, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(pB.touched[0], touched)
    assert pB.version == 3


@pytest.mark.parametrize("forgetting", [0.0, 0.1])
def test_per_agent_counts_learn_a_sparse_transition_on_its_support(
    forgetting: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per-agent counts of a ``B`` with 1 to 3 targets per column learn each agent's terms on
    the support (``b_entries_support``): the counts, the experience, the touched columns and
    the (agent, action) tables touched are what each agent's masked outer product gives, also
    when some agents did not act; the scratch is within what the group reserves per agent."""
    rng = np.random.default_rng(29)
    S, U, n = 30, 4, 9
    mask = np.zeros((S, S, U), dtype=bool)
    for u in range(U):
        for s in range(S):
            mask[rng.choice(S, size=1 + (s + u) % 3, replace=False), s, u] = True
    B = mask / mask.sum(axis=0, keepdims=True)
    prior = B * 2.0 + 0.5 * mask
    settings = LearningSettings(lr_pB=0.4, forgetting=forgetting, scope="per_agent")
    learners = [Learner([np.full((2, S), 0.5)], [B], [np.full(S, 1.0 / S)], pB={0: prior},
                        n_agents=n, settings=settings) for _ in range(2)]
    dense = learners[1]
    monkeypatch.setattr(dense, "_agent_transition_support", lambda slot: None)
    for tick in range(4):
        qs = [rng.dirichlet(np.full(S, 0.2), size=n)]
        qs_prev = [rng.dirichlet(np.full(S, 0.2), size=n)]
        actions = rng.integers(0, U, size=(n, 1))
        acted = rng.random(n) < (1.0 if tick == 0 else 0.7)
        for learner in learners:
            learner.learn_B(qs, qs_prev, actions, acted=acted)
    sparse, reference = learners[0].pB, dense.pB
    assert sparse is not None
    assert reference is not None
    np.testing.assert_allclose(sparse.counts[0], reference.counts[0], rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(sparse.experience[0], reference.experience[0], rtol=1e-13,
                               atol=1e-14)
    np.testing.assert_array_equal(sparse.touched[0], reference.touched[0])
    np.testing.assert_array_equal(sparse.touched_by_agent[0], reference.touched_by_agent[0])
    assert sparse.touched_by_agent[0].any()
    assert sparse.version == reference.version == 4
    held = sum(buf.nbytes for buf in learners[0]._scratch.values())
    assert 0 < held <= n * learners[0].scratch_bytes_per_agent(8)

"""Dirichlet learning of A, B and D (edge_agent/aif/learning*.py) against pymdp 0.0.7.1.

``tests/data/pymdp_learning_golden.npz`` was written by
``tests/data/make_pymdp_learning_golden.py`` from a real pymdp ``Agent`` with ``pA``/``pB``/``pD``
(see the script for the scenarios and the step protocol). The float64 reference agent must give
pymdp's learned counts to 1e-10 and its beliefs and policy posteriors after learning to 1e-6; the
batched kernels must give, for every agent at once, what the reference gives one at a time.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from edge_agent.aif import agreement, learning_kernels
from edge_agent.aif.learning import Learner, LearningSettings, LearningSpec
from edge_agent.aif.learning_counts import DirichletCounts
from edge_agent.aif.learning_kernels import (
    a_increment_shared,
    b_increment_shared,
    b_increment_support,
    joint_states,
    transition_support,
)
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.reference_learning import LearningReferenceAgent
from edge_agent.cli import main
from edge_agent.core.learning import LearningAgentGroup
from edge_agent.errors import ModelError

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "pymdp_learning_golden.npz"
SCENARIOS = ("learn_single", "learn_multi", "learn_novelty")
COUNTS_TOL = {"rtol": 0.0, "atol": 1e-10}
BELIEF_TOL = {"rtol": 0.0, "atol": 1e-6}


@functools.cache
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def indexed(name: str, prefix: str) -> dict[int, np.ndarray]:
    """``{i: array}`` for the keys ``{name}/{prefix}{i}``."""
    out = {}
    for key, value in golden().items():
        scenario, _, leaf = key.partition("/")
        if scenario == name and leaf.startswith(prefix) and leaf[len(prefix):].isdigit():
            out[int(leaf[len(prefix):])] = value
    return dict(sorted(out.items()))


def reference_for(name: str) -> LearningReferenceAgent:
    g = golden()
    model = GenerativeModel.from_arrays(
        list(indexed(name, "A").values()), list(indexed(name, "B").values()),
        list(indexed(name, "C").values()), list(indexed(name, "D").values()),
    )
    return LearningReferenceAgent(
        model, pA=indexed(name, "pA"), pB=indexed(name, "pB"), pD=indexed(name, "pD"),
        lr_pA=float(g[f"{name}/lr_pA"]), lr_pB=float(g[f"{name}/lr_pB"]),
        lr_pD=float(g[f"{name}/lr_pD"]),
        use_param_info_gain=bool(g[f"{name}/use_param_info_gain"]),
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


# -- the batched kernels against the reference, one agent at a time ----------------------------
def random_model(rng: np.random.Generator) -> GenerativeModel:
    num_states, num_controls, num_obs = (3, 4), (2, 3), (4, 3)
    A = [rng.dirichlet(np.ones(o), size=num_states).transpose(2, 0, 1) for o in num_obs]
    B = [
        rng.dirichlet(np.ones(s), size=(s, u)).transpose(2, 0, 1)
        for s, u in zip(num_states, num_controls, strict=True)
    ]
    A[0][:, 0, 0] = [1.0, 0.0, 0.0, 0.0]  # a table zero under counts: the first-update mask
    return GenerativeModel.from_arrays(A, B)


def priors(model: GenerativeModel) -> tuple[dict[int, np.ndarray], ...]:
    pA = {0: model.A[0] * 3.0 + 0.2, 1: model.A[1] * 2.0 + 0.5}
    pB = {1: model.B[1] * 4.0 + 0.3}
    pD = {0: model.D[0] * 2.0 + 0.1, 1: model.D[1] + 0.4}
    return pA, pB, pD


def random_qs(rng: np.random.Generator, n: int, num_states: tuple[int, ...]) -> list[np.ndarray]:
    return [rng.dirichlet(np.ones(s), size=n) for s in num_states]


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


def test_increments_are_one_matrix_product_of_the_textbook_sums() -> None:
    rng = np.random.default_rng(2)
    n, n_obs, U = 40, 5, 3
    qs = random_qs(rng, n, (3, 4))
    obs = rng.integers(0, n_obs, size=n)
    joint = joint_states(qs)
    want = np.zeros((n_obs, 12))
    for i in range(n):
        want[obs[i]] += np.multiply.outer(qs[0][i], qs[1][i]).ravel()
    np.testing.assert_allclose(a_increment_shared(obs, joint, n_obs), want, atol=1e-13)
    prev = random_qs(rng, n, (3,))[0]
    action = rng.integers(0, U, size=n)
    want_b = np.zeros((3, 3, U))
    for i in range(n):
        want_b[:, :, action[i]] += np.outer(qs[0][i], prev[i])
    np.testing.assert_allclose(b_increment_shared(qs[0], prev, action, U), want_b, atol=1e-13)


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


def test_near_certain_float32_posteriors_learn_b_without_subnormal_products() -> None:
    """Near-certain float32 posteriors (off-peak entries 1e-30 to 1e-20, the peaks in the
    first 5 of 40 states) multiply into subnormal float32 numbers or underflow to 0;
    ``b_increment_support`` scales them out of that range, so that every entry of its sums
    (some about 1e-41) is the float64 sum of the products to float32 rounding, relative to
    the entry itself, not merely absolutely; so do the dense products of
    ``b_increment_shared``."""
    rng = np.random.default_rng(5)
    S, U, n = 40, 3, 500
    mask = np.zeros((S, S, U), dtype=bool)
    for u in range(U):
        mask[(np.arange(S) + u) % S, np.arange(S), u] = True  # one target per column
    support = transition_support(mask)
    assert support is not None

    def near_certain() -> np.ndarray:
        q = 10.0 ** rng.uniform(-30, -20, size=(n, S))
        q[np.arange(n), rng.integers(0, 5, n)] = 1.0
        return (q / q.sum(axis=1, keepdims=True)).astype(np.float32)

    q, q_prev, action = near_certain(), near_certain(), rng.integers(0, U, size=n)
    scratch = learning_kernels.b_support_scratch(support, np.dtype(np.float32))
    got = b_increment_support(
        q, q_prev, action, support, local_offset=scratch["offset"],
        index_out=scratch["index"], gathered_out=scratch["gathered"],
        onehot_out=np.empty((U, n), dtype=np.float32), partial_out=scratch["partial"],
        sums_out=scratch["sums"], values_out=scratch["values"],
    )[0]
    want = np.zeros((U, S))
    for u in range(U):
        took = action == u
        target = support.targets[0, u]
        want[u] = (q[took][:, target].astype(np.float64) * q_prev[took]).sum(axis=0)
    assert np.any(want < 1e-40)  # sums in float32's subnormal range exist
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=0)
    # The dense products (a denser B) are scaled the same way.
    dense = np.zeros((S, S, U))
    for u in range(U):
        took = action == u
        dense[:, :, u] = q[took].astype(np.float64).T @ q_prev[took]
    np.testing.assert_allclose(b_increment_shared(q, q_prev, action, U), dense, rtol=1e-5,
                               atol=0)


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


def test_deltas_carry_the_experience_since_the_last_report_and_its_versions() -> None:
    rng = np.random.default_rng(3)
    model = random_model(rng)
    pA, _, _ = priors(model)
    learner = Learner(model.A, model.B, model.D, pA={1: pA[1]},
                      settings=LearningSettings(lr_pA=1.0, forgetting=0.5), n_agents=8)
    assert learner.pA is not None
    for _ in range(3):
        obs = np.stack([rng.integers(0, o, size=8) for o in model.num_obs], axis=1)
        learner.learn_A(obs, random_qs(rng, 8, model.num_states))
    start, end, delta = learner.pA.take_delta()
    assert (start, end) == (0, 3)
    assert delta[0].sum() == pytest.approx(3 * 8 * 1.0, rel=1e-12)  # every agent, every tick
    again = learner.pA.take_delta()
    assert again[:2] == (3, 3)
    assert again[2][0].sum() == 0.0


def test_bad_counts_are_refused_in_one_line() -> None:
    model = random_model(np.random.default_rng(1))
    A0 = model.A[0]
    cases = {
        "negative counts": {0: np.where(A0 > 0, -1.0, 0.0)},
        "NaN or infinite": {0: np.full(A0.shape, np.nan)},
        r"expected \(4, 3, 4\)": {0: np.ones((4, 3))},
        "can never be learned": {0: np.where(np.arange(A0.shape[0])[:, None, None] == 1, 0.0, 1.0)
                                 + 0 * A0},
        "learning asked for modality 5": {5: np.ones(A0.shape)},
    }
    for message, pA in cases.items():
        with pytest.raises(ModelError, match=message):
            DirichletCounts.create("A", pA, model.A)
    for kwargs, message in (({"lr_pA": -1.0}, "lr_pA"), ({"forgetting": 1.0}, "forgetting"),
                            ({"scope": "fleet"}, "scope")):
        with pytest.raises(ModelError, match=message):
            LearningSettings(**kwargs)  # type: ignore[arg-type]


def test_memory_per_agent_scope_is_counts_per_agent() -> None:
    model = random_model(np.random.default_rng(4))
    pA, _, _ = priors(model)
    one = Learner(model.A, model.B, model.D, pA=pA, n_agents=1,
                  settings=LearningSettings(scope="per_agent"))
    many = Learner(model.A, model.B, model.D, pA=pA, n_agents=101,
                   settings=LearningSettings(scope="per_agent"))
    shared = Learner(model.A, model.B, model.D, pA=pA, n_agents=101)
    counts_bytes = sum(p.nbytes for p in pA.values())
    assert many.nbytes - one.nbytes == 100 * counts_bytes
    assert shared.nbytes == one.nbytes


# -- the agent group that learns ----------------------------------------------------------------
def spec_for(name: str, **overrides: object) -> LearningSpec:
    g = golden()
    settings = LearningSettings(
        lr_pA=float(g[f"{name}/lr_pA"]), lr_pB=float(g[f"{name}/lr_pB"]),
        lr_pD=float(g[f"{name}/lr_pD"]),
    )
    kwargs: dict[str, object] = {
        "pA": indexed(name, "pA"), "pB": indexed(name, "pB"), "pD": indexed(name, "pD"),
        "settings": settings, **overrides,
    }
    return LearningSpec(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", SCENARIOS)
def test_learning_group_float64_learns_as_pymdp(name: str) -> None:
    """One agent of the batched group, refreshed every tick, is pymdp's learning agent (with
    the parameter information gain in ``learn_novelty``)."""
    g = golden()
    ref = reference_for(name)
    spec = spec_for(name, param_info_gain=bool(g[f"{name}/use_param_info_gain"]))
    group = LearningAgentGroup(ref.model, 1, learning=spec, precision="float64")
    obs, starts = g[f"{name}/obs"], g[f"{name}/trial_start"]
    onehots = list(group.cm.tree.first_action_onehot)
    for t in range(obs.shape[0]):
        if starts[t] and t > 0:
            group.end_trial()
        group.step(obs[t][None])
        for f, qs in indexed(name, "qs").items():
            np.testing.assert_allclose(group.qs[f][0], qs[t], **BELIEF_TOL, err_msg=f"qs{f} t={t}")
        np.testing.assert_allclose(group.q_pi[0], g[f"{name}/q_pi"][t], **BELIEF_TOL)
        assert agreement.actions_agree(group.q_pi, onehots, g[f"{name}/action"][t][None]).all()
    group.end_trial()
    for key, counts in (("pA", group.learner.pA), ("pB", group.learner.pB),
                        ("pD", group.learner.pD)):
        final = indexed(name, f"final_{key}")
        assert counts is not None
        for slot, index in enumerate(counts.tables):
            np.testing.assert_allclose(counts.counts[slot], final[index], **COUNTS_TOL)


# -- edge-agent replay, learning -------------------------------------------------------------------
def golden_files(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """The scenario as a user has it: a model file with pymdp's keys (pA0.. included) and a
    recording of pymdp's own observations, actions and trial starts."""
    g = golden()
    keep = ("A", "B", "C", "D", "pA", "pB", "pD")
    model = {
        leaf: g[key] for key in g if key.startswith(f"{name}/")
        for leaf in [key.split("/", 1)[1]]
        if leaf.rstrip("0123456789") in keep
    }
    np.savez(tmp_path / "model.npz", **model)
    np.savez(tmp_path / "rec.npz", obs=g[f"{name}/obs"], actions=g[f"{name}/action"],
             trial_start=g[f"{name}/trial_start"])
    return tmp_path / "model.npz", tmp_path / "rec.npz"


def rate_flags(name: str) -> list[str]:
    g = golden()
    return [arg for key in ("lr_pA", "lr_pB", "lr_pD")
            for arg in (f"--{key.replace('_', '-')}", str(float(g[f"{name}/{key}"])))]


@pytest.mark.parametrize("name", SCENARIOS)
def test_replay_learns_as_pymdp(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    model, rec = golden_files(tmp_path, name)
    out = tmp_path / "out.npz"
    novelty = ["--param-info-gain"] if golden()[f"{name}/use_param_info_gain"] else []
    assert main(["replay", str(model), "--recording", str(rec), "--out", str(out),
                 *rate_flags(name), *novelty]) == 0
    assert "learned p" in capsys.readouterr().out
    g = golden()
    with np.load(out) as got:
        np.testing.assert_allclose(got["q_pi"], g[f"{name}/q_pi"], **BELIEF_TOL)
        for f, qs in indexed(name, "qs").items():
            np.testing.assert_allclose(got[f"qs{f}"], qs, **BELIEF_TOL)
        for key in ("pA", "pB", "pD"):
            for i, want in indexed(name, f"final_{key}").items():
                np.testing.assert_allclose(got[f"{key}{i}"], want, **COUNTS_TOL)


def test_replay_int8_learns_within_the_stated_bound(tmp_path: Path) -> None:
    """int8 tables give float32 posteriors from quantized likelihoods: what they learn differs
    from the float64 path's by at most 0.5 % of the learned mass, L1 (0.07 % measured;
    docs/learning.md states the bound)."""
    name = "learn_single"
    model, rec = golden_files(tmp_path, name)
    outs = {}
    for precision in ("float64", "int8"):
        outs[precision] = tmp_path / f"{precision}.npz"
        assert main(["replay", str(model), "--recording", str(rec), "--out",
                     str(outs[precision]), "--precision", precision, *rate_flags(name)]) == 0
    with np.load(outs["float64"]) as exact, np.load(outs["int8"]) as int8:
        for key in ("pA0", "pA1", "pB0", "pD0"):
            with np.load(model) as prior:
                learned = np.abs(exact[key] - prior[key]).sum()
            assert np.abs(int8[key] - exact[key]).sum() <= 0.005 * learned, key


def test_forgetting_pulls_the_counts_back_toward_the_prior(tmp_path: Path) -> None:
    name = "learn_single"
    model, rec = golden_files(tmp_path, name)
    spread = {}
    for forgetting in ("0", "0.5"):
        out = tmp_path / f"f{forgetting}.npz"
        assert main(["replay", str(model), "--recording", str(rec), "--out", str(out),
                     "--forgetting", forgetting]) == 0
        with np.load(out) as got, np.load(model) as prior:
            spread[forgetting] = float(np.abs(got["pA0"] - prior["pA0"]).sum())
    # Every update keeps half of what was learned: the learned mass is bounded by ~2 updates.
    assert spread["0.5"] < 0.5 * spread["0"]
    assert spread["0.5"] > 0


def test_replay_learning_options_and_counts_are_checked_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = "learn_single"
    model, rec = golden_files(tmp_path, name)
    out = str(tmp_path / "o.npz")
    plain = tmp_path / "plain.npz"
    with np.load(model) as arrays:
        np.savez(plain, **{k: arrays[k] for k in arrays.files if not k.startswith("p")})
        bad = dict(arrays)
    cases = [
        ([str(plain), "--forgetting", "0.2"], "has no Dirichlet counts"),
        ([str(model), "--forgetting", "1.5"], "forgetting = 1.5"),
        ([str(model), "--lr-pA", "-1"], "lr_pA = -1.0"),
        ([str(plain), "--param-info-gain"], "has no Dirichlet counts"),
    ]
    for pA0, message in ((-bad["pA0"], "negative counts"), (bad["pA0"][:2], "has shape")):
        path = tmp_path / f"bad{len(cases)}.npz"
        np.savez(path, **{**bad, "pA0": pA0})
        cases.append(([str(path)], message))
    for args, message in cases:
        assert main(["replay", args[0], "--recording", str(rec), "--out", out, *args[1:]]) == 2
        err = capsys.readouterr().err
        assert message in err, (args, err)
        assert "Traceback" not in err
        assert err.count("\n") == 1, err

"""The deep planner gives the general path's results, up to rounding.

The deep planner (:mod:`edge_agent.aif.kernels.deep_plan`, :mod:`edge_agent.aif.kernels.deep`)
evaluates each distinct transition map of the policy tree once; every comparison here is against
:func:`~edge_agent.aif.kernels.evaluate_policies`, the general path. ``G`` and ``q_pi`` must agree
within the tolerances of ``test_kernels.py`` (tight for float64, the float32 compute dtype of int8
groups within its rounding), and actions count as agreeing when optimal under the other path's
posterior (an argmax over near-equal values is a tie, not a disagreement).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge_agent.aif import agreement, kernels
from edge_agent.aif.kernels.deep import DeepScratch, evaluate_deep_block
from edge_agent.aif.kernels.deep_plan import DeepPlan, build_deep_plan, deterministic_maps
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.policies import construct_policies
from edge_agent.aif.quant import quantize_model
from edge_agent.aif.reference import EXP_M16
from edge_agent.aif.settings import AifSettings
from edge_agent.core.agents import AifAgentGroup
from edge_agent.sim.registry import builtin_model, make_env

TOL = {np.float64: {"rtol": 1e-10, "atol": 1e-12}, np.float32: {"rtol": 2e-4, "atol": 2e-6}}
DTYPES = [np.float64, np.float32]  # float32: the int8 groups' compute dtype, quantized model
#: Actions agree when within this of the best under the other path's posterior: float32 paths
#: differ in q_pi by up to the rtol above (q_pi <= 1), float64 ones by rounding.
TIE_TOL = {np.float64: 1e-9, np.float32: TOL[np.float32]["rtol"]}


def close(actual: np.ndarray, expected: np.ndarray, dtype: Any, msg: str = "") -> None:
    tol = TOL[dtype]
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(
        actual, expected, rtol=tol["rtol"], atol=tol["atol"] * scale, err_msg=msg
    )


def compiled(
    model: GenerativeModel, policy_len: int, dtype: Any
) -> tuple[kernels.CompiledModel, DeepPlan | None]:
    source = model if dtype is np.float64 else quantize_model(model)
    cm = kernels.compile_model(
        source, construct_policies(model.num_controls, policy_len), dtype=dtype
    )
    plan = build_deep_plan(
        A_rows=cm.A_rows,
        transitions=cm.transitions,
        tree=cm.tree,
        utility=cm.utility,
        neg_entropy=cm.neg_entropy,
        dtype=cm.dtype,
    )
    return cm, plan


def beliefs(rng: np.random.Generator, n: int, S: int) -> np.ndarray:
    """Random priors, many nearly one-hot (entries far below the info-gain threshold)."""
    q = rng.dirichlet(np.ones(S) * 0.3, size=n)
    sharp = rng.random(n) < 0.5
    q[sharp] = q[sharp] ** 8
    q[rng.random((n, S)) < 0.2] = 0.0
    q += 1e-30
    return np.asarray(q / q.sum(axis=1, keepdims=True))


def posterior(
    cm: kernels.CompiledModel, n: int, seed: int
) -> tuple[np.ndarray, np.ndarray, kernels.Block]:
    """Observations ``(n,)``, the posterior ``q (n, S)`` they give, and the block holding the
    evidence (one factor, one modality)."""
    rng = np.random.default_rng(seed)
    S = cm.num_states[0]
    prior = beliefs(rng, n, S).astype(cm.dtype)
    obs = rng.integers(0, cm.num_obs[0], (n, 1))
    blk = kernels.Workspace(cm, n, info_gain=True).block(n)
    q = np.full((n, S), np.nan, dtype=cm.dtype)
    kernels.infer_block(cm, obs, [prior], [q], blk, num_iter=10, dF_tol=1e-3, roots=False)
    return obs[:, 0], q, blk


def assert_actions_agree(
    cm: kernels.CompiledModel, q_pi: np.ndarray, expected_q_pi: np.ndarray, dtype: Any, msg: str
) -> None:
    """Each path's deterministic choice is optimal under the other path's posterior."""
    onehot = cm.tree.first_action_onehot
    for mode in ("marginal", "full"):
        for mine, other in ((q_pi, expected_q_pi), (expected_q_pi, q_pi)):
            chosen = kernels.select_actions(
                cm,
                mine,
                mode=mode,
                deterministic=True,
                alpha=16.0,
                rng=np.random.default_rng(0),
            )
            ok = agreement.actions_agree(
                other.astype(np.float64),
                onehot,
                chosen,
                mode=mode,
                tol=TIE_TOL[dtype],
            )
            assert ok.all(), f"{msg} {mode}: agents {np.flatnonzero(~ok)} disagree"


# ------------------------------------------------------------------------------ the tables
def test_grid_moves_commute_so_a_three_step_tree_has_45_distinct_maps() -> None:
    _, plan = compiled(builtin_model("explorer"), 3, np.float64)
    assert plan is not None
    assert plan.num_maps == 45  # of 5 + 25 + 125 nodes (and the identity is "stay")
    # Every policy sums the values of exactly policy_len maps.
    np.testing.assert_array_equal(plan.counts_T.sum(axis=0), 3)
    np.testing.assert_array_equal(plan.maps[0], np.arange(100))


def test_maps_are_the_compositions_of_the_policies_moves() -> None:
    model = builtin_model("grid10")
    cm, plan = compiled(model, 2, np.float64)
    assert plan is not None
    fn = deterministic_maps(cm.transitions[0])
    assert fn is not None
    B = model.B[0]
    for p, pol in enumerate(cm.tree.policies[:, :, 0]):
        g = np.arange(100)
        reached: list[int] = []
        for u in pol:
            g = fn[u][g]
            dense = np.zeros((100, 100))
            dense[g, np.arange(100)] = 1.0
            expected = np.eye(100)
            for v in pol[: len(reached) + 1]:
                expected = B[:, :, v] @ expected
            np.testing.assert_array_equal(dense, expected)
            reached.append(int(np.flatnonzero((plan.maps == g).all(axis=1))[0]))
        np.testing.assert_array_equal(
            np.bincount(reached, minlength=plan.num_maps), plan.counts_T[:, p]
        )


@pytest.mark.parametrize("dtype", DTYPES)
def test_models_the_planner_cannot_serve_exactly_fall_back(dtype: Any) -> None:
    """Stochastic or dense B, several factors, one-step policies: no plan, the general path."""
    rng = np.random.default_rng(4)
    S, U = 9, 3
    A = rng.dirichlet(np.ones(S), size=S).T
    B_sparse = np.zeros((S, S, U))
    for u in range(U):
        for s in range(S):
            B_sparse[[s, (s + u + 1) % S], s, u] = [0.7, 0.3]
    B_dense = rng.dirichlet(np.ones(S), size=(S, U)).transpose(2, 0, 1)
    for B in (B_sparse, B_dense):
        model = GenerativeModel.from_arrays([A], [B], [rng.normal(size=S)], [np.ones(S) / S])
        assert compiled(model, 2, dtype)[1] is None
    assert compiled(builtin_model("tmaze"), 2, dtype)[1] is None  # two factors
    assert compiled(builtin_model("grid10"), 1, dtype)[1] is None  # the local planner's


# --------------------------------------------------------------- G and q_pi, kernel level
CASES = [("grid10", 2), ("explorer", 3), ("explorer", 2), ("grid10", 3)]


@pytest.mark.parametrize("n", [5, 300])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "policy_len"), CASES)
def test_deep_planner_equals_general_path(name: str, policy_len: int, dtype: Any, n: int) -> None:
    cm, plan = compiled(builtin_model(name), policy_len, dtype)
    assert plan is not None
    assert (plan.local is not None) == name.startswith("grid")
    obs, q, blk = posterior(cm, n, seed=policy_len)
    ev = kernels.evaluate_policies(cm, [q], use_utility=True, use_info_gain=True)
    expected_q_pi = kernels.policy_posterior(ev.G, cm.lnE, 16.0)
    scratch = DeepScratch(cm, plan, n, info_gain=True)
    assert scratch.nbytes == n * DeepScratch.bytes_per_agent(cm, plan, info_gain=True)
    dblk = scratch.block(n)
    # With the observation (the local form where there is one), then without (the dense form).
    for given in (True, False):
        G = np.full((n, cm.num_policies), np.nan, dtype=dtype)
        refused = evaluate_deep_block(
            cm,
            plan,
            q,
            dblk,
            G,
            obs=obs if given else None,
            evidence=blk.evidence if given else None,
            use_utility=True,
            use_info_gain=True,
        )
        ok = np.ones(n, dtype=bool)
        ok[refused] = False
        assert ok.sum() >= n // 2
        close(G[ok], ev.G[ok], dtype, f"G, observation given: {given}")
        q_pi = kernels.policy_posterior(G[ok], cm.lnE, 16.0)
        close(q_pi, expected_q_pi[ok], dtype, "q_pi")
        assert_actions_agree(cm, q_pi, expected_q_pi[ok], dtype, f"given {given}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("utility", "info_gain"), [(True, False), (False, True), (False, False)])
def test_deep_planner_without_utility_or_information_gain(
    utility: bool, info_gain: bool, dtype: Any
) -> None:
    cm, plan = compiled(builtin_model("grid10"), 2, dtype)
    assert plan is not None
    n = 40
    obs, q, blk = posterior(cm, n, seed=9)
    ev = kernels.evaluate_policies(cm, [q], use_utility=utility, use_info_gain=info_gain)
    dblk = DeepScratch(cm, plan, n, info_gain=info_gain).block(n)
    for given in (True, False):
        G = np.full((n, cm.num_policies), np.nan, dtype=dtype)
        refused = evaluate_deep_block(
            cm,
            plan,
            q,
            dblk,
            G,
            obs=obs if given else None,
            evidence=blk.evidence if given else None,
            use_utility=utility,
            use_info_gain=info_gain,
        )
        ok = np.ones(n, dtype=bool)
        ok[refused] = False
        close(G[ok], ev.G[ok], dtype, f"given {given}")


def walls_model(seed: int, S: int = 14, U: int = 4) -> GenerativeModel:
    """Random deterministic moves with merges (a wall state many sources fall into) and
    unreachable states: the structure holds, nothing commutes by design."""
    rng = np.random.default_rng(seed)
    B = np.zeros((S, S, U))
    for u in range(U):
        target = rng.integers(0, S, S)
        target[rng.random(S) < 0.3] = 0
        B[target, np.arange(S), u] = 1.0
    B[:, :, 0] = np.eye(S)  # "stay"
    A = rng.dirichlet(np.ones(S) * 0.5, size=S).T
    return GenerativeModel.from_arrays([A], [B], [rng.normal(size=S)], [np.ones(S) / S])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("policy_len", [2, 3])
def test_random_deterministic_model_equals_general_path(policy_len: int, dtype: Any) -> None:
    cm, plan = compiled(walls_model(3), policy_len, dtype)
    assert plan is not None
    n = 64
    obs, q, blk = posterior(cm, n, seed=5)
    ev = kernels.evaluate_policies(cm, [q], use_utility=True, use_info_gain=True)
    dblk = DeepScratch(cm, plan, n, info_gain=True).block(n)
    assert plan.local is None  # A is dense: every state is a candidate
    for given in (True, False):
        G = np.full((n, cm.num_policies), np.nan, dtype=dtype)
        refused = evaluate_deep_block(
            cm,
            plan,
            q,
            dblk,
            G,
            obs=obs if given else None,
            evidence=blk.evidence if given else None,
            use_utility=True,
            use_info_gain=True,
        )
        assert len(refused) == 0
        close(G, ev.G, dtype, "G")


def test_local_form_refuses_agents_whose_prior_contradicts_the_observation() -> None:
    cm, plan = compiled(builtin_model("grid10"), 2, np.float64)
    assert plan is not None
    assert plan.local is not None
    n = 3
    prior = np.full((n, 100), 1e-30)
    prior[:, 99] = 1.0  # sure to be in the far corner
    obs = np.array([[0], [99], [1]])  # ... but two agents see the opposite corner
    blk = kernels.Workspace(cm, n, info_gain=True).block(n)
    q = np.empty((n, 100))
    kernels.infer_block(cm, obs, [prior], [q], blk, num_iter=10, dF_tol=1e-3, roots=False)
    G = np.empty((n, cm.num_policies))
    dblk = DeepScratch(cm, plan, n, info_gain=True).block(n)
    refused = evaluate_deep_block(
        cm,
        plan,
        q,
        dblk,
        G,
        obs=obs[:, 0],
        evidence=blk.evidence,
        use_utility=True,
        use_info_gain=True,
    )
    assert list(refused) == [0, 2]
    ev = kernels.evaluate_policies(cm, [q[1:2]], use_utility=True, use_info_gain=True)
    close(G[1:2], ev.G, np.float64, "the agent it serves")
    # Those it serves hold no belief above tau off the observation's cells.
    off = np.where(cm.A_rows[0][obs[:, 0]] == 0, q, 0).max(axis=1)
    assert off[1] <= EXP_M16 / 8


# ------------------------------------------------------------------ the group's dispatch
class GeneralGroup(AifAgentGroup):
    """A group that never takes the deep planner: the general path to compare against."""

    def _planner(self, rows: Any, obs: Any) -> str:
        planner = super()._planner(rows, obs)
        if planner != "deep":
            return planner
        return "tree" if rows.blk.dense else "chunks"


@pytest.mark.parametrize("precision", ["int8", "float64"])
@pytest.mark.parametrize(
    ("name", "policy_len", "n"), [("grid10", 2, 150), ("explorer", 3, 40), ("tmaze", 2, 30)]
)
def test_group_with_the_deep_planner_acts_as_the_general_path(
    name: str, policy_len: int, n: int, precision: str
) -> None:
    """Agents that live in their world: the same beliefs and posteriors as the general path's
    group, step after step, and actions optimal under the other group's posterior (both groups
    then take the general group's actions, so that they stay in the same state)."""
    env = make_env(name, n, seed=2)
    settings = AifSettings(policy_len=policy_len)
    kw: dict[str, Any] = {"settings": settings, "precision": precision, "block_size": 64}
    model = builtin_model(name)
    deep = AifAgentGroup(model, n, **kw)
    base = GeneralGroup(model, n, **kw)
    assert (deep.cm.deep is None) == (name == "tmaze")
    dtype = np.float64 if precision == "float64" else np.float32
    obs = env.reset()
    for step in range(8):
        if env.episode_start.any():
            deep.reset(env.episode_start)
            base.reset(env.episode_start)
        a_deep = deep.step(obs).copy()
        a_base = base.step(obs).copy()
        for f in range(len(deep.qs)):
            close(deep.qs[f], base.qs[f], dtype, f"step {step} qs{f}")
        close(deep.G, base.G, dtype, f"step {step} G")
        close(deep.q_pi, base.q_pi, dtype, f"step {step} q_pi")
        onehot = base.cm.tree.first_action_onehot
        tol = TIE_TOL[dtype]
        assert agreement.actions_agree(base.q_pi.astype(np.float64), onehot, a_deep, tol=tol).all()
        assert agreement.actions_agree(deep.q_pi.astype(np.float64), onehot, a_base, tol=tol).all()
        deep.set_action(a_base)
        obs = env.step(a_base)


# ------------------------------------------------- the dense form's scratch for few agents
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_small_dense_capacity_serves_the_local_form_for_the_whole_block(dtype: Any) -> None:
    cm, plan = compiled(builtin_model("grid10"), 2, dtype)
    assert plan is not None
    assert plan.local is not None
    n, few = 300, 40
    obs, q, blk = posterior(cm, n, seed=11)
    full = DeepScratch(cm, plan, n, info_gain=True)
    small = DeepScratch(cm, plan, n, info_gain=True, dense_capacity=few)
    every, dense = kernels.deep_bytes_per_agent(cm, plan, info_gain=True)
    assert dense > every  # the dense form is most of a grid's scratch
    assert small.nbytes == n * every + few * dense
    assert full.nbytes == n * (every + dense)
    results = []
    for scratch in (full, small):
        G = np.full((n, cm.num_policies), np.nan, dtype=dtype)
        refused = evaluate_deep_block(
            cm, plan, q, scratch.block(n), G, obs=obs, evidence=blk.evidence,
            use_utility=True, use_info_gain=True,
        )  # fmt: skip
        results.append((G, refused))
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_array_equal(results[0][0], results[1][0])  # the same products, same order
    G = np.zeros((n, cm.num_policies), dtype=dtype)
    with pytest.raises(ValueError, match=r"a block of 300 agents without an observation"):
        evaluate_deep_block(
            cm, plan, q, small.block(n), G, use_utility=True, use_info_gain=True
        )  # fmt: skip
    ev = kernels.evaluate_policies(cm, [q[:few]], use_utility=True, use_info_gain=True)
    evaluate_deep_block(
        cm, plan, q[:few], small.block(few), G[:few], use_utility=True, use_info_gain=True
    )
    close(G[:few], ev.G, dtype, "G of a block the dense form holds")
    with pytest.raises(ValueError, match=r"dense capacity 301, need 1..300"):
        DeepScratch(cm, plan, n, info_gain=True, dense_capacity=n + 1)


@pytest.mark.parametrize("precision", ["int8", "float64"])
def test_soft_evidence_plans_a_large_block_in_sub_blocks_of_the_dense_form(precision: str) -> None:
    """Soft evidence gives the deep planner no observation: a block larger than the dense
    form's scratch is planned in sub-blocks, with the general path's G and posteriors."""
    n = 100
    env = make_env("grid10", n, seed=4)
    kw: dict[str, Any] = {"settings": AifSettings(policy_len=2), "precision": precision}
    deep = AifAgentGroup(builtin_model("grid10"), n, **kw)
    base = GeneralGroup(builtin_model("grid10"), n, **kw)
    assert deep.block_size >= n  # one block of 100 agents
    assert deep.stepper.sizes.deep_dense < n  # planned in several sub-blocks
    dtype = np.float64 if precision == "float64" else np.float32
    obs = env.reset()
    num_obs = deep.cm.num_obs
    for step in range(4):
        soft = [np.eye(num_obs[m], dtype=np.float64)[obs[:, m]] for m in range(len(num_obs))]
        a_deep = deep.step(soft).copy()
        a_base = base.step(soft).copy()
        close(deep.G, base.G, dtype, f"step {step} G")
        close(deep.q_pi, base.q_pi, dtype, f"step {step} q_pi")
        onehot = base.cm.tree.first_action_onehot
        tol = TIE_TOL[dtype]
        assert agreement.actions_agree(deep.q_pi.astype(np.float64), onehot, a_base, tol=tol).all()
        assert agreement.actions_agree(base.q_pi.astype(np.float64), onehot, a_deep, tol=tol).all()
        deep.set_action(a_base)
        obs = env.step(a_base)

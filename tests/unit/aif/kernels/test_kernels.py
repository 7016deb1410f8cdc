"""The fast paths of ``edge_agent.aif.kernels`` against its general (agent-major) path.

Every fast path computes the same sums as the general path, in another layout and order, so the
two must agree to rounding: ``rtol`` 1e-10 in float64, a few float32 ulps (relative to the largest
entry) in float32. Models are random and cover what the fast paths special-case: deterministic
transitions that are not injective (walls: several sources per target) or leave targets without a
source, stochastic sparse transitions, dense transitions, sparse and dense likelihoods, one and
several factors, one and several policy steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from edge_agent.aif import agreement, kernels
from edge_agent.aif.model import GenerativeModel
from edge_agent.aif.policies import construct_policies
from edge_agent.aif.quant import quantize_model
from edge_agent.aif.reference import EPS, EXP_M16, ReferenceAgent
from edge_agent.aif.settings import AifSettings
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.native_pass import NATIVE_ENV
from edge_agent.errors import InputError
from edge_agent.sim.gridworld import GridWorldEnv, gridworld_model

TOL = {np.float64: {"rtol": 1e-10, "atol": 1e-12}, np.float32: {"rtol": 2e-4, "atol": 2e-6}}


def transitions(rng: np.random.Generator, S: int, U: int, kind: str) -> np.ndarray:
    """``B (S, S, U)``: ``walls`` deterministic maps with merges and unreachable targets,
    ``sparse`` 1-2 random targets per column with random weights, ``dense`` Dirichlet columns."""
    B = np.zeros((S, S, U))
    cols = np.arange(S)
    for u in range(U):
        if kind == "walls":
            target = rng.integers(0, S, S)
            target[rng.random(S) < 0.3] = 0  # many sources into state 0 (a wall)
            B[target, cols, u] = 1.0
        elif kind == "sparse":
            for s in range(S):
                k = int(rng.integers(1, 3))
                tgt = rng.choice(S, size=k, replace=False)
                B[tgt, s, u] = rng.dirichlet(np.ones(k))
        else:
            B[:, :, u] = rng.dirichlet(np.ones(S), size=S).T
    return B


def likelihood(
    rng: np.random.Generator, n_out: int, states: tuple[int, ...], nnz: int
) -> np.ndarray:
    """``A (n_out, *states)`` with ``nnz`` non-zero outcomes per column (all if nnz >= n_out)."""
    S = int(np.prod(states))
    A = np.zeros((n_out, S))
    for s in range(S):
        k = min(nnz, n_out)
        rows = rng.choice(n_out, size=k, replace=False)
        A[rows, s] = rng.dirichlet(np.ones(k) * 0.8)
    return A.reshape(n_out, *states)


def random_model(
    seed: int, states: tuple[int, ...], obs: tuple[int, ...], controls: tuple[int, ...], *,
    b_kind: str, a_nnz: int,
) -> GenerativeModel:
    rng = np.random.default_rng(seed)
    A = [likelihood(rng, o, states, a_nnz) for o in obs]
    B = [transitions(rng, s, u, b_kind) for s, u in zip(states, controls, strict=True)]
    C = [rng.normal(size=o) for o in obs]
    D = [rng.dirichlet(np.ones(s)) for s in states]
    return GenerativeModel.from_arrays(A, B, C, D)


MODELS: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], str, int]] = {
    # name: (num_states, num_obs, num_controls, B kind, non-zeros per A column)
    "walls": ((12,), (12,), (4,), "walls", 2),
    "sparse_B": ((10,), (9,), (3,), "sparse", 3),
    "dense_B": ((6,), (5,), (3,), "dense", 5),
    "two_modalities": ((8,), (6, 3), (3,), "walls", 2),
    "two_factors": ((4, 3), (5, 3), (3, 2), "walls", 3),
    "three_factors": ((3, 2, 3), (4,), (2, 1, 2), "sparse", 2),
}


def beliefs(rng: np.random.Generator, n: int, S: int) -> np.ndarray:
    """Random beliefs, many nearly one-hot (entries far below the info-gain threshold)."""
    q = rng.dirichlet(np.ones(S) * 0.3, size=n)
    sharp = rng.random(n) < 0.5
    q[sharp] = q[sharp] ** 8
    q[rng.random((n, S)) < 0.2] = 0.0
    q += 1e-30
    return q / q.sum(axis=1, keepdims=True)


def compiled(
    model: GenerativeModel, policy_len: int, dtype: type[np.floating]
) -> kernels.CompiledModel:
    pol = construct_policies(model.num_controls, policy_len)
    return kernels.compile_model(model, pol, dtype=dtype)


def close(actual: np.ndarray, expected: np.ndarray, dtype: Any, msg: str = "") -> None:
    tol = TOL[dtype]
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(
        actual, expected, rtol=tol["rtol"], atol=tol["atol"] * scale, err_msg=msg
    )


def assert_selection_agrees(
    cm: kernels.CompiledModel, q_pi: np.ndarray, actions: np.ndarray, expected: np.ndarray, *,
    mode: str, deterministic: bool, seed: int, msg: str,
) -> None:
    """Both paths select from the same ``q_pi`` but sum the action marginals in another order,
    so a near-tie may flip: each path's choice must be optimal (deterministic) or drawn (the
    same uniform numbers) under the float64 marginals of that ``q_pi`` within ``ROUNDING_TOL``,
    and most choices are equal."""
    onehot = cm.tree.first_action_onehot
    if deterministic:
        for got in (actions, expected):
            ok = agreement.actions_agree(q_pi, onehot, got, mode=mode)  # type: ignore[arg-type]
            assert ok.all(), f"{msg}: agents {np.flatnonzero(~ok)} chose a suboptimal action"
    else:
        rng = np.random.default_rng(seed)
        n = q_pi.shape[0]
        if mode == "full":
            probs = kernels.softmax_rows(16.0 * np.log(q_pi + EPS))
            u = rng.random((n, 1))[:, 0]
            for got in (actions, expected):
                same_first = np.all(cm.tree.policies[None, :, 0, :] == got[:, None, :], axis=2)
                assert agreement.draw_agrees(probs, u, same_first).all(), msg
        else:
            for f, m in enumerate(agreement.action_marginals(q_pi, onehot)):
                probs = kernels.softmax_rows(16.0 * np.log(m + EPS))
                u = rng.random((n, 1))[:, 0]
                for got in (actions, expected):
                    chosen = np.arange(m.shape[1])[None, :] == got[:, f : f + 1]
                    assert agreement.draw_agrees(probs, u, chosen).all(), f"{msg} factor {f}"
    # Rounding flips only near-ties: the two paths' choices are equal almost everywhere.
    assert np.mean(np.all(actions == expected, axis=1)) >= 0.9, msg


# ------------------------------------------------------------------------------------ tables
def test_row_maps_and_diagonals_equal_dense_products() -> None:
    rng = np.random.default_rng(0)
    for n_out, S, nnz in [(20, 30, 3), (30, 20, 1), (7, 7, 7)]:
        A = likelihood(rng, n_out, (S,), nnz)
        x = rng.random((S, 9))
        x_rows = np.vstack([x, np.zeros((1, 9))])  # the zero row a RowMap reads for "none"
        expected = A @ x
        rm = kernels.outcome_row_map(A)
        out = np.full((n_out, 9), np.nan)
        kernels.apply_row_map(rm, x_rows, out, np.empty(2 * rm.max_extra * 9))
        np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-15)
        dg = kernels.diagonals(A)
        out = np.full((n_out, 9), np.nan)
        kernels.apply_diagonals(dg, x, out, np.empty((n_out, 9)))
        np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-15)


def test_diagonals_reweighted_for_the_same_support_equal_those_made_anew() -> None:
    """A refresh that keeps the likelihood's support keeps its outcome map's diagonals and
    gathers only their weights again (``reweighted_diagonals``): the same map, bit for bit, as
    ``diagonals`` of the new table; and ``likelihood_fields`` given the old plan gives the
    same fields as without it, for a diagonal map (grid), no map (T-maze's dense product) and a
    row map (made anew)."""
    from edge_agent.aif.kernels.fast_tables import likelihood_fields, reweighted_diagonals
    from edge_agent.sim.registry import builtin_model

    rng = np.random.default_rng(4)
    for n_out, S, nnz in [(20, 30, 3), (30, 20, 1), (7, 7, 7)]:
        old = likelihood(rng, n_out, (S,), nnz)
        new = np.where(old != 0, rng.random(old.shape) + 0.1, 0.0)
        new /= new.sum(axis=0, keepdims=True)
        mine, fresh = reweighted_diagonals(kernels.diagonals(old), new), kernels.diagonals(new)
        assert mine.num_out == fresh.num_out
        assert len(mine.diagonals) == len(fresh.diagonals)
        for (d, lo, hi, w), (d2, lo2, hi2, w2) in zip(
            mine.diagonals, fresh.diagonals, strict=True
        ):
            assert (d, lo, hi) == (d2, lo2, hi2)
            np.testing.assert_array_equal(w, w2)
    kinds = set()
    for model in (gridworld_model(10, 10), builtin_model("tmaze"),
                  GenerativeModel.from_arrays([likelihood(rng, 60, (60,), 2)],
                                              [transitions(rng, 60, 2, "sparse")])):
        cm = compiled(model, 1, np.float64)
        A_rows = tuple(np.where(a != 0, a * (1.0 + rng.random(a.shape)), 0.0) for a in cm.A_rows)
        A_rows = tuple(a / a.sum(axis=0, keepdims=True) for a in A_rows)
        joint = A_rows[0]
        for a in A_rows[1:]:
            joint = (joint[:, None, :] * a[None, :, :]).reshape(-1, a.shape[1])
        A_joint_T = np.ascontiguousarray(joint[cm.joint_outcomes].T)
        args = (A_rows, A_joint_T, cm.utility, cm.neg_entropy, cm.dtype)
        kept = likelihood_fields(*args, same_support=cm.fast)
        made = likelihood_fields(*args)
        kinds.add(type(made["outcome_map"]).__name__)
        assert type(kept["outcome_map"]) is type(made["outcome_map"])
        if isinstance(made["outcome_map"], kernels.Diagonals):
            for a, b in zip(kept["outcome_map"].diagonals, made["outcome_map"].diagonals,
                            strict=True):
                assert a[:3] == b[:3]
                np.testing.assert_array_equal(a[3], b[3])
        for key in ("A_eps", "utility_row", "neg_entropy_row"):
            if made[key] is None:
                assert kept[key] is None
            else:
                np.testing.assert_array_equal(kept[key], made[key])
    assert kinds == {"Diagonals", "NoneType", "RowMap"}


def test_grid_outcomes_use_five_diagonals() -> None:
    cm = compiled(gridworld_model(10, 10), 1, np.float32)
    assert isinstance(cm.fast.outcome_map, kernels.Diagonals)
    assert sorted(d for d, *_ in cm.fast.outcome_map.diagonals) == [-10, -1, 0, 1, 10]


@pytest.mark.parametrize("kind", ["walls", "sparse", "dense"])
def test_per_agent_propagation_equals_general(kind: str) -> None:
    rng = np.random.default_rng(1)
    S, U, n = 11, 4, 37
    model = GenerativeModel.from_arrays(
        [likelihood(rng, 5, (S,), 2)], [transitions(rng, S, U, kind)]
    )
    cm = compiled(model, 1, np.float64)
    trans = cm.transitions[0]
    q = beliefs(rng, n, S)
    actions = rng.integers(0, U, (n, 1))
    expected = kernels.propagate_per_agent(trans, q, actions[:, 0])
    blk = kernels.Workspace(cm, n, info_gain=True).block(n)
    out = np.full((n, S), np.nan)
    kernels.propagate_block(cm, [q], actions, [out], blk)
    np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-15)
    # and both equal B[:, :, a] @ q per agent
    direct = np.stack([model.B[0][:, :, a] @ q[i] for i, a in enumerate(actions[:, 0])])
    np.testing.assert_allclose(out, direct, rtol=1e-12, atol=1e-15)
    if kind == "walls":
        ap = cm.fast.agent_propagation[0]
        assert ap is not None
        assert ap.extra, "merging maps need an extra layer"


# ------------------------------------------------------------------- the whole fast pipeline
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("policy_len", [1, 2])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_dense_fast_path_equals_general_path(name: str, policy_len: int, dtype: Any) -> None:
    states, obs_sizes, controls, b_kind, a_nnz = MODELS[name]
    model = random_model(7, states, obs_sizes, controls, b_kind=b_kind, a_nnz=a_nnz)
    source = model if dtype is np.float64 else quantize_model(model)
    pol = construct_policies(model.num_controls, policy_len)
    cm = kernels.compile_model(source, pol, dtype=dtype)
    rng = np.random.default_rng(3)
    n = 23
    prior = [beliefs(rng, n, s).astype(dtype) for s in states]
    obs = np.stack([rng.integers(0, o, n) for o in obs_sizes], axis=1)
    settings = AifSettings(policy_len=policy_len)

    expected_qs = kernels.infer_states(
        cm, obs, prior, num_iter=settings.num_iter, dF_tol=settings.dF_tol
    )
    ev = kernels.evaluate_policies(cm, expected_qs, use_utility=True, use_info_gain=True)
    expected_q_pi = kernels.policy_posterior(ev.G, cm.lnE, settings.gamma)

    blk = kernels.Workspace(cm, n, info_gain=True).block(n)
    qs = [np.full((n, s), np.nan, dtype=dtype) for s in states]
    kernels.infer_block(cm, obs, prior, qs, blk, num_iter=settings.num_iter, dF_tol=settings.dF_tol)
    for f in range(len(states)):
        close(qs[f], expected_qs[f], dtype, f"qs{f}")
    kernels.evaluate_block(cm, blk, use_utility=True, use_info_gain=True, gamma=settings.gamma)
    close(blk.G.T, ev.G, dtype, "G")
    close(blk.x.T, expected_q_pi, dtype, "q_pi")

    # Action selection from the same q_pi, deterministic and with the same random numbers.
    for mode in ("marginal", "full"):
        for deterministic in (True, False):
            kw = {"mode": mode, "deterministic": deterministic, "alpha": 16.0}
            expected_a = kernels.select_actions(
                cm, expected_q_pi, rng=np.random.default_rng(5), **kw  # type: ignore[arg-type]
            )
            np.copyto(blk.x, expected_q_pi.T)
            actions = np.full((n, len(states)), -1, dtype=np.int64)
            kernels.select_block(
                cm, blk.x, blk, actions, rng=np.random.default_rng(5), **kw  # type: ignore[arg-type]
            )
            assert_selection_agrees(
                cm, expected_q_pi, actions, expected_a, mode=mode, deterministic=deterministic,
                seed=5, msg=f"{mode} {deterministic}",
            )

    # The next prior: reused from the first depth of the tree, or propagated per agent.
    actions = np.stack([rng.integers(0, u, n) for u in controls], axis=1)
    expected_prior = kernels.next_prior(cm, expected_qs, actions, None)
    out = [np.full((n, s), np.nan, dtype=dtype) for s in states]
    if kernels.prior_block(cm, blk, actions, out):
        for f in range(len(states)):
            close(out[f], expected_prior[f], dtype, f"prior{f} from the tree")
    out = [np.full((n, s), np.nan, dtype=dtype) for s in states]
    kernels.propagate_block(cm, qs, actions, out, blk)
    for f in range(len(states)):
        close(out[f], expected_prior[f], dtype, f"prior{f} propagated")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", ["walls", "sparse_B", "dense_B"])
def test_small_block_planner_equals_general_path(name: str, dtype: Any) -> None:
    states, obs_sizes, controls, b_kind, a_nnz = MODELS[name]
    model = random_model(11, states, obs_sizes, controls, b_kind=b_kind, a_nnz=a_nnz)
    cm = compiled(model, 1, dtype)
    assert cm.small is not None
    rng = np.random.default_rng(4)
    n = kernels.SMALL_BLOCK
    q = beliefs(rng, n, states[0]).astype(dtype)
    ev = kernels.evaluate_policies(cm, [q], use_utility=True, use_info_gain=True)
    blk = kernels.Workspace(cm, n, info_gain=True).block(n)
    G = np.full((n, cm.num_policies), np.nan, dtype=dtype)
    kernels.evaluate_small_block(cm, q, blk, G, use_utility=True, use_info_gain=True)
    close(G, ev.G, dtype, "G")
    actions = rng.integers(0, controls[0], n)
    prior = np.full((n, states[0]), np.nan, dtype=dtype)
    assert kernels.small_prior_block(cm, blk, actions, prior)
    close(prior, kernels.next_prior(cm, [q], actions[:, None], None)[0], dtype, "prior")


def local_model(seed: int, b_kind: str) -> GenerativeModel:
    """A corridor of 40 cells: one factor, one modality, two or three cells produce each outcome;
    moves by -2..2 cells, stopped by the walls (``walls``: deterministic, so the end cells have two
    or three sources and the far ones none) or landing on one of two cells (``sparse``)."""
    rng = np.random.default_rng(seed)
    S = 40
    A = np.zeros((S, S))
    for s in range(S):
        rows = np.unique([s, (s + 1) % S, (s + int(rng.integers(2, 6))) % S])
        A[rows, s] = rng.dirichlet(np.ones(len(rows)))
    B = np.zeros((S, S, 4))
    for u, step in enumerate((-2, -1, 1, 2)):
        for s in range(S):
            t = min(max(s + step, 0), S - 1)
            if b_kind == "walls":
                B[t, s, u] = 1.0
            else:
                t2 = min(max(s + step + 1, 0), S - 1)
                w = rng.random()
                B[t, s, u] += w
                B[t2, s, u] += 1.0 - w
    return GenerativeModel.from_arrays([A], [B], [rng.normal(size=S)], [rng.dirichlet(np.ones(S))])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("b_kind", ["walls", "sparse"])
def test_local_planner_equals_general_path(b_kind: str, dtype: Any) -> None:
    model = local_model(2, b_kind)
    cm = compiled(model, 1, dtype)
    assert cm.local is not None
    rng = np.random.default_rng(8)
    n = 300
    prior = beliefs(rng, n, 40).astype(dtype)
    obs = rng.integers(0, 40, (n, 1))
    blk = kernels.Workspace(cm, n, info_gain=True).block(n)
    q = np.full((n, 40), np.nan, dtype=dtype)
    kernels.infer_block(cm, obs, [prior], [q], blk, num_iter=10, dF_tol=1e-3, roots=False)
    ev = kernels.evaluate_policies(cm, [q], use_utility=True, use_info_gain=True)
    G = np.full((n, cm.num_policies), np.nan, dtype=dtype)
    dense = kernels.evaluate_local_block(
        cm, obs[:, 0], q, blk, G, use_utility=True, use_info_gain=True
    )
    ok = np.ones(n, dtype=bool)
    ok[dense] = False
    assert ok.sum() > n // 2
    close(G[ok], ev.G[ok], dtype, "G of agents the local planner may serve")
    # The agents it refuses are those whose posterior has mass off the observation's cells.
    A = cm.A_rows[0]
    off = np.where(A[obs[:, 0]] == 0, q, 0).max(axis=1)
    assert np.all(off[ok] <= EXP_M16 / 4)


def test_local_planner_refuses_agents_whose_prior_contradicts_the_observation() -> None:
    model = gridworld_model(8, 8)
    cm = compiled(model, 1, np.float64)
    assert cm.local is not None
    n = 3
    prior = np.full((n, 64), 1e-30)
    prior[:, 63] = 1.0  # sure to be in the far corner
    obs = np.array([[0], [63], [1]])  # ... but two agents see the opposite corner
    blk = kernels.Workspace(cm, n, info_gain=True).block(n)
    q = np.empty((n, 64))
    kernels.infer_block(cm, obs, [prior], [q], blk, num_iter=10, dF_tol=1e-3, roots=False)
    G = np.empty((n, cm.num_policies))
    dense = kernels.evaluate_local_block(
        cm, obs[:, 0], q, blk, G, use_utility=True, use_info_gain=True
    )
    assert list(dense) == [0, 2]


# ------------------------------------------------------------------------------ agent groups
def grid_without_ties(height: int, width: int, seed: int) -> GenerativeModel:
    """The grid world with random preferences: no two moves tie (the shaped preferences of
    ``gridworld_model`` make mirror moves tie exactly, and rounding then picks one)."""
    grid = gridworld_model(height, width)
    rng = np.random.default_rng(seed)
    return GenerativeModel.from_arrays(
        list(grid.A), list(grid.B), [rng.normal(size=height * width) * 2], list(grid.D)
    )


#: Tie tolerance on action marginals: rounding of float64 sums is ~1e-15, of float32 ~1e-7;
#: a genuinely worse action falls short by the posterior's spread (0.01 and more).
TIE_TOL = {np.float64: 1e-9, np.float32: agreement.ROUNDING_TOL}


def assert_tie_aware(
    a: AifAgentGroup, b: AifAgentGroup, actions_a: np.ndarray, actions_b: np.ndarray, *,
    tol: float, msg: str,
) -> None:
    """Each group's actions are optimal within ``tol`` under the other group's posterior (at a
    wall, staying and walking into the wall predict the same cell: rounding picks either)."""
    onehot = a.cm.tree.first_action_onehot
    ok_a = agreement.actions_agree(b.q_pi, onehot, actions_a, tol=tol)
    ok_b = agreement.actions_agree(a.q_pi, onehot, actions_b, tol=tol)
    assert ok_a.all(), f"{msg}: agents {np.flatnonzero(~ok_a)} act suboptimally"
    assert ok_b.all(), f"{msg}: agents {np.flatnonzero(~ok_b)} act suboptimally"


@pytest.mark.parametrize("precision", ["float64", "int8"])
def test_group_gives_the_same_results_whatever_the_block_size(precision: str) -> None:
    """Block size 1 runs the small-block planner, 37 the local one (with the dense fallback for
    respawned agents), 60 too; the dense tree is checked against them in 'reference'."""
    n, steps = 60, 12
    dtype = np.float64 if precision == "float64" else np.float32
    model = grid_without_ties(8, 8, seed=1)
    groups = {
        bs: AifAgentGroup(model, n, precision=precision, block_size=bs)  # type: ignore[arg-type]
        for bs in (1, 37, 60)
    }
    assert groups[37].cm.local is not None
    assert groups[1].cm.small is not None
    env = GridWorldEnv(n, height=8, width=8, seed=2)
    obs = env.reset()
    for _ in range(steps):
        if env.episode_start.any():
            for g in groups.values():
                g.reset(env.episode_start)
        actions = {bs: g.step(obs).copy() for bs, g in groups.items()}
        ref = groups[60]
        for bs in (1, 37):
            g = groups[bs]
            assert_tie_aware(
                g, ref, actions[bs], actions[60], tol=TIE_TOL[dtype], msg=f"block {bs}"
            )
            close(g.q_pi, ref.q_pi, dtype, f"q_pi, block {bs}")
            close(g.G, ref.G, dtype, f"G, block {bs}")
            close(g.qs[0], ref.qs[0], dtype, f"qs, block {bs}")
        # The dense policy tree on the same beliefs (infer_policies has no observation to go on).
        G_local = ref.G.copy()
        ref.infer_policies()
        close(ref.G, G_local, dtype, "G of the dense tree")
        for g in groups.values():  # same trajectory for all, whatever near-ties picked
            g.set_action(actions[60])
        for bs in (1, 37):
            close(groups[bs].prior[0], ref.prior[0], dtype, f"prior, block {bs}")
        obs = env.step(actions[60])


def test_group_on_the_grid_matches_the_reference_agent() -> None:
    n, steps = 5, 8
    model = grid_without_ties(4, 4, seed=3)
    env = GridWorldEnv(n, height=4, width=4, seed=9)
    group = AifAgentGroup(model, n, precision="float64", block_size=n)
    refs = [ReferenceAgent(model) for _ in range(n)]
    obs = env.reset()
    for _ in range(steps):
        for i, ref in enumerate(refs):
            if env.episode_start[i]:
                ref.reset()
        if env.episode_start.any():
            group.reset(env.episode_start)
        actions = group.step(obs).copy()
        onehot = group.cm.tree.first_action_onehot
        for i, ref in enumerate(refs):
            expected = ref.step(obs[i])
            # Each side's action is optimal under the other's posterior (ties go either way).
            assert agreement.actions_agree(group.q_pi[i : i + 1], onehot, expected[None], tol=1e-9)
            assert agreement.actions_agree(ref.q_pi[None], onehot, actions[i : i + 1], tol=1e-9)
            ref.action = actions[i].copy()  # follow the group through a rounding tie
            np.testing.assert_allclose(group.q_pi[i], ref.q_pi, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(group.qs[0][i], ref.qs[0], rtol=1e-9, atol=1e-14)
        obs = env.step(actions)


def test_group_sends_contradicted_agents_to_the_dense_tree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(NATIVE_ENV, "0")  # numpy's dense tree is the subject
    model = grid_without_ties(8, 8, seed=4)
    n = 50
    group = AifAgentGroup(model, n, precision="float64", block_size=n)
    rng = np.random.default_rng(0)
    group.prior[0][...] = 1e-30
    group.prior[0][np.arange(n), rng.integers(0, 64, n)] = 1.0  # sure, and mostly wrong
    group.prior[0] /= group.prior[0].sum(axis=1, keepdims=True)
    obs = rng.integers(0, 64, (n, 1))
    group.step(obs)
    assert group.cm.local is not None
    blk = group.stepper.blocks(group.state)[0].blk
    assert 0 < int(blk.l_bad.sum()) < n, "some agents, not all, need the fallback"
    G_step = group.G.copy()
    group.infer_policies()  # the dense tree for everyone
    np.testing.assert_allclose(G_step, group.G, rtol=1e-10, atol=1e-12)


def test_planner_choice_and_scratch_accounting() -> None:
    grid = AifAgentGroup(gridworld_model(10, 10), 5000, history_capacity=64)
    assert grid.cm.local is not None
    assert grid.cm.small is not None
    ws = grid.stepper.workspace
    assert ws is not None
    assert grid.scratch_nbytes(5000) == ws.nbytes
    # with the group's own compiled tick (built to be measured, reserved whichever path it keeps)
    # and its health part's held samples
    assert grid.health is not None
    assert grid.memory.health_nbytes(5000) == grid.health.nbytes
    assert grid.bytes_for(5000, 64) == (5000 * grid.per_agent_nbytes(64) + 8 * 64 + ws.nbytes
                                        + grid.memory.compiled_nbytes + grid.health.nbytes
                                        + grid.memory.boundary_nbytes(5000))
    deep = AifAgentGroup(gridworld_model(4, 4), 10, settings=AifSettings(policy_len=2))
    assert deep.cm.local is None  # one-step planners only
    assert deep.cm.small is None


def test_dense_outcome_row_map_path_is_used_and_exact() -> None:
    """Force the RowMap form of the outcome table (chosen for scattered sparse likelihoods)."""
    model = random_model(5, (30,), (30,), (3,), b_kind="walls", a_nnz=2)
    cm = compiled(model, 1, np.float64)
    forced = dataclasses.replace(
        cm, fast=dataclasses.replace(cm.fast, outcome_map=kernels.outcome_row_map(
            np.ascontiguousarray(cm.fast.A_joint)
        )), local=None, small=None,
    )
    rng = np.random.default_rng(6)
    n = 64  # wide enough for the sparse outcome table
    q = beliefs(rng, n, 30)
    blk = kernels.Workspace(forced, n, info_gain=True).block(n)
    kernels.load_roots([q], blk)
    kernels.evaluate_block(forced, blk, use_utility=True, use_info_gain=True, gamma=16.0)
    ev = kernels.evaluate_policies(cm, [q], use_utility=True, use_info_gain=True)
    close(blk.G.T, ev.G, np.float64)


@pytest.mark.parametrize("name", ["two_modalities", "two_factors", "walls"])
def test_soft_evidence_weighs_each_modality_by_its_outcome_distribution(name: str) -> None:
    """``L(s) = prod_m sum_o p_m(o) A[m][o, s]``; one-hot evidence is the hard observation."""
    states, obs_sizes, controls, b_kind, a_nnz = MODELS[name]
    model = random_model(13, states, obs_sizes, controls, b_kind=b_kind, a_nnz=a_nnz)
    cm = compiled(model, 1, np.float64)
    rng = np.random.default_rng(9)
    n = 17
    prior = [beliefs(rng, n, s) for s in states]
    soft = [rng.dirichlet(np.ones(o), size=n) for o in obs_sizes]
    L = np.ones((n, int(np.prod(states))))
    for m, p in enumerate(soft):
        L *= p @ model.A[m].reshape(obs_sizes[m], -1)
    np.testing.assert_allclose(kernels.soft_likelihood(cm, soft), L, rtol=1e-12)
    expected = kernels.infer_states(cm, None, prior, num_iter=10, dF_tol=1e-3, soft=soft)
    blk = kernels.Workspace(cm, n, info_gain=True).block(n)
    qs = [np.empty((n, s)) for s in states]
    kernels.infer_block(cm, None, prior, qs, blk, num_iter=10, dF_tol=1e-3, soft=soft)
    for q, e in zip(qs, expected, strict=True):
        close(q, e, np.float64)
    # Through the group: one-hot soft evidence gives the same step as the integer outcomes.
    obs = np.stack([rng.integers(0, o, n) for o in obs_sizes], axis=1)
    onehot = [np.eye(o)[obs[:, m]] for m, o in enumerate(obs_sizes)]
    hard = AifAgentGroup(model, n, precision="float64", history_capacity=4)
    fuzzy = AifAgentGroup(model, n, precision="float64", history_capacity=4)
    a, b = hard.step(obs).copy(), fuzzy.step(onehot).copy()
    assert_tie_aware(
        hard, fuzzy, a, b, tol=TIE_TOL[np.float64], msg="one-hot soft evidence"
    )
    close(fuzzy.q_pi, hard.q_pi, np.float64)
    np.testing.assert_array_equal(fuzzy.history.latest("obs"), hard.history.latest("obs"))
    with pytest.raises(InputError, match="soft evidence of modality 0 has shape"):
        fuzzy.step([p[:3] for p in onehot])


def test_soft_evidence_on_a_model_with_a_local_planner() -> None:
    """The local planner needs hard outcomes: soft evidence goes to the dense tree in chunks."""
    n = 300
    model = grid_without_ties(10, 10, seed=5)
    env = GridWorldEnv(n, seed=4)
    obs = env.reset()
    hard = AifAgentGroup(model, n, precision="float64")
    fuzzy = AifAgentGroup(model, n, precision="float64")
    assert fuzzy.cm.local is not None
    assert fuzzy.stepper.sizes.dense < n
    for _ in range(3):
        a = hard.step(obs).copy()
        b = fuzzy.step([np.eye(100)[obs[:, 0]]])
        assert_tie_aware(hard, fuzzy, a, b, tol=TIE_TOL[np.float64], msg="soft evidence")
        close(fuzzy.G, hard.G, np.float64)
        fuzzy.set_action(a)
        hard.set_action(a)
        obs = env.step(a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_likelihood_table_is_the_product_bit_for_bit(dtype: type[np.floating]) -> None:
    """A multi-modality model with a small joint space reads a hard
    observation's ``ln(prod_m A_m[o_m] + eps)`` as one column of ``FastPlan.lnL_T``; every column
    equals the product the block path computed before (same operations, same order), exactly."""
    from edge_agent.sim.registry import make_env

    for name in ("tmaze", "grid2f"):
        model = make_env(name, 1, seed=0).model
        policies = construct_policies(model.num_controls, 1)
        cm = kernels.compile_model(model, policies, dtype=dtype)
        plan = cm.fast
        assert plan.lnL_T is not None
        num_obs = cm.num_obs
        for index, obs in enumerate(np.ndindex(*num_obs)):
            assert int(np.dot(obs, plan.obs_strides)) == index
            L = cm.A_rows[0][obs[0]].copy()
            for m in range(1, len(num_obs)):
                L = L * cm.A_rows[m][obs[m]]
            np.testing.assert_array_equal(plan.lnL_T[:, index], np.log(L + plan.eps))


def test_joint_outcomes_no_state_produces_are_left_out() -> None:
    """Only the joint outcomes some state can produce are kept for the information gain (a row of
    zeros adds exactly 0): T-maze 12 of 24. ``negH`` is that of the full table."""
    from edge_agent.sim.registry import make_env

    model = make_env("tmaze", 1, seed=0).model
    cm = kernels.compile_model(model, construct_policies(model.num_controls, 1))
    full = np.ones((1, 8))
    for a in model.A:
        full = (full[:, None, :] * a.reshape(a.shape[0], 8)[None]).reshape(-1, 8)
    possible = full[(full != 0).any(axis=1)]
    assert cm.A_joint_T.shape == (8, 12) == possible.T.shape
    np.testing.assert_array_equal(cm.A_joint_T, possible.T)
    negH = (full * np.log(full + EXP_M16)).sum(axis=0)
    np.testing.assert_allclose(cm.neg_entropy, negH, rtol=0, atol=1e-15)


# ------------------------------------------- joint nodes that predict the same states, merged
def _unmerged(cm: kernels.CompiledModel) -> kernels.CompiledModel:
    """``cm`` with every depth's joint nodes the tree's (none merged)."""
    from edge_agent.aif.kernels.fast_tables import _joint_fields

    depths = tuple(
        dataclasses.replace(fd, **_joint_fields(d.joint, d.policy_joint, fd.num_nodes))
        for fd, d in zip(cm.fast.depths, cm.tree.depths, strict=True)
    )
    return dataclasses.replace(cm, fast=dataclasses.replace(cm.fast, depths=depths))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("world", ["grid2f", "tmaze", "random"])
def test_joint_nodes_predicting_alike_are_evaluated_once(world: str, dtype: Any) -> None:
    """The fast path evaluates once the joint nodes of a depth whose predicted states are the
    same from any beliefs (grid2f: two moves in either order; the T-maze: the second move's
    arm); which ones is read from the model's transitions, so a model whose moves do not
    commute merges none; ``G`` and ``q_pi`` equal the tree's evaluation up to rounding."""
    if world == "random":
        model = random_model(7, (6, 3), (5, 4), (4, 1), b_kind="dense", a_nnz=3)
    else:
        from edge_agent.sim.registry import make_env

        model = make_env(world, 1, seed=0).model
    source = model if dtype is np.float64 else quantize_model(model)
    cm = kernels.compile_model(source, construct_policies(model.num_controls, 2), dtype=dtype)
    merged = [d.num_joint for d in cm.fast.depths]
    expected = {"grid2f": [5, 17], "tmaze": [4, 4], "random": [4, 16]}[world]
    assert merged == expected
    assert [d.num_tree_joint for d in cm.fast.depths] == [len(d.joint) for d in cm.tree.depths]
    # Every policy's two steps, as the model's dense B: policies on one merged node predict alike.
    depth = cm.fast.depths[1]
    node = (np.arange(len(cm.tree.policies)) if depth.policy_joint is None
            else depth.policy_joint)  # fmt: skip
    B = [np.asarray(b, dtype=np.float64) for b in model.B]
    for p in range(len(cm.tree.policies)):
        for q in np.flatnonzero(node == node[p]):
            for f, b in enumerate(B):
                (a1, a2), (c1, c2) = cm.tree.policies[p, :, f], cm.tree.policies[q, :, f]
                np.testing.assert_array_equal(b[:, :, a2] @ b[:, :, a1], b[:, :, c2] @ b[:, :, c1])
    rng = np.random.default_rng(11)
    n = 37
    G, q_pi = [], []
    for plan in (cm, _unmerged(cm)):
        blk = kernels.Workspace(plan, n, info_gain=True).block(n)
        rng = np.random.default_rng(11)
        for f, s in enumerate(model.num_states):
            blk.roots[f][:-1] = beliefs(rng, n, s).astype(dtype).T
        kernels.evaluate_block(plan, blk, use_utility=True, use_info_gain=True, gamma=16.0)
        G.append(blk.G.copy())
        q_pi.append(blk.x.copy())
    close(G[0], G[1], dtype, "G")
    close(q_pi[0], q_pi[1], dtype, "q_pi")


def test_a_single_factor_s_nodes_stay_the_tree_s() -> None:
    """grid10's moves commute too, but with one factor the fast path reads a depth's nodes in
    place as its joint nodes: none merged."""
    from edge_agent.sim.registry import make_env

    model = make_env("grid10", 1, seed=0).model
    cm = kernels.compile_model(model, construct_policies(model.num_controls, 2), dtype=np.float64)
    assert [d.num_joint for d in cm.fast.depths] == [len(d.joint) for d in cm.tree.depths]

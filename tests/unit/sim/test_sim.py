"""Built-in worlds: their models, their batched environments and the workload registry."""

from __future__ import annotations

import tracemalloc
from typing import Any

import numpy as np
import pytest

from edge_agent.aif.learning import LearningSettings, LearningSpec
from edge_agent.aif.model import GenerativeModel
from edge_agent.core.agents import AifAgentGroup
from edge_agent.errors import InputError, ModelError
from edge_agent.sim import FEW_DRAWS, BatchEnv, ColumnSampler, SamplerScratch, sample_columns
from edge_agent.sim.explorer import TARGET, ExplorerEnv, explorer_model, explorer_terrain
from edge_agent.sim.grid2f import (
    LOSS,
    NO_REWARD,
    REWARD,
    TwoFactorGridEnv,
    grid2f_layout,
    grid2f_model,
)
from edge_agent.sim.grid_slippery import SlipperyGridEnv
from edge_agent.sim.gridworld import (
    DOWN,
    LEFT,
    RIGHT,
    STAY,
    UP,
    GridWorldEnv,
    grid_moves,
    grid_transitions,
    gridworld_model,
    manhattan_to,
    steps_to_goal,
)
from edge_agent.sim.registry import BUILTIN_WORKLOADS, builtin_model, make_env
from edge_agent.sim.tmaze import TMazeEnv, tmaze_model
from edge_agent.sim.tmaze_reversal import ReversalTMazeEnv, tmaze_reversal_model


def chi_square(counts: np.ndarray, probs: np.ndarray) -> tuple[float, int]:
    """Pearson statistic of ``counts`` against ``probs``; impossible outcomes must not occur."""
    counts = np.asarray(counts, dtype=np.float64)
    assert np.all(counts[probs == 0] == 0), "an outcome of probability 0 was drawn"
    possible = probs > 0
    expected = counts.sum() * probs[possible]
    stat = float(((counts[possible] - expected) ** 2 / expected).sum())
    return stat, int(possible.sum()) - 1


def assert_fits(stat: float, dof: int) -> None:
    # About 7 standard deviations of a chi-square with `dof` degrees of freedom: a correct sampler
    # passes with any seed in practice; a wrong one is off by orders of magnitude.
    assert stat < dof + 10.0 * np.sqrt(2.0 * dof), (stat, dof)


def column_fit(states: np.ndarray, obs: np.ndarray, A: np.ndarray) -> tuple[float, int]:
    """Chi-square of observations against ``A[:, s]``, summed over the states that occur."""
    total, dof = 0.0, 0
    for s in np.unique(states):
        counts = np.bincount(obs[states == s], minlength=A.shape[0])
        stat, d = chi_square(counts, A[:, s])
        total, dof = total + stat, dof + d
    return total, dof


# -- sampler ---------------------------------------------------------------------------------


def _random_columns(
    rng: np.random.Generator, num_outcomes: int, num_columns: int, *, zeros: float
) -> np.ndarray:
    """A table of ``num_columns`` random distributions over ``num_outcomes``, about ``zeros`` of
    its entries 0 (a column left without any: its first outcome certain)."""
    table = rng.random((num_outcomes, num_columns))
    table[rng.random(table.shape) < zeros] = 0.0
    table[0, table.sum(axis=0) == 0] = 1.0
    return table / table.sum(axis=0)


@pytest.mark.parametrize(("num_outcomes", "num_columns"), [(5, 7), (40, 9), (1, 3)])
def test_sample_columns_is_inverse_cdf_of_each_column(num_outcomes: int, num_columns: int) -> None:
    rng = np.random.default_rng(3)
    table = _random_columns(rng, num_outcomes, num_columns, zeros=0.4)
    sampler = ColumnSampler.from_table(table)
    n = 5000
    cols = rng.integers(0, num_columns, n).astype(np.intp)
    u = rng.random(n)
    out = np.empty(n, dtype=np.intp)
    sample_columns(sampler, cols, u, out, SamplerScratch(n))
    cdf = np.cumsum(table, axis=0)
    expected = np.array(
        [
            min(np.searchsorted(cdf[:, c], x, side="right"), num_outcomes - 1)
            for c, x in zip(cols, u, strict=True)
        ]
    )
    np.testing.assert_array_equal(out, expected)
    assert np.all(table[out, cols] > 0)


@pytest.mark.parametrize(
    ("num_outcomes", "num_columns"), [(5, 7), (40, 9), (100, 1), (300, 2), (900, 1)]
)
def test_a_few_agents_draw_what_the_per_slot_passes_draw(
    num_outcomes: int, num_columns: int
) -> None:
    """A draw of at most FEW_DRAWS agents (one pass a level) gives each agent the outcome the
    per-slot passes give it for the same uniform, on every layout: one pass, two levels, and
    columns wider than FEW_WIDTH (the per-slot passes then)."""
    rng = np.random.default_rng(11)
    table = _random_columns(rng, num_outcomes, num_columns, zeros=0.3)
    sampler = ColumnSampler.from_table(table)
    n = 4000
    cols = rng.integers(0, num_columns, n).astype(np.intp)
    u = rng.random(n)
    # The ends of the range and u exactly on a step of a column's CDF (ties go right).
    steps = np.cumsum(table[:, cols[2]])[:-1][:20]
    u[:2] = [0.0, np.nextafter(1.0, 0.0)]
    u[2 : 2 + steps.size], cols[2 : 2 + steps.size] = steps, cols[2]
    many = np.empty(n, dtype=np.intp)
    sample_columns(sampler, cols, u, many, SamplerScratch(n))
    scratch = SamplerScratch(n)
    few = np.empty(n, dtype=np.intp)
    for k in (1, 3, FEW_DRAWS):
        for start in range(0, n - k + 1, k):
            rows = slice(start, start + k)
            sample_columns(sampler, cols[rows], u[rows], few[rows], scratch.head(k))
        covered = n - n % k
        np.testing.assert_array_equal(few[:covered], many[:covered])


def test_sampler_two_level_layout_and_validation() -> None:
    wide = ColumnSampler.from_table(np.full((30, 2), 1 / 30))
    assert (wide.slots, wide.block, wide.blocks) == (30, 6, 5)
    assert ColumnSampler.from_table(np.eye(3)).deterministic
    with pytest.raises(ModelError, match="no probability mass"):
        ColumnSampler.from_table(np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ModelError, match="negative"):
        ColumnSampler.from_table(np.array([[1.5], [-0.5]]))


def test_sampler_at_u_extremes_and_ties() -> None:
    below_one = np.nextafter(1.0, 0.0)
    table = np.array([[0.0, 0.5], [1.0, 0.0], [0.0, 0.5]])
    sampler = ColumnSampler.from_table(table)
    cols = np.array([0, 0, 1, 1, 1], dtype=np.intp)
    u = np.array([0.0, below_one, 0.0, 0.5, below_one])
    out = np.empty(5, dtype=np.intp)
    sample_columns(sampler, cols, u, out, SamplerScratch(5))
    # Zero-probability outcomes are never drawn; u on a step of the CDF goes right (searchsorted
    # side="right").
    np.testing.assert_array_equal(out, [1, 1, 0, 2, 2])


# -- grid world model ------------------------------------------------------------------------


def test_grid_transitions_are_deterministic_with_walls() -> None:
    model = gridworld_model(3, 4, goal=(2, 3))
    B = model.B[0]
    assert B.shape == (12, 12, 5)
    assert np.all((B == 0) | (B == 1))
    assert np.all(B.sum(axis=0) == 1)
    expected = {  # (cell, action) -> next cell, cells row-major on a 3 x 4 grid
        (0, STAY): 0, (0, UP): 0, (0, LEFT): 0, (0, DOWN): 4, (0, RIGHT): 1,
        (5, UP): 1, (5, DOWN): 9, (5, LEFT): 4, (5, RIGHT): 6,
        (11, DOWN): 11, (11, RIGHT): 11, (11, UP): 7, (11, LEFT): 10,
        (3, RIGHT): 3, (3, UP): 3, (8, LEFT): 8, (8, DOWN): 8,
    }  # fmt: skip
    for (s, u), nxt in expected.items():
        assert B[nxt, s, u] == 1.0, (s, u)
        assert grid_moves(3, 4)[s, u] == nxt


def test_grid_observation_columns() -> None:
    model = gridworld_model(10, 10, goal=(9, 9), noise=0.1)
    A = model.A[0]
    corner, edge, inner = 0, 5, 55
    assert A[corner, corner] == pytest.approx(0.9)
    assert sorted(np.flatnonzero(A[:, corner])) == [0, 1, 10]
    np.testing.assert_allclose(A[[1, 10], corner], 0.05)
    assert sorted(np.flatnonzero(A[:, edge])) == [4, 5, 6, 15]
    np.testing.assert_allclose(A[[4, 6, 15], edge], 0.1 / 3)
    assert sorted(np.flatnonzero(A[:, inner])) == [45, 54, 55, 56, 65]
    np.testing.assert_allclose(A[[45, 54, 56, 65], inner], 0.025)
    np.testing.assert_allclose(A.sum(axis=0), 1.0)
    assert np.all(np.count_nonzero(A, axis=0) <= 5)
    single = gridworld_model(1, 1, goal=(0, 0), noise=0.3)
    assert single.A[0][0, 0] == 1.0


def test_grid_preferences_and_prior() -> None:
    model = gridworld_model(4, 5, goal=(1, 2), preference_scale=2.0, start=(3, 0))
    C = model.C[0]
    assert C[1 * 5 + 2] == 0.0
    assert C[0] == -2.0 * (1 + 2)
    assert C[19] == -2.0 * (2 + 2)
    np.testing.assert_array_equal(model.D[0], np.eye(20)[15])
    np.testing.assert_allclose(gridworld_model(4, 5).D[0], 1 / 20)
    assert gridworld_model(4, 5).C[0][19] == 0.0  # default goal: bottom-right


def test_grid_one_step_planner_walks_to_the_goal() -> None:
    model = gridworld_model(10, 10, goal=(9, 9), noise=0.1)
    A, B, C = model.A[0], model.B[0], model.C[0]
    utility = C @ A  # expected log-preference of each state: sum_o A[o, s] C[o]
    cells = np.arange(100)
    for _ in range(18):  # the largest Manhattan distance on a 10 x 10 grid
        nxt = np.argmax(B[:, cells, :], axis=0)  # (cells, actions) deterministic next cell
        cells = nxt[np.arange(100), np.argmax(utility[nxt], axis=1)]
    assert np.all(cells == 99)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"goal": (10, 0)}, "outside"),
        ({"goal": (1,)}, "pair"),
        ({"noise": 1.5}, "noise"),
        ({"start": (-1, 0)}, "outside"),
        ({"preference_scale": float("nan")}, "preference_scale"),
    ],
)
def test_grid_model_rejects_bad_parameters(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ModelError, match=match):
        gridworld_model(10, 10, **kwargs)  # type: ignore[arg-type]


def test_grid_model_rejects_bad_dimensions() -> None:
    with pytest.raises(ModelError, match="height"):
        gridworld_model(0, 3)


# -- T-maze model ------------------------------------------------------------------------------

# pymdp 0.0.7.1 pymdp/envs/tmaze.py, TMazeEnv(reward_probs=[0.98, 0.02]), written out by hand.
# Axes: [outcome][location][condition]; locations centre, right arm, left arm, cue location;
# conditions reward-on-right, reward-on-left.
PYMDP_A_LOCATION = np.array(
    [
        [[1, 1], [0, 0], [0, 0], [0, 0]],
        [[0, 0], [1, 1], [0, 0], [0, 0]],
        [[0, 0], [0, 0], [1, 1], [0, 0]],
        [[0, 0], [0, 0], [0, 0], [1, 1]],
    ],
    dtype=np.float64,
)
PYMDP_A_REWARD = np.array(
    [  # no reward, reward, loss
        [[1, 1], [0, 0], [0, 0], [1, 1]],
        [[0, 0], [0.98, 0.02], [0.02, 0.98], [0, 0]],
        [[0, 0], [0.02, 0.98], [0.98, 0.02], [0, 0]],
    ],
    dtype=np.float64,
)
PYMDP_A_CUE = np.array(
    [  # cue right, cue left
        [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [1, 0]],
        [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0, 1]],
    ],
    dtype=np.float64,
)
# B[location][:, :, u] for u = 0..3 (axes [u][next location][location]): every location moves to u.
PYMDP_B_LOCATION_BY_ACTION = np.array(
    [
        [[1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
        [[0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]],
        [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]],
        [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]],
    ],
    dtype=np.float64,
)


def test_tmaze_matches_pymdp_construction() -> None:
    model = tmaze_model()
    np.testing.assert_array_equal(model.A[0], PYMDP_A_LOCATION)
    np.testing.assert_array_equal(model.A[1], PYMDP_A_REWARD)
    np.testing.assert_array_equal(model.A[2], PYMDP_A_CUE)
    np.testing.assert_array_equal(model.B[0], np.moveaxis(PYMDP_B_LOCATION_BY_ACTION, 0, 2))
    np.testing.assert_array_equal(model.B[1], np.eye(2).reshape(2, 2, 1))
    # pymdp's own recipe for B[location]: eye, tile over actions, transpose(1, 2, 0).
    B_locs = np.tile(np.eye(4).reshape(4, 4, 1), (1, 1, 4)).transpose(1, 2, 0)
    np.testing.assert_array_equal(model.B[0], B_locs)
    assert model.num_states == (4, 2)
    assert model.num_obs == (4, 3, 2)
    assert model.num_controls == (4, 1)


def test_tmaze_preferences_and_prior() -> None:
    model = tmaze_model(reward=3.0, punishment=-3.0)
    np.testing.assert_array_equal(model.C[0], np.zeros(4))
    np.testing.assert_array_equal(model.C[1], [0.0, 3.0, -3.0])
    np.testing.assert_array_equal(model.C[2], np.zeros(2))
    np.testing.assert_array_equal(model.D[0], [1, 0, 0, 0])
    np.testing.assert_array_equal(model.D[1], [0.5, 0.5])
    other = tmaze_model(reward_probs=(0.8, 0.2))
    assert other.A[1][1, 1, 0] == pytest.approx(0.8)
    assert other.A[1][1, 2, 0] == pytest.approx(0.2)


@pytest.mark.parametrize("probs", [(0.9, 0.2), (1.2, -0.2), (0.5, 0.3, 0.2)])
def test_tmaze_rejects_bad_reward_probs(probs: tuple[float, float]) -> None:
    with pytest.raises(ModelError, match="reward_probs"):
        tmaze_model(reward_probs=probs)


# -- two-factor grid model ---------------------------------------------------------------------


def test_grid2f_default_layout_and_shapes() -> None:
    assert grid2f_layout() == ((1, 3), 7, 12)  # goals (0, 1), (0, 3); cue (1, 2); start (2, 2)
    assert grid2f_layout(7, 9) == ((1 * 9 + 3, 1 * 9 + 5), 2 * 9 + 4, 3 * 9 + 4)
    assert grid2f_layout(3, 3) == ((0, 2), 1, 4)  # goals on row 0 at least
    model = grid2f_model()
    assert model.num_states == (25, 2)
    assert model.num_obs == (25, 3, 2)
    assert model.num_controls == (5, 1)
    assert model.num_factors == 2
    for a in model.A:
        np.testing.assert_allclose(a.sum(axis=0), 1.0)
    for b in model.B:
        np.testing.assert_allclose(b.sum(axis=0), 1.0)
    # Position: the grid world's noisy table and moves, whatever the context.
    grid = gridworld_model(5, 5, noise=0.1)
    for k in range(2):
        np.testing.assert_array_equal(model.A[0][:, :, k], grid.A[0])
    np.testing.assert_array_equal(model.B[0], grid.B[0])
    np.testing.assert_array_equal(model.B[1], np.eye(2).reshape(2, 2, 1))


def test_grid2f_reward_and_cue_depend_on_both_factors() -> None:
    model = grid2f_model(goals=[(0, 0), (4, 4), (0, 4)], cue=(2, 2), start=(4, 0))
    A_reward, A_cue = model.A[1], model.A[2]
    assert A_reward.shape == (3, 25, 3)
    assert A_cue.shape == (3, 25, 3)
    goals = [0, 24, 4]
    for k, g in enumerate(goals):
        for c in range(3):
            expected = REWARD if k == c else LOSS
            np.testing.assert_array_equal(A_reward[:, g, c], np.eye(3)[expected])
    others = np.setdiff1d(np.arange(25), goals)
    np.testing.assert_array_equal(A_reward[NO_REWARD][others], 1.0)
    np.testing.assert_array_equal(A_cue[:, 12, :], np.eye(3))
    np.testing.assert_allclose(np.delete(A_cue, 12, axis=1), 1 / 3)
    np.testing.assert_array_equal(model.D[0], np.eye(25)[20])
    np.testing.assert_allclose(model.D[1], 1 / 3)


def test_grid2f_preferences() -> None:
    model = grid2f_model(reward=2.0, punishment=-5.0)
    np.testing.assert_array_equal(model.C[0], np.zeros(25))
    np.testing.assert_array_equal(model.C[1], [0.0, 2.0, -5.0])
    np.testing.assert_array_equal(model.C[2], np.zeros(2))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"goals": []}, "non-empty"),
        ({"goals": "ab"}, "non-empty"),
        ({"goals": [(0, 0), (0, 0)]}, "distinct"),
        ({"goals": [(0, 5)]}, "outside"),
        ({"cue": (0, 1)}, "must not be a goal"),
        ({"start": (5, 0)}, "outside"),
        ({"noise": -0.1}, "noise"),
        ({"reward": float("inf")}, "finite"),
        ({"height": 2}, "at least 3 x 3"),
    ],
)
def test_grid2f_model_rejects_bad_parameters(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ModelError, match=match):
        grid2f_model(**kwargs)  # type: ignore[arg-type]


def test_grid2f_small_grid_with_an_explicit_layout() -> None:
    model = grid2f_model(1, 3, goals=[(0, 0), (0, 2)], cue=(0, 1), start=(0, 1))
    assert model.num_states == (3, 2)
    np.testing.assert_array_equal(model.A[2][:, 1, :], np.eye(2))


# -- explorer model --------------------------------------------------------------------------


def test_explorer_map_and_model() -> None:
    terrain = explorer_terrain(10, 10, map_seed=7)
    np.testing.assert_array_equal(terrain, explorer_terrain(10, 10, map_seed=7))
    assert not np.array_equal(terrain, explorer_terrain(10, 10, map_seed=8))
    assert int((terrain == TARGET).sum()) == 5
    assert set(np.unique(terrain[terrain != TARGET])) == {0, 1, 2, 3}
    model = explorer_model(map_seed=7)
    assert model.num_states == (100,)
    assert model.num_obs == (5,)
    assert model.num_controls == (5,)
    A = model.A[0]
    np.testing.assert_allclose(A[terrain, np.arange(100)], 0.9)
    off = np.ones_like(A, dtype=bool)
    off[terrain, np.arange(100)] = False
    np.testing.assert_allclose(A[off], 0.025)
    np.testing.assert_array_equal(model.C[0], [0, 0, 0, 0, 2])
    np.testing.assert_allclose(model.D[0], 0.01)
    np.testing.assert_array_equal(model.B[0], gridworld_model(10, 10).B[0])


# -- environments: sampling ------------------------------------------------------------------


def test_grid_observation_frequencies_match_a() -> None:
    env = GridWorldEnv(20_000, seed=11, start=(0, 0))
    obs = env.obs[:, 0]
    assert np.all(env.true_states[:, 0] == 0)
    stat, dof = chi_square(np.bincount(obs, minlength=100), env.model.A[0][:, 0])
    assert_fits(stat, dof)
    # One step right from the corner: every agent at cell 1, seen through A[:, 1].
    obs = env.step(np.full((20_000, 1), RIGHT))[:, 0]
    assert np.all(env.true_states[:, 0] == 1)
    stat, dof = chi_square(np.bincount(obs, minlength=100), env.model.A[0][:, 1])
    assert_fits(stat, dof)


def test_explorer_observation_frequencies_match_a() -> None:
    env = ExplorerEnv(20_000, seed=5)
    states = env.true_states[:, 0].copy()
    assert len(np.unique(states)) == 100
    stat, dof = column_fit(states, env.obs[:, 0].copy(), env.model.A[0])
    assert_fits(stat, dof)
    stat, dof = chi_square(np.bincount(states, minlength=100), env.model.D[0])
    assert_fits(stat, dof)


def test_tmaze_observation_frequencies_match_a() -> None:
    n = 20_000
    env = TMazeEnv(n, seed=2)
    cond = env.conditions.copy()
    stat, dof = chi_square(np.bincount(cond, minlength=2), np.array([0.5, 0.5]))
    assert_fits(stat, dof)
    actions = np.zeros((n, 2), dtype=np.int64)
    actions[:, 0] = np.where(np.arange(n) % 2 == 0, 1, 2)  # half right arm, half left arm
    obs = env.step(actions)
    loc = env.true_states[:, 0]
    np.testing.assert_array_equal(obs[:, 0], loc)
    A_reward = env.model.A[1]
    for arm in (1, 2):
        for c in (0, 1):
            sel = (loc == arm) & (cond == c)
            counts = np.bincount(obs[sel, 1], minlength=3)
            stat, dof = chi_square(counts, A_reward[:, arm, c])
            assert_fits(stat, dof)
    stat, dof = chi_square(np.bincount(obs[:, 2], minlength=2), np.array([0.5, 0.5]))
    assert_fits(stat, dof)  # the cue is uninformative in the arms
    actions[:, 0] = 3
    obs = env.step(actions)  # trial_len 3: still the same trial, now at the cue
    np.testing.assert_array_equal(obs[:, 2], cond)
    np.testing.assert_array_equal(obs[:, 1], 0)


def test_stochastic_transitions_follow_b() -> None:
    rng = np.random.default_rng(4)
    B0 = rng.random((3, 3, 2))
    B0 /= B0.sum(axis=0)
    B1 = np.array([[[0.7], [0.0]], [[0.3], [1.0]]])
    A = rng.random((4, 3, 2))
    A /= A.sum(axis=0)
    model = GenerativeModel.from_arrays([A], [B0, B1], D=[np.eye(3)[2], np.eye(2)[0]])
    n = 20_000
    env = BatchEnv(model, n, seed=9)
    assert np.all(env.true_states == [2, 0])
    env.step(np.tile([1, 0], (n, 1)))
    states = env.true_states
    stat, dof = chi_square(np.bincount(states[:, 0], minlength=3), B0[:, 2, 1])
    assert_fits(stat, dof)
    stat, dof = chi_square(np.bincount(states[:, 1], minlength=2), B1[:, 0, 0])
    assert_fits(stat, dof)
    joint = states[:, 0] * 2 + states[:, 1]
    stat, dof = column_fit(joint, env.obs[:, 0].copy(), A.reshape(4, -1))
    assert_fits(stat, dof)


def test_same_seed_same_run_and_different_seed_differs() -> None:
    rng = np.random.default_rng(0)
    actions = [rng.integers(0, 5, (500, 1)) for _ in range(5)]
    runs = []
    for seed in (1, 1, 2):
        env = GridWorldEnv(500, seed=seed)
        runs.append(np.stack([env.obs.copy()] + [env.step(a).copy() for a in actions]))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


# -- environments: episodes ------------------------------------------------------------------


def test_grid_goal_is_counted_then_agent_respawns_next_step() -> None:
    n = 50
    env = GridWorldEnv(n, seed=0, start=(9, 8), noise=0.0)
    np.testing.assert_array_equal(env.true_states[:, 0], 98)
    obs = env.step(np.full((n, 1), RIGHT))
    np.testing.assert_array_equal(obs[:, 0], 99)
    assert env.goal_reached.all()
    np.testing.assert_array_equal(env.goals_reached, 1)
    np.testing.assert_array_equal(env.goal_steps, 1)
    np.testing.assert_array_equal(env.episode_steps, 1)
    assert not env.episode_start.any()
    obs = env.step(np.full((n, 1), UP))  # ignored: the agents respawn at the start
    np.testing.assert_array_equal(obs[:, 0], 98)
    assert env.episode_start.all()
    assert not env.goal_reached.any()
    np.testing.assert_array_equal(env.episode_steps, 0)
    env.step(np.full((n, 1), LEFT))
    env.step(np.full((n, 1), RIGHT))
    env.step(np.full((n, 1), RIGHT))
    np.testing.assert_array_equal(env.goals_reached, 2)
    np.testing.assert_array_equal(env.goal_steps, 1 + 3)
    summary = env.summary()
    assert summary["goals_reached"] == 2 * n
    assert summary["mean_steps_to_goal"] == pytest.approx(2.0)


def test_grid_spawns_anywhere_but_the_goal() -> None:
    env = GridWorldEnv(20_000, seed=3, goal=(4, 4))
    cells = np.bincount(env.true_states[:, 0], minlength=100)
    assert cells[44] == 0
    assert np.all(np.delete(cells, 44) > 0)
    with pytest.raises(ModelError, match="spawn"):
        GridWorldEnv(10, start=(4, 4), goal=(4, 4))


def test_tmaze_trials_and_cue_statistics() -> None:
    n = 2000
    env = TMazeEnv(n, seed=8, trial_len=3)
    actions = np.zeros((n, 2), dtype=np.int64)

    def move(loc: np.ndarray | int) -> np.ndarray:
        actions[:, 0] = loc
        return env.step(actions).copy()

    np.testing.assert_array_equal(env.true_states[:, 0], 0)
    first_conditions = env.conditions.copy()
    obs = move(3)  # t = 1: visit the cue
    np.testing.assert_array_equal(env.cue_visits, 1)
    obs = move(1 + obs[:, 2])  # t = 2: the cued arm; last step of the trial
    assert env.rewards.sum() == pytest.approx(0.98 * n, abs=5 * np.sqrt(0.02 * n))
    assert env.rewards.sum() + env.losses.sum() == n
    np.testing.assert_array_equal(env.trials, 1)
    assert env.cue_first.all()
    assert env.last_trial_cue_first.all()
    np.testing.assert_array_equal(env.cue_first_trials, 1)

    obs = move(2)  # the next trial begins: the action is ignored
    np.testing.assert_array_equal(env.true_states[:, 0], 0)
    np.testing.assert_array_equal(obs[:, 1], 0)
    assert env.episode_start.all()
    np.testing.assert_array_equal(env.episode_steps, 0)
    assert not env.cue_first.any()
    changed = np.mean(env.conditions != first_conditions)
    assert 0.45 < changed < 0.55  # conditions are redrawn per trial

    move(1)  # arm first ...
    move(3)  # ... then the cue: not a cue-first trial
    np.testing.assert_array_equal(env.trials, 2)
    np.testing.assert_array_equal(env.cue_first_trials, 1)
    assert not env.last_trial_cue_first.any()
    np.testing.assert_array_equal(env.cue_visits, 2)
    summary = env.summary()
    assert summary["trials"] == 2 * n
    assert summary["cue_first_fraction"] == pytest.approx(0.5)


def test_tmaze_rejects_short_trials() -> None:
    with pytest.raises(InputError, match="trial_len"):
        TMazeEnv(4, trial_len=1)


def test_grid2f_trials_rewards_and_cue_visits() -> None:
    n = 2000
    env = TwoFactorGridEnv(n, seed=5, noise=0.0)
    assert env.trial_len == 5
    actions = np.zeros((n, 2), dtype=np.int64)

    def move(u: np.ndarray | int) -> np.ndarray:
        actions[:, 0] = u
        return env.step(actions).copy()

    np.testing.assert_array_equal(env.true_states[:, 0], 12)  # the centre
    first_contexts = env.contexts.copy()
    assert 0.45 < first_contexts.mean() < 0.55
    obs = move(UP)  # t = 1: the cue
    np.testing.assert_array_equal(obs[:, 0], 7)
    np.testing.assert_array_equal(obs[:, 2], first_contexts)
    np.testing.assert_array_equal(env.cue_visits, 1)
    move(UP)  # t = 2: (0, 2), between the goals
    obs = move(np.where(obs[:, 2] == 0, LEFT, RIGHT))  # t = 3: the cued goal
    np.testing.assert_array_equal(obs[:, 1], REWARD)
    assert env.rewarded.all()
    obs = move(np.where(env.contexts == 0, RIGHT, LEFT))  # t = 4: back to (0, 2)
    np.testing.assert_array_equal(obs[:, 1], NO_REWARD)
    np.testing.assert_array_equal(env.trials, 1)  # t = 4 was the trial's last step
    np.testing.assert_array_equal(env.rewarded_trials, 1)
    np.testing.assert_array_equal(env.rewards, 1)

    obs = move(UP)  # the next trial begins: the action is ignored
    assert env.episode_start.all()
    np.testing.assert_array_equal(env.episode_steps, 0)
    np.testing.assert_array_equal(env.true_states[:, 0], 12)
    assert not env.rewarded.any()
    changed = np.mean(env.contexts != first_contexts)
    assert 0.45 < changed < 0.55  # contexts are redrawn per trial
    move(UP)
    move(UP)
    obs = move(np.where(env.contexts == 0, RIGHT, LEFT))  # the wrong goal
    np.testing.assert_array_equal(obs[:, 1], LOSS)
    move(STAY)
    np.testing.assert_array_equal(env.trials, 2)
    np.testing.assert_array_equal(env.rewarded_trials, 1)
    np.testing.assert_array_equal(env.losses, 2)
    np.testing.assert_array_equal(env.cue_visits, 2)
    summary = env.summary()
    assert summary["trials"] == 2 * n
    assert summary["rewarded_fraction"] == pytest.approx(0.5)
    assert summary["losses_per_trial"] == pytest.approx(1.0)


def test_grid2f_observation_frequencies_match_a() -> None:
    n = 20_000
    env = TwoFactorGridEnv(n, seed=2)
    contexts = env.contexts.copy()
    stat, dof = chi_square(np.bincount(contexts, minlength=2), np.array([0.5, 0.5]))
    assert_fits(stat, dof)
    stat, dof = chi_square(np.bincount(env.obs[:, 0], minlength=25), env.model.A[0][:, 12, 0])
    assert_fits(stat, dof)
    stat, dof = chi_square(np.bincount(env.obs[:, 2], minlength=2), np.array([0.5, 0.5]))
    assert_fits(stat, dof)  # the cue is uninformative off the cue cell
    np.testing.assert_array_equal(env.obs[:, 1], NO_REWARD)


def test_grid2f_same_seed_same_run_and_different_seed_differs() -> None:
    rng = np.random.default_rng(0)
    actions = [np.stack([rng.integers(0, 5, 300), np.zeros(300, np.int64)], 1) for _ in range(12)]
    runs = []
    for seed in (4, 4, 5):
        env = TwoFactorGridEnv(300, seed=seed)
        obs = [env.obs.copy()] + [env.step(a).copy() for a in actions]
        runs.append((np.stack(obs), env.contexts.copy(), env.true_states.copy()))
    for a, b in zip(runs[0], runs[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(runs[0][0], runs[2][0])


def test_grid2f_two_step_planner_visits_the_cue_then_the_cued_goal() -> None:
    """The default layout's claim: pymdp-style agents with policy_len 2 solve every trial."""
    from edge_agent.aif.settings import AifSettings
    from edge_agent.core.agents import AifAgentGroup

    n = 20
    env = TwoFactorGridEnv(n, seed=3)
    settings = AifSettings(
        policy_len=2, gamma=16.0, num_iter=10, use_utility=True, use_states_info_gain=True,
        action_selection="deterministic", sampling_mode="marginal",
    )  # fmt: skip
    group = AifAgentGroup(env.model, n, settings=settings, precision="float64")
    obs = env.obs
    for _ in range(4 * env.trial_len):
        if env.episode_start.any():
            group.reset(env.episode_start.copy())
        obs = env.step(group.step(obs))
    np.testing.assert_array_equal(env.trials, 4)
    np.testing.assert_array_equal(env.rewarded_trials, 4)
    np.testing.assert_array_equal(env.losses, 0)
    np.testing.assert_array_equal(env.cue_visits, 4)


def test_grid2f_rejects_short_trials() -> None:
    with pytest.raises(InputError, match="trial_len"):
        TwoFactorGridEnv(4, trial_len=1)


def test_explorer_statistics_follow_the_map() -> None:
    n = 5000
    env = ExplorerEnv(n, seed=1)
    rng = np.random.default_rng(2)
    visits = np.zeros(n, dtype=np.int64)
    sightings = np.zeros(n, dtype=np.int64)
    for _ in range(4):
        obs = env.step(rng.integers(0, 5, (n, 1)))
        on = env.terrain[env.true_states[:, 0]] == TARGET
        np.testing.assert_array_equal(env.on_target, on)
        visits += on
        sightings += obs[:, 0] == TARGET
    np.testing.assert_array_equal(env.target_visits, visits)
    np.testing.assert_array_equal(env.target_sightings, sightings)
    assert visits.sum() > 0


# -- environments: reset, validation, resize, memory ------------------------------------------


def test_reset_mask_only_resets_masked_agents() -> None:
    n = 300
    env = TMazeEnv(n, seed=4, trial_len=5)
    actions = np.zeros((n, 2), dtype=np.int64)
    actions[:, 0] = 3
    env.step(actions)
    actions[:, 0] = 1
    env.step(actions)  # in the right arm: reward and cue outcomes are random
    before = {
        "states": env.true_states.copy(),
        "obs": env.obs.copy(),
        "steps": env.episode_steps.copy(),
        "cue_visits": env.cue_visits.copy(),
    }
    mask = np.arange(n) % 3 == 0
    obs = env.reset(mask)
    keep = ~mask
    np.testing.assert_array_equal(env.true_states[keep], before["states"][keep])
    np.testing.assert_array_equal(obs[keep], before["obs"][keep])
    np.testing.assert_array_equal(env.episode_steps[keep], 2)
    np.testing.assert_array_equal(env.true_states[mask, 0], 0)
    np.testing.assert_array_equal(obs[mask, 0], 0)
    np.testing.assert_array_equal(env.episode_steps[mask], 0)
    np.testing.assert_array_equal(env.episode_start, mask)
    np.testing.assert_array_equal(env.cue_visits, before["cue_visits"])  # counters are kept
    assert np.all(before["states"][:, 0] == 1)


def test_reset_without_mask_resets_everyone() -> None:
    env = GridWorldEnv(400, seed=6)
    env.step(np.full((400, 1), DOWN))
    env.reset()
    assert env.episode_start.all()
    np.testing.assert_array_equal(env.episode_steps, 0)


@pytest.mark.parametrize(
    ("actions", "match"),
    [
        (np.zeros(8, dtype=np.int64), r"shape \(8,\), expected \(8, 1\)"),
        (np.zeros((8, 2), dtype=np.int64), "shape"),
        (np.zeros((7, 1), dtype=np.int64), "shape"),
        (np.zeros((8, 1), dtype=np.float64), "dtype"),
        (np.zeros((8, 1), dtype=np.bool_), "dtype"),
        (np.full((8, 1), 5), r"actions\[0, 0\] = 5 is out of range"),
        (np.array([[0]] * 7 + [[-1]]), r"actions\[7, 0\] = -1"),
    ],
)
def test_step_validates_actions(actions: np.ndarray, match: str) -> None:
    env = GridWorldEnv(8)
    with pytest.raises(InputError, match=match):
        env.step(actions)


def test_step_validates_uncontrolled_factor_and_accepts_lists() -> None:
    env = TMazeEnv(2)
    with pytest.raises(InputError, match=r"actions\[1, 1\] = 1"):
        env.step(np.array([[3, 0], [3, 1]]))
    obs = env.step([[3, 0], [1, 0]])
    np.testing.assert_array_equal(obs[:, 0], [3, 1])


@pytest.mark.parametrize(
    ("mask", "match"),
    [(np.ones(5, dtype=np.bool_), "shape"), (np.ones(8, dtype=np.int64), "dtype")],
)
def test_reset_validates_mask(mask: np.ndarray, match: str) -> None:
    env = GridWorldEnv(8)
    with pytest.raises(InputError, match=match):
        env.reset(mask)


@pytest.mark.parametrize("n_agents", [0, -3, 2.5, True])
def test_env_rejects_bad_agent_counts(n_agents: object) -> None:
    with pytest.raises(InputError, match="n_agents"):
        GridWorldEnv(n_agents)  # type: ignore[arg-type]


def test_resize_keeps_existing_agents() -> None:
    env = GridWorldEnv(100, seed=2, start=(9, 8), noise=0.0)
    env.step(np.full((100, 1), RIGHT))
    states, goals = env.true_states.copy(), env.goals_reached.copy()
    env.resize(150)
    assert env.n_agents == 150
    np.testing.assert_array_equal(env.true_states[:100], states)
    np.testing.assert_array_equal(env.goals_reached[:100], goals)
    np.testing.assert_array_equal(env.goals_reached[100:], 0)
    np.testing.assert_array_equal(env.true_states[100:, 0], 98)
    np.testing.assert_array_equal(env.episode_start[100:], True)
    env.step(np.full((150, 1), STAY))
    np.testing.assert_array_equal(env.true_states[:100, 0], 98)  # respawned after the goal
    np.testing.assert_array_equal(env.true_states[100:, 0], 98)
    env.resize(40)
    assert env.obs.shape == (40, 1)
    np.testing.assert_array_equal(env.goals_reached, 1)
    with pytest.raises(InputError, match="shape"):
        env.step(np.zeros((150, 1), dtype=np.int64))
    env.step(np.zeros((40, 1), dtype=np.int64))


def test_returned_arrays_are_read_only_views() -> None:
    env = GridWorldEnv(10)
    obs = env.step(np.zeros((10, 1), dtype=np.int64))
    with pytest.raises(ValueError, match="read-only"):
        obs[0, 0] = 1
    with pytest.raises(ValueError, match="read-only"):
        env.true_states[0, 0] = 1
    again = env.step(np.zeros((10, 1), dtype=np.int64))
    assert np.shares_memory(obs, again)


@pytest.mark.parametrize(
    "name", ["grid10", "grid-slippery", "tmaze", "tmaze-reversal", "explorer", "grid2f"]
)
def test_step_of_100k_agents_allocates_no_per_agent_arrays(name: str) -> None:
    n = 100_000
    env = make_env(name, n, seed=0)
    rng = np.random.default_rng(1)
    actions = np.stack([rng.integers(0, u, n) for u in env.model.num_controls], axis=1)
    env.step(actions)
    env.step(actions)
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        for _ in range(5):
            obs = env.step(actions)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert obs.shape == (n, env.model.num_modalities)
    # One (N,) int64 array is 800 kB: a step creates none, only numpy's fixed-size buffers.
    assert peak - start < 200_000, peak - start
    assert current - start < 10_000, current - start


# -- registry ------------------------------------------------------------------------------


def test_registry_names_and_models() -> None:
    assert set(BUILTIN_WORKLOADS) == {
        "grid10", "grid", "grid-slippery", "tmaze", "tmaze-reversal", "grid2f", "explorer",
        "sensors",
    }
    for name in BUILTIN_WORKLOADS:
        model = builtin_model(name)
        assert isinstance(model, GenerativeModel)
        env = make_env(name, 3, seed=1)
        assert env.n_agents == 3
        if name == "sensors":  # feature vectors, not a generative process of its model
            continue
        assert isinstance(env, BatchEnv)
        for built, used in zip(model.A + model.B, env.model.A + env.model.B, strict=True):
            np.testing.assert_array_equal(built, used)
    grid10 = builtin_model("grid10")
    assert grid10.num_states == (100,)
    assert grid10.C[0][99] == 0.0
    assert grid10.A[0][0, 0] == pytest.approx(0.9)
    assert isinstance(make_env("tmaze", 2), TMazeEnv)
    assert isinstance(make_env("explorer", 2), ExplorerEnv)
    grid2f = make_env("grid2f", 2)
    assert isinstance(grid2f, TwoFactorGridEnv)
    assert grid2f.model.num_states == (25, 2)
    assert grid2f.trial_len == 5


def test_registry_parameters() -> None:
    env = make_env("grid", 5, seed=3, height=4, width=6, goal=(0, 0))
    assert isinstance(env, GridWorldEnv)
    assert env.model.num_states == (24,)
    assert env.goal == (0, 0)
    assert builtin_model("grid", height=3, width=3).C[0][8] == 0.0
    grid2f = make_env("grid2f", 3, seed=1, height=7, width=7, trial_len=8, noise=0.0)
    assert isinstance(grid2f, TwoFactorGridEnv)
    assert grid2f.model.num_states == (49, 2)
    assert grid2f.trial_len == 8
    assert builtin_model("grid2f", goals=[(0, 0), (4, 4), (0, 4)]).num_states == (25, 3)
    with pytest.raises(ModelError, match="trial_len"):
        builtin_model("grid2f", trial_len=8)
    tmaze = make_env("tmaze", 2, trial_len=4)
    assert isinstance(tmaze, TMazeEnv)
    assert tmaze.trial_len == 4
    with pytest.raises(ModelError, match="trial_len"):
        builtin_model("tmaze", trial_len=4)
    with pytest.raises(ModelError, match="no parameter"):
        make_env("grid10", 2, colour="red")


def test_registry_unknown_name_lists_known_names() -> None:
    with pytest.raises(
        ModelError,
        match="known workloads: explorer, grid, grid-slippery, grid10, grid2f, sensors, tmaze, "
        "tmaze-reversal",
    ):
        make_env("maze", 2)
    with pytest.raises(ModelError, match="unknown workload 'maze'"):
        builtin_model("maze")


def test_summaries_print_counts_as_integers() -> None:
    """The demo log showed 'agents 1e+03' and 'trials 1.31e+05': counts are ints, printed so."""
    from edge_agent.sim import format_summary
    from edge_agent.sim.tmaze import TMazeEnv

    envs = (GridWorldEnv(1000, seed=0), TMazeEnv(1000, seed=0), ExplorerEnv(1000, seed=0),
            TwoFactorGridEnv(1000, seed=0))  # fmt: skip
    for env in envs:
        rng = np.random.default_rng(0)
        env.reset()
        controls = env.model.num_controls
        for _ in range(30):
            env.step(np.stack([rng.integers(0, u, 1000) for u in controls], axis=1))
        summary = env.summary()
        assert summary["agents"] == 1000
        assert isinstance(summary["agents"], int)
        text = format_summary(summary)
        assert text.startswith("agents 1000, ")
        assert "e+" not in text
        counts = {"goals_reached", "trials", "target_visits", "target_sightings"} & set(summary)
        assert counts, type(env).__name__
        for key in counts:
            assert isinstance(summary[key], int), key
            assert f"{key} {summary[key]}" in text


def test_format_summary_never_prints_counts_or_large_values_in_exponent_form() -> None:
    """'agents 1e+03', 'trials 1.31e+05': numpy integers are counts too, and a mean of 1234
    steps is 1234, not 1.23e+03; fractions keep three significant digits."""
    from edge_agent.sim import format_summary

    summary = {
        "agents": np.int64(1000), "trials": 131026, "mean_episode_steps": 1234.4,
        "at_goal": 0.41234, "rewards_per_trial": float("nan"), "rate": 0.000123456,
    }
    assert format_summary(summary) == (  # type: ignore[arg-type]
        "agents 1000, trials 131026, mean_episode_steps 1234, at_goal 0.412, "
        "rewards_per_trial n/a, rate 0.000123"
    )


def test_format_summary_puts_each_reference_after_its_number() -> None:
    from edge_agent.sim import format_summary

    summary = {"goals_reached": 3, "mean_steps_to_goal": 9.31, "at_goal": 0.5}
    assert format_summary(summary, {"mean_steps_to_goal": "fewest possible 9.09"}) == (
        "goals_reached 3, mean_steps_to_goal 9.31 (fewest possible 9.09), at_goal 0.5"
    )


# -- the reversal T-maze ------------------------------------------------------------------------


def test_reversal_tmaze_arms_hold_the_agent_and_the_rest_is_pymdps() -> None:
    base, held = tmaze_model(), tmaze_reversal_model()
    for a, b in zip(base.A + base.C + base.D, held.A + held.C + held.D, strict=True):
        np.testing.assert_array_equal(a, b)
    for arm in (1, 2):
        np.testing.assert_array_equal(held.B[0][:, arm, :], np.eye(4)[:, [arm] * 4])
    np.testing.assert_array_equal(held.B[0][:, [0, 3], :], base.B[0][:, [0, 3], :])


def test_reversal_tmaze_swaps_the_rewarded_arm_every_reverse_every_trials() -> None:
    """Agents that go to the cued arm every trial: 98 % rewards in the normal phases, 2 % in
    the reversed ones (the reward and loss outcomes at the arms swap)."""
    n, every = 2000, 3
    env = ReversalTMazeEnv(n, seed=4, reverse_every=every)
    obs = env.reset()
    rates: list[float] = []
    for _trial in range(4 * every):
        assert not env.reversed.any() if (_trial // every) % 2 == 0 else env.reversed.all()
        rewards = env.rewards.copy()
        cue = np.zeros((n, 2), dtype=np.int64)
        cue[:, 0] = 3  # to the cue
        obs = env.step(cue)
        arm = np.zeros((n, 2), dtype=np.int64)
        arm[:, 0] = 1 + obs[:, 2]  # the arm the cue names
        env.step(arm)
        rates.append(float((env.rewards - rewards).mean()))
        env.step(arm)  # the next trial's first step (its action is ignored)
    normal = [r for t, r in enumerate(rates) if (t // every) % 2 == 0]
    flipped = [r for t, r in enumerate(rates) if (t // every) % 2 == 1]
    assert min(normal) > 0.95
    assert max(flipped) < 0.05
    assert env.summary()["reversed_fraction"] == 0.0


def test_reversal_tmaze_refuses_a_bad_period() -> None:
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="reverse_every"):
            ReversalTMazeEnv(2, reverse_every=bad)  # type: ignore[arg-type]


# -- the slippery grid --------------------------------------------------------------------------


def test_slippery_grid_world_slips_and_has_walls_its_model_lacks() -> None:
    env = SlipperyGridEnv(50, seed=3, slip=0.25, blocked=((1, 1),))
    plain = gridworld_model(10, 10)
    for a, b in zip(env.model.A + env.model.B, plain.A + plain.B, strict=True):
        np.testing.assert_array_equal(a, b)  # the agents are told the plain grid
    B = env.process.B[0]
    # From (1, 0), "right" leads into the wall (1, 1): the agent stays, whatever the slip.
    assert B[10, 10, 4] == 1.0
    # From (0, 0), "down" reaches (1, 0) with 0.75 and slips (stays) with 0.25.
    assert B[10, 0, 2] == pytest.approx(0.75)
    assert B[0, 0, 2] == pytest.approx(0.25)
    np.testing.assert_allclose(B.sum(axis=0), 1.0)
    seen = np.zeros(100, dtype=bool)
    rng = np.random.default_rng(0)
    for _ in range(200):
        env.step(rng.integers(0, 5, size=(50, 1)))
        seen[env.true_states[:, 0]] = True
    assert not seen[11]  # nobody is ever in the wall
    with pytest.raises(ModelError, match="slip"):
        SlipperyGridEnv(2, slip=1.0)
    with pytest.raises(ModelError, match="blocked cell"):
        SlipperyGridEnv(2, goal=(5, 5))


def test_agents_learn_the_slippery_grids_transitions() -> None:
    """pB learned in the world moves the agents' B toward the world's, on the columns they
    used (L1 per column, against the plain grid's B they started from)."""
    n = 100
    env = SlipperyGridEnv(n, seed=2)
    model = env.model
    pB = model.B[0] * 10.0 + 0.5 * np.eye(100)[:, :, None]  # confident, but a stay is possible
    spec = LearningSpec(pB={0: pB}, settings=LearningSettings(lr_pB=0.02), refresh_every=10)
    group = AifAgentGroup(model, n, learning=spec, precision="float64")
    obs = env.reset()
    for _ in range(150):
        if env.episode_start.any():
            group.reset(env.episode_start)
        obs = env.step(group.step(obs))
    assert group.learning.learner.pB is not None
    learned, true = group.learning.model.B[0], env.process.B[0]
    used = group.learning.learner.pB.counts[0].sum(axis=0) - pB.sum(axis=0) > 5
    assert used.sum() >= 10
    before = np.abs(model.B[0] - true).sum(axis=0)[used].mean()
    after = np.abs(learned - true).sum(axis=0)[used].mean()
    assert after < 0.6 * before, (before, after)


@pytest.mark.parametrize("name", ["grid10", "explorer", "tmaze", "tmaze-reversal", "grid2f"])
def test_a_world_sampled_in_chunks_gives_the_same_episodes(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A world samples SAMPLE_CHUNK agents at a time with scratch of that size: chunks of 7
    agents (the last one shorter) give the outcomes, episode starts and summary of one pass."""
    from edge_agent import sim  # the module whose constant is patched

    def run() -> list[np.ndarray]:
        env: Any = make_env(name, 40, seed=5)
        rng = np.random.default_rng(1)
        out = [env.reset().copy()]
        for t in range(20):
            actions = np.stack([rng.integers(0, u, size=40) for u in env._num_controls], axis=1)
            out += [env.step(actions).copy(), env.episode_start.copy()]
            if t == 8:
                out.append(env.reset(np.arange(40) % 3 == 0).copy())
        out.append(np.array(sorted(env.summary().items()), dtype=object))
        return out

    whole = run()
    monkeypatch.setattr(sim, "SAMPLE_CHUNK", 7)
    chunked = run()
    for a, b in zip(whole, chunked, strict=True):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ what the numbers compare to
def first_steps_to_goal(
    env: GridWorldEnv, policy: Any, max_ticks: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each agent's spawn cell and its moves from there to the goal under ``policy(env) ->
    (N, 1)`` (the first episode only: no bias toward the episodes that end early)."""
    env.reset()
    start = np.array(env.true_states[:, 0])
    first = np.full(env.n_agents, -1)
    for tick in range(1, max_ticks + 1):
        env.step(policy(env))
        first[(first < 0) & env.goal_reached] = tick
        if (first >= 0).all():
            return start, first
    raise AssertionError(f"{int((first < 0).sum())} agents still walking after {max_ticks}")


def test_a_grid_s_references_are_what_the_fewest_moves_and_a_random_walk_take() -> None:
    """``mean_steps_to_goal``'s references, checked by walking the world: the shortest path
    (the grid's moves are certain) and uniformly random moves, from the world's spawn cells."""
    env = GridWorldEnv(1000, seed=4)
    text = env.references()["mean_steps_to_goal"]
    fewest, walk = (float(x.rsplit(" ", 1)[1]) for x in text.split(", "))
    assert text.startswith("fewest possible ")
    assert fewest == pytest.approx(900 / 99, abs=0.005)  # the mean Manhattan distance, 3 digits
    distance = manhattan_to(10, 10, env.goal)
    moves = grid_moves(10, 10)

    def shortest(e: GridWorldEnv) -> np.ndarray:
        here = e.true_states[:, 0]
        return np.argmin(distance[moves[here]], axis=1)[:, None]

    start, steps = first_steps_to_goal(env, shortest, 100)
    np.testing.assert_array_equal(steps, distance[start])
    assert steps.mean() == pytest.approx(fewest, rel=0.03)  # 1000 spawn cells: within 3 %
    rng = np.random.default_rng(5)
    _, steps = first_steps_to_goal(env, lambda e: rng.integers(0, 5, (e.n_agents, 1)), 30_000)
    assert steps.mean() == pytest.approx(walk, rel=0.1)  # its standard error is 3 %


def test_a_slippery_grid_s_random_walk_is_on_its_own_moves() -> None:
    env = SlipperyGridEnv(1000, seed=6)
    text = env.references()["mean_steps_to_goal"]
    walk = float(text.split("random walk ")[1])
    assert walk > float(GridWorldEnv(1, seed=0).references()["mean_steps_to_goal"].split(
        "random walk ")[1])  # fmt: skip  # slips and a wall make it longer
    rng = np.random.default_rng(7)
    _, steps = first_steps_to_goal(env, lambda e: rng.integers(0, 5, (e.n_agents, 1)), 30_000)
    assert steps.mean() == pytest.approx(walk, rel=0.1)


def test_a_goal_that_cannot_be_reached_has_no_reference() -> None:
    B = grid_transitions(1, 3)
    B[:, 1, :] = 0.0
    B[1, 1, :] = 1.0  # the middle cell holds an agent: the goal on the right is out of reach
    assert steps_to_goal(B, 2, np.array([0.5, 0.5, 0.0])) is None


def test_the_t_maze_s_references_are_what_following_the_cue_and_guessing_get() -> None:
    n = 2000
    env = TMazeEnv(n, seed=8)
    refs = env.references()
    assert refs == {
        "rewards_per_trial": "cue then its arm 0.98, an arm at random 0.5",
        "losses_per_trial": "cue then its arm 0.02, an arm at random 0.5",
    }
    rng = np.random.default_rng(9)
    for follow, rewards, losses in ((True, 0.98, 0.02), (False, 0.5, 0.5)):
        env = TMazeEnv(n, seed=8)
        env.reset()
        for _ in range(300):
            t = env.episode_steps
            arm = env.conditions + 1 if follow else rng.integers(1, 3, n)
            where = np.where(t == 0, 3, np.where(t == 1, arm, 0))  # cue, then an arm
            env.step(np.stack([where, np.zeros(n, dtype=np.int64)], axis=1))
        summary = env.summary()
        assert summary["rewards_per_trial"] == pytest.approx(rewards, abs=0.01)
        assert summary["losses_per_trial"] == pytest.approx(losses, abs=0.01)
    assert ReversalTMazeEnv(1).references()["rewards_per_trial"].startswith(
        "cue then the arm that pays now 0.98"
    )


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("grid10", {"noise": 0.2}),
        ("grid-slippery", {}),
        ("explorer", {"map_seed": 3}),
        ("grid2f", {}),
        ("tmaze", {}),
        ("tmaze-reversal", {}),
    ],
)
def test_a_built_in_world_keeps_no_model_and_makes_it_again_when_asked(
    name: str, params: dict[str, Any]
) -> None:
    """A memory rule (docs/memory.md): a world made from parameters keeps its samplers, not
    its float model, which stepping never reads (grid10's ``A`` and ``B``: 480 KB of float64):
    building one holds well under the model's size, and the model it makes when asked is
    the registry's, equal array for array."""
    make_env(name, 1, **params)  # imports and first-call caches outside the measurement
    want = builtin_model(name, **params)
    size = sum(a.nbytes for a in (*want.A, *want.B))
    tracemalloc.start()
    try:
        env = make_env(name, 1, **params)
        kept, _ = tracemalloc.get_traced_memory()
        model = env.model
        with_model, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert with_model - kept >= size  # made now, not held
    if name == "grid10":
        assert size == 480_000
        assert kept < size / 4
    assert env.model is not model  # made at each request
    for got, expected in zip(
        (*model.A, *model.B, *model.C, *model.D),
        (*want.A, *want.B, *want.C, *want.D),
        strict=True,
    ):
        np.testing.assert_array_equal(got, expected)


def test_a_world_built_from_a_model_keeps_that_model() -> None:
    """``BatchEnv(model, n)`` simulates the model it is given and hands that model back."""
    model = gridworld_model(4, 4)
    env = BatchEnv(model, 3, seed=1)
    assert env.model is model

"""The peer benchmark's own parts (benchmarks/peers): the world, the checks, edge-agent's loop.

The peers themselves (pymdp in their own venvs) are not needed here: what is tested is what the
benchmark's numbers rest on. The world must give every implementation the same observations when
it chooses the same actions, and must follow the workload's episode rule; the agreement check must
count a tie as agreement; edge-agent's closed loop must run and record its actions.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_peers  # noqa: E402
from peers.loop import ClosedLoop  # noqa: E402
from peers.world import ClosedLoopWorld, actions_digest, load_workload  # noqa: E402


@pytest.fixture(scope="module", params=["grid10", "tmaze", "grid2f"])
def workload(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("peers") / f"{request.param}.npz"
    bench_peers.write_workload(request.param, path)
    return path


def test_same_actions_give_the_same_observations_whatever_else_happens(workload: Path) -> None:
    w = load_workload(str(workload))
    controls = [b.shape[2] for b in w["B"]]
    rng = np.random.default_rng(5)
    a, b = ClosedLoopWorld(w, 50, seed=3), ClosedLoopWorld(w, 50, seed=3)
    obs_a, start_a = a.reset()
    obs_b, start_b = b.reset()
    for _ in range(20):
        assert np.array_equal(obs_a, obs_b)
        assert np.array_equal(start_a, start_b)
        actions = np.stack([rng.integers(0, u, 50) for u in controls], axis=1)
        other = actions.copy()
        other[:25] = np.stack([rng.integers(0, u, 25) for u in controls], axis=1)
        obs_a, start_a = (x.copy() for x in a.step(actions))
        obs_b, start_b = (x.copy() for x in b.step(other))
        same = (actions == other).all(axis=1)
        # The random numbers drawn do not depend on the actions: where the agents acted the
        # same so far, the worlds agree; the rest may differ.
        assert np.array_equal(obs_a[25:][same[25:]], obs_b[25:][same[25:]])
        b.states[:25] = a.states[:25]  # re-align the first half for the next step
        b.episode_steps[:25] = a.episode_steps[:25]
        obs_b[:25], start_b[:25] = obs_a[:25], start_a[:25]


def test_episode_rules(workload: Path) -> None:
    w = load_workload(str(workload))
    world = ClosedLoopWorld(w, 200, seed=1)
    _, start = world.reset()
    assert start.all()
    controls = [b.shape[2] for b in w["B"]]
    rng = np.random.default_rng(0)
    restarts = 0
    for t in range(1, 40):
        at_goal = world.states[:, 0] == w["goal_state"]
        actions = np.stack([rng.integers(0, u, 200) for u in controls], axis=1)
        _, start = world.step(actions)
        restarts += int(start.sum())
        if w["rule"] == "trial":
            assert start.all() == (t % w["trial_len"] == 0)
            assert start.all() or not start.any()
        else:
            assert np.array_equal(start, at_goal)
    assert restarts > 0
    # Observations are valid outcome indices of every modality.
    obs = world.step(np.zeros((200, len(controls)), dtype=np.int64))[0]
    for m, a in enumerate(w["A"]):
        assert obs[:, m].min() >= 0
        assert obs[:, m].max() < a.shape[0]


def test_workload_file_holds_the_builtin_model_and_its_rule(workload: Path) -> None:
    from edge_agent.sim.registry import make_env

    w = load_workload(str(workload))
    env = make_env(workload.stem, 1, seed=0)
    model = env.model
    assert len(w["A"]) == len(w["C"]) == model.num_modalities
    assert len(w["B"]) == len(w["D"]) == len(w["spawn"]) == model.num_factors
    tables = w["A"] + w["B"] + w["C"] + w["D"]
    for mine, theirs in zip(tables, model.A + model.B + model.C + model.D, strict=True):
        assert mine.dtype == np.float64
        np.testing.assert_array_equal(mine, theirs)
    if workload.stem == "grid10":
        assert (w["rule"], w["goal_state"]) == ("goal", 99)
    else:  # tmaze, grid2f: trials
        assert (w["rule"], w["goal_state"]) == ("trial", -1)
        assert w["trial_len"] == getattr(env, "trial_len", None)
        for spawn, d in zip(w["spawn"], model.D, strict=True):
            np.testing.assert_array_equal(spawn, d)


def test_grid2f_workload_is_two_factors_and_in_the_default_cases(tmp_path: Path) -> None:
    bench_peers.write_workload("grid2f", tmp_path / "grid2f.npz")
    w = load_workload(str(tmp_path / "grid2f.npz"))
    assert [b.shape for b in w["B"]] == [(25, 25, 5), (2, 2, 1)]
    assert [a.shape for a in w["A"]] == [(25, 25, 2), (3, 25, 2), (2, 25, 2)]
    assert w["trial_len"] == 5
    for n in (1, 10):
        assert ("grid2f", 1, n) in bench_peers.FULL_CASES
        assert ("tmaze", 1, n) in bench_peers.FULL_CASES
    # The world starts every agent at the centre with the context drawn from D.
    world = ClosedLoopWorld(w, 2000, seed=0)
    world.reset()
    np.testing.assert_array_equal(world.states[:, 0], 12)
    assert 0.45 < world.states[:, 1].mean() < 0.55


def test_world_draws_from_the_support_are_the_full_inverse_cdf_draws() -> None:
    """A row kept at its support (the outcomes where its CDF rises) draws what the full row
    draws, for every uniform, the first outcome with ``u < cdf[k]``: zero-probability outcomes
    anywhere in the column, a dense column and a one-outcome column, tables of several sizes."""
    from peers.world import _cdf_rows, _Draws, _Stacked

    rng = np.random.default_rng(7)
    tables = []
    for k, cols in ((6, 9), (3, 4), (10, 2)):
        t = rng.random((k, cols)) * (rng.random((k, cols)) < 0.5)
        t[rng.integers(0, k, cols), np.arange(cols)] += 1.0  # no empty column
        t[:, 0] = 0.0
        t[k - 1, 0] = 1.0  # one outcome, the last
        if k < 10:
            t[:, 1] = 1.0 / k  # dense
        else:
            t[:, 1] = 0.0
            t[:6, 1] = 1.0  # the widest support: 6 of 10
        t[:, 2:] *= np.arange(k)[:, None] < 6  # (the others: at most 6 outcomes)
        t[0, 2:] += 1.0
        tables.append(t / t.sum(axis=0))
    cdfs = [_cdf_rows(t) for t in tables]
    stack = _Stacked(cdfs)
    assert not stack.dense
    assert stack.width == 6  # of 10 outcomes at most
    n = 500
    draws = _Draws(stack, n)
    buffers = [draws.rows, draws.below, draws.out]
    for _ in range(20):
        cols = np.stack([rng.integers(0, c.shape[0], n) for c in cdfs])
        draws.index[:] = cols + stack.first
        draws.uniforms(rng)
        u = draws.u.copy()
        u[:, :5] = 0.0  # the ends of the interval
        u[:, 5:10] = np.nextafter(1.0, 0.0)
        draws.u[:] = u
        got = draws.draw()
        for t, cdf in enumerate(cdfs):
            full = (cdf[cols[t]] <= u[t][:, None]).sum(axis=1)
            np.testing.assert_array_equal(got[t], full)
            assert (tables[t][got[t], cols[t]] > 0).all()  # never an outcome of probability 0
    assert [draws.rows, draws.below, draws.out] == buffers  # the same buffers every step


@pytest.mark.parametrize("support", [1, 2, 3])
def test_narrow_rows_counted_column_by_column_draw_the_full_inverse_cdf_draws(
    support: int,
) -> None:
    """Rows of at most ``_Draws.COLUMNS`` outcomes are counted column by column (a row of one
    outcome: that outcome, whatever ``u``): the draws of the full rows, the first outcome with
    ``u < cdf[k]``, for every uniform, the ends of the interval included."""
    from peers.world import _cdf_rows, _Draws, _Stacked

    rng = np.random.default_rng(support)
    tables = []
    for k, cols in ((5, 7), (3, 4)):
        t = np.zeros((k, cols))
        for c in range(cols):  # at most `support` outcomes a column, anywhere in it
            t[rng.choice(k, size=support, replace=False), c] = rng.random(support) + 0.1
        t[:, 0] = 0.0
        t[k - 1, 0] = 1.0  # one outcome, the last
        tables.append(t / t.sum(axis=0))
    cdfs = [_cdf_rows(t) for t in tables]
    stack = _Stacked(cdfs)
    assert stack.width == support
    n = 300
    draws = _Draws(stack, n)
    assert draws.by_column
    for _ in range(20):
        cols = np.stack([rng.integers(0, c.shape[0], n) for c in cdfs])
        draws.index[:] = cols + stack.first
        draws.uniforms(rng)
        draws.u[:, :5] = 0.0
        draws.u[:, 5:10] = np.nextafter(1.0, 0.0)
        u = draws.u.copy()
        got = draws.draw()
        for t, cdf in enumerate(cdfs):
            full = (cdf[cols[t]] <= u[t][:, None]).sum(axis=1)
            np.testing.assert_array_equal(got[t], full)


def _one_agent_worlds() -> list[tuple[str, int]]:
    return [("grid10", 0), ("grid2f", 0), ("tmaze", 0), ("reversal", 1), ("reversal", 3)]


def _assert_alike(x: ClosedLoopWorld, y: ClosedLoopWorld, got: tuple[np.ndarray, ...],
                  want: tuple[np.ndarray, ...]) -> None:
    """Two worlds' step returned the same arrays (``got``, ``want``) and left the same states,
    episode steps and trial counts."""
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(x.states, y.states)
    np.testing.assert_array_equal(x.episode_steps, y.episode_steps)
    np.testing.assert_array_equal(x.trials, y.trials)


def _workload(world: str, tmp_path: Path, reverse_every: int, agents: int) -> dict[str, Any]:
    """The benchmark's workload of ``world`` ("reversal": the reversal T-maze, its rewarded arm
    swapping every ``reverse_every`` trials, its observations written for ``agents``)."""
    from bench_learning_peers import write_workload as write_reversal

    path = tmp_path / f"{world}.npz"
    if world == "reversal":
        write_reversal("tmaze", "A", 1, agents, path)
    else:
        bench_peers.write_workload(world, path)
    w = load_workload(str(path))
    if world == "reversal":
        w["reverse_every"] = reverse_every
    return w


@pytest.mark.parametrize(("world", "reverse_every"), _one_agent_worlds())
def test_a_world_of_one_agent_steps_as_the_batched_world_does(
    world: str, reverse_every: int, tmp_path: Path
) -> None:
    """A world of one agent steps in Python scalars (``_step_one``): the same observations,
    episode starts, states, trial counts and scores as the batched step of the same world, and
    the same random numbers left after (the reversal T-maze's phases included)."""
    w = _workload(world, tmp_path, reverse_every, 1)
    controls = [b.shape[2] for b in w["B"]]
    for seed in (0, 1):
        scalar, batched = ClosedLoopWorld(w, 1, seed=seed), ClosedLoopWorld(w, 1, seed=seed)
        batched.one = False
        got, want = scalar.reset(), batched.reset()
        rng = np.random.default_rng(seed)
        for _ in range(400):
            _assert_alike(scalar, batched, got, want)
            actions = np.array([[rng.integers(0, u) for u in controls]], dtype=np.int64)
            got, want = scalar.step(actions), batched.step(actions)
        assert scalar.scores == batched.scores
        np.testing.assert_array_equal(scalar.rng.random(4), batched.rng.random(4))


def _drawing_every_uniform(world: ClosedLoopWorld) -> ClosedLoopWorld:
    """``world`` making every uniform of a step, read or not (the step before it skipped the
    unread ones): the whole buffer a step, its respawn's and observation's part at a reset."""
    world._plan_spawn = world._plan_stay = [(world._uniforms, 0)]
    world._plan_reset = [(world._uniforms[world.move_cdf.tables * world.n :], 0)]
    return world


@pytest.mark.parametrize("world", ["grid10", "tmaze", "grid2f", "reversal"])
def test_skipping_the_uniforms_no_draw_reads_changes_nothing(
    world: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step makes only the uniforms its draws read (a deterministic move or outcome reads
    none, a respawn's only where some agent respawns) and advances the generator past the
    others (runs of any length here, of ``SKIP_AT_LEAST`` in the benchmark): the same
    observations, episode starts, states, trials and scores as a world that makes them all, for
    many seeds, group sizes and actions, and the same generator after."""
    w = _workload(world, tmp_path, 2, 4)  # the phases change within the run
    controls = [b.shape[2] for b in w["B"]]
    skipped_any = False
    for seed in range(12):
        n = (2, 7, 64, 300, 600, 1000)[seed % 6]
        monkeypatch.setattr(ClosedLoopWorld, "SKIP_AT_LEAST", 1 if seed < 6 else 512)
        fast = ClosedLoopWorld(w, n, seed=seed)
        full = _drawing_every_uniform(ClosedLoopWorld(w, n, seed=seed))
        skipped_any |= any(view is None for view, _ in fast._plan_stay)
        rng = np.random.default_rng(100 + seed)
        got, want = fast.reset(), full.reset()
        for _ in range(40):
            _assert_alike(fast, full, got, want)
            actions = np.stack([rng.integers(0, u, n) for u in controls], axis=1)
            got, want = fast.step(actions), full.step(actions)
        assert fast.scores == full.scores
        np.testing.assert_array_equal(fast.rng.random(4), full.rng.random(4))
    assert skipped_any  # (every world here has a deterministic table or a step without respawn)


def test_first_action_agreement_counts_ties_as_agreement() -> None:
    policies = np.array([[[0]], [[1]], [[2]]])  # (P, L=1, F=1)
    q_pi = np.array([[0.45, 0.45, 0.10], [0.2, 0.7, 0.1]])
    agree = bench_peers.first_action_agreement
    assert agree(np.array([[0], [1]]), q_pi, policies, [3], 1e-3) == 1.0
    assert agree(np.array([[1], [1]]), q_pi, policies, [3], 1e-3) == 1.0
    assert agree(np.array([[2], [0]]), q_pi, policies, [3], 1e-3) == 0.0


@pytest.mark.parametrize("impl", ["edge-agent int8", "edge-agent float64"])
def test_edge_agent_closed_loop_runs_and_records(workload: Path, impl: str) -> None:
    loop = ClosedLoop(impl, str(workload), 20, 1, seed=1, warmup=3, record_steps=6)
    rates = loop.run(min_steps=3, min_seconds=0.0, max_steps=3)
    assert rates["steps"] == 3
    assert rates["steps_per_s"] > 0
    arrays = loop.arrays()
    assert arrays["actions"].shape == (6, 20, len(load_workload(str(workload))["B"]))
    assert arrays["first_q_pi"].shape == (20, arrays["policies"].shape[0])
    np.testing.assert_allclose(arrays["first_q_pi"].sum(axis=1), 1.0, atol=1e-3)
    # The first step's actions are optimal under the group's own posterior.
    controls = [int(b.shape[2]) for b in load_workload(str(workload))["B"]]
    assert (
        bench_peers.first_action_agreement(
            arrays["first_actions"], arrays["first_q_pi"], arrays["policies"], controls, 1e-6
        )
        == 1.0
    )
    assert loop.summary()["digest"] == actions_digest(arrays["actions"])


def test_numpy_calls_are_counted_exactly() -> None:
    """peers.opcount sees ufuncs, array functions and array/ufunc methods, each call once, and
    puts numpy back as it was."""
    from peers.opcount import count_numpy_calls

    a, out = np.ones((3, 4)), np.empty(4)
    add = np.add

    def five_calls() -> None:
        np.add(a, 1.0, out=a)  # a ufunc
        np.add.reduce(a, axis=0, out=out)  # a ufunc's method
        a.reshape(12)  # an array method
        np.dot(a[0], a[0])  # an array function
        np.copyto(a, 2.0)  # another

    total, by_name = count_numpy_calls(five_calls, repeats=3)
    assert total == 5
    assert by_name == {"add": 1, "ufunc.reduce": 1, "ndarray.reshape": 1, "dot": 1, "copyto": 1}
    assert np.add is add


def test_a_tmaze_tick_of_1000_agents_makes_few_numpy_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tick of a small model is the fixed cost of its numpy calls. The T-maze
    at N = 1,000 made 551 a step on numpy (two blocks of 512, the likelihood a product per
    modality, all 24 joint outcomes, the fixed-point iteration factor by factor); one block, the
    fused likelihood table, the 12 possible joint outcomes and the stacked fixed-point iteration
    bring it to 177 (benchmarks/notes/core-and-pymdp.md). In the compiled tick (the group's path
    there, ``EDGE_AGENT_NATIVE_TICK=1`` here: unmeasured) the agents' tick is one call; what
    numpy calls are left are the group's checks and health."""
    path = tmp_path / "tmaze.npz"
    bench_peers.write_workload("tmaze", path)
    for env, low, high in (("0", 100, 220), ("1", 0, 20)):
        monkeypatch.setenv("EDGE_AGENT_NATIVE_TICK", env)  # read when the group is made
        for impl in ("edge-agent int8", "edge-agent float64"):
            loop = ClosedLoop(impl, str(path), 1000, 1, seed=1, warmup=3, record_steps=3)
            counted = loop.count_calls(6)  # two trials of 3 steps: resets included
            assert low < counted["numpy_calls_per_step"] <= high, (env, counted)


@pytest.fixture(scope="module")
def reversal_workload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import bench_learning_peers

    path = tmp_path_factory.mktemp("learning") / "tmaze.npz"
    bench_learning_peers.write_workload("tmaze", "A", 1, 4, path)
    return path


def test_reversal_world_swaps_reward_and_loss_in_its_reversed_trials(
    reversal_workload: Path,
) -> None:
    """The learning benchmark's reversal T-maze: the same draws as the plain maze, with reward
    and loss swapped in the trials of an odd phase (here every other trial), and scored."""
    from edge_agent.sim.tmaze import LOSS, REWARD, REWARD_MODALITY

    w = load_workload(str(reversal_workload))
    assert (w["reverse_every"], w["reward_modality"]) == (50, REWARD_MODALITY)
    plain = ClosedLoopWorld({**w, "reverse_every": 0}, 300, seed=2)
    flips = ClosedLoopWorld({**w, "reverse_every": 1}, 300, seed=2)
    assert plain.score == flips.score == "mean_reward"
    rng = np.random.default_rng(0)
    obs_a, _ = plain.reset()
    obs_b, _ = flips.reset()
    assert np.array_equal(obs_a, obs_b)  # trial 0: not reversed
    swapped = 0
    for t in range(12):
        trials = flips.trials.copy()
        actions = rng.integers(0, w["B"][0].shape[2], (300, 1)).repeat(2, axis=1)
        actions[:, 1] = 0
        obs_a, start = (x.copy() for x in plain.step(actions))
        obs_b, _ = (x.copy() for x in flips.step(actions))
        other = [m for m in range(len(w["A"])) if m != REWARD_MODALITY]
        assert np.array_equal(obs_a[:, other], obs_b[:, other])
        reversed_now = (trials + start) % 2 == 1
        a, b = obs_a[:, REWARD_MODALITY], obs_b[:, REWARD_MODALITY]
        paid = (a == REWARD) | (a == LOSS)
        swap = reversed_now & paid
        np.testing.assert_array_equal(b[swap], REWARD + LOSS - a[swap])
        np.testing.assert_array_equal(b[~swap], a[~swap])
        swapped += int(swap.sum())
        for world, o in ((plain, a), (flips, b)):  # scored: rewards less losses
            assert world.scores[t + 1] == int((o == REWARD).sum()) - int((o == LOSS).sum())
    assert swapped > 0
    assert len(plain.scores) == len(flips.scores) == 13


def test_grid_world_scores_the_goals_its_agents_reach(workload: Path) -> None:
    from peers.world import achieved

    w = load_workload(str(workload))
    world = ClosedLoopWorld(w, 100, seed=4)
    if w["rule"] != "goal":  # the plain trial worlds have no score
        assert world.score is None
        return
    assert world.score == "reach_rate"
    world.reset()
    controls = [b.shape[2] for b in w["B"]]
    rng = np.random.default_rng(1)
    restarts = []
    for _ in range(300):
        actions = np.stack([rng.integers(0, u, 100) for u in controls], axis=1)
        restarts.append(int(world.step(actions)[1].sum()))
    assert len(world.scores) == 301
    # A goal reached at one step is an episode started at the next.
    assert world.scores[1:-1] == restarts[1:]
    assert sum(world.scores) > 0
    assert achieved(world.scores, 100) == sum(world.scores) / (100 * 301)
    assert achieved(world.scores, 100, 10) == sum(world.scores[:10]) / 1000


def test_the_frozen_rows_grid2f_scores_rewards_less_losses(tmp_path: Path) -> None:
    """bench_learning_peers' grid2f (frozen rows only) is scored as the T-maze is: rewards
    less losses of its reward modality, never reversed."""
    import bench_learning_peers

    from edge_agent.sim.grid2f import LOSS, REWARD

    path = tmp_path / "grid2f.npz"
    bench_learning_peers.write_workload("grid2f", "B", 0, 50, path)
    w = load_workload(str(path))
    assert (w["reverse_every"], w["reward_modality"]) == (0, 1)
    assert (w["reward_outcome"], w["loss_outcome"]) == (REWARD, LOSS)
    world = ClosedLoopWorld(w, 50, seed=0)
    assert world.score == "mean_reward"
    world.reset()
    rng = np.random.default_rng(2)
    paid = 0
    for t in range(60):
        actions = np.stack([rng.integers(0, b.shape[2], 50) for b in w["B"]], axis=1)
        seen = world.step(actions)[0][:, 1]
        assert world.scores[t + 1] == int((seen == REWARD).sum()) - int((seen == LOSS).sum())
        paid += int((seen != 0).sum())
    assert paid > 0


def _row(policies: np.ndarray, q_pi: np.ndarray, actions: np.ndarray,
         gamma: float = 16.0) -> dict[str, object]:
    from peers.learning import planning

    return {"planning": planning(policies, policies.shape[1], gamma, use_utility=True,
                                 use_states_info_gain=True, use_param_info_gain=False),
            "checks": {"first_actions": actions, "first_q_pi": q_pi, "policies": policies}}


def test_a_case_plans_alike_only_when_every_side_holds_the_same_policies_and_gamma() -> None:
    """check_rows: the policy set compared as a set (pymdp's order or another), gamma and the
    gains as each side holds them; the first action optimal under each peer's posterior."""
    from bench_learning_peers import check_rows

    two_step = np.array([[[a], [b]] for a in range(3) for b in range(3)])  # (9, 2, 1)
    shuffled = two_step[::-1].copy()
    q_peer = np.zeros((2, 9))
    q_peer[:, 3:6] = 1 / 3  # the first step's action 1 in every agent
    edge = _row(shuffled, np.full((2, 9), 1 / 9), np.array([[1], [0]]))
    peer = _row(two_step, q_peer, np.array([[1], [1]]))
    found = check_rows([("edge-agent int8 learning off", edge), ("pymdp 1.0.4", peer)], [3])
    assert found["edge-agent int8 learning off"] == {
        "same_planning": True, "first_action_optimal_under_1.0.4": 0.5,
        "first_action_optimal_under_1.0.4_agents": 2}
    assert found["pymdp 1.0.4"] == {"same_planning": True}
    one_step = _row(two_step[:3, :1], np.full((2, 3), 1 / 3), np.array([[1], [1]]))
    other_gamma = _row(two_step, q_peer, np.array([[1], [1]]), gamma=1.0)
    for odd in (one_step, other_gamma):
        found = check_rows([("edge-agent int8 learning off", edge), ("pymdp 1.0.4", odd)], [3])
        assert found["edge-agent int8 learning off"]["same_planning"] is False


def test_a_worker_pinned_to_one_cpu_keeps_every_thread_there(reversal_workload: Path) -> None:
    """bench_learning_peers runs every implementation's worker with ``--cpu`` (the same one CPU
    for all): the worker pins itself before anything starts a thread, and says where its threads
    may run at the end of the run."""
    import subprocess

    import bench_learning_peers

    args = bench_learning_peers.pin_args()
    assert args[0] == "--cpu"
    cpu = int(args[1])
    assert cpu in os.sched_getaffinity(0)
    out = subprocess.run(
        [sys.executable, str(bench_learning_peers.WORKER), "edge-agent float64 per-agent",
         str(reversal_workload), "4", "--seconds", "0.01", "--repeats", "1", *args],
        capture_output=True, text=True, check=True, timeout=300,
        env={**os.environ, **bench_peers.one_thread_env()})
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["pinned_cpu"] == cpu
    assert record["threads_cpus"] == [cpu]

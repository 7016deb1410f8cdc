"""A group's blocks on several processes (edge_agent.core.workers): the same results as one.

Real forked processes and shared memory; small blocks (``block_size``) so that a few hundred
agents make several blocks. Every check compares a group stepped with workers against the same
group stepped by one process on identical observations: the same kernels run on the same blocks,
so the results are equal exactly, not only up to rounding.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.aif.planning import PlanningPolicy
from edge_agent.aif.settings import AifSettings
from edge_agent.core import workers as workers_module
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.budget import MemoryBudget
from edge_agent.core.native_pass import NATIVE_ENV
from edge_agent.core.workers import RESTART_AFTER_S, is_shared
from edge_agent.sim.registry import make_env

BLOCK = 64

@pytest.fixture(autouse=True)
def _numpy_ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers step numpy's blocks: the one-process groups they are compared with bit for bit
    step them too (on one process a group that does not learn would take the compiled tick,
    whose ties may break the other way)."""
    monkeypatch.setenv(NATIVE_ENV, "0")



def pair(
    workload: str, n: int, workers: int, **kw: Any
) -> tuple[Any, AifAgentGroup, AifAgentGroup]:
    env: Any = make_env(workload, n, seed=3)
    one = AifAgentGroup(env.model, n, block_size=BLOCK, **kw)
    many = AifAgentGroup(env.model, n, block_size=BLOCK, **kw)
    assert many.start_workers(workers) == workers
    return env, one, many


def assert_same(one: AifAgentGroup, many: AifAgentGroup) -> None:
    np.testing.assert_array_equal(one.q_pi, many.q_pi)
    np.testing.assert_array_equal(one.G, many.G)
    np.testing.assert_array_equal(one.action, many.action)
    for a, b in zip(one.qs + one.prior, many.qs + many.prior, strict=True):
        np.testing.assert_array_equal(a, b)


def assert_thawed(others: int) -> None:
    """This test's workers gave the heap back: the process's holders of a frozen heap are the
    ``others`` there were before it (a group an earlier test of this process left with workers
    keeps it frozen, rightly), and with none the heap is thawed."""
    assert workers_module._Heap.holders == others
    if others == 0:
        assert gc.get_freeze_count() == 0


def test_a_stalled_worker_leaves_its_blocks_to_the_others() -> None:
    """Blocks go to whichever process is free: with the worker stopped (SIGSTOP), the caller
    steps every block of the tick and then waits only for the worker's answer."""
    env, one, many = pair("grid10", 6 * BLOCK, 2)
    obs = env.reset()
    actions = one.step(obs).copy()
    many.step(obs)
    obs = env.step(actions)
    workers = many.cores.running
    assert workers is not None
    pid = workers.pids[0]
    os.kill(pid, signal.SIGSTOP)
    try:
        stepping = threading.Thread(target=many.step, args=(obs,))
        stepping.start()
        deadline = time.monotonic() + 30
        while not workers._done.all() and time.monotonic() < deadline:  # bounded
            time.sleep(0.01)
        assert workers._done.all()  # every block stepped, by the caller alone
        assert stepping.is_alive()  # ... and the tick waits for the stopped worker's answer
    finally:
        os.kill(pid, signal.SIGCONT)
    stepping.join(30)
    assert not stepping.is_alive()
    one.step(obs)
    assert_same(one, many)
    assert workers.failure is None
    assert workers.count == 2


@pytest.mark.parametrize(
    ("workload", "history_beliefs", "precision"),
    [("grid10", "map", "int8"), ("tmaze", "full", "int8"), ("grid10", "full", "float64")],
)
def test_workers_give_the_results_and_history_of_one_process(
    workload: str, history_beliefs: str, precision: str
) -> None:
    env, one, many = pair(
        workload,
        5 * BLOCK + 17,
        3,
        precision=precision,
        history_capacity=8,
        history_beliefs=history_beliefs,
    )
    assert many.workers == 3
    obs = env.reset()
    for _ in range(12):
        actions = one.step(obs).copy()
        many.step(obs)
        assert_same(one, many)
        obs = env.step(actions)
    assert one.history is not None
    assert many.history is not None
    for (k, a), (_, b) in zip(
        sorted(one.history.state_dict().items()),
        sorted(many.history.state_dict().items()),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b, err_msg=k)
    many.stop_workers()
    assert many.workers == 1


def test_resets_actions_snapshots_and_resizes_reach_the_workers() -> None:
    env, one, many = pair("grid10", 4 * BLOCK, 2)
    obs = env.reset()
    for t in range(10):
        if t == 3:
            mask = np.arange(one.n_agents) % 3 == 0
            one.reset(mask)
            many.reset(mask)
        if t == 5:
            forced = np.random.default_rng(t).integers(0, 5, size=(one.n_agents, 1))
            one.set_action(forced)
            many.set_action(forced)
        if t == 6:
            state = one.state_dict()
            copy = {k: np.array(v) for k, v in state.items()}
            many.load_state_dict(copy)
        if t == 7:
            one.resize(6 * BLOCK)
            many.resize(6 * BLOCK)
            env = make_env("grid10", 6 * BLOCK, seed=9)
            obs = env.reset()
            assert many.workers == 2  # restarted on the new arrays
        actions = one.step(obs).copy()
        many.step(obs)
        assert_same(one, many)
        obs = env.step(actions)


def test_stochastic_actions_do_not_depend_on_the_number_of_workers() -> None:
    settings = AifSettings(action_selection="stochastic", alpha=4.0)
    env: Any = make_env("grid10", 6 * BLOCK, seed=4)
    groups = []
    for workers in (2, 3):
        g = AifAgentGroup(env.model, 6 * BLOCK, block_size=BLOCK, settings=settings, seed=11)
        g.start_workers(workers)
        groups.append(g)
    obs = env.reset()
    for _ in range(8):
        a, b = (g.step(obs).copy() for g in groups)
        np.testing.assert_array_equal(a, b)
        obs = env.step(a)
    # ... and the draws do vary: not every agent took the deterministic choice.
    assert len(np.unique(a)) > 1


def test_a_killed_worker_leaves_the_caller_stepping_every_block_until_a_restart() -> None:
    others = workers_module._Heap.holders  # an earlier test's groups' workers
    env, one, many = pair("grid10", 6 * BLOCK, 3)
    obs = env.reset()
    for _ in range(2):
        actions = one.step(obs).copy()
        many.step(obs)
        obs = env.step(actions)
    workers = many.cores.running
    assert workers is not None
    victim = workers.pids[1]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # bounded: the kernel reaps it within milliseconds
        state = Path(f"/proc/{victim}/stat").read_text().split()[2]
        if state == "Z":
            break
        time.sleep(0.01)
    for _ in range(3):
        actions = one.step(obs).copy()
        many.step(obs)
        assert_same(one, many)
        obs = env.step(actions)
    assert workers.failure is not None
    assert str(victim) in workers.failure
    assert not workers.active
    assert workers.pids == []
    assert_thawed(others)  # no workers of ours left in this process: the heap given back
    # RESTART_AFTER_S later, the next tick forks the workers again; results stay the same.
    deadline = time.monotonic() + RESTART_AFTER_S + 5
    while time.monotonic() < deadline and not workers.active:  # bounded
        time.sleep(0.05)
        actions = one.step(obs).copy()
        many.step(obs)
        assert_same(one, many)
        obs = env.step(actions)
    assert workers.active
    assert workers.restarts == 1
    assert many.workers == 3
    assert gc.get_freeze_count() > 0
    for _ in range(3):
        actions = one.step(obs).copy()
        many.step(obs)
        assert_same(one, many)
        obs = env.step(actions)
    many.stop_workers()
    assert_thawed(others)


def test_workers_exit_with_their_group_and_the_budget_counts_their_scratch() -> None:
    budget = MemoryBudget(256 << 20)
    env: Any = make_env("grid10", 4 * BLOCK, seed=1)
    g = AifAgentGroup(env.model, 4 * BLOCK, block_size=BLOCK, budget=budget, name="g")
    before = budget.used
    g.start_workers(2)
    assert budget.used - before == g.scratch_nbytes(g.n_agents)
    workers = g.cores.running
    assert workers is not None
    pids = workers.pids
    g.step(env.reset())
    g.release()
    assert budget.used == 0
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped by close(): no zombie left


def test_soft_evidence_is_stepped_by_the_caller_alike() -> None:
    _env, one, many = pair("grid10", 3 * BLOCK, 2)
    rng = np.random.default_rng(0)
    for _ in range(3):
        p = rng.dirichlet(np.ones(one.cm.num_obs[0]), size=one.n_agents)
        one.step([p])
        many.step([p])
        assert_same(one, many)


@pytest.mark.parametrize("planning", [None, PlanningPolicy(every=2)])
def test_state_allocated_shared_from_the_start_is_not_moved(
    planning: PlanningPolicy | None,
) -> None:
    """With ``shared_state`` the state the workers write is in shared memory from the start:
    start_workers moves nothing (no second copy of a large group's state while it would move),
    and the results are those of one process. Without it, start_workers moves it there."""
    env: Any = make_env("grid10", 5 * BLOCK, seed=4)
    kw: dict[str, Any] = {"block_size": BLOCK, "history_capacity": 4, "planning": planning,
                          "history_beliefs": "map"}
    one = AifAgentGroup(env.model, 5 * BLOCK, **kw)
    many = AifAgentGroup(env.model, 5 * BLOCK, shared_state=True, **kw)
    def written(g: AifAgentGroup) -> list[np.ndarray]:  # what the workers write
        assert g.recorder is not None
        arrays = [*g.qs, *g.prior, g.q_pi, g.G, g.action, g.state.has_action, g.recorder.map_row,
                  g.recorder.p_row]
        if g.plans is not None:
            plans = g.plans
            arrays += [plans.plan_policy, plans.plan_left, plans.plan_age, plans.change,
                       plans.evidence, plans.candidates]
        return arrays

    state = written(many)
    assert all(is_shared(a) for a in state)
    assert not any(is_shared(a) for a in [*one.qs, one.q_pi, one.action])
    assert many.start_workers(2) == 2
    after = written(many)
    assert all(a is b for a, b in zip(state, after, strict=True))  # not moved
    moved = AifAgentGroup(env.model, 5 * BLOCK, block_size=BLOCK, planning=planning)
    moved.start_workers(2)
    assert all(is_shared(a) for a in [*moved.qs, *moved.prior, moved.q_pi, moved.action])
    obs = env.reset()
    for _ in range(4):
        if env.episode_start.any():
            one.reset(env.episode_start)
            many.reset(env.episode_start)
        actions = one.step(obs).copy()
        many.step(obs)
        assert_same(one, many)
        obs = env.step(actions)
    many.resize(6 * BLOCK)  # a resize allocates there again, and the workers start on it
    assert many.workers == 2
    assert all(is_shared(a) for a in [*many.qs, *many.prior, many.q_pi, many.action])
    many.stop_workers()
    moved.stop_workers()


def test_one_block_means_one_process() -> None:
    env: Any = make_env("grid10", BLOCK, seed=1)
    g = AifAgentGroup(env.model, BLOCK, block_size=BLOCK)
    assert g.start_workers(4) == 1
    assert g.workers == 1


@pytest.mark.parametrize("workload", ["grid10", "explorer"])
def test_workers_with_the_deep_planner_give_the_results_of_one_process(workload: str) -> None:
    settings = AifSettings(policy_len=2)
    env, one, many = pair(workload, 3 * BLOCK + 5, 2, settings=settings)
    assert one.cm.deep is not None  # two-step policies, deterministic moves: the deep planner
    obs = env.reset()
    for _ in range(6):
        if env.episode_start.any():
            one.reset(env.episode_start)
            many.reset(env.episode_start)
        actions = one.step(obs).copy()
        many.step(obs)
        assert_same(one, many)
        obs = env.step(actions)


def test_a_group_dropped_without_stopping_its_workers_ends_them() -> None:
    others = workers_module._Heap.holders  # an earlier test's groups' workers
    env: Any = make_env("grid10", 4 * BLOCK, seed=2)
    g = AifAgentGroup(env.model, 4 * BLOCK, block_size=BLOCK, name="dropped")
    g.start_workers(2)
    workers = g.cores.running
    assert workers is not None
    pids = workers.pids
    g.step(env.reset())
    assert gc.get_freeze_count() > 0
    del g, workers  # no cycle holds the group: reference counting frees it and its workers
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    assert_thawed(others)

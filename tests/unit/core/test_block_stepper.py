"""One block's tick (edge_agent.core.block_stepper): the stepper's functions, given a group's
state and a block, do what the group's step does; its block views follow the state's arrays; a
new compiled model that needs other scratch says so."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge_agent.aif import kernels
from edge_agent.aif.policies import construct_policies
from edge_agent.aif.settings import AifSettings
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.block_stepper import BlockStepper
from edge_agent.core.native_pass import NATIVE_ENV
from edge_agent.sim.registry import make_env


@pytest.fixture(autouse=True)
def _numpy_ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The blocks stepped by hand are numpy's: so are the groups' (on one process a group that
    does not learn would take the compiled tick)."""
    monkeypatch.setenv(NATIVE_ENV, "0")



@pytest.mark.parametrize(("world", "keep_prior"), [("grid10", True), ("grid10", False),
                                                   ("tmaze", True), ("explorer", True)])
def test_stepping_each_block_is_the_groups_step(world: str, keep_prior: bool) -> None:
    env: Any = make_env(world, 70, seed=3)
    kw: dict[str, Any] = {"block_size": 32, "keep_prior": keep_prior}
    group, by_hand = (AifAgentGroup(env.model, 70, **kw) for _ in range(2))
    obs = env.reset()
    for _ in range(4):
        actions = group.step(obs, record=False).copy()
        stepper = by_hand.stepper
        for rows in stepper.blocks(by_hand.state):
            stepper.step_block(by_hand.state, rows, by_hand.inputs.obs(obs, 70), None)
        by_hand.ticks += 1
        np.testing.assert_array_equal(by_hand.action, actions)
        for a, b in zip(group.qs, by_hand.qs, strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(group.q_pi, by_hand.q_pi)
        obs = env.step(actions)


def test_its_blocks_follow_the_states_arrays() -> None:
    env: Any = make_env("grid10", 100, seed=1)
    group = AifAgentGroup(env.model, 100, block_size=32)
    stepper, state = group.stepper, group.state
    rows = stepper.blocks(state)
    assert [r.sl for r in rows] == [slice(0, 32), slice(32, 64), slice(64, 96), slice(96, 100)]
    assert stepper.blocks(state) is rows  # made once
    assert np.shares_memory(rows[1].qs[0], state.qs[0])
    group.resize(40)  # new arrays: new views
    again = stepper.blocks(state)
    assert [r.sl for r in again] == [slice(0, 32), slice(32, 40)]
    assert np.shares_memory(again[1].qs[0], state.qs[0])
    dense = stepper.blocks(state, dense=True)
    assert all(r.index == -1 for r in dense)


def test_tables_that_need_other_scratch_say_so() -> None:
    env: Any = make_env("grid10", 10, seed=1)
    settings = AifSettings()
    policies = construct_policies(env.model.num_controls, 1, None)
    cm = kernels.compile_model(env.model, policies, dtype=np.float32)
    stepper = BlockStepper(cm, settings, np.dtype(np.float32), block_size=64, seed=0)
    same = kernels.compile_model(env.model, cm.tree.policies, dtype=np.float32)
    assert not stepper.install(same)
    assert stepper.cm is same
    two = AifAgentGroup(env.model, 1, settings=AifSettings(policy_len=2), precision="float64")
    other = BlockStepper(two.cm, settings, np.dtype(np.float64), block_size=64, seed=0)
    assert other.install(two.cm)  # a deep planner: its scratch is made again

"""The floors that keep the state-major kernels off subnormal floats, against no floors.

Near-certain float32 beliefs multiply into joints below the smallest normal float (x86-64 computes
on those slowly). :func:`~edge_agent.aif.kernels.fast_tables.belief_floor` puts a floor under
each factor's beliefs before they enter a joint (the fixed point's joint, the planner's predicted
joint states) and :func:`~edge_agent.aif.kernels.fast_tables.policy_exp_floor` under the policy
posterior's softmax arguments. Here: with them no intermediate array of a T-maze or grid2f tick is
subnormal (without them many are), and the results equal those without them up to rounding
(float32: a few ulps; float64: bit for bit).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from edge_agent.aif import kernels
from edge_agent.aif.kernels.fast_tables import belief_floor, policy_exp_floor
from edge_agent.aif.reference import EPS
from edge_agent.aif.settings import AifSettings
from edge_agent.core.agents import AifAgentGroup
from edge_agent.sim.registry import builtin_model, make_env

N = 300
TICKS = 12


def world_state(world: str, precision: str) -> tuple[kernels.CompiledModel, Any, Any]:
    """A group's compiled model, the priors its agents hold after ``TICKS`` ticks of the world
    (near-certain beliefs, as in the benchmarks) and the observations of the next tick."""
    group = AifAgentGroup(builtin_model(world), N, precision=precision)  # type: ignore[arg-type]
    env = make_env(world, N, seed=0)
    obs = env.reset()
    for _ in range(TICKS):
        obs = env.step(group.step(obs))
    state = group.state_dict()
    F = len(group.cm.num_states)
    return group.cm, [state[f"prior{f}"].copy() for f in range(F)], obs.copy()


def without_floors(cm: kernels.CompiledModel) -> kernels.CompiledModel:
    fast = dataclasses.replace(cm.fast, floor=np.zeros((), dtype=cm.dtype), exp_floor=None,
                               floor_predictions=False)
    return dataclasses.replace(cm, fast=fast)


def tick(cm: kernels.CompiledModel, prior: list[np.ndarray], obs: np.ndarray) -> dict[str, Any]:
    """Inference and the policy tree of one block, as a group's tick runs them; the results and
    the block (its scratch holds the last iteration's joint and the last depth's joint states)."""
    settings = AifSettings()
    blk = kernels.Workspace(cm, N, info_gain=True).block(N)
    qs = [np.full((N, s), np.nan, dtype=cm.dtype) for s in cm.num_states]
    kernels.infer_block(cm, obs, prior, qs, blk, num_iter=settings.num_iter,
                        dF_tol=settings.dF_tol)
    kernels.evaluate_block(cm, blk, use_utility=True, use_info_gain=True, gamma=settings.gamma)
    return {"qs": qs, "G": blk.G.copy(), "q_pi": blk.x.copy(), "blk": blk}


def subnormals(*arrays: np.ndarray) -> int:
    total = 0
    for a in arrays:
        x = np.abs(a)
        total += int(np.count_nonzero((x > 0) & (x < np.finfo(a.dtype).tiny)))
    return total


@pytest.mark.parametrize("world", ["tmaze", "grid2f"])
def test_no_subnormal_numbers_in_a_float32_tick(world: str) -> None:
    cm, prior, obs = world_state(world, "int8")
    assert cm.dtype == np.float32
    for floors, model in (("with", cm), ("without", without_floors(cm))):
        blk = tick(model, prior, obs)["blk"]
        n = subnormals(blk.joint, blk.weighted, blk.stk_t, blk.X, blk.x)
        if floors == "with":
            assert n == 0, f"{world}: {n} subnormal numbers with the floors"
        else:  # what the floors are there for (and what makes this test able to fail)
            assert n > 0, f"{world}: no subnormal numbers without the floors either"


@pytest.mark.parametrize("precision", ["int8", "float64"])
@pytest.mark.parametrize("world", ["tmaze", "grid2f"])
def test_the_floors_change_results_only_by_rounding(world: str, precision: str) -> None:
    cm, prior, obs = world_state(world, precision)
    floored = tick(cm, prior, obs)
    exact = tick(without_floors(cm), prior, obs)
    # float64: the floor lies below every belief (and the predictions are not floored): bit
    # for bit. float32: a few ulps; q_pi below 1e-28 of the best policy's raised to it.
    tol = {"rtol": 0.0, "atol": 0.0} if cm.dtype == np.float64 else {"rtol": 1e-6, "atol": 1e-12}
    for f, q in enumerate(floored["qs"]):
        np.testing.assert_allclose(q, exact["qs"][f], err_msg=f"qs{f}", **tol)
    np.testing.assert_allclose(floored["G"], exact["G"], err_msg="G", **tol)
    np.testing.assert_allclose(floored["q_pi"], exact["q_pi"], err_msg="q_pi", **tol)


@pytest.mark.parametrize("num_factors", [2, 3, 4, 8])
def test_the_belief_floor_keeps_joints_normal_and_float64_unchanged(num_factors: int) -> None:
    f32 = belief_floor(np.dtype(np.float32), num_factors)
    assert f32 <= 2.0**-40  # a bound on what the floor changes (see its docstring)
    tiny32 = np.finfo(np.float32).tiny
    if num_factors == 2:  # a joint of floored beliefs, times |ln(L + eps)| >= 2^-24: normal
        assert f32**num_factors * 2.0**-24 >= tiny32
    elif num_factors == 3:  # the joint itself (the cap 2^-40 leaves less headroom)
        assert f32**num_factors >= tiny32
    f64 = belief_floor(np.dtype(np.float64), num_factors)
    assert f64**num_factors * 2.0**-24 >= np.finfo(np.float64).tiny
    assert f64 < EPS**2 / 200_000  # below every belief of the fixed point: a no-op


def test_the_policy_softmax_floor_is_float32_only() -> None:
    assert policy_exp_floor(np.dtype(np.float64)) is None
    least = policy_exp_floor(np.dtype(np.float32))
    assert least is not None
    smallest = np.exp(np.float32(least)) / np.float32(2.0**32)  # divided by a sum of 2^32 terms
    assert smallest >= np.finfo(np.float32).tiny

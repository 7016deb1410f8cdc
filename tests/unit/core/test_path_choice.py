"""Where a group's tick path is chosen (edge_agent.core.path_choice): a group the compiled tick
can take measures both paths once when it is made (measure_costs: scratch state of its own, the
group's untouched) and keeps the cheaper, the numbers in its status; ``EDGE_AGENT_NATIVE_TICK``
``1`` takes the compiled tick unmeasured, ``0`` keeps numpy. The clock is the test's own: no
test here depends on how fast the machine is."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge_agent.core import agents
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.native_pass import NATIVE_ENV, frozen_kernel
from edge_agent.core.path_choice import MEASURE_AGENTS, TickCosts, measure_costs
from edge_agent.core.tick_paths import CompiledTick, FusedTick
from edge_agent.sim.registry import builtin_model, make_env


class _Clock:
    """A clock that moves only when told (the tests' timer)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _SlowKernel:
    """The compiled tick, each step moving ``clock`` on by ``cost`` seconds."""

    def __init__(self, kernel: Any, clock: _Clock, cost: float) -> None:
        self._kernel, self._clock, self._cost = kernel, clock, cost

    def step(self, *args: Any, **kwargs: Any) -> None:
        self._kernel.step(*args, **kwargs)
        self._clock.now += self._cost


def _group(n: int, monkeypatch: pytest.MonkeyPatch, env: str | None, **kwargs: Any
           ) -> AifAgentGroup:
    if env is None:
        monkeypatch.delenv(NATIVE_ENV, raising=False)
    else:
        monkeypatch.setenv(NATIVE_ENV, env)
    group = AifAgentGroup(builtin_model("tmaze"), n, precision="int8", **kwargs)
    monkeypatch.delenv(NATIVE_ENV, raising=False)
    return group


@pytest.mark.parametrize("native_cost", [0.0, 1.0])
def test_measure_costs_times_each_path_on_its_own_scratch(native_cost: float) -> None:
    """Each path's fastest timed tick, by the timer given: the compiled tick's steps cost what
    the clock says, numpy's nothing; a tie keeps the compiled tick."""
    group = AifAgentGroup(builtin_model("tmaze"), 3, precision="int8")
    kernel = frozen_kernel(group.cm, group.settings)
    assert not isinstance(kernel, str)
    clock = _Clock()
    costs = measure_costs(_SlowKernel(kernel, clock, native_cost), group.cm,  # type: ignore[arg-type]
                          group.settings, group.dtype, n_agents=3, keeps_prior=True,
                          block_size=16, timer=clock)
    assert costs == TickCosts(native_s=native_cost, numpy_s=0.0, agents=3)
    assert costs.native_faster == (native_cost == 0.0)


def test_measure_costs_leaves_the_group_s_state_alone_and_caps_the_agents() -> None:
    """The measurement steps scratch state of its own, at most MEASURE_AGENTS agents: the
    group's beliefs and actions are those of a group never stepped."""
    n = MEASURE_AGENTS + 5
    group = AifAgentGroup(builtin_model("tmaze"), n, precision="int8")
    before = {k: np.array(v, copy=True) for k, v in group.state_dict().items()}
    kernel = frozen_kernel(group.cm, group.settings)
    assert not isinstance(kernel, str)
    costs = measure_costs(kernel, group.cm, group.settings, group.dtype, n_agents=n,
                          keeps_prior=group.state.keeps_prior, block_size=64)
    assert costs.agents == MEASURE_AGENTS
    assert np.isfinite([costs.native_s, costs.numpy_s]).all()
    for key, value in group.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


@pytest.mark.parametrize("native_faster", [True, False])
def test_a_group_keeps_the_path_measured_cheaper_and_says_so(
    native_faster: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group steps on the path measured cheaper, its status says which and the costs, and
    its ticks are numpy's twin's up to rounding either way."""
    costs = TickCosts(native_s=0.001 if native_faster else 0.007, numpy_s=0.003, agents=9)
    monkeypatch.setattr(agents, "measure_costs", lambda *a, **k: costs)
    group = _group(9, monkeypatch, None)
    twin = _group(9, monkeypatch, "0")
    described = group.describe()
    assert described["stepping_cost"] == {"native_ms": costs.native_s * 1e3,
                                          "numpy_ms": 3.0, "agents": 9}
    if native_faster:
        assert type(group.path) is CompiledTick
        assert described["stepping"] == "native"
    else:
        assert type(group.path) is FusedTick
        assert described["stepping"] == ("numpy: measured faster (numpy 3 ms a tick, the "
                                         "compiled tick 7 ms (9 agents))")
    env = make_env("tmaze", 9, seed=3)
    obs = env.reset()
    for _ in range(6):
        twin.step(obs)
        group.step(obs)
        np.testing.assert_allclose(group.state.q_pi, twin.state.q_pi, rtol=0, atol=2e-4)
        obs = env.step(twin.action.copy())
        for name in ("action", "has_action"):
            getattr(group.state, name)[...] = getattr(twin.state, name)


@pytest.mark.parametrize(("env", "path"), [("1", CompiledTick), ("0", FusedTick)])
def test_the_environment_takes_a_path_unmeasured(
    env: str, path: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``EDGE_AGENT_NATIVE_TICK=1``: the compiled tick, ``0``: numpy; neither measures."""
    def refuse(*args: Any, **kwargs: Any) -> TickCosts:
        raise AssertionError("measured")

    monkeypatch.setattr(agents, "measure_costs", refuse)
    group = _group(4, monkeypatch, env)
    assert type(group.path) is path
    assert "stepping_cost" not in group.describe()

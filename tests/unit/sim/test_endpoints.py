"""A world as a group's source (edge_agent.sim.endpoints): the score of a health window."""

from __future__ import annotations

import numpy as np

from edge_agent.core.agents import AifAgentGroup
from edge_agent.sim.endpoints import WorldSource


def _walk(source: WorldSource, group: AifAgentGroup, ticks: int) -> None:
    for _ in range(ticks):
        obs, _, starts = source.take()
        if starts is not None:
            group.reset(starts)
        source.step(group.step(obs))


def test_each_agents_score_over_a_window_is_what_the_world_counted_in_it() -> None:
    """The T-maze's score is rewards less losses, the grid's goals reached: per agent, what
    their counters grew by since the window before."""
    for name in ("tmaze", "grid10"):
        source = WorldSource(name, 24, seed=1)
        group = AifAgentGroup(source.world.model, 24)  # type: ignore[attr-defined]
        _walk(source, group, 30)
        first = source.score_window()
        assert first is not None
        world: object = source.world
        total = world.scores()  # type: ignore[attr-defined]
        np.testing.assert_array_equal(first, total)  # the first window started at 0
        assert first.sum() > 0, name  # the agents are rewarded / reach their goals
        _walk(source, group, 30)
        second = source.score_window()
        assert second is not None
        np.testing.assert_array_equal(second, world.scores() - total)  # type: ignore[attr-defined]
        if name == "tmaze":
            env = source.world
            np.testing.assert_array_equal(
                world.scores(),  # type: ignore[attr-defined]
                env.rewards - env.losses.astype(np.float64),  # type: ignore[attr-defined]
            )


def test_a_world_without_a_score_gives_none() -> None:
    source = WorldSource("sensors", 4, seed=0)
    assert source.score_window() is None

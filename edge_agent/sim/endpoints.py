"""A simulated world as a group's source and sink (the ``sim`` source and sink of the config).

:class:`WorldSource` gives each tick the world's last observations (and its outcomes, for kinds
that observe some modalities directly) and which agents start a new episode; its
:attr:`WorldSource.sink` steps the world with the agents' actions. A group on a ``sim`` source
always has the world among its sinks, whatever else its actions go to: the world steps with the
agents. Both satisfy :class:`edge_agent.core.contract.Source` and
:class:`~edge_agent.core.contract.Sink` by their shape (``sim`` does not import ``core``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_agent.sim import format_summary
from edge_agent.sim.registry import make_env

__all__ = ["WorldSink", "WorldSource"]


class WorldSource:
    """The built-in world ``name`` of ``n_agents`` agents, seeded with ``seed`` (``params``:
    the world's own, as :func:`~edge_agent.sim.registry.make_env` takes them)."""

    def __init__(self, name: str, n_agents: int, *, seed: int, **params: Any) -> None:
        self.name = name
        self.seed = seed
        self.params = params
        self.world = make_env(name, n_agents, seed=seed, **params)
        #: ``(n_agents, ...)``: the world's last observation (a view the world reuses).
        self.obs: np.ndarray = self.world.reset()
        self.sink = WorldSink(self)
        self._scores = self._world_scores()  # where the current health window started

    def take(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The observations of the last step, the world's outcomes when it reports them, and
        the agents whose episode started at that step (None: none); never waits."""
        started = self.world.episode_start
        outcomes = getattr(self.world, "outcomes", None)  # a world that reports outcomes
        return self.obs, outcomes, started if started.any() else None

    def step(self, actions: np.ndarray) -> None:
        """Step the world with ``actions``: the next tick's observations."""
        self.obs = self.world.step(actions)

    def resize(self, n_agents: int) -> None:
        """Build the world again for ``n_agents``: every agent's episode starts afresh (the
        next :meth:`take` says so)."""
        self.world = make_env(self.name, n_agents, seed=self.seed, **self.params)
        self.obs = self.world.reset()
        self._scores = self._world_scores()

    def _world_scores(self) -> np.ndarray | None:
        scores = getattr(self.world, "scores", None)  # a world that defines a score
        return None if scores is None else scores()

    def score_window(self) -> np.ndarray | None:
        """``(n_agents,)``: each agent's score over the health window that ends now (the growth
        of the world's :meth:`~edge_agent.sim.BatchEnv.scores`), and a new window; None: the
        world defines no score."""
        last, now = self._scores, self._world_scores()
        self._scores = now
        if last is None or now is None or last.shape != now.shape:
            return None
        out: np.ndarray = now - last
        return out

    def carry_over(self, prev: object) -> None:
        """Nothing: a reloaded group's world starts afresh."""
        del prev

    def connect(self, port: object) -> None:
        """Nothing: a world needs no fleet link."""
        del port

    def rejected(self) -> None:
        """Nothing: a world's input is never rejected."""

    def counters(self) -> dict[str, int]:
        return {}

    def describe(self) -> dict[str, Any]:
        summary = self.world.summary()
        return {"world": {k: v if isinstance(v, int) else round(v, 4) for k, v in summary.items()}}

    def report_line(self) -> str:
        """What the agents achieved, beside what the world says it compares to (its agent
        count is the report's own)."""
        summary = {k: v for k, v in self.world.summary().items() if k != "agents"}
        return format_summary(summary, self.world.references())


class WorldSink:
    """The agents' actions back into their :class:`WorldSource`'s world (the source owns the
    world: it resizes it)."""

    def __init__(self, source: WorldSource) -> None:
        self._source = source

    def put(self, tick: int, actions: np.ndarray) -> None:
        del tick
        self._source.step(actions)

    def resize(self, n_agents: int) -> None:
        del n_agents  # the source builds the world again

    def connect(self, port: object) -> None:
        del port

    def describe(self) -> dict[str, Any]:
        return {}

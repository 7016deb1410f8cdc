"""A deployment's shadow: the candidate model's agents stepped beside the live group's
(``docs/health.md`` "Shadow evaluation").

Each tick the live group steps, the shadow steps the candidate's agents on **the same
observations** (and the same episode starts), then commits the live group's actions to them:
the candidate keeps its own beliefs, its actions are computed and never taken (no sink sees
them), and its next prior follows what actually moved the world. The two groups' health parts
measure the same agents on the same ticks and tell a :class:`~edge_agent.core.shadow.
PairedExcess` their excess surprise, which makes the paired result the node reports.

The candidate is one batched group like any other (reserved in the memory budget by whoever
built it), stepped once per tick: no per-agent Python. An exception in it stops the shadow (the
live group goes on); :meth:`ShadowRun.finish` says why.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from edge_agent.core.contract import AgentGroup, Shadows
from edge_agent.core.shadow import PairedExcess, PairedResult
from edge_agent.errors import EdgeAgentError

logger = logging.getLogger(__name__)

__all__ = ["ShadowRun"]


class ShadowRun:
    """The candidate ``candidate`` running beside ``live`` for ``duration_s`` seconds (monotonic
    clock from now); EdgeAgentError when either cannot run as a shadow
    (:class:`~edge_agent.core.contract.Shadows`)."""

    def __init__(
        self, live: AgentGroup, candidate: AgentGroup, *, group: str, duration_s: float
    ) -> None:
        if not isinstance(live, Shadows) or not isinstance(candidate, Shadows):
            raise EdgeAgentError(
                f"group {group!r}: only Active Inference groups that measure health can run a "
                "candidate as a shadow"
            )
        if live.n_agents != candidate.n_agents:
            raise EdgeAgentError(
                f"group {group!r}: the shadow has {candidate.n_agents} agents, the group "
                f"{live.n_agents}"
            )
        self.group = group
        self.duration_s = float(duration_s)
        self.started = time.monotonic()
        self.pairs = PairedExcess()
        self.ticks = 0
        self.failed: str | None = None
        self._live = live
        self._candidate = candidate
        self.took_beliefs = candidate.shadow(live, self.pairs.candidate)
        live.tap_excess(self.pairs.live)

    def step(
        self,
        obs: np.ndarray,
        now: float,
        outcomes: np.ndarray | None,
        starts: np.ndarray | None,
        actions: np.ndarray,
    ) -> None:
        """The live group stepped on ``obs`` (``starts``: the agents it reset first) and chose
        ``actions``: step the candidate on the same, then commit ``actions`` to it."""
        if self.failed is not None:
            return
        candidate = self._candidate
        try:
            # (the agents of starts reset first; its own actions: computed, never taken)
            candidate.advance(obs, now, outcomes, starts)
            candidate.set_action(actions)
            self.ticks += 1
        except Exception as err:  # the candidate's boundary: the live group goes on
            logger.exception("group %s: the shadow of the candidate failed", self.group)
            self.failed = f"{type(err).__name__}: {err}"
            self._live.tap_excess(None)

    def due(self) -> bool:
        """True once the stated time is over (or the candidate failed)."""
        return self.failed is not None or time.monotonic() - self.started >= self.duration_s

    def finish(self) -> PairedResult:
        """Stop: the live group is no longer tapped, the candidate's agents are released; the
        paired result. EdgeAgentError when the candidate failed or its beliefs are not finite."""
        self._live.tap_excess(None)
        try:
            if self.failed is None and not self._candidate.finite():
                self.failed = "non-finite beliefs"
        finally:
            self._candidate.release()
        if self.failed is not None:
            raise EdgeAgentError(f"the candidate failed in its shadow: {self.failed}")
        return self.pairs.result()

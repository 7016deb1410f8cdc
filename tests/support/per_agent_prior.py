"""A per-agent learning group's prior as its numpy stages make it, for tests that compare a
compiled pass's with it (after a per-agent compiled tick ``state.prior`` holds the next tick's
prior, which is this)."""

from __future__ import annotations

import numpy as np

from edge_agent.aif import per_agent
from edge_agent.core.agents import AifAgentGroup


def per_agent_prior(group: AifAgentGroup) -> list[np.ndarray]:
    """Each agent's own ``B`` of its action times its posterior (``D`` where it has not
    acted), from ``group``'s state and per-agent tables."""
    state, scope = group.state, group.learning.scope  # type: ignore[union-attr]
    B = [scope.transition_table(f) for f in range(len(state.qs))]  # type: ignore[attr-defined]
    return per_agent.priors(B, scope.tables["D"], state.qs, state.action,  # type: ignore[attr-defined]
                            state.has_action)

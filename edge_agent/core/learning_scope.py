"""The learning group a scope of counts needs: :func:`learning_group`.

``shared`` counts: :class:`~edge_agent.core.learning.LearningAgentGroup`; ``per_agent``:
:class:`~edge_agent.core.per_agent_learning.PerAgentLearningGroup`, a subclass of it. Choosing
here, above both, keeps the two modules from importing each other, and a group of one scope never
imports the other's module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_agent.aif.learning import LearningSpec
    from edge_agent.aif.model import GenerativeModel
    from edge_agent.aif.quant import QuantizedModel
    from edge_agent.core.learning import LearningAgentGroup

__all__ = ["learning_group"]


def learning_group(
    model: GenerativeModel | QuantizedModel,
    n_agents: int,
    *,
    learning: LearningSpec,
    **kwargs: Any,
) -> LearningAgentGroup:
    """The learning group for ``learning.settings.scope`` (module docstring); ``kwargs`` go to
    its constructor."""

    if learning.settings.scope == "per_agent":
        from edge_agent.core.per_agent_learning import PerAgentLearningGroup  # noqa: PLC0415

        return PerAgentLearningGroup(model, n_agents, learning=learning, **kwargs)
    from edge_agent.core.learning import LearningAgentGroup  # noqa: PLC0415

    return LearningAgentGroup(model, n_agents, learning=learning, **kwargs)

"""A group's learning, with the tables of its counts' scope: :func:`group_learning`.

``shared`` counts refresh one model (:class:`~edge_agent.core.shared_learning.SharedTables`);
``per_agent`` counts each agent's own tables (:class:`~edge_agent.core.per_agent_learning.
AgentTables`). Choosing here keeps :mod:`edge_agent.core.learning` from importing either scope,
and a group of one scope never imports the other's module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_agent.aif.learning import Learner
from edge_agent.core.learning import GroupLearning
from edge_agent.errors import InputError, ModelError

if TYPE_CHECKING:
    import numpy as np

    from edge_agent.aif import kernels
    from edge_agent.aif.learning import LearningSpec
    from edge_agent.aif.model import GenerativeModel
    from edge_agent.aif.quant import QuantizedModel
    from edge_agent.aif.settings import AifSettings
    from edge_agent.core.per_agent_learning import AgentTables
    from edge_agent.core.shared_learning import SharedTables

__all__ = ["group_learning"]


def group_learning(
    spec: LearningSpec,
    model: GenerativeModel,
    quantized: QuantizedModel | None,
    cm: kernels.CompiledModel,
    *,
    n_agents: int,
    name: str,
    dtype: np.dtype,
    settings: AifSettings,
    trial_ends_at_reset: bool = False,
) -> GroupLearning:
    """The learning of a group of ``n_agents`` on ``model`` (float, as loaded; ``quantized``:
    the int8 codes an int8 group steps with, else None; ``cm``: the compiled tables) that learns
    ``spec``, with the tables of ``spec.settings.scope``, its learning ticks stepped in one
    compiled pass where it can (the scope builds it: :mod:`edge_agent.core.native_pass`). ``dtype``,
    ``settings``: the group's compute dtype and settings. InputError names the group for
    counts the model cannot take."""
    floats = model
    try:
        learner = Learner(
            floats.A,
            floats.B,
            floats.D,
            pA=spec.pA,
            pB=spec.pB,
            pD=spec.pD,
            settings=spec.settings,
            n_agents=n_agents,
        )
    except ModelError as err:
        raise InputError(f"group {name!r}: {err}") from err
    scope: AgentTables | SharedTables
    if spec.settings.scope == "per_agent":
        from edge_agent.core.per_agent_learning import AgentTables  # noqa: PLC0415

        scope = AgentTables(floats, learner, n_agents, info_gain=settings.use_states_info_gain)
    else:
        from edge_agent.core.shared_learning import SharedTables  # noqa: PLC0415

        scope = SharedTables(floats, quantized, cm, dtype.type)
    scope.build_pass(learner, spec, cm=cm, settings=settings, n_agents=n_agents)
    return GroupLearning(
        spec,
        learner,
        floats,
        scope,
        name=name,
        dtype=dtype,
        cm=cm,
        gamma=settings.gamma,
        trial_ends_at_reset=trial_ends_at_reset,
    )

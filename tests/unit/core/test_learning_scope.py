"""A group's learning with the tables of its counts' scope (edge_agent.core.learning_scope)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.aif import kernels
from edge_agent.aif.learning import LearningSettings, LearningSpec
from edge_agent.aif.policies import construct_policies
from edge_agent.aif.settings import AifSettings
from edge_agent.core.learning_scope import group_learning
from edge_agent.core.per_agent_learning import AgentTables
from edge_agent.core.shared_learning import SharedTables
from edge_agent.errors import InputError
from edge_agent.sim.tmaze_reversal import tmaze_reversal_model


@pytest.mark.parametrize(("scope", "tables"), [("shared", SharedTables),
                                               ("per_agent", AgentTables)])
def test_the_scope_picks_the_tables(scope: str, tables: type) -> None:
    model = tmaze_reversal_model()
    cm = kernels.compile_model(model, construct_policies(model.num_controls, 1, None),
                               dtype=np.float64)
    spec = LearningSpec(pA={1: model.A[1] * 2.0 + 0.5},
                        settings=LearningSettings(scope=scope))  # type: ignore[arg-type]
    learning = group_learning(spec, model, None, cm, n_agents=3, name="g",
                              dtype=np.dtype(np.float64), settings=AifSettings(gamma=16.0))
    assert isinstance(learning.scope, tables)
    assert learning.scope.name == scope
    assert learning.spec is spec
    assert learning.model is model
    assert (learning.scope.stepping() is not None) == (scope == "per_agent")
    counts = learning.learner.pA
    assert counts is not None
    agents = (3,) if scope == "per_agent" else ()  # per agent: one copy of the counts each
    assert counts.counts[0].shape == (*agents, *counts.prior[0].shape)


def test_counts_the_model_cannot_take_are_refused_naming_the_group() -> None:
    model = tmaze_reversal_model()
    cm = kernels.compile_model(model, construct_policies(model.num_controls, 1, None),
                               dtype=np.float64)
    spec = LearningSpec(pA={7: np.ones((2, 2))})
    with pytest.raises(InputError, match=r"group 'maze': pA7: learning asked for modality 7"):
        group_learning(spec, model, None, cm, n_agents=2, name="maze",
                       dtype=np.dtype(np.float64), settings=AifSettings(gamma=16.0))

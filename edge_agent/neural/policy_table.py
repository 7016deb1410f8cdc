"""A group's ``[groups.policy]`` table: how a neural policy's discrete outputs become actions.

``[groups.policy]`` with ``selection = "sample"`` and ``temperature = 0.5`` makes each agent of a
``neural`` group (:mod:`edge_agent.kinds.neural`) sample its action from ``softmax(logits / T)``
with the group's seed instead of taking the argmax. The table is the neural kind's own
(:mod:`edge_agent.config.group_tables` lists it); a group without it takes the argmax.
"""

from __future__ import annotations

from typing import Annotated, Literal

from edge_agent.records import Record, Rule

__all__ = ["KEY", "NeuralPolicy"]

#: The table's key in a ``[[groups]]`` table.
KEY = "policy"


class NeuralPolicy(Record):
    """``[groups.policy]``: how a neural policy's discrete outputs become actions."""

    selection: Annotated[
        Literal["argmax", "sample"],
        Rule(description="argmax of the logits, or a sample from softmax(logits / T)."),
    ] = "argmax"
    temperature: Annotated[
        float, Rule(gt=0, le=100, description="T of the softmax when selection is 'sample'.")
    ] = 1.0

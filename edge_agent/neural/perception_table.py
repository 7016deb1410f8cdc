"""A group's ``perception`` table: the neural classifier in front of its Active Inference model.

``perception = { type = "bundle", path = "...", evidence = "soft" }`` in a ``[[groups]]`` table
makes the group one of kind ``perception`` (:mod:`edge_agent.kinds.perception`): each agent's
sensor input goes through the classifier of the signed neural bundle at ``path``, whose output
becomes evidence for the model's first modalities. The table is the perception kind's own
(:mod:`edge_agent.config.group_tables` lists it); its hooks say which kind it selects, where a
problem with its bundle is reported and what ``check-config`` and the status show of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from edge_agent.records import PATH, Record, Rule

__all__ = ["KEY", "PerceptionTable"]

#: The table's key in a ``[[groups]]`` table.
KEY = "perception"


class PerceptionTable(Record):
    """A signed neural bundle that turns each agent's sensor input into evidence."""

    type: Annotated[Literal["bundle"], Rule(description="Selects this kind of perception.")]
    path: Annotated[
        Path, Rule(description="Bundle directory or .tar; relative to the config file."), PATH
    ]
    evidence: Annotated[
        Literal["soft", "hard"],
        Rule(
            description="soft: the classifier's probabilities weigh the likelihood; hard: its "
            "argmax is the observation."
        ),
    ] = "soft"

    # -- the table's hooks (edge_agent.config.group_tables) ------------------------------------
    def kind_for(self, model_kind: str) -> str | None:
        """An Active Inference model with a perception table runs as a ``perception`` group."""
        return "perception" if model_kind == "aif" else None

    def problem_keys(self, message: str) -> tuple[str, ...] | None:
        """A problem that names the perception bundle is reported at its ``path``."""
        return (KEY, "path") if str(self.path) in message else None

    def summary_model(self) -> str:
        """What ``check-config`` adds to the group's model."""
        return f"perception {self.path} ({self.evidence})"

    def status(self) -> dict[str, Any]:
        """What the status file shows of the table in the group's entry."""
        return {KEY: f"bundle {self.path}"}

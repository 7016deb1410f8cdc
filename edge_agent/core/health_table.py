"""A group's ``[groups.health]`` table: its drift alarm's parameters and what a neural group
counts as a low-confidence step (``docs/health.md``).

Every kind that measures health takes it (``measures_health`` on the kind: ``aif``,
``perception``, ``neural``); a group without it runs with the defaults, which are what
``docs/health.md`` measured.
"""

from __future__ import annotations

from typing import Annotated

from edge_agent.core.drift import DriftSettings
from edge_agent.records import Record, Rule

__all__ = ["KEY", "TABLE", "HealthTable"]

#: The table's key in a ``[[groups]]`` table.
KEY = "health"
TABLE = "[groups.health]"
_DEFAULT = DriftSettings()


class HealthTable(Record):
    """``[groups.health]``: the group's drift alarm on its excess surprise (Active Inference
    groups) and the threshold of a low-confidence step (neural groups); docs/health.md."""

    drift_tolerance: Annotated[
        float,
        Rule(ge=0, le=100, description="Excess surprise (nats per agent-step) tolerated before "
             "it counts against the model."),
    ] = _DEFAULT.tolerance
    drift_allowance: Annotated[
        float,
        Rule(gt=0, le=100, description="Allowance per measured tick, in standard errors: "
             "larger, fewer false alarms and later detection."),
    ] = _DEFAULT.drift
    drift_threshold: Annotated[
        float,
        Rule(gt=0, le=1e6, description="The drift statistic above which the alarm fires."),
    ] = _DEFAULT.threshold
    low_confidence: Annotated[
        float,
        Rule(gt=0, lt=1, description="A neural group's step is low-confidence when its top "
             "output's probability is under this."),
    ] = 0.5

    def drift(self) -> DriftSettings:
        """The drift detector's parameters."""
        return DriftSettings(
            tolerance=self.drift_tolerance, drift=self.drift_allowance,
            threshold=self.drift_threshold,
        )

    def refusal(self, kind: object, kind_name: str) -> str | None:
        """Why a group of ``kind`` cannot take the table: only kinds that measure health do."""
        if getattr(kind, "measures_health", False):
            return None
        return f"{TABLE} is for groups that measure their health; a {kind_name} group does not"

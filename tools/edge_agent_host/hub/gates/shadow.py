"""A rollout's gate on the canaries' shadow evaluation (docs/hub.md "Shadow evaluation on the
canaries", docs/health.md "Shadow evaluation").

With ``rollout start --shadow-s S`` each node of the first wave (the canaries) runs the new
bundle as a shadow beside its live group for ``S`` seconds before it switches, and its final
deploy result carries the paired differences, candidate less live excess surprise on the same
agents, ticks and observations, one per window of 16 ticks
(:data:`~edge_agent.core.shadow.PAIR_BLOCK` measured ticks; ``shadow_diffs``, docs/protocol.md).
A shadow criterion judges them as soon as the wave is deployed::

    shadow:excess_surprise:max_increase=D[:min_pairs=N][:alpha=A][:dry_run]

The differences of every canary are pooled (each window is one pair). The verdict:

* **inconclusive** with fewer than ``min_pairs`` windows (default :data:`DEFAULT_MIN_PAIRS`:
  pairs on the same observations need far fewer than two groups of nodes);
* **fail** when a one-sided Wilcoxon signed-rank test (:mod:`.wilcoxon`) finds the differences
  less ``D`` centred above 0 at level ``alpha`` (default 0.05): the candidate's excess surprise
  is more than ``D`` nats above the live model's;
* **pass** otherwise (a model shadowing itself differs by exactly 0: a pass).

It is one more kind of :class:`~.health.Criterion`: the runner records its verdicts with the
others' and halts on a fail, pauses on an inconclusive one, only records one in dry run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal, Protocol

import numpy as np
from pydantic import Field

from edge_agent.fleet.protocol import CommandResult
from edge_agent_host.hub.base.strict import StrictModel
from edge_agent_host.hub.gates.criterion_text import (
    CriterionError,
    criterion_fields,
    criterion_model,
    criterion_number,
)
from edge_agent_host.hub.gates.health import (
    DEFAULT_ALPHA,
    Outcome,
    Verdict,
    WaveWindow,
    format_p,
    verdict_of,
)
from edge_agent_host.hub.gates.wilcoxon import wilcoxon_signed_rank

__all__ = [
    "DEFAULT_MIN_PAIRS",
    "SHADOW_PREFIX",
    "ShadowCriterion",
    "ShadowEvidence",
    "ShadowResults",
    "parse_shadow_criterion",
]

DEFAULT_MIN_PAIRS: Final = 20
SHADOW_PREFIX: Final = "shadow:"
#: The measures a node pairs in its shadow.
SHADOW_MEASURES: Final = ("excess_surprise",)


class ShadowEvidence(Protocol):
    """Where a shadow criterion reads the canaries' paired differences."""

    def shadow_diffs(self, nodes: Sequence[str]) -> dict[str, list[float]]: ...


class ShadowResults:
    """The canaries' final deploy results as :class:`ShadowEvidence` (``shadow_diffs`` of each
    result that has them)."""

    def __init__(self, results: Mapping[str, CommandResult]) -> None:
        self.results = results

    def shadow_diffs(self, nodes: Sequence[str]) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for node in nodes:
            result = self.results.get(node)
            diffs = None if result is None else result.data.get("shadow_diffs")
            if isinstance(diffs, list):
                out[node] = [float(d) for d in diffs if isinstance(d, int | float)]
        return out


class ShadowCriterion(StrictModel):
    """A criterion on the canaries' shadow (module docstring); stored in the rollout's plan."""

    kind: Literal["shadow"] = "shadow"
    measure: Literal["excess_surprise"] = "excess_surprise"
    threshold: float = Field(ge=0.0, le=1e9, description="the tolerated increase (nats)")
    min_pairs: int = Field(DEFAULT_MIN_PAIRS, ge=3, le=1_000_000)
    alpha: float = Field(DEFAULT_ALPHA, gt=0.0, lt=0.5)
    dry_run: bool = False

    def text(self) -> str:
        """The criterion as ``--criterion`` takes it (every field spelled out)."""
        parts = [
            "shadow",
            self.measure,
            f"max_increase={self.threshold:g}",
            f"min_pairs={self.min_pairs}",
            f"alpha={self.alpha:g}",
        ]
        if self.dry_run:
            parts.append("dry_run")
        return ":".join(parts)

    def evaluate(self, window: WaveWindow, evidence: ShadowEvidence) -> Verdict:
        diffs = evidence.shadow_diffs(window.wave_nodes)
        return self.judge([d for values in diffs.values() for d in values], len(diffs))

    def judge(self, diffs: Sequence[float], nodes: int) -> Verdict:
        """The verdict on the pooled differences of ``nodes`` canaries (pure)."""
        d = np.asarray(diffs, dtype=np.float64)
        value = float(d.mean()) if d.size else None
        shown = "n/a" if value is None else f"{value:+.4g}"
        what = (
            f"shadow {self.measure} candidate - live mean {shown} nats "
            f"(max increase {self.threshold:g})"
        )
        pairs = f"{d.size} pairs from {nodes} canar{'y' if nodes == 1 else 'ies'}"
        if d.size < self.min_pairs:
            return verdict_of(
                self, Outcome.INCONCLUSIVE, value, (d.size, nodes), test="none", p=None,
                detail=f"{what}: {pairs}, fewer than {self.min_pairs}",
            )  # fmt: skip
        test = wilcoxon_signed_rank(d - self.threshold, alternative="greater")
        outcome = Outcome.FAIL if test.p < self.alpha else Outcome.PASS
        described = (
            f"Wilcoxon signed-rank one-sided (normal, Pratt zeros): T+={test.t_plus:g}, "
            f"z={test.z:.3g}, p={format_p(test.p)} {'<' if outcome is Outcome.FAIL else '>='} "
            f"alpha {self.alpha:g}"
        )
        return verdict_of(
            self, outcome, value, (d.size, nodes), test=described, p=test.p,
            detail=f"{what}: {pairs}, {described}",
        )  # fmt: skip


_KEYS: Final = frozenset({"max_increase", "min_pairs", "alpha"})


def parse_shadow_criterion(text: str) -> ShadowCriterion:
    """``shadow:excess_surprise:max_increase=D[:min_pairs=N][:alpha=A][:dry_run]`` (module
    docstring); :class:`~.criterion_text.CriterionError` (one line) when it is malformed."""
    where = f"--criterion {text!r}"
    body = text.strip()
    if not body.startswith(SHADOW_PREFIX):
        raise CriterionError(f"{where}: a shadow criterion starts with {SHADOW_PREFIX!r}")
    measure, *rest = body.removeprefix(SHADOW_PREFIX).split(":")
    if measure not in SHADOW_MEASURES:
        raise CriterionError(
            f"{where}: a shadow pairs {', '.join(SHADOW_MEASURES)}, not {measure!r}"
        )
    fields, dry_run = criterion_fields(where, rest, _KEYS, refused={
        "max_decrease": f"{measure} is worse higher, so a drop is not what makes it worse; "
        "use max_increase=D"
    })  # fmt: skip
    if "max_increase" not in fields:
        raise CriterionError(f"{where}: give max_increase=D (nats)")
    values: dict[str, Any] = {"measure": measure, "dry_run": dry_run}
    for key, kind, name in (
        ("max_increase", float, "threshold"),
        ("min_pairs", int, "min_pairs"),
        ("alpha", float, "alpha"),
    ):
        if key in fields:
            values[name] = criterion_number(where, key, fields[key], kind)
    threshold = values["threshold"]
    if not math.isfinite(threshold) or threshold < 0.0:
        raise CriterionError(
            f"{where}: max_increase={fields['max_increase']} must be >= 0: it is how much more "
            "surprised than the live model the candidate may be"
        )
    return criterion_model(where, ShadowCriterion, values)

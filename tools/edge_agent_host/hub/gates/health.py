"""A rollout's gate on behaviour: criteria on the groups' health measures, and their verdicts.

A criterion names a health measure (:data:`~edge_agent.fleet.health_measures.MEASURES`), the
group that reports it (default: the rollout's) and how much worse the wave's nodes may be than
the nodes the rollout has not touched yet, over the same window (docs/hub.md "Rollouts gated on
behaviour")::

    MEASURE:max_increase=D[:group=G][:min_samples=N][:alpha=A][:dry_run]
    MEASURE:max_decrease=D[...]

``max_increase`` for a measure that is better lower (or near 0, as the excess surprise: higher is
worse), ``max_decrease`` for one that is better higher; either for a measure that describes
behaviour without a better side. ``D >= 0`` is in the measure's unit.

Each sample is one node's mean over one health window that lies inside the soak (a window
that began before the wave switched is left out). The verdict of a wave:

* **inconclusive** while either side has fewer than ``min_samples`` samples (default 50, as
  Kayenta asks): the runner pauses the rollout, and ``rollout resume`` judges again with the
  samples that came in meanwhile;
* **fail** when a one-sided Mann-Whitney U test (:mod:`.mann_whitney`) finds the wave's values,
  less the tolerated shift ``D``, stochastically worse than the untouched nodes' at level
  ``alpha`` (default 0.05): the runner halts the rollout and rolls the deployed nodes back;
* **pass** otherwise.

A criterion in **dry run** is judged and recorded the same way and never halts nor pauses.

A kind of criterion is one class with :meth:`HealthCriterion.evaluate` (the :class:`Criterion`
interface): it takes the wave's :class:`WaveWindow` and the evidence the runner reads from the
database and returns a :class:`Verdict`. A shadow evaluation (a paired test on the
canaries' own results) is one more kind beside :class:`HealthCriterion`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Final, Literal, Protocol

import numpy as np
from pydantic import Field

from edge_agent.fleet.health_measures import MEASURES, Better
from edge_agent.fleet.names import NAME_PATTERN
from edge_agent_host.hub.base.strict import StrictModel
from edge_agent_host.hub.gates.criterion_text import (
    CriterionError,
    criterion_fields,
    criterion_model,
    criterion_number,
)
from edge_agent_host.hub.gates.mann_whitney import mann_whitney_u

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_MIN_SAMPLES",
    "Criterion",
    "HealthCriterion",
    "HealthEvidence",
    "Judge",
    "Outcome",
    "Verdict",
    "WaveWindow",
    "check_reported",
    "format_p",
    "parse_criterion",
    "verdict_of",
]

DEFAULT_MIN_SAMPLES: Final = 50
DEFAULT_ALPHA: Final = 0.05


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, slots=True)
class Verdict:
    """One criterion's verdict on one wave: what ``rollout status``, the page and the hub's
    events show. ``value``: the wave's median minus the untouched nodes' (the measure's unit;
    None without samples); ``threshold``: the tolerated shift; ``samples``: the wave's and the
    untouched nodes'; ``test``: which test and its numbers; ``p``: its p-value."""

    criterion: str
    kind: str
    outcome: Outcome
    dry_run: bool
    value: float | None
    threshold: float
    wave_samples: int
    control_samples: int
    test: str
    p: float | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["outcome"] = self.outcome.value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        return cls(**{**data, "outcome": Outcome(data["outcome"])})


@dataclass(frozen=True, slots=True)
class WaveWindow:
    """What a wave is judged on: its deployed nodes against the untouched ones, in ``group``
    (the rollout's), over ``[since, until]`` (wall clock)."""

    group: str
    wave_nodes: Sequence[str]
    control_nodes: Sequence[str]
    since: float
    until: float


class HealthEvidence(Protocol):
    """Where a health criterion reads its samples (the rollout store)."""

    def health_means(
        self, nodes: Sequence[str], group: str, measure: str, since: float, until: float
    ) -> dict[str, list[float]]: ...


class Criterion(Protocol):
    """One kind of gate criterion (module docstring)."""

    dry_run: bool

    def text(self) -> str: ...

    def evaluate(self, window: WaveWindow, evidence: Any) -> Verdict: ...


class HealthCriterion(StrictModel):
    """A criterion on one health measure (module docstring); stored in the rollout's plan."""

    kind: Literal["health"] = "health"
    measure: str = Field(description="a health measure of the closed vocabulary")
    group: str | None = Field(None, pattern=NAME_PATTERN, description="default: the rollout's")
    direction: Literal["increase", "decrease"] = Field(description="which change is worse")
    threshold: float = Field(ge=0.0, le=1e9, description="the tolerated worsening (unit)")
    min_samples: int = Field(DEFAULT_MIN_SAMPLES, ge=3, le=1_000_000)
    alpha: float = Field(DEFAULT_ALPHA, gt=0.0, lt=0.5)
    dry_run: bool = False

    def text(self) -> str:
        """The criterion as ``--criterion`` takes it (every field spelled out)."""
        parts = [self.measure, f"max_{self.direction}={self.threshold:g}"]
        if self.group is not None:
            parts.append(f"group={self.group}")
        parts += [f"min_samples={self.min_samples}", f"alpha={self.alpha:g}"]
        if self.dry_run:
            parts.append("dry_run")
        return ":".join(parts)

    def evaluate(self, window: WaveWindow, evidence: HealthEvidence) -> Verdict:
        group = self.group or window.group
        wave = evidence.health_means(
            window.wave_nodes, group, self.measure, window.since, window.until
        )
        control = evidence.health_means(
            window.control_nodes, group, self.measure, window.since, window.until
        )
        return self.judge(
            [v for values in wave.values() for v in values],
            [v for values in control.values() for v in values],
        )

    def judge(self, wave: Sequence[float], control: Sequence[float]) -> Verdict:
        """The verdict on the samples of the wave and of the untouched nodes (pure)."""
        x = np.asarray(wave, dtype=np.float64)
        y = np.asarray(control, dtype=np.float64)
        value = float(np.median(x) - np.median(y)) if x.size and y.size else None
        shown = "n/a" if value is None else f"{value:+.4g}"
        what = f"{self.measure} median shift {shown} (max {self.direction} {self.threshold:g})"
        samples = f"{x.size} vs {y.size} samples"
        if x.size < self.min_samples or y.size < self.min_samples:
            return verdict_of(
                self, Outcome.INCONCLUSIVE, value, (x.size, y.size), test="none", p=None,
                detail=f"{what}: {samples}, fewer than {self.min_samples} a side",
            )  # fmt: skip
        worse: Literal["greater", "less"] = "greater" if self.direction == "increase" else "less"
        shifted = x - self.threshold if worse == "greater" else x + self.threshold
        test = mann_whitney_u(shifted, y, alternative=worse)
        outcome = Outcome.FAIL if test.p < self.alpha else Outcome.PASS
        described = (
            f"Mann-Whitney U one-sided ({test.method}): U={test.u:g}, p={format_p(test.p)} "
            f"{'<' if outcome is Outcome.FAIL else '>='} alpha {self.alpha:g}"
        )
        return verdict_of(
            self, outcome, value, (x.size, y.size), test=described, p=test.p,
            detail=f"{what}: {samples}, {described}",
        )  # fmt: skip


class Judge(Protocol):
    """What a verdict names of the criterion that gave it (:func:`verdict_of`)."""

    @property
    def kind(self) -> str: ...

    @property
    def dry_run(self) -> bool: ...

    @property
    def threshold(self) -> float: ...

    def text(self) -> str: ...


def verdict_of(
    criterion: Judge,
    outcome: Outcome,
    value: float | None,
    samples: tuple[int, int],
    *,
    test: str,
    p: float | None,
    detail: str,
) -> Verdict:
    """The :class:`Verdict` of ``criterion`` (``samples``: the wave's and the other side's)."""
    n_wave, n_control = samples
    return Verdict(
        criterion=criterion.text(),
        kind=criterion.kind,
        outcome=outcome,
        dry_run=criterion.dry_run,
        value=value,
        threshold=criterion.threshold,
        wave_samples=int(n_wave),
        control_samples=int(n_control),
        test=test,
        p=p,
        detail=f"{outcome.value}{' (dry run)' if criterion.dry_run else ''}: {detail}",
    )


def format_p(p: float) -> str:
    """A p-value as verdicts show it."""
    return f"{p:.3g}" if p >= 1e-4 or p == 0.0 else f"{p:.1e}"


# ---------------------------------------------------------------------------------- parsing
_KEYS: Final = frozenset({"max_increase", "max_decrease", "group", "min_samples", "alpha"})
_CHANGE: Final = {"increase": "a rise", "decrease": "a drop"}
_WORSE: Final = {
    Better.LOWER: ("increase",),
    Better.NEAR_ZERO: ("increase",),
    Better.HIGHER: ("decrease",),
    Better.NEITHER: ("increase", "decrease"),
}


def parse_criterion(text: str) -> HealthCriterion:
    """``MEASURE:max_increase=D[:group=G][:min_samples=N][:alpha=A][:dry_run]`` (module
    docstring); :class:`CriterionError` (one line) when it is malformed, names an unknown
    measure, or a threshold of the wrong sign or side."""
    head, *rest = text.strip().split(":")
    where = f"--criterion {text!r}"
    if head not in MEASURES:
        raise CriterionError(
            f"{where}: unknown health measure {head!r}; known: {', '.join(MEASURES)}"
        )
    measure = MEASURES[head]
    fields, dry_run = criterion_fields(where, rest, _KEYS)
    limits = [k for k in ("max_increase", "max_decrease") if k in fields]
    if len(limits) != 1:
        raise CriterionError(f"{where}: give one of max_increase=D or max_decrease=D")
    direction = limits[0].removeprefix("max_")
    threshold = criterion_number(where, limits[0], fields[limits[0]], float)
    if not math.isfinite(threshold) or threshold < 0.0:
        raise CriterionError(
            f"{where}: {limits[0]}={fields[limits[0]]} must be >= 0: it is how much worse than "
            "the untouched nodes the wave may be"
        )
    if direction not in _WORSE[measure.better]:
        better = "higher" if measure.better is Better.HIGHER else "lower"
        good = "max_decrease" if measure.better is Better.HIGHER else "max_increase"
        raise CriterionError(
            f"{where}: {head} is better {better}, so {_CHANGE[direction]} is not what makes it "
            "worse; "
            f"use {good}=D"
        )
    values: dict[str, Any] = {
        "measure": head, "direction": direction, "threshold": threshold, "dry_run": dry_run,
    }  # fmt: skip
    if "group" in fields:
        values["group"] = fields["group"]
    if "min_samples" in fields:
        values["min_samples"] = criterion_number(where, "min_samples", fields["min_samples"], int)
    if "alpha" in fields:
        values["alpha"] = criterion_number(where, "alpha", fields["alpha"], float)
    return criterion_model(where, HealthCriterion, values)


def check_reported(
    criteria: Sequence[HealthCriterion], group: str, reported: Mapping[str, set[str]]
) -> None:
    """Every criterion's group has reported health to the hub, with the criterion's measure
    (``reported``: :meth:`~edge_agent_host.hub.storage.database.HubDatabase.health_reported`);
    :class:`CriterionError` (one line) for the first that has not."""
    for c in criteria:
        name = c.group or group
        where = f"--criterion {c.text()!r}"
        if name not in reported:
            raise CriterionError(
                f"{where}: no node has reported health for group {name!r} to this hub yet"
                + (f" (groups reporting: {', '.join(sorted(reported))})" if reported else "")
            )
        if c.measure not in reported[name]:
            raise CriterionError(
                f"{where}: group {name!r} does not report {c.measure} (it reports "
                f"{', '.join(m for m in MEASURES if m in reported[name])})"
            )

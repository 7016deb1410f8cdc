"""The names of the health measures a group reports, what each is in and which way is better.

One closed vocabulary, shared by the device that measures (``edge-agentd``), the wire
(:class:`~edge_agent.fleet.protocol.Health`) and the hub that shows and gates on them
(``edge-agent-hub``): a measure a rollout criterion names must be one of :data:`MEASURES`.
``docs/health.md`` says what each means and how to read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal, get_args

__all__ = ["MEASURES", "Better", "Measure", "MeasureName", "measure"]


class Better(StrEnum):
    """Which way a measure's values are better: a rollout gate and a dashboard read it."""

    LOWER = "lower"
    HIGHER = "higher"
    #: 0 when the model fits (the excess surprise); further from 0 is worse.
    NEAR_ZERO = "near_zero"
    #: A description of behaviour, not a quality (policy entropy, belief change).
    NEITHER = "neither"


MeasureName = Literal[
    "surprise",
    "excess_surprise",
    "free_energy",
    "policy_entropy",
    "belief_change",
    "preference",
    "score",
    "experience",
    "divergence",
    "confidence",
    "low_confidence_share",
    "output_entropy",
    "out_of_range_share",
]


@dataclass(frozen=True, slots=True)
class Measure:
    """One health measure: its name, unit, better direction, the kinds of group that report it
    and one line of what it is."""

    name: MeasureName
    unit: str
    better: Better
    kinds: tuple[str, ...]
    help: str


MEASURES: Final[dict[str, Measure]] = {
    m.name: m
    for m in (
        Measure("surprise", "nats", Better.LOWER, ("aif",),
                "-ln p(o): the observation under the outcome distribution predicted before it"),
        Measure("excess_surprise", "nats", Better.NEAR_ZERO, ("aif",),
                "surprise minus the predicted distribution's entropy: 0 on average when the "
                "model fits the world"),
        Measure("free_energy", "nats", Better.LOWER, ("aif",),
                "variational free energy of the posterior after the observation"),
        Measure("policy_entropy", "nats", Better.NEITHER, ("aif",),
                "entropy of the policy posterior q(pi)"),
        Measure("belief_change", "nats", Better.NEITHER, ("aif",),
                "KL of the posterior from the prior: how far the observation moved the beliefs"),
        Measure("preference", "nats", Better.HIGHER, ("aif",),
                "the log preference C of the observed outcomes (realised preference)"),
        Measure("score", "score", Better.HIGHER, ("aif", "neural"),
                "the score the world defines (reward, goal reached), where it defines one"),
        Measure("experience", "agent-ticks", Better.NEITHER, ("aif",),
                "agent-ticks learned in the window (learning groups)"),
        Measure("divergence", "nats", Better.NEITHER, ("aif",),
                "KL of the learned model from its prior (learning groups)"),
        Measure("confidence", "probability", Better.HIGHER, ("neural",),
                "probability of the top output"),
        Measure("low_confidence_share", "share", Better.LOWER, ("neural",),
                "share of agent-steps whose top output is under the stated threshold"),
        Measure("output_entropy", "nats", Better.LOWER, ("neural",),
                "entropy of the output distribution"),
        Measure("out_of_range_share", "share", Better.LOWER, ("neural",),
                "share of agent-steps whose observation left the bundle's calibrated range"),
    )
}
if tuple(MEASURES) != get_args(MeasureName):  # pragma: no cover - a definition error
    raise RuntimeError("MEASURES and MeasureName list different measures")


def measure(name: str) -> Measure:
    """The measure called ``name``; ``KeyError`` naming the known ones if there is none."""
    try:
        return MEASURES[name]
    except KeyError:
        raise KeyError(f"unknown health measure {name!r}; known: {', '.join(MEASURES)}") from None

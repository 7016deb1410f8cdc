"""A neural group's health (``docs/health.md``): how sure its policy is of its outputs, and how
often its observations leave the range its model was calibrated on.

Pure functions on a batch of logits (:func:`output_probabilities`, :func:`confidence`,
:func:`output_entropy`) and :class:`NeuralHealth`, a part :class:`~edge_agent.neural.agents.
NeuralAgentGroup` holds: on every :data:`~edge_agent.core.health.HEALTH_EVERY`-th tick it takes
the discrete outputs of at most :data:`~edge_agent.core.health.HEALTH_AGENTS` agents (spread
over the group, moved each time) and adds per agent-step the top output's probability
(``confidence``), whether it was under :data:`LOW_CONFIDENCE` (``low_confidence_share``) and
the output distribution's entropy (``output_entropy``), under ``softmax(logits /
temperature)``, the distribution the group samples from. At the window's close it adds the
window's share of agent-steps whose observation was out of the calibrated range
(``out_of_range_share``, from :class:`~edge_agent.neural.input_range.RangeWatch`'s counts).
"""

from __future__ import annotations

import math

import numpy as np

from edge_agent.core.health import HEALTH_AGENTS, HEALTH_EVERY
from edge_agent.core.health_window import HealthSummary, HealthWindow, MeasureStats

__all__ = [
    "LOW_CONFIDENCE",
    "NEURAL_MEASURES",
    "NeuralHealth",
    "confidence",
    "output_entropy",
    "output_probabilities",
]

#: A step whose top output's probability is under this is a low-confidence step.
LOW_CONFIDENCE = 0.5

NEURAL_MEASURES = ("confidence", "low_confidence_share", "output_entropy")


def output_probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / temperature)`` of each row of ``logits (r, A)``, float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def confidence(p: np.ndarray) -> np.ndarray:
    """The top output's probability of each row of ``p (r, A)``."""
    out: np.ndarray = p.max(axis=1)
    return out


def output_entropy(p: np.ndarray) -> np.ndarray:
    """``-sum p ln p`` (nats) of each row of ``p (r, A)`` (0 ln 0 = 0)."""
    logp = np.log(np.where(p > 0, p, 1.0))
    out: np.ndarray = -(p * logp).sum(axis=1)
    return out


class NeuralHealth:
    """The health part of a neural group (see the module docstring). ``discrete``: whether its
    outputs are logits of actions (a continuous or perception output has no confidence: only
    the out-of-range share is reported); ``threshold``: what a low-confidence step is under."""

    def __init__(
        self, *, discrete: bool, temperature: float = 1.0, threshold: float = LOW_CONFIDENCE
    ) -> None:
        self.discrete = discrete
        self.temperature = float(temperature)
        self.threshold = float(threshold)
        self.window = HealthWindow(NEURAL_MEASURES if discrete else ())
        self._clock = 0
        self._checked = 0
        self._out = 0

    def observe(self, logits: np.ndarray | None, n_agents: int) -> None:
        """A tick's outputs ``logits (N, A)`` (None: none to measure)."""
        window = self.window
        window.add_steps(n_agents)
        clock = self._clock
        self._clock += 1
        if logits is None or not self.discrete or clock % HEALTH_EVERY:
            return
        n = logits.shape[0]
        step = max(1, -(-n // HEALTH_AGENTS))
        offset = (clock // HEALTH_EVERY) % step
        p = output_probabilities(logits[offset::step], self.temperature)
        top = confidence(p)
        window.add("confidence", top)
        window.add("low_confidence_share", (top < self.threshold).astype(np.float64))
        window.add("output_entropy", output_entropy(p))

    def close(self, checked: int, out_of_range: int) -> HealthSummary:
        """The window's summary; ``checked``, ``out_of_range``: the range watch's counts so far
        (None of a group without a calibrated range: 0, 0), whose growth since the last close
        is the window's out-of-range share."""
        summary = self.window.close()
        total, out = checked - self._checked, out_of_range - self._out
        self._checked, self._out = checked, out_of_range
        if total <= 0:
            return summary
        share = out / total
        measures = dict(summary.measures)
        measures["out_of_range_share"] = MeasureStats(
            mean=share,
            p95=1.0 if share > 0.05 else 0.0,  # the 95th percentile of 0/1 values
            n=total,
            std=math.sqrt(share * (1.0 - share)),
        )
        return HealthSummary(summary.agent_steps, measures, summary.drift)

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
    the out-of-range share is reported); ``threshold``: what a low-confidence step is under.

    A measured tick works in buffers of :data:`~edge_agent.core.health.HEALTH_AGENTS` rows made
    on the first (the same numbers as :func:`output_probabilities`, :func:`confidence` and
    :func:`output_entropy` up to rounding, from the softmax's sums alone: the top output's
    probability is ``1 / sum exp(z - max z)``, the entropy ``ln s - sum p (z - max z)``); a tick
    between two measured ones costs a counter."""

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
        self._z = np.zeros((0, 0))  # the sample's logits over the temperature, less their max
        self._e = np.zeros((0, 0))  # their exponentials (both (A, HEALTH_AGENTS), see _measure)
        self._row = np.zeros((3, 0))  # per sampled agent: max, sum, weighted sum
        self._rows = np.zeros((len(NEURAL_MEASURES), 0))  # the measures, one row each

    def observe(self, logits: np.ndarray | None, n_agents: int) -> None:
        """A tick's outputs ``logits (N, A)`` (None: none to measure)."""
        self.window.add_steps(n_agents)
        clock = self._clock
        self._clock = clock + 1
        if clock % HEALTH_EVERY or logits is None or not self.discrete:
            return
        n = logits.shape[0]
        step = max(1, -(-n // HEALTH_AGENTS))
        offset = (clock // HEALTH_EVERY) % step
        self._measure(logits[offset::step])

    def _measure(self, sample: np.ndarray) -> None:
        """The measures of ``sample (r, A)``, ``r <= HEALTH_AGENTS``, into the window."""
        r, a = sample.shape
        if self._z.shape[0] != a:  # the first measured tick (the model's outputs are fixed)
            # Outputs by row, agents along it: the sums over a sampled agent's outputs are
            # element-wise operations on whole rows (numpy's fast loop), not short reductions.
            self._z = np.zeros((a, HEALTH_AGENTS))
            self._e = np.zeros((a, HEALTH_AGENTS))
            self._row = np.zeros((3, HEALTH_AGENTS))
            self._rows = np.zeros((len(NEURAL_MEASURES), HEALTH_AGENTS))
        z, e = self._z[:, :r], self._e[:, :r]
        top, total, weighted = self._row[:, :r]
        conf, low_share, entropy = self._rows[:, :r]
        np.divide(sample.T, self.temperature, out=z)
        np.maximum.reduce(z, axis=0, out=top)
        np.subtract(z, top, out=z)
        np.exp(z, out=e)
        np.add.reduce(e, axis=0, out=total)  # s = sum exp(z - max z) >= 1
        np.reciprocal(total, out=conf)  # the top output's probability: exp(0) / s
        np.less(conf, self.threshold, out=low_share)  # 1.0 or 0.0
        np.multiply(e, z, out=e)
        np.add.reduce(e, axis=0, out=weighted)
        np.log(total, out=entropy)
        np.multiply(weighted, conf, out=weighted)  # sum p (z - max z)
        np.subtract(entropy, weighted, out=entropy)
        self.window.add_rows(NEURAL_MEASURES, self._rows[:, :r])

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

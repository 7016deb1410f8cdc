"""A neural group's health (``docs/health.md``): how sure its policy is of its outputs, and how
often its observations leave the range its model was calibrated on.

Pure functions on a batch of logits (:func:`output_probabilities`, :func:`confidence`,
:func:`output_entropy`) and :class:`NeuralHealth`, a part :class:`~edge_agent.neural.agents.
NeuralAgentGroup` holds: on every :data:`~edge_agent.core.health.HEALTH_EVERY`-th tick it takes
the discrete outputs of at most :data:`~edge_agent.core.health.HEALTH_AGENTS` agents (spread
over the group, moved each time) and, a few measured ticks' samples at once and at the
window's close (:func:`held_ticks`), adds per agent-step the top output's probability
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
    "HELD_BYTES",
    "LOW_CONFIDENCE",
    "MAX_HELD_TICKS",
    "NEURAL_MEASURES",
    "NeuralHealth",
    "confidence",
    "held_ticks",
    "output_entropy",
    "output_probabilities",
]

#: A step whose top output's probability is under this is a low-confidence step.
LOW_CONFIDENCE = 0.5

NEURAL_MEASURES = ("confidence", "low_confidence_share", "output_entropy")

#: A group's health holds its measured ticks' samples (float64 logits) up to this many bytes
#: (:class:`NeuralHealth`) ...
HELD_BYTES = 16 * 1024
#: ... and at most this many ticks' samples.
MAX_HELD_TICKS = 8


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


def held_ticks(actions: int) -> int:
    """Measured ticks whose samples a group with ``actions`` outputs holds before measuring them
    (:class:`NeuralHealth`): as many as fit :data:`HELD_BYTES`, at most :data:`MAX_HELD_TICKS`,
    at least one."""
    return max(1, min(MAX_HELD_TICKS, HELD_BYTES // (8 * max(1, actions) * HEALTH_AGENTS)))


class NeuralHealth:
    """The health part of a neural group (see the module docstring). ``discrete``: whether its
    outputs are logits of actions (a continuous or perception output has no confidence: only
    the out-of-range share is reported); ``threshold``: what a low-confidence step is under.

    A measured tick copies its sample's logits into a buffer, one call. Once the buffer holds
    :func:`held_ticks` samples, or the window closes, the measures of all of them are worked
    out at once, in float64 with outputs by row and agents along it (the sums over an agent's
    outputs are then element-wise operations on whole rows, numpy's fast loop): a dozen numpy
    calls that cost about as much for 512 sampled agent-steps as for 64 (their cost is the
    calls', not the values'; right after a model's run, each costs several times what it does
    in a loop of its own). They are the numbers of
    :func:`output_probabilities`, :func:`confidence` and :func:`output_entropy` up to
    rounding, from the softmax's sums alone: the top output's probability is ``1 / sum exp(z -
    max z)``, the entropy ``ln s - sum p (z - max z)``. The buffers (:meth:`nbytes_for`) are
    made by :meth:`allocate` when the model's outputs are known, or on the first measured
    tick; nothing is allocated on any tick after that; a tick between two measured ones costs
    a counter (its agent-steps are added to the window at its close)."""

    def __init__(
        self, *, discrete: bool, temperature: float = 1.0, threshold: float = LOW_CONFIDENCE
    ) -> None:
        self.discrete = discrete
        self.temperature = float(temperature)
        self.threshold = float(threshold)
        self.window = HealthWindow(NEURAL_MEASURES if discrete else ())
        self._clock = 0
        self._steps = 0  # agent-steps not yet added to the window (at its close)
        self._checked = 0
        self._out = 0
        self._held = 0  # sampled agent-steps held whose measures are not yet taken
        self._logits = np.zeros((0, 0), dtype=np.float32)  # (capacity, A): what they output
        self._z = np.zeros((0, 0))  # their logits over the temperature, by output
        self._e = np.zeros((0, 0))  # their exponentials (both (A, capacity))
        self._work = np.zeros((3, 0))  # per sampled agent-step: max then sum, weighted sum, ...
        self._rows = np.zeros((len(NEURAL_MEASURES), 0))  # the measures, one row each
        self._sums = np.zeros((2, len(NEURAL_MEASURES)))  # each measure's sum, sum of squares

    @staticmethod
    def capacity(actions: int) -> int:
        """Sampled agent-steps the buffers hold for a model of ``actions`` outputs."""
        return held_ticks(actions) * HEALTH_AGENTS

    def nbytes_for(self, actions: int) -> int:
        """Bytes of the buffers for a model of ``actions`` outputs (0 unless discrete)."""
        if not self.discrete:
            return 0
        rows = 2 * actions + 3 + len(NEURAL_MEASURES)  # z, e, work, the measures (float64)
        return self.capacity(actions) * (8 * rows + 4 * actions) + 8 * self._sums.size

    @property
    def nbytes(self) -> int:
        """Bytes of the buffers made so far."""
        arrays = (self._logits, self._z, self._e, self._work, self._rows, self._sums)
        return sum(a.nbytes for a in arrays) if self._z.size else 0

    def allocate(self, actions: int) -> None:
        """Make the buffers for a model of ``actions`` outputs (nothing unless discrete)."""
        if not self.discrete or self._z.shape[0] == actions:
            return
        self._measure()  # what an earlier model's samples say (never: the outputs are fixed)
        cap = self.capacity(actions)
        self._logits = np.zeros((cap, actions), dtype=np.float32)
        self._z = np.zeros((actions, cap))
        self._e = np.zeros((actions, cap))
        self._work = np.zeros((3, cap))
        self._rows = np.zeros((len(NEURAL_MEASURES), cap))

    def observe(self, logits: np.ndarray | None, n_agents: int) -> None:
        """A tick's outputs ``logits (N, A)`` (None: none to measure)."""
        self._steps += n_agents
        clock = self._clock
        self._clock = clock + 1
        if clock % HEALTH_EVERY or logits is None or not self.discrete:
            return
        n, a = logits.shape
        if self._z.shape[0] != a:
            self.allocate(a)
        step = max(1, -(-n // HEALTH_AGENTS))
        offset = (clock // HEALTH_EVERY) % step
        sample = logits[offset::step]
        held = self._held
        end = held + sample.shape[0]
        np.copyto(self._logits[held:end], sample)
        self._held = end
        if end + HEALTH_AGENTS > self._z.shape[1]:  # no room for another tick's sample
            self._measure()

    def _measure(self) -> None:
        """The measures of the samples held, into the window."""
        r = self._held
        if r == 0:
            return
        self._held = 0
        z, e = self._z[:, :r], self._e[:, :r]
        total, weighted, _ = work = self._work[:, :r]
        conf, low_share, entropy = rows = self._rows[:, :r]
        np.divide(self._logits[:r].T, self.temperature, out=z)
        np.maximum.reduce(z, axis=0, out=total)  # the top logit (its row is the sum next)
        np.subtract(z, total, out=z)
        np.exp(z, out=e)
        np.add.reduce(e, axis=0, out=total)  # s = sum exp(z - max z) >= 1
        np.reciprocal(total, out=conf)  # the top output's probability: exp(0) / s
        np.less(conf, self.threshold, out=low_share)  # 1.0 or 0.0
        np.multiply(e, z, out=e)
        np.add.reduce(e, axis=0, out=weighted)
        np.log(total, out=entropy)
        np.multiply(weighted, conf, out=weighted)  # sum p (z - max z)
        np.subtract(entropy, weighted, out=entropy)
        sums, squares = self._sums
        np.add.reduce(rows, axis=1, out=sums)
        np.multiply(rows, rows, out=work)
        np.add.reduce(work, axis=1, out=squares)
        self.window.add_rows_summed(NEURAL_MEASURES, rows, sums, squares)

    def close(self, checked: int, out_of_range: int) -> HealthSummary:
        """The window's summary; ``checked``, ``out_of_range``: the range watch's counts so far
        (None of a group without a calibrated range: 0, 0), whose growth since the last close
        is the window's out-of-range share."""
        self._measure()  # the samples still held belong to this window
        self.window.add_steps(self._steps)
        self._steps = 0
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

"""An Active Inference group's health: how well its model predicts what its agents observe
(``docs/health.md``), a part the group holds (:class:`AifHealth`, ``AifAgentGroup.health``).

Each tick the group tells it the tick's outcomes with the prior its agents predicted them with
(:meth:`AifHealth.before`, before whichever tick path steps the tick: :data:`TickPrior`) and,
once the tick is stepped, the posteriors and policy posterior (:meth:`AifHealth.after`), the
same two calls around every path (:mod:`edge_agent.core.tick_paths`). On every
:data:`HEALTH_EVERY`-th tick it measures a sample of at most :data:`HEALTH_AGENTS` agents,
spread evenly over the group and moved by one agent each time so that every agent is measured
in turn (all agents of a group of at most that many), in float64 with the pure kernels of
:mod:`edge_agent.aif.health`: the cost is that of a few dozen agents whatever the group's size
(the whole group's agent-steps are counted). Per agent-step sampled: the surprise
``-ln p(o)``, the excess surprise (surprise less the predicted outcome distribution's entropy),
the variational free energy, the policy posterior's entropy, the belief change
``KL(q || prior)`` and the realised preference ``ln softmax(C)[o]``. The values go into a
:class:`~edge_agent.core.health_window.HealthWindow` (the reporting window's summaries) and each
tick's mean excess surprise into a :class:`~edge_agent.core.drift.DriftDetector`, whose alarm
raised is a ``drift`` :class:`~edge_agent.core.contract.GroupEvent` and cleared a
``drift_cleared`` one (:meth:`AifHealth.alerts`; the daemon logs and publishes them).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from edge_agent.aif import health as kernels_health
from edge_agent.core.contract import GroupEvent
from edge_agent.core.drift import CLEAR, DriftDetector, DriftSettings
from edge_agent.core.group_blocks import IntArray
from edge_agent.core.health_window import HealthSummary, HealthWindow

if TYPE_CHECKING:  # a group that does not learn never imports learning's modules
    pass

__all__ = [
    "AIF_MEASURES",
    "HEALTH_AGENTS",
    "LEARNING_HEALTH",
    "AifHealth",
    "ExcessTap",
    "Likelihood",
    "TickPrior",
    "health_agents",
]

#: At most this many agents of a group are measured on a measured tick ...
HEALTH_AGENTS = 64
#: ... and fewer for a large model: a measured agent's largest float64 row (its joint states,
#: or a modality's outcomes) times the agents is at most this many bytes, so that a measure's
#: temporaries stay small (at least :data:`MIN_HEALTH_AGENTS` agents).
HEALTH_ROW_BYTES = 12 * 1024
MIN_HEALTH_AGENTS = 8
#: Every this many ticks is measured (the first included): with :data:`HEALTH_AGENTS`, what
#: keeps the cost at about 1 % of a tick of 10,000 agents of the 10 x 10 grid, and that of a
#: small group's tick low (``benchmarks/bench_health.py``).
HEALTH_EVERY = 4

#: The measures an Active Inference group reports every tick (learning adds its own at the
#: window's close).
AIF_MEASURES = (
    "surprise",
    "excess_surprise",
    "free_energy",
    "policy_entropy",
    "belief_change",
    "preference",
)

#: The measures a learning group adds at the window's close: the agent-steps learned in it and
#: the divergence of the learned tables from their prior.
LEARNING_HEALTH = ("experience", "divergence")

#: ``likelihood(rows)``: the likelihood the agents ``rows`` infer with, per modality ``A[m]
#: (O_m, S)`` when they share it (the compiled model's rows), ``(r, O_m, S)`` each agent's own
#: where they learn their own (per-agent learning).
Likelihood = Callable[[IntArray], Sequence[np.ndarray]]

TickPrior = Sequence[np.ndarray] | Callable[[IntArray], Sequence[np.ndarray]] | None
"""The prior the agents predicted a tick's outcomes with, as the group has it before the tick:
``prior[f] (N, S_f)`` (kept by the last tick); or ``prior(rows)``, the prior of the agents
``rows`` made again (a group that keeps none); or None: the tick's inference makes it (each
agent's own tables), and :meth:`AifHealth.after` is given it."""

ExcessTap = Callable[[int, np.ndarray], None]
"""``tap(clock, excess)``: a measured tick's number (the group's health clock) and the excess
surprise ``(r,)`` of the agents it measured (:meth:`AifHealth.rows`)."""


def health_agents(num_states: Sequence[int], num_obs: Sequence[int]) -> int:
    """How many agents a measured tick measures at most, for a model of these sizes."""
    widest = max(math.prod(num_states), *num_obs)
    return max(MIN_HEALTH_AGENTS, min(HEALTH_AGENTS, HEALTH_ROW_BYTES // (8 * widest)))


class AifHealth:
    """The health part of an Active Inference group (see the module docstring).

    ``num_states``, ``num_obs``: states per factor, outcomes per modality; ``lnC``:
    ``ln softmax(C_m)`` per modality (empty: no preference is reported). It holds no reference
    to the group (a group dropped is freed by reference counting): what changes, the
    likelihood, is passed in each tick.
    """

    def __init__(
        self,
        n_agents: int,
        *,
        group: str,
        num_states: Sequence[int],
        num_obs: Sequence[int],
        lnC: Sequence[np.ndarray],
        drift: DriftSettings | None = None,
        extra_measures: Sequence[str] = (),
    ) -> None:
        self.group = group
        self.num_obs = tuple(int(o) for o in num_obs)
        self.sample_agents = health_agents(num_states, self.num_obs)
        self.lnC = tuple(np.asarray(c, dtype=np.float64) for c in lnC)
        names = [m for m in AIF_MEASURES if m != "preference" or self.lnC]
        self.window = HealthWindow([*names, *extra_measures])
        self.detector = DriftDetector(drift)
        self._pending: list[GroupEvent] = []
        self._clock = 0
        self._rows: IntArray = np.zeros(0, dtype=np.intp)
        self._base: IntArray = np.zeros(0, dtype=np.intp)
        self._step = 1
        #: Told each measured tick's clock and its sampled agents' excess surprise (a shadow
        #: evaluation pairs two groups' on the same ticks: :mod:`edge_agent.core.shadow`).
        self.tap: ExcessTap | None = None
        self._obs: IntArray | None = None
        self._prior: list[np.ndarray] | None = None
        #: The agents' beliefs are still the group's start (``D``, or a snapshot's), not yet a
        #: prediction of the world's present: a group built beside a running world (a
        #: deployment's switch or rollback, a shadow of another model) meets it mid-episode.
        #: Its first tick is then not measured (:meth:`aligned` says when it need not be).
        self._fresh = True
        self.n_agents = 0
        self.resize(n_agents)

    # -- memory -----------------------------------------------------------------------------------
    def resize(self, n_agents: int) -> None:
        """The group has ``n_agents`` now: the sampled rows again."""
        self.n_agents = n = int(n_agents)
        self._step = max(1, -(-n // self.sample_agents))
        self._base = np.arange(0, n, self._step, dtype=np.intp)
        self._rows = self._base.copy()
        self._obs = self._prior = None

    def align(self, other: AifHealth) -> None:
        """Measure the same agents on the same ticks as ``other`` from now on (a group of the
        same size stepped once per tick of ``other``'s: a shadow beside its live group)."""
        self.resize(other.n_agents)
        self._clock = other._clock

    def aligned(self) -> None:
        """Every agent's beliefs predict the world from now on: each starts an episode (its
        prior ``D`` is then the model's prediction), or they were taken from a group that ran
        on this world. Until this or the group's first tick, the first tick is not measured: a
        prior ``D`` met mid-episode predicts the episode's start, not where the agent is, and
        its surprise says nothing of the model (it raised false drift alarms at every switch
        of a deployment whose world did not start an episode at that tick)."""
        self._fresh = False

    # -- the tick ---------------------------------------------------------------------------------
    def rows(self) -> IntArray:
        """The agents this tick measures (moved by one each tick, within the group)."""
        return self._rows

    def before(self, obs: IntArray, prior: TickPrior) -> None:
        """This tick's outcomes ``obs (N, M)`` and the prior the agents predicted them with
        (:data:`TickPrior`); the sampled rows are copied (the tick overwrites the prior)."""
        n = obs.shape[0]
        if n != self.n_agents:
            self.resize(n)
        clock = self._clock
        self._clock += 1
        fresh, self._fresh = self._fresh, False
        if clock % HEALTH_EVERY or fresh:
            return
        offset = (clock // HEALTH_EVERY) % self._step
        np.add(self._base, offset, out=self._rows)
        np.minimum(self._rows, n - 1, out=self._rows)
        rows = self._rows
        self._obs = obs[rows]
        if callable(prior):
            self._prior = [np.asarray(p, dtype=np.float64) for p in prior(rows)]
        elif prior is not None:
            self._prior = [np.asarray(p[rows], dtype=np.float64) for p in prior]
        else:
            self._prior = None

    def after(
        self,
        qs: Sequence[np.ndarray],
        q_pi: np.ndarray | None,
        likelihood: Likelihood,
        made: Sequence[np.ndarray] | None = None,
    ) -> None:
        """The tick is stepped: its posteriors ``qs[f] (N, S_f)`` and policy posterior ``q_pi
        (N, P)`` (None: not planned), and the likelihood the agents inferred with (see
        :data:`Likelihood`): measure the sampled agents and fold the measures into the window
        and the drift detector. ``made``: the prior as the tick made it, ``made[f] (N, S_f)``,
        read where :meth:`before` was told none."""
        obs, prior = self._obs, self._prior
        self._obs = self._prior = None
        window = self.window
        window.add_steps(self.n_agents)
        if obs is None:
            return
        rows = self._rows
        if prior is None and made:
            prior = [np.asarray(p[rows], dtype=np.float64) for p in made]
        names: list[str] = []
        values: list[np.ndarray] = []
        if q_pi is not None and q_pi.shape[0] == self.n_agents:
            names.append("policy_entropy")
            values.append(kernels_health.entropy(q_pi[rows]))
        if self.lnC:
            names.append("preference")
            values.append(kernels_health.preference(self.lnC, obs))
        if prior is None:
            if names:
                window.add_rows(names, np.stack(values))
            return
        post = [np.asarray(q[rows], dtype=np.float64) for q in qs]
        measured = kernels_health.tick_measures(prior, post, likelihood(rows), obs)
        window.add_rows([*names, *kernels_health.TICK_MEASURES], np.vstack([*values, measured]))
        excess = measured[1]
        if self.tap is not None:
            self.tap(self._clock - 1, excess)
        k = excess.shape[0]
        mean = float(excess.sum()) / k
        var = max(0.0, float(np.dot(excess, excess)) / k - mean * mean)
        now = time.time()
        since = self.detector.since
        moved = self.detector.update(mean, var, k, now)
        if moved is True:
            self._raise_drift()
        elif moved is False:
            self._clear_drift(0.0 if since is None else now - since)

    def _raise_drift(self) -> None:
        d = self.detector
        s = d.settings
        self._pending.append(
            GroupEvent(
                "drift",
                "warning",
                f"group {self.group}: the model stopped fitting what its agents observe: the "
                f"excess surprise's drift statistic {d.statistic:.1f} passed {s.threshold:g} "
                f"(tolerance {s.tolerance:g} nats per agent-step)",
                {
                    "statistic": round(d.statistic, 6),
                    "threshold": s.threshold,
                    "tolerance": s.tolerance,
                    "allowance": s.drift,
                },
            )
        )

    def _clear_drift(self, lasted_s: float) -> None:
        d = self.detector
        s = d.settings
        self._pending.append(
            GroupEvent(
                "drift_cleared",
                "info",
                f"group {self.group}: the model fits what its agents observe again: the excess "
                f"surprise's drift statistic {d.statistic:.1f} fell to {CLEAR * s.threshold:g} "
                f"(half its threshold {s.threshold:g}) after {lasted_s:.0f} s in alarm",
                {
                    "statistic": round(d.statistic, 6),
                    "threshold": s.threshold,
                    "clear_at": CLEAR * s.threshold,
                    "alarm_s": round(lasted_s, 3),
                },
            )
        )

    # -- what it tells ----------------------------------------------------------------------------
    def alerts(self) -> list[GroupEvent]:
        """The drift alarm's transitions since the last call: a ``drift`` event (warning) when
        it was raised, a ``drift_cleared`` event (info) when it cleared."""
        pending, self._pending = self._pending, []
        return pending

    def close(self, extra: Callable[[HealthWindow], None] | None = None) -> HealthSummary:
        """The reporting window's summary, and a new window (``extra`` adds the measures the
        group's other parts report, e.g. learning's, before it closes)."""
        if extra is not None:
            extra(self.window)
        return self.window.close(self.detector.reading())

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

A group holds its measured ticks: a measured tick copies its sample into buffers made with
the agents, and at most :data:`HELD_TICKS` ticks are then measured together (:meth:`AifHealth.
flush`: when full, and before the window closes, a resize and a tap set), each tick's values
and drift update in tick order, so that a group pays a measured tick's fixed cost of numpy
calls (the same for one agent as for 64) once per 8: a sample of fewer than
:data:`MIN_HEALTH_AGENTS` agents always, a larger one, in a group of at most :data:`HELD_SHARE`
times its sample, as many ticks as fit :data:`HELD_BYTES` (:func:`held_ticks`; the T-maze's 64
agents nobody learning: 8; fewer than 2: none, each measured when it happens). Its drift alarm
is then at most 32 ticks late.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from edge_agent.aif import health as kernels_health
from edge_agent.aif.health import InTickFold
from edge_agent.core.contract import GroupEvent
from edge_agent.core.drift import CLEAR, DriftDetector, DriftSettings
from edge_agent.core.group_blocks import IntArray
from edge_agent.core.health_window import HealthSummary, HealthWindow

if TYPE_CHECKING:  # a group that does not learn never imports learning's modules
    pass

__all__ = [
    "AIF_MEASURES",
    "HEALTH_AGENTS",
    "HELD_BYTES",
    "HELD_SHARE",
    "HELD_TICKS",
    "LEARNING_HEALTH",
    "AifHealth",
    "ExcessTap",
    "InTick",
    "InTickFold",
    "Likelihood",
    "TickPrior",
    "health_agents",
    "held_ticks",
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
#: A group holds at most this many measured ticks' samples and measures them at once (a
#: sample of fewer than :data:`MIN_HEALTH_AGENTS` agents always, a larger one as many as fit
#: :data:`HELD_BYTES`): its drift alarm is then at most ``HELD_TICKS * HEALTH_EVERY`` = 32
#: ticks late.
HELD_TICKS = 8
#: A sample of at least :data:`MIN_HEALTH_AGENTS` agents is held in at most this many bytes
#: (:func:`held_ticks`; fewer than 2 ticks' worth: none held, each measured tick measured when
#: it happens). The T-maze's sample of 64 agents, nobody learning, holds 8 (76 KiB): a measured
#: tick's fixed cost of a few dozen numpy calls, about a quarter of a 100-agent group's
#: compiled tick, is then paid once per 8.
HELD_BYTES = 80 * 1024
#: ... by a group whose sample is at least 1 / HELD_SHARE of its agents (groups of up to about
#: 256 agents): in a larger group a measured tick's fixed cost is a small share of its tick
#: (about 1 % at 1,000 grid10 agents), not worth the held buffers' bytes (0.2 MB of the
#: daemon's RSS at 1,000 grid10 agents, whose row of docs/memory.md has 0.2 MB to spare).
HELD_SHARE = 4

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


InTick = Callable[[IntArray, InTickFold | None], np.ndarray]
"""``in_tick(rows, fold)``: the tick about to run measures the agents ``rows`` itself (the
compiled tick: :meth:`~edge_agent.core.tick_paths.CompiledTick.measure`), the :data:`~edge_agent.
aif.health.TICK_MEASURES` ``(4, r)`` it writes returned (read once the tick is stepped, in place
of :func:`~edge_agent.aif.health.tick_measures` of the prior and posteriors); ``fold`` (None:
its own buffer, nothing folded): health's buffers, the measures written into ``fold.measures``
and, once the tick is stepped, the policy entropy, the preference and every row's sums beside
them (:class:`InTickFold`)."""

ExcessTap = Callable[[int, np.ndarray], None]
"""``tap(clock, excess)``: a measured tick's number (the group's health clock) and the excess
surprise ``(r,)`` of the agents it measured (:meth:`AifHealth.rows`)."""


def health_agents(num_states: Sequence[int], num_obs: Sequence[int]) -> int:
    """How many agents a measured tick measures at most, for a model of these sizes."""
    widest = max(math.prod(num_states), *num_obs)
    return max(MIN_HEALTH_AGENTS, min(HEALTH_AGENTS, HEALTH_ROW_BYTES // (8 * widest)))


def held_ticks(
    rows: int, n_agents: int, num_states: Sequence[int], num_obs: Sequence[int],
    num_policies: int, *, fixed_tables: bool = False,
) -> int:
    """How many measured ticks of a sample of ``rows`` of ``n_agents`` agents a group holds
    before measuring them (0: none, each measured when it happens): :data:`HELD_TICKS` for a
    sample of fewer than :data:`MIN_HEALTH_AGENTS` agents; none for a sample of less than
    1 / :data:`HELD_SHARE` of its group; else as many as fit :data:`HELD_BYTES` (at most
    :data:`HELD_TICKS`), none when fewer than 2 fit."""
    if rows <= 0:
        return 0
    if rows < MIN_HEALTH_AGENTS:
        return HELD_TICKS
    if rows * HELD_SHARE < n_agents:
        return 0
    per_tick = _Held.nbytes_for(rows, num_states, num_obs, num_policies,
                                fixed_tables=fixed_tables, ticks=1)
    ticks = min(HELD_TICKS, HELD_BYTES // per_tick)
    return ticks if ticks >= 2 else 0


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
        num_policies: int = 0,
        fixed_tables: bool = False,
        own_tables: Sequence[int] = (),
    ) -> None:
        self.group = group
        self.num_states = tuple(int(s) for s in num_states)
        self.num_obs = tuple(int(o) for o in num_obs)
        self.num_policies = int(num_policies)
        #: The likelihood's arrays are never written (a group that does not learn: a new model
        #: is new arrays): a held tick keeps a reference to them (see :class:`_Held`).
        self.fixed_tables = fixed_tables
        #: The modalities whose ``A`` each agent learns for itself (per-agent ``pA``): their
        #: sampled agents' tables are kept before a tick whose prior the tick makes
        #: (:meth:`_keep_tables`), in buffers made with the sample (:meth:`nbytes_for`).
        self.own_tables = tuple(int(m) for m in own_tables)
        self.sample_agents = health_agents(num_states, self.num_obs)
        self.lnC = tuple(np.asarray(c, dtype=np.float64) for c in lnC)
        #: ``lnC`` side by side and where each modality's outcomes start (the preference of a
        #: tick the pass measured: :meth:`_fold_in_tick`).
        self._lnC_table = np.concatenate(self.lnC) if self.lnC else np.zeros(0)
        self._lnC_at = np.cumsum((0, *(c.shape[0] for c in self.lnC[:-1])))
        #: A measured tick's rows as the window takes them (with the policy entropy, without),
        #: and their buffers, which the tick folds them into (made once per sample size:
        #: :meth:`resize`, :meth:`_fold_in_tick`).
        self._in_tick_names = {
            planned: (*(("policy_entropy",) if planned else ()),
                      *(("preference",) if self.lnC else ()), *kernels_health.TICK_MEASURES)
            for planned in (True, False)
        }
        self._block = np.zeros((0, 0))
        self._sums = np.zeros((2, 0))
        self._totals, self._squares = self._sums
        self._fold: InTickFold | None = None
        names = [m for m in AIF_MEASURES if m != "preference" or self.lnC]
        self.window = HealthWindow([*names, *extra_measures],
                                   together=self._in_tick_names[True])
        self.detector = DriftDetector(drift)
        self._pending: list[GroupEvent] = []
        self._clock = 0
        self._rows: IntArray = np.zeros(0, dtype=np.intp)
        self._base: IntArray = np.zeros(0, dtype=np.intp)
        self._step = 1
        self._tap: ExcessTap | None = None
        self._obs: IntArray | None = None
        self._prior: list[np.ndarray] | None = None
        #: This tick's measures ``(4, r)`` as the tick wrote them (``before``'s ``in_tick``).
        self._measured: np.ndarray | None = None
        #: A tick that learns ``A``, measured when it happens: its outcome rows and predictions
        #: under the tables inferred with (:func:`~edge_agent.aif.health.predictions`, worked
        #: out by :meth:`before`) ...
        self._predicted: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        #: ... or, where the tick makes the prior, the sampled agents' own tables before it,
        #: copied into these buffers (one per modality of :attr:`own_tables`, made by
        #: :meth:`resize`), the likelihood they make with the model's others
        #: (:meth:`_keep_tables`), and whether this tick's are in them.
        self._tables_before: list[np.ndarray] = []
        self._own_at = {m: i for i, m in enumerate(self.own_tables)}
        self._kept_list: list[np.ndarray] = []
        self._kept = False
        self._held = 0  # measured ticks held (see _Held), not yet measured
        self._hold: _Held | None = None
        #: Whether a small sample's measured ticks are held (False: each measured when it
        #: happens, as a large group's; the tests compare the two).
        self.holds = True
        #: The agents' beliefs are still the group's start (``D``, or a snapshot's), not yet a
        #: prediction of the world's present: a group built beside a running world (a
        #: deployment's switch or rollback, a shadow of another model) meets it mid-episode.
        #: Its first tick is then not measured (:meth:`aligned` says when it need not be).
        self._fresh = True
        self.n_agents = 0
        self.resize(n_agents)

    # -- memory -----------------------------------------------------------------------------------
    def resize(self, n_agents: int) -> None:
        """The group has ``n_agents`` now: the measured ticks held measured, the sampled rows
        again (and the buffers that hold a small sample's ticks, :meth:`nbytes_for`)."""
        self.flush()
        self.n_agents = n = int(n_agents)
        self._step = max(1, -(-n // self.sample_agents))
        self._base = np.arange(0, n, self._step, dtype=np.intp)
        self._rows = self._base.copy()
        self._obs = self._prior = None
        r = self._base.shape[0]
        held = self._hold
        ticks = held_ticks(r, n, self.num_states, self.num_obs, self.num_policies,
                           fixed_tables=self.fixed_tables)
        if ticks:
            if held is None or held.rows != r or held.ticks != ticks:
                self._hold = _Held(r, self.num_states, self.num_obs, self.num_policies,
                                   fixed_tables=self.fixed_tables, ticks=ticks)
        else:
            self._hold = None
        w = len(self._in_tick_names[True])
        if self._block.shape != (w, r) or self._fold is None:  # (a tick the pass measured)
            self._block, self._sums = block, _ = np.zeros((w, r)), np.zeros((2, w))
            self._totals, self._squares = self._sums  # (views: the fold's sums)
            self._fold = InTickFold(
                measures=block[w - len(kernels_health.TICK_MEASURES):], entropy=block[0],
                lnC=self._lnC_table if self.lnC else None,
                preference=block[1] if self.lnC else None, sums=self._sums)
        S = math.prod(self.num_states)
        if [t.shape for t in self._tables_before] != [(r, self.num_obs[m], S)
                                                       for m in self.own_tables]:
            self._tables_before = [np.zeros((r, self.num_obs[m], S)) for m in self.own_tables]

    @staticmethod
    def held_nbytes_for(
        n_agents: int, num_states: Sequence[int], num_obs: Sequence[int], num_policies: int,
        *, fixed_tables: bool = False,
    ) -> int:
        """Bytes of the buffers a group of ``n_agents`` holds its measured ticks in (0: it
        holds none, each measured tick is measured when it happens; ``fixed_tables``: a group
        that does not learn, see :class:`_Held`)."""
        r = AifHealth._sampled(n_agents, num_states, num_obs)
        ticks = held_ticks(r, n_agents, num_states, num_obs, num_policies,
                           fixed_tables=fixed_tables)
        if not ticks:
            return 0
        return _Held.nbytes_for(r, num_states, num_obs, num_policies,
                                fixed_tables=fixed_tables, ticks=ticks)

    @staticmethod
    def nbytes_for(
        n_agents: int, num_states: Sequence[int], num_obs: Sequence[int], num_policies: int,
        *, fixed_tables: bool = False, own_tables: Sequence[int] = (), preference: bool = True,
    ) -> int:
        """Bytes of the buffers a group of ``n_agents`` measures its sample in: the held
        measured ticks' (:meth:`held_nbytes_for`), a tick the pass measured
        (:meth:`_fold_in_tick`: its rows and their sums; ``preference``: the model reports
        one) and, for the modalities ``own_tables`` whose ``A`` each agent learns, the
        sampled agents' tables kept before a tick (:meth:`_keep_tables`)."""
        r = AifHealth._sampled(n_agents, num_states, num_obs)
        w = 1 + int(preference) + len(kernels_health.TICK_MEASURES)
        own = 8 * r * sum(int(num_obs[m]) for m in own_tables) * math.prod(num_states)
        return 8 * (w * r + 2 * w) + own + AifHealth.held_nbytes_for(
            n_agents, num_states, num_obs, num_policies, fixed_tables=fixed_tables)

    @staticmethod
    def _sampled(n_agents: int, num_states: Sequence[int], num_obs: Sequence[int]) -> int:
        """The sampled rows of a group of ``n_agents``, as :meth:`resize` spreads them."""
        step = max(1, -(-n_agents // health_agents(num_states, num_obs)))
        return -(-n_agents // step)

    @property
    def nbytes(self) -> int:
        """Bytes of the buffers made for measuring the sample (:meth:`nbytes_for`)."""
        arrays = (self._block, self._sums, *self._tables_before)
        held = 0 if self._hold is None else self._hold.nbytes
        return held + sum(a.nbytes for a in arrays)

    # -- the shadow's tap -------------------------------------------------------------------------
    @property
    def tap(self) -> ExcessTap | None:
        """Told each measured tick's clock and its sampled agents' excess surprise (a shadow
        evaluation pairs two groups' on the same ticks: :mod:`edge_agent.core.shadow`). A group
        with a tap measures each tick when it happens (the pairs are made tick by tick)."""
        return self._tap

    @tap.setter
    def tap(self, tap: ExcessTap | None) -> None:
        self.flush()  # the ticks held are told to the tap they were measured under
        self._tap = tap

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

    def unmeasured(self, n: int) -> bool:
        """Whether this tick, of ``n`` agents, is one :meth:`before` would not measure (not a
        :data:`HEALTH_EVERY`-th, or the first of a fresh group; the group of ``n`` agents it
        was sized for): then it is counted as :meth:`before` and :meth:`after` would count it
        (the health clock, the window's agent-steps) and the caller tells neither; else
        nothing is done, and the caller tells both."""
        clock = self._clock
        if n != self.n_agents or not (clock % HEALTH_EVERY or self._fresh):
            return False
        self._clock = clock + 1
        self._fresh = False
        self.window.add_steps(n)
        return True

    def before(
        self, obs: IntArray, prior: TickPrior, in_tick: InTick | None = None,
        likelihood: Likelihood | None = None,
    ) -> None:
        """This tick's outcomes ``obs (N, M)`` and the prior the agents predicted them with
        (:data:`TickPrior`); the sampled rows are copied (the tick overwrites the prior).
        ``in_tick``: the tick measures the sampled rows itself (:data:`InTick`: the compiled
        tick's and the learning pass's), taken whatever the group's size: a group that holds
        its measured ticks holds none on such a path (ticks held on another path before are
        measured first); groups stepping numpy hold theirs, as before. ``likelihood``: the
        tick may change the ``A`` the agents infer with (``pA`` learns; :data:`Likelihood`,
        read now, before the tick): what of the measures depends on it is worked out now
        (:func:`~edge_agent.aif.health.predictions`), or, where the tick makes the prior
        (None), the sampled agents' tables are copied to work it out once the prior is made,
        so that the surprise is the model's prediction error under the tables the agents
        inferred with, not those the tick learned from the outcome measured."""
        n = obs.shape[0]
        if n != self.n_agents:
            self.resize(n)
        self._predicted, self._kept = None, False  # (a tick that raised left them)
        clock = self._clock
        self._clock += 1
        fresh, self._fresh = self._fresh, False
        if clock % HEALTH_EVERY or fresh:
            return
        if self._step > 1:  # (a group measured whole: its rows are every agent, always)
            offset = (clock // HEALTH_EVERY) % self._step
            np.add(self._base, offset, out=self._rows)
            np.minimum(self._rows, n - 1, out=self._rows)
        rows = self._rows
        if in_tick is not None:  # measured in the tick, held or not: folded there
            if self._held:  # (ticks held on another path first, in their order)
                self.flush()
            self._measured = in_tick(rows, self._fold)
            return
        hold = self._hold
        if hold is not None and self._tap is None and self.holds:
            self._prior = hold.before(self._held, obs, rows, prior)
            self._obs = hold.obs[self._held]
            if likelihood is not None:
                if self._prior is not None:
                    hold.predict_before(self._held, likelihood(rows))
                else:
                    self._keep_tables(likelihood(rows))
            return
        self._obs = obs[rows]
        if callable(prior):
            self._prior = [np.asarray(p, dtype=np.float64) for p in prior(rows)]
        elif prior is not None:
            self._prior = [np.asarray(p[rows], dtype=np.float64) for p in prior]
        else:
            self._prior = None
        if likelihood is None:
            return
        if self._prior is None:
            self._keep_tables(likelihood(rows))
            return
        seen = kernels_health.outcome_rows(self.num_obs, self._obs)
        p, picked = kernels_health.predictions(
            kernels_health.joint_beliefs(self._prior), likelihood(rows), seen)
        self._predicted = (seen, p, picked)

    def _keep_tables(self, tables: Sequence[np.ndarray]) -> None:
        """The sampled agents' ``tables`` (their likelihood before the tick, a modality each):
        those of a modality whose ``A`` each agent learns (:attr:`own_tables`) copied into the
        buffers made with the sample (``rows * O_m * S``, :meth:`resize`), the others kept as
        they are (the model's, which no tick writes). Only a group whose agents learn their own
        tables has its prior made by the tick (the per-agent stages; a pass measures in the
        tick), so it is the only one that comes here."""
        assert self.own_tables  # (see above)
        kept = self._kept_list
        kept[:] = tables
        for m, i in self._own_at.items():
            t, buf = tables[m], self._tables_before[i]
            if buf.shape != t.shape or buf.dtype != t.dtype:
                self._tables_before[i] = buf = np.empty_like(t)  # (not as resize made them)
            np.copyto(buf, t)
            kept[m] = buf
        self._kept = True

    def _kept_tables(self, rows: IntArray) -> Sequence[np.ndarray]:
        """The :data:`Likelihood` of the tables :meth:`_keep_tables` kept (of the sampled
        ``rows``)."""
        del rows
        return self._kept_list

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
        and the drift detector (read where :meth:`before` was given none: a tick whose ``A``
        learns is measured under the tables before it). ``made``: the prior as the tick made
        it, ``made[f] (N, S_f)``, read where :meth:`before` was told none."""
        obs, prior, measured = self._obs, self._prior, self._measured
        predicted = self._predicted
        self._obs = self._prior = self._measured = self._predicted = None
        if self._kept:  # (the tables before the tick: see before)
            self._kept = False
            likelihood = self._kept_tables
        window = self.window
        window.add_steps(self.n_agents)
        if measured is not None:
            self._fold_in_tick(q_pi)
            return
        if obs is None:
            return
        rows = self._rows
        hold = self._hold
        if measured is None and hold is not None and self._tap is None and self.holds:
            t = self._held
            if q_pi is not None and not hold.fits(q_pi):  # (made before the policies were known)
                self.flush()
                hold.for_policies(q_pi.shape[1], t)
                t = 0
            hold.after(t, rows, given=prior is not None, qs=qs, q_pi=q_pi,
                       n_agents=self.n_agents, likelihood=likelihood, made=made)
            self._held = t + 1
            if t + 1 == hold.ticks:
                self.flush()
            return
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
        if predicted is not None:  # (worked out before the tick: its A learns)
            seen, p, picked = predicted
            measured = kernels_health.measures_of(prior, post, p, picked, seen)
        else:
            measured = kernels_health.tick_measures(prior, post, likelihood(rows), obs)
        window.add_rows([*names, *kernels_health.TICK_MEASURES], np.vstack([*values, measured]))
        excess = measured[1]
        if self._tap is not None:
            self._tap(self._clock - 1, excess)
        k = excess.shape[0]
        mean = float(excess.sum()) / k
        var = max(0.0, float(np.dot(excess, excess)) / k - mean * mean)
        self._detect(mean, var, k, time.time())

    def _fold_in_tick(self, q_pi: np.ndarray | None) -> None:
        """:meth:`after` of a tick whose pass measured the sample and folded it (:class:
        `InTickFold`: the policy entropy, the preference and the four measures in one block,
        each row's sum and sum of squares beside, the path's buffers written again at its next
        measured tick): the block into the window at once (:meth:`HealthWindow.add_block`) and
        the excess surprise's mean and variance into the drift detector (the same values as
        the numpy measures' ``np.vstack`` and :meth:`HealthWindow.add_rows`, summed in the
        pass in agent order: the same numbers up to rounding). A policy posterior not of every
        agent (none planned) leaves the entropy's row out."""
        block, totals, squares = self._block, self._totals, self._squares
        names = self._in_tick_names[True]
        if q_pi is None or q_pi.shape[0] != self.n_agents:  # (the entropy's row left out)
            names = self._in_tick_names[False]
            block, totals, squares = block[1:], totals[1:], squares[1:]
        self.window.add_block(names, block, totals, squares)
        i = len(names) - 3  # the excess surprise's row
        k = block.shape[1]
        mean = float(totals[i]) / k
        if self._tap is not None:
            self._tap(self._clock - 1, block[i].copy())
        var = max(0.0, float(squares[i]) / k - mean * mean)
        self._detect(mean, var, k, time.time())

    def _detect(self, mean: float, var: float, k: int, now: float) -> None:
        """One measured tick's mean and variance of its ``k`` agents' excess surprise into the
        drift detector (at ``now``, the tick's wall clock), its alarm's transitions events."""
        since = self.detector.since
        moved = self.detector.update(mean, var, k, now)
        if moved is True:
            self._raise_drift()
        elif moved is False:
            self._clear_drift(0.0 if since is None else now - since)

    def flush(self) -> None:
        """Measure the measured ticks held (:data:`HELD_TICKS` at most, :func:`held_ticks`) at
        once: their values go to the window in tick order, and per tick, in order, its excess
        surprise's mean and variance to the drift detector with the tick's wall clock, as each
        would have when it happened (up to rounding). A group with a tap (a shadow's) holds
        none: the tap is told each measured tick when it happens."""
        held, hold = self._held, self._hold
        if not held or hold is None:
            return
        self._held = 0
        blocks = hold.measures(held, self.lnC)
        window = self.window
        for names, values in blocks:
            window.add_rows(names, values)
        ticks = hold.measured_ticks(held)
        if not ticks:
            return
        names, values = blocks[-1]
        k = hold.rows
        excess = values[names.index("excess_surprise")].reshape(len(ticks), k)
        totals = np.add.reduce(excess, axis=1).tolist()
        squares = np.add.reduce(excess * excess, axis=1).tolist()
        for i, t in enumerate(ticks):  # (no tap: a group with one holds no tick)
            mean = totals[i] / k
            self._detect(mean, max(0.0, squares[i] / k - mean * mean), k, hold.times[t])

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
        self.flush()  # the ticks held belong to this window
        if extra is not None:
            extra(self.window)
        return self.window.close(self.detector.reading())


class _Held:
    """The samples of a group's measured ticks (``rows`` agents each; ``ticks`` of them,
    :func:`held_ticks`), held in buffers made with the agents until
    :meth:`AifHealth.flush` measures them at once. What depends on the likelihood is worked
    out with the tables the agents inferred with at that tick: a learning group's change
    between ticks (each agent's own, or a shared table written in place by a refresh), so its
    ticks work it out at the tick (the predicted outcome distributions and the observed
    outcomes' likelihood rows, :func:`~edge_agent.aif.health.predictions`, a few dozen floats
    an agent, not its tables: a 10 x 10 grid's are 80 KB): before the tick where it learns
    ``A`` (:meth:`predict_before`; where the tick makes the prior, once it is made, from the
    tables :meth:`AifHealth.before` copied), after it otherwise; ``fixed_tables`` (a group that does
    not learn, whose tables are never written: a new model is new arrays) keeps a reference to
    each tick's tables instead and works it out at the flush, for every tick held on the same
    tables at once (its buffers hold no predictions: they are the flush's temporaries). The
    rest (logs, entropies, divergences, free energy) at the flush: a few dozen numpy calls for
    every tick held."""

    def __init__(
        self, rows: int, num_states: Sequence[int], num_obs: Sequence[int], num_policies: int,
        *, fixed_tables: bool = False, ticks: int = HELD_TICKS,
    ) -> None:
        t, r, m = ticks, rows, len(num_obs)
        self.rows = r
        self.ticks = t
        self.fixed_tables = fixed_tables
        self.tables: list[Sequence[np.ndarray] | None] = [None] * t  # (fixed_tables)
        self.num_obs = tuple(num_obs)
        self.obs = np.zeros((t, r, m), dtype=np.intp)
        self.prior = [np.zeros((t, r, s)) for s in num_states]
        self.qs = [np.zeros((t, r, s)) for s in num_states]
        self.q_pi = np.zeros((t, r, num_policies))
        kept = 0 if fixed_tables else t  # the predictions made at the tick (a learning group)
        self.seen = np.zeros((kept, r, m), dtype=np.intp)  # rows of the tables side by side
        self.p = np.zeros((kept, r, sum(num_obs)))
        self.picked = np.zeros((kept, r, m, math.prod(num_states)))
        #: A slot whose predictions :meth:`predict_before` made before its tick (its ``A``
        #: learns): :meth:`after` keeps them.
        self.predicted = [False] * t
        self.times = [0.0] * t  # each tick's wall clock (the drift detector's)
        self.has_prior = [False] * t  # measured (a tick without its prior: only its outcomes)
        self.has_policy = [False] * t

    @staticmethod
    def nbytes_for(
        rows: int, num_states: Sequence[int], num_obs: Sequence[int], num_policies: int,
        *, fixed_tables: bool = False, ticks: int = HELD_TICKS,
    ) -> int:
        m, intp = len(num_obs), np.dtype(np.intp).itemsize
        floats = 2 * sum(num_states) + num_policies
        if not fixed_tables:  # the predictions too
            floats += sum(num_obs) + m * math.prod(num_states)
        return ticks * rows * (8 * floats + (1 if fixed_tables else 2) * m * intp)

    @property
    def nbytes(self) -> int:
        arrays = [self.obs, self.seen, *self.prior, *self.qs, self.q_pi, self.p, self.picked]
        return sum(a.nbytes for a in arrays)

    def before(
        self, t: int, obs: IntArray, rows: IntArray, prior: TickPrior
    ) -> list[np.ndarray] | None:
        """Tick ``t``'s outcomes and prior of the agents ``rows`` into its slot; the prior's
        slot (None: none given, :meth:`after` is given the prior the tick made)."""
        _take(obs, rows, self.obs[t])
        if prior is None:
            return None
        slots = [b[t] for b in self.prior]
        if callable(prior):
            for p, slot in zip(prior(rows), slots, strict=True):
                np.copyto(slot, p)
        else:
            for p, slot in zip(prior, slots, strict=True):
                _take(p, rows, slot)
        return slots

    def fits(self, q_pi: np.ndarray | None) -> bool:
        """Whether a policy posterior ``q_pi`` has the policies the buffers were made for."""
        return q_pi is None or q_pi.shape[1] == self.q_pi.shape[2]

    def for_policies(self, num_policies: int, t: int) -> None:
        """Buffers for ``num_policies`` (the ticks held are measured first), slot ``t``'s
        outcomes and prior moved to the first."""
        self.q_pi = np.zeros((self.ticks, self.rows, num_policies))
        for b in (self.obs, *self.prior):
            b[0] = b[t]
        if self.predicted[t]:
            self.predicted[t] = False
            self.predicted[0] = True
            self.seen[0], self.p[0], self.picked[0] = self.seen[t], self.p[t], self.picked[t]

    def after(
        self, t: int, rows: IntArray, *, given: bool, qs: Sequence[np.ndarray],
        q_pi: np.ndarray | None, n_agents: int, likelihood: Likelihood,
        made: Sequence[np.ndarray] | None,
    ) -> None:
        """Tick ``t``'s posteriors, policy posterior and what its likelihood predicted."""
        self.times[t] = time.time()
        policy = q_pi is not None and q_pi.shape[0] == n_agents
        self.has_policy[t] = policy
        if policy:
            assert q_pi is not None
            _take(q_pi, rows, self.q_pi[t])
        if not given and made:
            for p, slot in zip(made, self.prior, strict=True):
                _take(p, rows, slot[t])
            given = True
        self.has_prior[t] = given
        if not given:
            return
        for q, slot in zip(qs, self.qs, strict=True):
            _take(q, rows, slot[t])
        if self.predicted[t]:  # (made before the tick: predict_before)
            self.predicted[t] = False
            return
        if self.fixed_tables:
            self.tables[t] = likelihood(rows)
            return
        self._predict(t, likelihood(rows))

    def predict_before(self, t: int, tables: Sequence[np.ndarray]) -> None:
        """Tick ``t``'s predictions with the ``tables`` its agents infer with, before the
        tick (its prior in its slot: :meth:`before`; a tick that learns ``A`` changes them)."""
        assert not self.fixed_tables  # (a group whose tables are fixed keeps them instead)
        self._predict(t, tables)
        self.predicted[t] = True

    def _predictions(
        self, t: int, tables: Sequence[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tick ``t``'s outcome rows and predictions (:func:`~edge_agent.aif.health.
        predictions`) with the likelihood ``tables`` of its agents."""
        seen = kernels_health.outcome_rows(self.num_obs, self.obs[t])
        joint = kernels_health.joint_beliefs([b[t] for b in self.prior])
        p, picked = kernels_health.predictions(joint, tables, seen)
        return seen, p, picked

    def _predict(self, t: int, tables: Sequence[np.ndarray]) -> None:
        """:meth:`_predictions` of tick ``t`` into its slot (a learning group's, at the
        tick)."""
        self.seen[t], self.p[t], self.picked[t] = self._predictions(t, tables)

    def _predict_held(self, ticks: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The outcome rows and predictions of the held ``ticks`` whose tables were kept
        (``fixed_tables``), their rows tick after tick: at once for ticks on the same tables
        shared by their agents (all of them, but after a new model), else by tick."""
        tables = self.tables
        first = tables[ticks[0]]
        assert first is not None
        if (any(tables[t] is not first for t in ticks) or ticks != list(range(len(ticks)))
                or any(a.ndim != 2 for a in first)):  # (each agent's own: by tick)
            parts = []
            for t in ticks:
                kept = tables[t]
                assert kept is not None
                parts.append(self._predictions(t, kept))
            seen, p, picked = (np.concatenate(a) for a in zip(*parts, strict=True))
        else:
            k = len(ticks) * self.rows
            obs = self.obs[: len(ticks)].reshape(k, -1)
            seen = kernels_health.outcome_rows(self.num_obs, obs)
            joint = kernels_health.joint_beliefs(
                [b[: len(ticks)].reshape(k, -1) for b in self.prior])
            p, picked = kernels_health.predictions(joint, first, seen)
        for t in ticks:
            tables[t] = None
        return seen, p, picked

    def measured_ticks(self, held: int) -> list[int]:
        """The slots of the first ``held`` ticks measured with their prior, in tick order."""
        return [t for t in range(held) if self.has_prior[t]]

    def measures(
        self, held: int, lnC: Sequence[np.ndarray]
    ) -> list[tuple[list[str], np.ndarray]]:
        """The first ``held`` ticks' measures, rows of names and values in tick order (the
        tick measures last, ``(4, ticks * rows)``, when some tick was measured with its
        prior)."""
        blocks: list[tuple[list[str], np.ndarray]] = []
        r = self.rows
        policy = [t for t in range(held) if self.has_policy[t]]
        if policy:
            q = self.q_pi[:held] if len(policy) == held else self.q_pi[policy]
            blocks.append((["policy_entropy"], kernels_health.entropy(
                q.reshape(-1, self.q_pi.shape[2]))[None]))
        if lnC:
            obs = self.obs[:held].reshape(held * r, -1)
            blocks.append((["preference"], kernels_health.preference(lnC, obs)[None]))
        ticks = self.measured_ticks(held)
        if ticks:
            pick: slice | list[int] = slice(0, held) if len(ticks) == held else ticks
            k = len(ticks) * r

            def rows_of(a: np.ndarray) -> np.ndarray:
                return a[pick].reshape(k, *a.shape[2:])

            if self.fixed_tables:
                seen, p, picked = self._predict_held(ticks)
            else:
                seen, p, picked = rows_of(self.seen), rows_of(self.p), rows_of(self.picked)
            measured = kernels_health.measures_of(
                [rows_of(b) for b in self.prior], [rows_of(b) for b in self.qs], p, picked, seen,
            )
            blocks.append((list(kernels_health.TICK_MEASURES), measured))
        if len(blocks) > 1 and all(v.shape[1] == blocks[-1][1].shape[1] for _, v in blocks):
            names = [n for ns, _ in blocks for n in ns]
            return [(names, np.vstack([v for _, v in blocks]))]
        return blocks


def _take(src: np.ndarray, rows: IntArray, out: np.ndarray) -> None:
    """``out[...] = src[rows]`` (one call, nothing allocated, when the dtypes are the same)."""
    if src.dtype == out.dtype:
        src.take(rows, axis=0, out=out, mode="clip")
    else:
        np.copyto(out, src[rows], casting="unsafe")

"""Dirichlet learning of ``A``, ``B`` and ``D``: what a group learns, and the object that learns.

:class:`LearningSpec` says what a group learns (prior counts, :class:`LearningSettings`, how
often the tables are refreshed); :class:`Learner` updates the group's counts
(:class:`~edge_agent.aif.learning_counts.DirichletCounts`) from each tick's experience: it calls
the pure batched kernels of :mod:`edge_agent.aif.learning_kernels` (the maths: pymdp's
``update_A``, ``update_B`` and ``update_D``) on the whole group at once and keeps their scratch
between ticks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from edge_agent.aif.learning_counts import CountsDtype, DirichletCounts, Scope
from edge_agent.aif.learning_kernels import (
    FEW_OUTCOMES,
    ASupport,
    TransitionSupport,
    a_increment_shared,
    a_increment_support,
    a_sums_support,
    b_entries_support,
    b_increment_shared,
    b_increment_support,
    b_support_scratch,
    joint_states,
    joint_states_major,
    support_entries,
    support_index,
    transition_support,
)
from edge_agent.errors import ModelError


@dataclass(frozen=True)
class LearningSettings:
    """What a group learns and how (pymdp's names: ``lr_pA``, ``lr_pB``, ``lr_pD``).

    ``modalities``/``factors``: the indices learned (``None``: every table that has counts).
    ``forgetting`` in ``[0, 1)``: the share of the learned difference from the prior lost at
    each update (0 = pymdp, no forgetting).
    """

    lr_pA: float = 1.0
    lr_pB: float = 1.0
    lr_pD: float = 1.0
    forgetting: float = 0.0
    scope: Scope = "shared"
    #: ``float32`` halves the counts' memory (per-agent scope); its error against float64
    #: counts is bounded by :func:`counts_storage_bound`.
    counts_dtype: CountsDtype = "float64"

    def __post_init__(self) -> None:
        for name in ("lr_pA", "lr_pB", "lr_pD"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0.0):
                raise ModelError(f"{name} = {value}: a learning rate is a finite number >= 0")
        if not 0.0 <= self.forgetting < 1.0:
            raise ModelError(f"forgetting = {self.forgetting}: expected 0 <= forgetting < 1")
        if self.scope not in ("shared", "per_agent"):
            raise ModelError(f"scope = {self.scope!r}: expected 'shared' or 'per_agent'")
        if self.counts_dtype not in ("float64", "float32"):
            raise ModelError(
                f"counts_dtype = {self.counts_dtype!r}: expected 'float64' or 'float32'"
            )


@dataclass(frozen=True, eq=False)
class LearningSpec:
    """What an agent group learns: prior counts by modality/factor, the settings, and how often
    the tables the agents infer with are refreshed from the counts (``refresh_every`` ticks;
    1 = every tick, pymdp's behaviour)."""

    pA: dict[int, np.ndarray] = field(default_factory=dict)
    pB: dict[int, np.ndarray] = field(default_factory=dict)
    pD: dict[int, np.ndarray] = field(default_factory=dict)
    settings: LearningSettings = field(default_factory=LearningSettings)
    refresh_every: int = 1
    #: Add the information gain about pA and pB to the expected free energy (pymdp's
    #: ``use_param_info_gain``): agents seek what they do not know yet.
    param_info_gain: bool = False

    def __post_init__(self) -> None:
        if not (self.pA or self.pB or self.pD):
            raise ModelError("learning asked for, but no pA, pB or pD counts were given")
        if self.refresh_every < 1:
            raise ModelError(f"refresh_every = {self.refresh_every}: expected >= 1 tick")


class _FewScratch(NamedTuple):
    """The few-outcome ``pA`` product's scratch, made for ``agents`` agents (a group that
    resizes gets another at its next tick)."""

    agents: int
    #: The state-major joint posterior ``(S_joint, N)`` (several factors), else ``qs[0]``.
    joint: np.ndarray
    #: The factors' state-major copies (two factors), else empty.
    factors: list[np.ndarray]
    #: The one-hot outcomes ``(O_m, N)`` by modality.
    onehots: dict[int, np.ndarray]


class Learner:
    """Updates a group's counts from one tick's experience: the batched driver of the kernels.

    ``pA``/``pB``/``pD`` map a modality/factor index to its prior counts (pymdp's keys ``pA0``..
    name them); ``A``, ``B``, ``D`` are the model's normalised tables. Call :meth:`learn_A` with
    this tick's observations and posteriors, :meth:`learn_B` with the posteriors before and after
    the action the agents took, :meth:`learn_D` with the posterior a trial is summarised by.
    """

    def __init__(
        self,
        A: Sequence[np.ndarray],
        B: Sequence[np.ndarray],
        D: Sequence[np.ndarray],
        *,
        pA: dict[int, np.ndarray] | None = None,
        pB: dict[int, np.ndarray] | None = None,
        pD: dict[int, np.ndarray] | None = None,
        settings: LearningSettings | None = None,
        n_agents: int = 1,
    ) -> None:
        self.settings = settings or LearningSettings()
        scope = self.settings.scope
        self.num_obs = tuple(int(a.shape[0]) for a in A)
        self.num_controls = tuple(int(b.shape[2]) for b in B)
        dtype = self.settings.counts_dtype
        self.pA = DirichletCounts.create("A", pA or {}, A, scope, n_agents,
                                         dtype=dtype) if pA else None
        self.pB = DirichletCounts.create("B", pB or {}, B, scope, n_agents,
                                         dtype=dtype) if pB else None
        self.pD = DirichletCounts.create("D", pD or {}, D, scope, n_agents,
                                         dtype=dtype) if pD else None
        self.num_states = tuple(int(d.shape[0]) for d in D)
        self.num_states_joint = int(np.prod(self.num_states))
        #: Scratch of the shared updates by name, sized by the agents of the last tick (a
        #: group that resizes gets new ones at its next tick, none in the ticks between).
        self._scratch: dict[str, np.ndarray] = {}
        #: Per pA slot: the mask it was made from and its support_index.
        self._supports: dict[int, tuple[np.ndarray, ASupport | None]] = {}
        #: Per pB slot: the mask it was made from, its transition_support and, when it has
        #: one, the scratch of the support's sums (posteriors' dtype) and values (float64).
        self._b_supports: dict[
            int, tuple[np.ndarray, TransitionSupport | None, dict[str, np.ndarray]]
        ] = {}
        #: The most the pB supports and their scratch take, over the masks a table can have
        #: (the model's table's support, the counts' from the first refresh on).
        self._b_support_nbytes = 0
        #: Per pA slot: whether its modality has few outcomes (the one-hot product), and then
        #: its outcomes ``(O, 1)`` to compare the observations with.
        tables_A = self.pA.tables if self.pA is not None else ()
        self._few = tuple(self.num_obs[m] <= FEW_OUTCOMES for m in tables_A)
        self._outcomes = {m: np.arange(self.num_obs[m], dtype=np.intp)[:, None]
                          for m, few in zip(tables_A, self._few, strict=True) if few}
        #: The few-outcome product's scratch for the agents of the last tick.
        self._few_scratch: _FewScratch | None = None
        if self.pB is not None and scope == "shared":
            for slot, prior in enumerate(self.pB.prior):
                sizes = [0]
                for mask in (self.pB.mask[slot], prior > 0):
                    support = transition_support(mask)
                    if support is not None:  # and its scratch, posteriors of 8 bytes at most
                        sizes.append(support.nbytes + sum(
                            a.nbytes for a in b_support_scratch(support, np.dtype(np.float64))
                            .values()))
                self._b_support_nbytes += max(sizes)

    def _support(self, slot: int) -> ASupport | None:
        """:func:`support_index` of ``pA`` table ``slot``'s mask and its
        :func:`support_entries`, made again when the mask is replaced (at the first refresh)."""
        assert self.pA is not None
        mask = self.pA.mask[slot]
        cached = self._supports.get(slot)
        if cached is None or cached[0] is not mask:
            flat_mask = mask.reshape(mask.shape[0], -1)
            support = support_index(flat_mask)
            found = None if support is None else (
                support, *support_entries(support, flat_mask.shape[1])
            )
            cached = self._supports[slot] = (mask, found)
        return cached[1]

    def _transition_support(
        self, slot: int, dtype: np.dtype[Any]
    ) -> tuple[TransitionSupport | None, dict[str, np.ndarray]]:
        """:func:`transition_support` of ``pB`` table ``slot``'s mask and its scratch
        (:func:`b_support_scratch`), made again when the mask is replaced (at the first refresh)
        or the posteriors' dtype changes."""
        assert self.pB is not None
        mask = self.pB.mask[slot]
        cached = self._b_supports.get(slot)
        if cached is None or cached[0] is not mask or (
            cached[1] is not None and cached[2]["sums"].dtype != dtype
        ):
            support = transition_support(mask)
            scratch = {} if support is None else b_support_scratch(support, dtype)
            cached = self._b_supports[slot] = (mask, support, scratch)
        return cached[1], cached[2]

    def _buffer(
        self, name: str, shape: tuple[int, ...], dtype: np.dtype[Any] | None = None
    ) -> np.ndarray:
        """The scratch ``name`` of ``shape`` and ``dtype`` (float64 by default), made again
        only when either changes."""
        want = np.dtype(np.float64) if dtype is None else dtype
        buf = self._scratch.get(name)
        if buf is None or buf.shape != shape or buf.dtype != want:
            buf = self._scratch[name] = np.empty(shape, dtype=want)
        return buf

    @property
    def counts(self) -> list[DirichletCounts]:
        return [c for c in (self.pA, self.pB, self.pD) if c is not None]

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.counts)

    @property
    def gain_nbytes(self) -> int:
        """The shared updates' scratch of one model's size: the float64 gain, one per learned
        ``A``/``B`` table, and the support of each learned ``B`` with its sums and values
        (:func:`transition_support`; the larger of the two masks it can have). None per
        agent: the per-agent scope writes into the counts' rows."""
        if self.settings.scope != "shared":
            return 0
        dense = sum(p.size * 8 for c in self.counts if c.kind != "D" for p in c.prior)
        return dense + self._b_support_nbytes

    def scratch_bytes_per_agent(self, itemsize: int) -> int:
        """Bound on the shared updates' scratch per agent (:meth:`_buffer`), for posteriors of
        ``itemsize`` bytes: the state-major joint, the one-hot tables of few-outcome modalities,
        and per other modality the grouped rows or the support gather (``k <= S / 4``); for
        ``B``, the agent's one-hot action (of the learned factor with the most actions)."""
        if self.settings.scope != "shared":
            return self._agent_b_scratch_per_agent(itemsize)
        total = 0
        if self.pB is not None:  # per agent: its one-hot action (the rest is per model)
            total += itemsize * max(self.num_controls[f] for f in self.pB.tables)
        if self.pA is None:
            return total
        S = self.num_states_joint
        few = [self.num_obs[m] <= FEW_OUTCOMES for m in self.pA.tables]
        if any(few):  # the joint and, for several factors, each factor state-major
            total += 8 * S + (8 * sum(self.num_states) if len(self.num_states) > 1 else 0)
        for m, is_few in zip(self.pA.tables, few, strict=True):
            total += 8 * self.num_obs[m] if is_few else 0
        if not all(few):
            total += S * max(itemsize, 8) + (S // 4 + 1) * (16 + max(itemsize, 8)) + 8
        return total

    def _agent_b_scratch_per_agent(self, itemsize: int) -> int:
        """Per-agent ``pB`` learned on its support: each agent's offsets, gather indices and
        posteriors (``S``) and its ``k x S`` entries and values (``k`` of the prior's support,
        which holds the model's)."""
        if self.pB is None:
            return 0
        most = 0
        for prior in self.pB.prior:
            support = transition_support(prior > 0)
            if support is not None:
                S = prior.shape[0]
                most = max(most, S * (16 + itemsize) + 16 * support.targets.shape[0] * S)
        return most

    def learn_A(  # noqa: N802 - pymdp's table names
        self, obs: np.ndarray, qs: Sequence[np.ndarray], *, updates: int = 1
    ) -> None:
        """``obs`` ``(N, M)``, ``qs[f]`` ``(N, S_f)``: the posterior after observing ``obs``.
        Shared counts without forgetting may take several ticks' rows at once: ``updates``
        ticks (:mod:`edge_agent.aif.learning_experience`), each counted as an update."""
        if self.pA is None:
            return
        s = self.settings
        n = qs[0].shape[0]
        self.pA.note_agent_ticks(n)
        shared = s.scope == "shared"
        few = self._few
        plan = self._few_scratch
        if shared and any(few) and (plan is None or plan.agents != n):
            several = len(qs) > 1
            plan = self._few_scratch = _FewScratch(
                n,
                self._buffer("joint", (self.num_states_joint, n)) if several else qs[0],
                [self._buffer(f"factor{f}", (q.shape[1], n)) for f, q in enumerate(qs)]
                if len(qs) == 2 else [],
                {m: self._buffer(f"onehot{m}", (self.num_obs[m], n))
                 for m, is_few in zip(self.pA.tables, few, strict=True) if is_few},
            )
        if shared and any(few) and len(qs) > 1:
            assert plan is not None
            # One product into a state-major buffer; its transposed view is (N, S).
            joint = joint_states_major(qs, plan.joint, plan.factors).T
        else:
            joint = joint_states(qs)
        for slot, m in enumerate(self.pA.tables):
            found = self._support(slot) if shared and not few[slot] else None
            if found is not None and joint.flags.c_contiguous:
                support, entry, flat = found
                k = entry.shape[1]
                S = joint.shape[1]
                offset = self._scratch.get(f"rows_offset{S}")
                if offset is None or offset.shape[0] != n:
                    offset = self._scratch[f"rows_offset{S}"] = np.arange(n)[:, None] * S
                cols = self._buffer("support_cols", (n, k), np.dtype(np.intp))
                vals = self._buffer("support_vals", (n, k))
                gathered = self._buffer("support_gathered", (n, k), joint.dtype)
                if n * k <= len(flat):
                    # Fewer entries than the support has (few agents): each is added where
                    # it falls.
                    a_increment_support(obs[:, m], joint, support, rows_offset=offset,
                                        cols_out=cols, vals_out=vals, gathered_out=gathered,
                                        dense=False)
                    self.pA.add_entries(slot, cols.reshape(-1), vals.reshape(-1), s.lr_pA,
                                        s.forgetting, updates=updates)
                else:  # summed per entry of the support, then added there
                    sums = a_sums_support(
                        obs[:, m], joint, support[0], entry, len(flat), rows_offset=offset,
                        index_out=cols, gathered_out=vals if joint.dtype == vals.dtype
                        else gathered, values_out=vals)
                    self.pA.add_entries(slot, flat, sums, s.lr_pA, s.forgetting, updates=updates)
            elif shared:
                onehot_out = rows_out = None
                if few[slot]:
                    assert plan is not None
                    onehot_out = plan.onehots[m]
                else:
                    rows_out = self._buffer("rows", joint.shape, joint.dtype)
                inc = a_increment_shared(obs[:, m], joint, self.num_obs[m], onehot_out, rows_out,
                                         outcomes=self._outcomes.get(m))
                self.pA.add(slot, inc.reshape(self.pA.prior[slot].shape), s.lr_pA, s.forgetting,
                            updates=updates)
            else:
                self.pA.add_rows(slot, (obs[:, m],), joint, s.lr_pA, s.forgetting)

    def learn_B(  # noqa: N802 - pymdp's table names
        self,
        qs: Sequence[np.ndarray],
        qs_prev: Sequence[np.ndarray],
        actions: np.ndarray,
        acted: np.ndarray | None = None,
        *,
        updates: int = 1,
    ) -> None:
        """``actions`` ``(N, F)``: what each agent did between ``qs_prev`` and ``qs``;
        ``acted`` ``(N,)`` bool: the agents that did act (a trial's first step has no
        transition to learn from; ``None``: all). ``updates``: as :meth:`learn_A`'s."""
        if self.pB is None:
            return
        s = self.settings
        if acted is not None and acted.all():
            acted = None
        self.pB.note_agent_ticks(qs[0].shape[0] if acted is None else int(acted.sum()))
        if s.scope == "shared":
            for slot in range(len(self.pB.tables)):
                self._learn_B_shared(slot, qs, qs_prev, actions, acted, updates=updates)
            return
        n_all = qs[0].shape[0]
        agents = None if acted is None else np.flatnonzero(acted)
        if agents is not None:
            qs = [q[agents] for q in qs]
            qs_prev = [q[agents] for q in qs_prev]
            actions = actions[agents]
        for slot, f in enumerate(self.pB.tables):
            support = self._agent_transition_support(slot)
            if support is None:
                outer = qs[f][:, :, None] * qs_prev[f][:, None, :]
                self.pB.add_rows(slot, (actions[:, f],), outer, s.lr_pB, s.forgetting,
                                 agents=agents)
                continue
            # On the mask's support: each agent's k x S terms, not its S x S outer product.
            n, S = qs[f].shape
            k = support.targets.shape[0]
            offset = self._scratch.get(f"agent_offset{S}")
            if offset is None or offset.shape[0] < n_all:
                offset = self._scratch[f"agent_offset{S}"] = (
                    np.arange(n_all)[:, None] * S + np.zeros((1, S), dtype=np.intp))
            # Scratch for every agent of the group, the acting ones' share of it used.
            index = self._buffer("agent_index", (n_all * S,), np.dtype(np.intp))
            gathered = self._buffer("agent_gathered", (n_all * S,), qs[f].dtype)
            entries_out = self._buffer("agent_entries", (k * n_all * S,), np.dtype(np.intp))
            values_out = self._buffer("agent_values", (k * n_all * S,))
            entries, values = b_entries_support(
                np.ascontiguousarray(qs[f]), qs_prev[f], actions[:, f], support,
                local_offset=offset, index_out=index[: n * S].reshape(n, S),
                gathered_out=gathered[: n * S].reshape(n, S),
                entries_out=entries_out[: k * n * S].reshape(k, n, S),
                values_out=values_out[: k * n * S].reshape(k, n, S),
            )
            self.pB.add_agent_entries(slot, agents, actions[:, f], entries, values,
                                      lr=s.lr_pB, forgetting=s.forgetting)

    def _agent_transition_support(self, slot: int) -> TransitionSupport | None:
        """Per-agent ``pB`` table ``slot``: :func:`transition_support` of its mask (made again
        when the mask is replaced, at the first refresh), or None when it is dense."""
        assert self.pB is not None
        mask = self.pB.mask[slot]
        cached = self._b_supports.get(slot)
        if cached is None or cached[0] is not mask:
            cached = self._b_supports[slot] = (mask, transition_support(mask), {})
        return cached[1]

    def _learn_B_shared(  # noqa: N802 - pymdp's table names
        self, slot: int, qs: Sequence[np.ndarray], qs_prev: Sequence[np.ndarray],
        actions: np.ndarray, acted: np.ndarray | None, *, updates: int = 1,
    ) -> None:
        """One shared ``pB`` table's update from the agents that ``acted`` (all: ``None``):
        on the support of its mask when that is sparse (:func:`b_increment_support`, the
        entries added where they fall; at most ``U`` agents: each agent's terms,
        :func:`b_entries_support`), else the dense products of :func:`b_increment_shared`."""
        assert self.pB is not None
        s = self.settings
        f = self.pB.tables[slot]
        q, q_prev, action = qs[f], qs_prev[f], actions[:, f]
        support, scratch = self._transition_support(slot, q.dtype)
        if support is None:
            if acted is not None:
                q, q_prev, action = q[acted], q_prev[acted], action[acted]
            inc = b_increment_shared(q, q_prev, action, self.num_controls[f])
            self.pB.add(slot, inc, s.lr_pB, s.forgetting, updates=updates)
            return
        n = q.shape[0]
        k, U, S = support.targets.shape
        if n <= min(U, scratch["index"].shape[0]):
            # Fewer terms than the support has entries (a few agents): each is added where it
            # falls.
            entries, terms = b_entries_support(
                q, q_prev, action, support, acted=acted, local_offset=scratch["offset"],
                index_out=scratch["index"][:n], gathered_out=scratch["gathered"][:n],
                entries_out=scratch["entries"].reshape(-1)[: k * n * S].reshape(k, n, S),
                values_out=scratch["values"].reshape(-1)[: k * n * S].reshape(k, n, S),
            )
            self.pB.add_entries(slot, entries.reshape(-1), terms.reshape(-1), s.lr_pB,
                                s.forgetting, updates=updates)
            return
        values = b_increment_support(
            np.ascontiguousarray(q), q_prev, action, support, acted=acted,
            local_offset=scratch["offset"], index_out=scratch["index"],
            gathered_out=scratch["gathered"],
            onehot_out=self._buffer("b_onehot", (self.num_controls[f], n), q.dtype),
            partial_out=scratch["partial"], sums_out=scratch["sums"],
            values_out=scratch["values"],
        )
        if support.padded:
            np.multiply(values, support.weights, out=values)  # a pad's value 0
        self.pB.add_entries(slot, support.flat.reshape(-1), values.reshape(-1), s.lr_pB,
                            s.forgetting, updates=updates)

    def learn_D(  # noqa: N802 - pymdp's table names
        self, qs: Sequence[np.ndarray], agents: np.ndarray | None = None
    ) -> None:
        """``qs[f]`` ``(n, S_f)``: the posterior that sums a trial up, for the ``agents`` whose
        trial ended (per-agent counts; all by default)."""
        if self.pD is None:
            return
        s = self.settings
        self.pD.note_agent_ticks(qs[0].shape[0])
        for slot, f in enumerate(self.pD.tables):
            if s.scope == "shared":
                self.pD.add(slot, qs[f].sum(axis=0), s.lr_pD, s.forgetting)
            else:
                self.pD.add_rows(slot, (), qs[f], s.lr_pD, s.forgetting, agents=agents)

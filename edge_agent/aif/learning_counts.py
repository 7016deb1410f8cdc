"""The Dirichlet counts a group learns, and the checks and bounds on them.

Conventions, pymdp's unless said (``docs/learning.md`` lists them for users):

* **The mask** of an ``A``/``B`` update is the support of the normalised table the agent used
  (pymdp's ``A[m] > 0``): before the first refresh that is the table the model was given, after
  it the support of the counts. Once a table is refreshed from its counts the two agree, so a
  :class:`DirichletCounts` keeps one boolean mask per table and switches it at the first refresh.
* **Scopes.** ``shared``: one set of counts for all agents of a group; a tick's increment is the
  sum of every agent's (the kernels of :mod:`edge_agent.aif.learning_kernels`). ``per_agent``:
  counts of shape ``(N, ...)``; each agent's increment touches only its own row (one
  gather-scatter).
* **Forgetting** (not in pymdp): before each update, ``p <- p0 + (1 - forgetting) * (p - p0)``,
  a decay toward the prior ``p0`` so that a world that changed is learned again. With
  ``forgetting = 0`` the update is pymdp's exactly.
* **Deltas for the fleet.** Besides the counts, :class:`DirichletCounts` accumulates the
  increments added since the last report (``experience``: a dense array of one table's size
  whatever the scope, summed over the agents, unaffected by forgetting), the agent-ticks they
  stand for (``agent_ticks``) and a ``version`` that every update increments, so a node can
  publish "what I learned since version v" (:meth:`DirichletCounts.take_delta`, sparse by column
  with :func:`column_increments`) and a hub can add such deltas to a prior.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

from edge_agent.aif.learning_kernels import FloatArray, forget, normalise
from edge_agent.arrays import distinct
from edge_agent.errors import ModelError

Scope = Literal["shared", "per_agent"]
#: What counts are stored in (see :func:`counts_storage_bound`).
CountsDtype = Literal["float64", "float32"]


def check_counts(name: str, counts: np.ndarray, table: np.ndarray) -> FloatArray:
    """Validate Dirichlet counts against the table they parameterise; one clear line if not."""
    p = np.asarray(counts, dtype=np.float64)
    if p.shape != table.shape:
        raise ModelError(
            f"p{name} has shape {p.shape}, expected {table.shape} (the shape of {name})"
        )
    if not np.all(np.isfinite(p)):
        raise ModelError(f"p{name} has NaN or infinite counts")
    if np.any(p < 0):
        raise ModelError(f"p{name} has negative counts (a Dirichlet count is >= 0)")
    never = (table > 0) & (p <= 0)
    if np.any(never):
        where = tuple(int(i) for i in np.argwhere(never)[0])
        raise ModelError(
            f"p{name} is 0 at {where} where {name} is {float(table[where]):.3g}: "
            "a zero count can never be learned and would make that entry 0 at the first update"
        )
    return p


#: Unit roundoff of float32 storage: a stored value is the exact one times ``1 + d``, |d| <= it.
FLOAT32_ROUNDOFF = 2.0**-24


class Delta(NamedTuple):
    """What :meth:`DirichletCounts.take_delta` gives: the versions it spans, the increments of
    each table (dense, the table's shape, summed over the agents before any forgetting) and the
    agent-ticks each stands for."""

    start: int
    end: int
    increments: list[FloatArray]
    agent_ticks: list[int]


class TableIncrements(NamedTuple):
    """One learned table's increments since the last report, sparse by column
    (:func:`column_increments`): ``table`` ``A{m}``, ``B{f}`` or ``D{f}``, its ``shape``, the
    ``columns`` that moved and their ``values``, the ``agent_ticks`` they stand for and the
    learning rate ``lr`` (each agent-tick adds at most ``lr`` of mass to the table)."""

    table: str
    shape: tuple[int, ...]
    columns: NDArray[np.uint32]
    values: NDArray[np.float32]
    agent_ticks: int
    lr: float


def column_increments(
    increments: np.ndarray,
) -> tuple[NDArray[np.uint32], NDArray[np.float32]]:
    """The columns of ``increments`` (a table's shape; a column is every axis but the first,
    flattened in C order) with any entry not 0 in float32: ``(columns (k,) uint32 ascending,
    values (k, shape[0]) float32)``, each row one column's increments. An increment too small
    for float32 (below 1e-45: a posterior's far tail) is 0 on the wire, and a column of only
    such is not taken."""
    flat = increments.reshape(increments.shape[0], -1).astype(np.float32)
    columns = np.flatnonzero(np.any(flat != 0, axis=0))
    values = np.ascontiguousarray(flat[:, columns].T)
    return columns.astype(np.uint32), values


def counts_storage_bound(updates: int, largest_count: float) -> float:
    """Bound on ``|c32 - c64|`` for any count after ``updates`` updates: counts stored in float32
    against the same updates applied to float64 counts (the increments themselves are computed
    in float64 either way).

    Every update rounds a count at most 4 times (forgetting's subtract, scale and add back, then
    the increment), each time by at most ``FLOAT32_ROUNDOFF`` of a value below
    ``largest_count`` (the largest float64 count, prior or learned, over the run), and the prior
    is rounded once when stored; forgetting only shrinks earlier errors. Hence
    ``(4 * updates + 1) * 2**-24 * largest_count``. The table an agent uses, ``c / sum(c)``,
    then moves by at most ``2 * bound / column_sum`` per entry."""
    return (4 * updates + 1) * FLOAT32_ROUNDOFF * largest_count


@dataclass
class DirichletCounts:
    """The counts of one kind of table (``A``, ``B`` or ``D``) that a group learns.

    ``tables``: which modality/factor each entry is; ``prior``: the counts at load (forgetting
    decays toward them); ``counts``: now (``(N, ...)`` per agent, else the table's shape);
    ``mask``: where updates may land (see the module doc); ``experience``: the sum of every
    increment since :meth:`take_delta` (one table's shape whatever the scope); ``agent_ticks``:
    per table, the agent-ticks those increments stand for (each adds at most ``lr`` of mass:
    :meth:`note_agent_ticks`).
    """

    kind: Literal["A", "B", "D"]
    tables: tuple[int, ...]
    prior: list[FloatArray]
    counts: list[FloatArray]
    mask: list[NDArray[np.bool_]]
    experience: list[FloatArray]
    scope: Scope = "shared"
    version: int = 0
    reported_version: int = 0
    #: The version at which the counts were last their prior (0 at load; :meth:`reset`).
    reset_at: int = 0
    refreshed: bool = False
    agent_ticks: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    touched: list[NDArray[np.bool_]] = field(default_factory=list)
    #: Per-agent ``B`` only: per table, ``(N, U)``, the agents' action tables updated since
    #: the last refresh (a refresh normalises only those); empty otherwise.
    touched_by_agent: list[NDArray[np.bool_]] = field(default_factory=list)
    #: Per table, the float64 scratch a shared update writes its gain into (no allocation
    #: per tick).
    scratch: list[FloatArray] = field(default_factory=list, repr=False)
    #: The mask each scratch is 0 outside of.
    _gain_masks: list[NDArray[np.bool_]] = field(default_factory=list, repr=False)
    #: Per table, what :meth:`fixed_columns` found and the mask and table it was found for.
    _fixed: dict[int, tuple[NDArray[np.bool_], np.ndarray, NDArray[np.bool_]]] = field(
        default_factory=dict, repr=False
    )

    @classmethod
    def create(
        cls,
        kind: Literal["A", "B", "D"],
        priors: dict[int, np.ndarray],
        tables: Sequence[np.ndarray],
        scope: Scope = "shared",
        n_agents: int = 1,
        *,
        dtype: CountsDtype = "float64",
    ) -> DirichletCounts:
        """Counts for the tables named in ``priors`` (index -> counts), checked against
        ``tables`` (the model's normalised ``A``, ``B`` or ``D``), stored in ``dtype``."""
        indices = tuple(sorted(priors))
        prior, counts, mask, experience, touched, by_agent = [], [], [], [], [], []
        for i in indices:
            if not 0 <= i < len(tables):
                what = "modality" if kind == "A" else "factor"
                raise ModelError(
                    f"p{kind}{i}: learning asked for {what} {i}, the model has {len(tables)}"
                )
            p = check_counts(f"{kind}{i}", priors[i], tables[i])
            prior.append(p.astype(dtype))
            counts.append(np.broadcast_to(p, (n_agents, *p.shape)).astype(dtype, order="C")
                          if scope == "per_agent" else p.astype(dtype))
            # D's mask is its counts' support (pymdp's update_D); A's and B's the table's.
            mask.append(p > 0 if kind == "D" else tables[i] > 0)
            experience.append(np.zeros(p.shape, dtype=dtype))
            touched.append(np.zeros(p.shape[1:] if kind != "D" else (1,), dtype=bool))
            if kind == "B" and scope == "per_agent":
                by_agent.append(np.zeros((n_agents, p.shape[2]), dtype=bool))
        return cls(kind, indices, prior, counts, mask, experience, scope, touched=touched,
                   touched_by_agent=by_agent,
                   agent_ticks=np.zeros(len(indices), dtype=np.int64))

    @property
    def nbytes(self) -> int:
        """Bytes held: counts, prior, mask, experience and the touched-columns flags."""
        arrays = [*self.prior, *self.counts, *self.mask, *self.experience, *self.touched,
                  *self.touched_by_agent]
        return sum(a.nbytes for a in arrays)

    @property
    def nbytes_per_agent(self) -> int:
        """Per-agent scope: what each agent adds to :attr:`nbytes` (its counts, in their dtype,
        and a per-agent ``B``'s flags of the action tables touched)."""
        counts = sum(int(p.nbytes) for p in self.prior)  # the prior is in the counts' dtype
        return counts + sum(int(t.shape[1]) for t in self.touched_by_agent)

    def note_agent_ticks(self, n: int) -> None:
        """``n`` agent-ticks were learned from by every table of this kind (an ``A`` update:
        each agent's outcome; ``B``: each agent's transition; ``D``: each agent's trial)."""
        ticks = self.agent_ticks
        for slot in range(len(ticks)):  # (a table or a few: an element each beats a ufunc call)
            ticks[slot] += n

    def add(
        self, slot: int, increment: np.ndarray, lr: float, forgetting: float, *,
        updates: int = 1,
    ) -> None:
        """One shared update of table ``slot`` (a position in ``tables``): forget, then add
        ``lr * mask * increment`` (``increment`` summed over agents; over ``updates`` ticks
        of them without forgetting, which then count as that many updates)."""
        gain = self._gain(slot)  # lr * mask * increment: 0 outside the mask already
        np.multiply(increment, lr, out=gain, where=self.mask[slot])
        self._forget(slot, forgetting)
        self.counts[slot] += gain
        self.experience[slot] += gain
        if self.kind != "D":
            touched = self.touched[slot].reshape(-1)
            touched |= increment.reshape(increment.shape[0], -1).any(axis=0)
        self.version += updates

    def add_entries(
        self, slot: int, index: np.ndarray, values: FloatArray, lr: float, forgetting: float,
        *, updates: int = 1,
    ) -> None:
        """:meth:`add` of an increment given by its entries: ``values`` (float64, scaled by
        ``lr`` in place) at ``index`` into the table flattened, repeats summed; the entries
        must lie in the mask (a support's, :func:`a_increment_support` with ``dense=False``)."""
        values *= lr
        self._forget(slot, forgetting)
        np.add.at(self.counts[slot].reshape(-1), index, values)
        np.add.at(self.experience[slot].reshape(-1), index, values)
        columns = self.touched[slot].size
        self.touched[slot].reshape(-1)[index[values != 0] % columns] = True
        self.version += updates

    def _gain(self, slot: int) -> FloatArray:
        """The float64 scratch of one shared update of table ``slot``: made at the first, and
        0 outside the slot's mask (filled with 0 again when the mask is replaced), so that
        :meth:`add` writes only where the mask is true."""
        while len(self.scratch) <= slot:
            self.scratch.append(np.zeros(self.prior[len(self.scratch)].shape))
            self._gain_masks.append(self.mask[len(self._gain_masks)])
        if self._gain_masks[slot] is not self.mask[slot]:
            self.scratch[slot].fill(0.0)
            self._gain_masks[slot] = self.mask[slot]
        return self.scratch[slot]

    def add_rows(
        self, slot: int, rows: tuple[np.ndarray, ...], increment: np.ndarray, lr: float,
        forgetting: float, *, agents: np.ndarray | None = None,
    ) -> None:
        """One per-agent update: agent ``n``'s counts gain ``lr * mask[rows] * increment[n]``
        at ``counts[n][rows_n]`` (``rows``: index arrays into the table, one per leading axis
        the agent's observation or action picks; ``increment`` ``(N, ...)`` the rest).
        ``agents``: the agents the rows are for (all by default); only their counts forget."""
        counts = self.counts[slot]
        if agents is None:
            agents = np.arange(counts.shape[0])
        self._forget(slot, forgetting, agents)
        if self.kind == "B":  # rows = (action,): counts[n, :, :, a_n]
            (action,) = rows
            gain = lr * np.moveaxis(self.mask[slot][:, :, action], -1, 0) * increment
            counts[agents, :, :, action] += gain
            np.add.at(self.experience[slot].transpose(2, 0, 1), action, gain)
            self.touched[slot][:, distinct(action)] = True
            self.touched_by_agent[slot][agents, action] = True
        elif self.kind == "A":  # rows = (obs,): counts[n, o_n]
            (obs,) = rows
            gain = lr * self.mask[slot].reshape(self.mask[slot].shape[0], -1)[obs] * increment
            flat = counts.reshape(counts.shape[0], counts.shape[1], -1)
            flat[agents, obs] += gain
            np.add.at(self.experience[slot].reshape(self.experience[slot].shape[0], -1), obs, gain)
            self.touched[slot] |= (increment != 0).any(axis=0).reshape(self.touched[slot].shape)
        else:  # D: counts[n] += lr * (pD > 0) * qs_n
            gain = lr * self.mask[slot] * increment
            counts[agents] += gain
            self.experience[slot] += gain.sum(axis=0)
        self.version += 1

    def add_agent_entries(
        self, slot: int, agents: np.ndarray | None, action: np.ndarray, entries: np.ndarray,
        values: FloatArray, *, lr: float, forgetting: float,
    ) -> None:
        """:meth:`add_rows` of a per-agent ``B`` whose increment is given by its entries:
        agent ``agents[i]`` (all, in order, by default) took ``action[i]``; ``entries``
        ``(k, n, S)`` the index into one table flattened of each value of ``values``
        ``(k, n, S)`` float64 (scaled by ``lr`` in place; on the mask, 0 for a pad:
        :func:`~edge_agent.aif.learning_kernels.b_entries_support`)."""
        counts = self.counts[slot]
        n_all = counts.shape[0]
        if agents is None:
            agents = np.arange(n_all)
        self._forget(slot, forgetting, agents)
        values *= lr
        if counts.flags.c_contiguous:
            where = entries + (agents * counts[0].size)[None, :, None]
            np.add.at(counts.reshape(-1), where, values)
        else:
            where_in = np.unravel_index(entries, counts.shape[1:])
            np.add.at(counts, (agents[None, :, None], *where_in), values)
        np.add.at(self.experience[slot].reshape(-1), entries, values)
        self.touched[slot][:, distinct(action)] = True
        self.touched_by_agent[slot][agents, action] = True
        self.version += 1

    def added_in_place(self, n_agents: int) -> None:
        """A compiled pass did :meth:`add_rows` of every table for ``n_agents`` agents, in
        place (counts and experience, forgetting 0): count the updates and agent-ticks as
        :meth:`add_rows` and :meth:`note_agent_ticks` do. The touched columns are not kept: the
        pass leaves the tables following the counts (:meth:`mark_refreshed` clears them)."""
        self.note_agent_ticks(n_agents)
        self.version += len(self.tables)

    def _forget(self, slot: int, forgetting: float, agents: np.ndarray | None = None) -> None:
        """Decay table ``slot`` toward its prior (per agent: the rows of ``agents``, all by
        default); the columns that still differ from it change, so they count as touched (an
        int8 refresh re-encodes them)."""
        if not forgetting:
            return
        counts = self.counts[slot]
        if self.touched_by_agent:  # every action table of the agents that forget moves
            self.touched_by_agent[slot][slice(None) if agents is None else agents] = True
        if self.scope == "per_agent" and agents is not None and len(agents) < len(counts):
            rows = counts[agents]
            if self.kind != "D":
                self.touched[slot] |= (rows != self.prior[slot]).any(axis=(0, 1))
            forget(rows, self.prior[slot], forgetting)
            counts[agents] = rows
            return
        if self.kind != "D":
            axes = (0, 1) if self.scope == "per_agent" else (0,)
            self.touched[slot] |= (counts != self.prior[slot]).any(axis=axes)
        forget(counts, self.prior[slot], forgetting)

    def fixed_columns(self, slot: int, table: np.ndarray) -> NDArray[np.bool_]:
        """The columns of shared table ``slot`` (a mask over ``table.shape[1:]``) whose counts
        normalise to exactly ``table``'s column now and after any update: those where the mask
        has one entry, ``table`` is 1 there and 0 elsewhere, and the counts are not 0 there and
        0 elsewhere, as is the prior (a deterministic move learned on its support: ``c / c`` is
        exactly 1). Updates land on the mask only and forgetting decays toward the prior, so
        what is found holds until the mask, the table or the counts from outside
        (:meth:`restore`) change: it is found once for them."""
        mask = self.mask[slot]
        cached = self._fixed.get(slot)
        if cached is not None and cached[0] is mask and cached[1] is table:
            return cached[2]
        fixed: NDArray[np.bool_] = np.count_nonzero(mask, axis=0) == 1
        fixed &= np.all(table == mask, axis=0)
        fixed &= np.all((self.counts[slot] != 0) == mask, axis=0)
        fixed &= np.all((self.prior[slot] == 0) | mask, axis=0)
        self._fixed[slot] = (mask, table, fixed)
        return fixed

    def carry_fixed(self, slot: int, old: np.ndarray, new: np.ndarray) -> None:
        """``new`` replaces ``old`` as table ``slot``'s, equal to it in every column
        :meth:`fixed_columns` found for ``old`` (a refresh moved only the others): what was
        found holds for ``new``, and is not looked for again."""
        cached = self._fixed.get(slot)
        if cached is not None and cached[1] is old:
            self._fixed[slot] = (cached[0], new, cached[2])

    def restore(self, slot: int, counts: np.ndarray) -> None:
        """Counts from outside (a snapshot's) for table ``slot``: every column may differ from
        the table the agents use, and from what :meth:`fixed_columns` found."""
        self.counts[slot][...] = counts
        self.touched[slot].fill(True)
        if self.touched_by_agent:
            self.touched_by_agent[slot].fill(True)
        self._fixed.pop(slot, None)

    @property
    def learned(self) -> bool:
        """Whether the counts were updated since they were last their prior (until then the
        agents infer with the table the model was given)."""
        return self.version > self.reset_at

    def reset(self, tables: Sequence[np.ndarray]) -> None:
        """Back to the prior, as at load: counts, the experience not yet reported, the
        touched columns and the masks (the support of ``tables``, the model's own ``A``, ``B``
        or ``D`` by modality/factor, which the agents infer with again). The version goes on:
        ``version`` is bumped and becomes :attr:`reset_at` and the start of the next delta
        (:meth:`take_delta`), so a reader of deltas sees that the counts started over."""
        for slot, index in enumerate(self.tables):
            self.counts[slot][...] = self.prior[slot]  # per agent: every agent's row
            self.experience[slot].fill(0.0)
            self.agent_ticks[slot] = 0
            self.touched[slot].fill(False)
            if self.touched_by_agent:
                self.touched_by_agent[slot].fill(False)
            if self.kind != "D":
                self.mask[slot] = np.asarray(tables[index]) > 0
        self.refreshed = False
        self.version += 1
        self.reset_at = self.reported_version = self.version

    def normalised(self, slot: int) -> FloatArray:
        """The table the counts stand for (``(N, ...)`` per agent)."""
        axis = 1 if self.scope == "per_agent" else 0
        return normalise(self.counts[slot], axis=axis)

    def mark_refreshed(self, *, touched: bool = False) -> None:
        """The agents now infer with the normalised counts: masks become the counts' support
        (pymdp's ``A = norm(pA)`` after an update), touched columns are cleared (``touched``:
        every column counts as touched instead, the tables a shared pass follows being behind
        the compiled ones; the agents' action tables are cleared)."""
        if not self.refreshed and self.kind != "D":
            for slot, p in enumerate(self.prior):
                self.mask[slot] = p > 0
        self.refreshed = True
        for t in self.touched:
            t.fill(touched)
        for t in self.touched_by_agent:
            t.fill(False)

    def take_delta(self) -> Delta:
        """The increments and agent-ticks since the last call and the versions they span,
        then start anew."""
        delta = [e.copy() for e in self.experience]
        ticks = [int(t) for t in self.agent_ticks]
        for e in self.experience:
            e.fill(0.0)
        self.agent_ticks.fill(0)
        start, self.reported_version = self.reported_version, self.version
        return Delta(start, self.version, delta, ticks)

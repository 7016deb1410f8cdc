"""The per-agent state of an Active Inference group: beliefs, priors, policy posteriors and
committed actions, in preallocated ``(n_agents, ...)`` arrays; their sizes, and the state in and
out of snapshots.

:class:`AgentState` owns the arrays; the group's other parts read and write them in blocks (the
block stepper, a planning policy's passes, the workers) or at once (learning), and the group
replaces them only through :meth:`AgentState.allocate` (a resize) and :meth:`AgentState.share`
(workers): both bump :attr:`AgentState.version`, which tells the block views to follow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

from edge_agent.core.contract import StateReader
from edge_agent.core.priors import resets_of_kept_priors, saved_small_flags
from edge_agent.errors import InputError, SnapshotError

#: ``new(shape, dtype)``: a zero-filled array of per-agent state (in shared memory when workers
#: step the group).
Allocate = Callable[[int | tuple[int, ...], npt.DTypeLike], np.ndarray]
#: ``take(name, out)``: a snapshot's array ``name`` copied into ``out`` (InputError if it lacks
#: it or its shape differs).
Take = Callable[[str, np.ndarray], None]


#: Below this many rows a reset assigns its row the plain way (:func:`fill_rows`' views cost
#: more than the loop they save).
FILL_ROWS_MIN = 256


def fill_rows(a: np.ndarray, sel: slice | np.ndarray, row: np.ndarray) -> None:
    """``a[sel] = row`` for ``a (N, K)`` and ``row (K,)`` (cast to ``a``'s dtype as that
    assignment casts it): where ``a``'s rows are contiguous and at least
    :data:`FILL_ROWS_MIN`, each row written as one value of its bytes (a row broadcast over
    ``N`` rows loops over them: at 1,000 T-maze agents' ``(N, 4)`` float32 beliefs about 6x the
    instructions); the same bytes."""
    if a.ndim != 2 or a.shape[0] < FILL_ROWS_MIN or a.strides[1] != a.itemsize:
        a[sel] = row
        return
    r = np.ascontiguousarray(row, dtype=a.dtype)
    if r.shape != a.shape[1:]:
        a[sel] = row
        return
    whole = _row_bytes(r.nbytes)
    a.view(whole)[sel, 0] = r.view(whole)[0]


@lru_cache(maxsize=16)
def _row_bytes(size: int) -> np.dtype:
    """The dtype of ``size`` bytes that :func:`fill_rows` writes a row as."""
    return np.dtype((np.void, size))


#: The most bytes of a :class:`RowTiles` tile (a row repeated: its rows ``TILE_BYTES // row
#: bytes``, at least one).
TILE_BYTES = 2048


class RowTiles:
    """``a[:] = row`` for every row of ``a (N, K)`` (a reset of every agent), as :func:`fill_rows`
    writes it, from a tile of the row repeated (cast to ``a``'s dtype, at most
    :data:`TILE_BYTES`): ``a``'s rows a tile at a time, one contiguous copy of the tile's values
    each (a row's bytes written as one value loop over every row, about 5x the time at 1,000
    T-maze agents' ``(N, 4)`` float64 beliefs). Each ``key`` keeps its tile, made again when the
    row cast is not the one it was made of (compared by its bytes: a row changed in place is
    seen) or ``a``'s dtype or width differ."""

    @staticmethod
    def nbytes_for(row_bytes: Sequence[int]) -> int:
        """The most bytes the tiles of rows of ``row_bytes`` hold (one key each: at most
        :data:`TILE_BYTES`, or the row when it is longer): reserved with the group."""
        return sum(max(TILE_BYTES, b) for b in row_bytes)

    def __init__(self) -> None:
        #: ``key`` -> the row's bytes cast (what the tile repeats) and the tile ``(T, K)``.
        self._tiles: dict[int, tuple[bytes, np.ndarray]] = {}

    def fill(self, key: int, a: np.ndarray, sel: slice | np.ndarray, row: np.ndarray) -> None:
        """``a[sel] = row`` (:func:`fill_rows`; every row of a C-contiguous ``a`` from ``key``'s
        tile when ``sel`` is ``slice(None)``)."""
        if (not isinstance(sel, slice) or sel != _EVERY or a.ndim != 2
                or a.shape[0] < FILL_ROWS_MIN or not a.flags.c_contiguous):
            fill_rows(a, sel, row)
            return
        r = np.ascontiguousarray(row, dtype=a.dtype)
        if r.shape != a.shape[1:]:
            fill_rows(a, sel, row)
            return
        made = self._tiles.get(key)
        value = r.tobytes()
        if made is None or made[0] != value or made[1].dtype != a.dtype:
            tile = np.tile(r, (max(1, TILE_BYTES // max(1, r.nbytes)), 1))
            self._tiles[key] = made = (value, tile)
        tile = made[1]
        n, t = a.shape[0], tile.shape[0]
        whole = n // t * t
        if whole:
            a[:whole].reshape(-1, tile.size)[...] = tile.reshape(-1)
        if whole < n:
            a[whole:] = tile[: n - whole]


#: Every row: the selection a reset of every agent is given.
_EVERY = slice(None)


def snapshot_taker(state: Mapping[str, np.ndarray], group: str) -> Take:
    """The :data:`Take` of group ``group``'s snapshot ``state``: a
    :class:`~edge_agent.core.contract.StateReader` (a snapshot's arrays) has each array copied
    straight into the group's own, chunk by chunk, with no whole copy of it made."""
    reader = state if isinstance(state, StateReader) else None

    def take(name: str, out: np.ndarray) -> None:
        if name not in state:
            raise InputError(f"group {group!r} snapshot lacks {name!r}")
        if reader is not None:
            try:
                reader.read_into(name, out)
            except SnapshotError as err:
                raise InputError(f"group {group!r} snapshot {err}") from err
            return
        arr = np.asarray(state[name])
        if arr.shape != out.shape:
            raise InputError(
                f"group {group!r} snapshot {name!r} has shape {arr.shape}, expected {out.shape}"
            )
        out[...] = arr

    return take


class AgentState:
    """Every agent's state, all ``(n_agents, ...)``: ``qs[f]`` posterior ``(N, S_f)``;
    ``prior[f]`` the prior of the next observation ``(N, S_f)``; ``q_pi`` and ``G`` ``(N, P)``;
    ``action`` the last committed action ``(N, F)`` int64 and ``has_action`` ``(N,)`` whether an
    agent committed one in its trial.

    A group that keeps no prior between ticks (:attr:`keeps_prior` False) has ``prior`` empty
    and keeps what it follows from besides beliefs and actions (:mod:`edge_agent.core.priors`):
    ``prior_reset`` ``(N,)`` whether an agent's prior is ``D`` (reset since it acted) and
    ``prior_small`` ``(blocks,)`` whether a block's comes from the small-block planner's
    predictions.
    """

    def __init__(
        self,
        num_states: Sequence[int],
        num_policies: int,
        num_factors: int,
        dtype: np.dtype,
        *,
        keep_prior: bool,
    ) -> None:
        self.num_states = tuple(int(s) for s in num_states)
        self.num_policies = int(num_policies)
        self.num_factors = int(num_factors)
        self.dtype = dtype
        #: Whether the group was asked to keep its prior, and whether it ever kept it (it keeps
        #: it then: a kept prior may differ from a made one by rounding).
        self.keep_prior_asked = keep_prior
        self.prior_was_kept = False
        self.keeps_prior = True
        #: infer_states ran, and no action was committed since (a group that keeps no prior
        #: refuses to infer again: the second inference would start from the first's).
        self.beliefs_ahead = False
        self.n_agents = 0
        #: Bumped whenever the arrays are replaced: views of the old ones are stale.
        self.version = 0
        #: Bumped by :meth:`wrote`, whenever something other than a per-agent compiled pass
        #: writes the state (or hands its arrays out to be written): the pass takes the next
        #: prior it kept in ``prior`` as its tick's only while this is what it recorded.
        self.writes = 0
        empty = np.zeros((0,), dtype=dtype)
        self.qs: list[np.ndarray] = []
        self.prior: list[np.ndarray] = []
        self.q_pi = self.G = empty
        self.action: NDArray[np.int64] = np.zeros((0, num_factors), dtype=np.int64)
        self.has_action: NDArray[np.bool_] = np.zeros(0, dtype=bool)
        self.prior_reset: NDArray[np.bool_] = np.zeros(0, dtype=bool)
        #: Each factor's prior ``D`` repeated, that a reset of every agent writes from.
        self._tiles = RowTiles()
        self.prior_small: NDArray[np.uint8] = np.zeros(0, dtype=np.uint8)

    # -- sizes -------------------------------------------------------------------------------------
    def bytes_per_agent(self, keeps_prior: bool) -> dict[str, int]:
        """One agent's bytes: ``beliefs`` (``qs``, and ``prior`` or the flag that says it is
        ``D``), ``policy`` (``q_pi`` and ``G``), ``actions`` (and the flag)."""
        item = self.dtype.itemsize
        beliefs = sum(self.num_states) * item  # qs
        beliefs += beliefs if keeps_prior else 1  # prior, or its flag
        return {
            "beliefs": beliefs,
            "policy": 2 * self.num_policies * item,  # q_pi + G
            "actions": self.num_factors * 8 + 1,  # action + has_action
        }

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays allocated now."""
        arrays = [*self.qs, *self.prior, self.q_pi, self.G, self.action, self.has_action]
        if not self.keeps_prior:
            arrays.append(self.prior_reset)
        return int(sum(a.nbytes for a in arrays))

    # -- allocation --------------------------------------------------------------------------------
    def allocate(
        self,
        n_agents: int,
        *,
        keeps_prior: bool,
        block_size: int,
        new: Allocate,
        make_priors: Callable[[list[np.ndarray], int], None],
    ) -> bool:
        """New arrays for ``n_agents`` (``block_size``: the group's blocks, one ``prior_small``
        flag each), the first agents' state carried over; ``make_priors(out, n)`` makes the
        priors of the first ``n`` agents into ``out`` when the group keeps its prior from now on
        and kept none so far. Returns whether :attr:`keeps_prior` changed (the stepper's prior
        scratch follows). New agents' rows are zero: the caller resets them."""
        keep = min(self.n_agents, n_agents)
        dt = self.dtype
        qs = [new((n_agents, s), dt) for s in self.num_states]
        prior = [new((n_agents, s), dt) for s in self.num_states] if keeps_prior else []
        prior_reset = new(0 if keeps_prior else n_agents, bool)
        prior_small = new(0 if keeps_prior else -(-n_agents // block_size), np.uint8)
        q_pi = new((n_agents, self.num_policies), dt)
        G = new((n_agents, self.num_policies), dt)
        action = new((n_agents, self.num_factors), np.int64)
        has_action = new(n_agents, bool)
        if keep:
            if prior and not self.keeps_prior:  # kept from now on: made for the agents kept
                make_priors(prior, keep)
            elif prior:
                for p, cur in zip(prior, self.prior, strict=True):
                    p[:keep] = cur[:keep]
            else:
                prior_reset[:keep] = self.prior_reset[:keep]
                # Whole blocks keep where their priors come from; a last block that grows
                # propagates them (equal to the small-block product to rounding).
                whole = keep // block_size
                prior_small[:whole] = self.prior_small[:whole]
            for q, cur in zip(qs, self.qs, strict=True):
                q[:keep] = cur[:keep]
            q_pi[:keep] = self.q_pi[:keep]
            G[:keep] = self.G[:keep]
            action[:keep] = self.action[:keep]
            has_action[:keep] = self.has_action[:keep]
        self.qs, self.prior, self.q_pi, self.G = qs, prior, q_pi, G
        self.prior_reset, self.prior_small = prior_reset, prior_small
        self.action, self.has_action = action, has_action
        changed = keeps_prior != self.keeps_prior
        self.keeps_prior = self.prior_was_kept = keeps_prior
        self.n_agents = n_agents
        self.version += 1
        self.wrote()
        return changed

    def share(self) -> None:
        """Move the arrays into shared memory (those there already stay where they are): forked
        workers write them."""
        from edge_agent.core.workers import shared  # noqa: PLC0415 - multi-core groups only

        self.qs = [shared(q) for q in self.qs]
        self.prior = [shared(p) for p in self.prior]
        self.prior_reset, self.prior_small = shared(self.prior_reset), shared(self.prior_small)
        self.q_pi, self.G = shared(self.q_pi), shared(self.G)
        self.action, self.has_action = shared(self.action), shared(self.has_action)
        self.version += 1
        self.wrote()

    # -- verbs -------------------------------------------------------------------------------------
    def wrote(self) -> None:
        """Something other than a per-agent compiled pass wrote the beliefs, the prior or the
        actions (or handed them out to be written): a next prior the pass kept in ``prior`` is
        not taken (:attr:`writes`; the pass makes its tick's prior again). A :meth:`reset`
        writes ``D`` into a kept prior's rows, the right next prior of the agents reset: it
        keeps the mark."""
        self.writes += 1

    def reset(self, sel: slice | np.ndarray, D: Sequence[np.ndarray]) -> None:
        """Agents ``sel`` start a trial: beliefs and prior ``D``, no action, uniform ``q_pi``."""
        tiles = self._tiles
        for f, d in enumerate(D):
            if self.keeps_prior:
                tiles.fill(f, self.prior[f], sel, d)
            tiles.fill(f, self.qs[f], sel, d)
        if isinstance(sel, slice) and sel == _EVERY:  # every agent: each array filled whole
            if not self.keeps_prior:
                self.prior_reset.fill(True)
            self.has_action.fill(False)
            self.q_pi.fill(1.0 / self.num_policies)
            self.G.fill(0.0)
            return
        if not self.keeps_prior:
            self.prior_reset[sel] = True
        self.has_action[sel] = False
        self.q_pi[sel] = 1.0 / self.num_policies
        self.G[sel] = 0.0

    def check_behind(self, group: str) -> None:
        """A group that keeps no prior makes it from its beliefs: refuse to infer twice without
        an action committed between (the second inference would start from the first's)."""
        if self.beliefs_ahead:
            raise InputError(
                f"group {group!r} keeps no prior between ticks (keep_prior=False): commit "
                "actions (sample_action, set_action) before inferring again"
            )

    def commit(self, sl: slice, *, small: bool, index: int) -> None:
        """The agents ``sl`` (block ``index``) committed actions and the group keeps no prior:
        their next prior follows from their beliefs and actions (through the small-block
        planner's predictions if ``small``)."""
        self.prior_reset[sl] = False
        self.prior_small[index] = small

    # -- snapshots ---------------------------------------------------------------------------------
    def state_dict(self, ticks: int) -> dict[str, np.ndarray]:
        """The arrays that restore the agents' state (views: valid until the next step), and
        ``ticks``, the group's count of steps."""
        self.wrote()  # views handed out, that may be written
        out: dict[str, np.ndarray] = {
            "action": self.action,
            "has_action": self.has_action,
            "q_pi": self.q_pi,
            "ticks": np.array(ticks, dtype=np.int64),
        }
        for f in range(self.num_factors):
            out[f"qs{f}"] = self.qs[f]
            if self.keeps_prior:
                out[f"prior{f}"] = self.prior[f]
        if not self.keeps_prior:  # what the priors follow from besides beliefs and actions
            out["prior_reset"] = self.prior_reset
            out["prior_small"] = self.prior_small
        return out

    def load_state_dict(
        self,
        state: Mapping[str, np.ndarray],
        take: Take,
        *,
        D: Sequence[np.ndarray],
        blocks: int,
        block_size: int,
        small_from_planner: bool,
        make_priors: Callable[[np.ndarray, np.ndarray], None],
        name: str,
    ) -> None:
        """Restore from :meth:`state_dict`'s arrays, read with ``take``. The prior: as saved; or,
        for a saved group that kept none, made by ``make_priors(reset, small)`` (its flags per
        agent and per block, ``blocks`` of them); or, kept by the saved group and kept by none
        here, what follows of it (``D`` where it is ``D``, read ``block_size`` rows at a time;
        each block's flag ``small_from_planner``)."""
        self.wrote()
        take("action", self.action)
        take("has_action", self.has_action)
        take("q_pi", self.q_pi)
        for f in range(self.num_factors):
            take(f"qs{f}", self.qs[f])
        self.beliefs_ahead = False
        kept = all(f"prior{f}" in state for f in range(self.num_factors))
        if self.keeps_prior and (kept or "prior_reset" not in state):
            for f in range(self.num_factors):
                take(f"prior{f}", self.prior[f])
        elif self.keeps_prior:  # a group's that kept none: made from what it kept
            reset = np.zeros(self.n_agents, dtype=bool)
            take("prior_reset", reset)
            make_priors(reset, saved_small_flags(state, blocks))
        elif "prior_reset" in state or not kept:
            take("prior_reset", self.prior_reset)
            self.prior_small[...] = saved_small_flags(state, len(self.prior_small))
        else:  # a group's that kept it (an earlier snapshot format): D where it is D
            resets_of_kept_priors(state, D, self.prior_reset, rows=block_size, name=name)
            self.prior_small.fill(1 if small_from_planner else 0)

"""Batched simulated worlds: one object steps the worlds of N agents at once.

Every environment is the generative process of a :class:`~edge_agent.aif.model.GenerativeModel`
(here the process equals the model an agent should use), simulated for ``N`` agents with array
operations only: no Python loop over agents, every per-agent array allocated up front and reused.

Shapes (``N`` agents, ``F`` state factors, ``M`` modalities):

* ``reset(mask=None) -> obs``: ``mask`` is ``(N,) bool`` or ``None`` for all agents. Masked agents
  get new hidden states (from ``D`` or the world's episode rules) and a new observation; the
  others keep their state and their last observation.
* ``step(actions) -> obs``: ``actions`` is ``(N, F)`` integers, ``actions[i, f] < U_f``; anything
  else raises :class:`~edge_agent.errors.InputError`. ``obs`` is ``(N, M) int64``.
* ``true_states``: ``(N, F) int32``.

Arrays returned by ``reset``, ``step`` and the properties are **read-only views of buffers the
environment reuses**: they change on the next ``reset``/``step`` and are replaced by ``resize``.
Copy them to keep them.

Observations and transitions are drawn by inverse-CDF sampling on precomputed cumulative columns
(:class:`ColumnSampler`), with one uniform stream per environment
(:class:`~edge_agent.sim.uniforms.SplitMix64`: a daemon running a world never imports
``numpy.random``), so a seed fixes a run. The worlds: :mod:`edge_agent.sim.gridworld`,
:mod:`edge_agent.sim.tmaze`, :mod:`edge_agent.sim.explorer`; look them up by name with
:mod:`edge_agent.sim.registry`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edge_agent.aif.model import GenerativeModel
from edge_agent.errors import InputError, ModelError
from edge_agent.sim.uniforms import SplitMix64

IntArray = NDArray[np.int64]
#: A world's per-agent states and counters: int32 (4 bytes an agent each, not 8).
StateArray = NDArray[np.int32]
IndexArray = NDArray[np.intp]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

#: Columns with at most this many possible outcomes are searched slot by slot; wider columns in
#: two levels (blocks of ``ceil(sqrt(K))`` slots), so a draw costs ``O(sqrt(K))`` passes.
ONE_PASS_MAX_SLOTS = 8

# Larger than any cumulative probability: marks padding slots that must never be chosen.
_PAD_CDF = 2.0

#: A draw of at most this many agents (a world's spawns: the agents whose episode ended, about
#: a fifth of a grid world's agents a tick) compares every block end, then every slot of the
#: chosen blocks, in one pass each over a ``(width, n)`` scratch (:data:`FEW_WIDTH` rows at
#: most) instead of one pass per slot: the same comparisons, counted the same way, in a handful
#: of numpy calls where the per-slot passes make dozens.
FEW_DRAWS = 128
#: The most block ends or slots of a block the few-agent draw compares at once (columns of up
#: to 256 possible outcomes).
FEW_WIDTH = 16

__all__ = [
    "FEW_DRAWS",
    "FEW_WIDTH",
    "ONE_PASS_MAX_SLOTS",
    "BatchEnv",
    "ColumnSampler",
    "SamplerScratch",
    "check_n_agents",
    "format_summary",
    "sample_columns",
]


@dataclass(frozen=True, eq=False)
class ColumnSampler:
    """Inverse-CDF sampler over the columns of a column-stochastic table ``(O, C)``.

    Only the nonzero entries of each column are kept, as ``K`` *slots* (``K`` = most nonzero
    entries in any column), so an outcome of probability 0 is never drawn. A column's cumulative
    probabilities are laid out as ``blocks`` blocks of ``block`` slots. A draw counts the block
    ends ``<= u`` (which block), then the slots ``<= u`` inside that block (which slot): that is
    ``searchsorted(cdf[:, col], u, side="right")``, for every agent at once, one pass over the
    agents per slot, with ``(n,)`` scratch whatever ``K`` is.
    """

    support: IndexArray  # (C * K,) outcome of slot k of column c at c * K + k; padding repeats
    cdf_slots: FloatArray  # (block, C * blocks) cumulative probability of slot k of each block
    block_ends: FloatArray  # (blocks, C) cumulative probability at the last slot of each block
    num_outcomes: int  # O
    slots: int  # K
    block: int  # slots per block
    blocks: int  # blocks per column

    @property
    def num_columns(self) -> int:
        return int(self.block_ends.shape[1])

    @property
    def deterministic(self) -> bool:
        """Every column has a single possible outcome: sampling needs no random number."""
        return self.slots == 1

    @classmethod
    def from_table(cls, table: np.ndarray) -> ColumnSampler:
        """Precompute the cumulative columns of ``table`` ``(O, C)``; columns must sum to 1."""
        tab = np.asarray(table, dtype=np.float64)
        if tab.ndim != 2 or tab.shape[0] == 0 or tab.shape[1] == 0:
            raise ModelError(
                f"sampling table has shape {tab.shape}, expected (O, C) with O, C >= 1"
            )
        if not np.all(np.isfinite(tab)) or np.any(tab < 0):
            raise ModelError("sampling table has a negative or non-finite probability")
        num_outcomes, num_columns = tab.shape
        nonzero = tab > 0
        counts = nonzero.sum(axis=0)
        if np.any(counts == 0):
            col = int(np.flatnonzero(counts == 0)[0])
            raise ModelError(f"sampling table column {col} has no probability mass")
        slots = int(counts.max())
        # Outcome indices with nonzero probability first, in index order: (K, C).
        order = np.argsort(~nonzero, axis=0, kind="stable")[:slots]
        probs = np.take_along_axis(tab, order, axis=0)
        valid = np.arange(slots)[:, None] < counts[None, :]
        probs = np.where(valid, probs, 0.0)
        cum = np.cumsum(probs, axis=0) / probs.sum(axis=0, keepdims=True)
        cols = np.arange(num_columns)
        cum[counts - 1, cols] = 1.0  # exact: no u < 1 can pass a column's last outcome
        cum = np.where(valid, cum, _PAD_CDF)
        support = np.where(valid, order, order[counts - 1, cols][None, :])

        block = slots if slots <= ONE_PASS_MAX_SLOTS else math.isqrt(slots - 1) + 1
        blocks = -(-slots // block)
        cum_cols = np.full((num_columns, blocks * block), _PAD_CDF)
        cum_cols[:, :slots] = cum.T
        by_block = cum_cols.reshape(num_columns, blocks, block)
        support_flat = np.ascontiguousarray(support.T, dtype=np.intp).reshape(-1)
        cdf_slots = np.ascontiguousarray(by_block.reshape(num_columns * blocks, block).T)
        block_ends = np.ascontiguousarray(by_block[:, :, -1].T)
        for arr in (support_flat, cdf_slots, block_ends):
            arr.setflags(write=False)
        return cls(
            support=support_flat,
            cdf_slots=cdf_slots,
            block_ends=block_ends,
            num_outcomes=int(num_outcomes),
            slots=slots,
            block=block,
            blocks=blocks,
        )


class SamplerScratch:
    """Preallocated ``(n,)`` work arrays for :func:`sample_columns` on up to ``n`` agents."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.values: FloatArray = np.empty(n, dtype=np.float64)
        self.below: BoolArray = np.empty(n, dtype=np.bool_)
        self.block: IndexArray = np.empty(n, dtype=np.intp)
        self.slot: IndexArray = np.empty(n, dtype=np.intp)
        self.index: IndexArray = np.empty(n, dtype=np.intp)
        # Counts of the block ends and slots <= u, in bytes: a bool added to a byte is an add of
        # one dtype (an add of bools to intp casts them: 7 against 1 us for 16,384 agents)
        self.block_count: NDArray[np.uint8] = np.empty(n, dtype=np.uint8)
        self.slot_count: NDArray[np.uint8] = np.empty(n, dtype=np.uint8)
        # A draw of at most FEW_DRAWS agents: (width, n) comparisons, laid out flat (18 KB).
        few = FEW_WIDTH * min(n, FEW_DRAWS)
        self.few_values: FloatArray = np.empty(few, dtype=np.float64)
        self.few_below: BoolArray = np.empty(few, dtype=np.bool_)

    def head(self, n: int) -> SamplerScratch:
        """The same buffers' first ``n`` elements, as a scratch for ``n`` agents (views)."""
        if n == self.n:
            return self
        if not 0 < n <= self.n:
            raise ValueError(f"a scratch of {self.n} has no head of {n}")
        out = SamplerScratch.__new__(SamplerScratch)
        out.n = n
        for name in ("values", "below", "block", "slot", "index", "block_count", "slot_count"):
            setattr(out, name, getattr(self, name)[:n])
        out.few_values, out.few_below = self.few_values, self.few_below
        return out


def sample_columns(
    sampler: ColumnSampler,
    cols: IndexArray,
    u: FloatArray,
    out: IndexArray,
    scratch: SamplerScratch,
) -> None:
    """Draw ``out[i]`` from column ``cols[i]`` of the sampler's table with uniform ``u[i]``.

    ``cols``, ``u``, ``out``: ``(n,)`` with ``n == scratch.n``; ``u`` in ``[0, 1)`` (unused when
    the sampler is deterministic). Pure: writes only ``out`` and ``scratch``, allocates no array.
    """
    if cols.shape != (scratch.n,):
        raise ValueError(f"cols has shape {cols.shape}, scratch serves ({scratch.n},)")
    if sampler.deterministic:
        np.take(sampler.support, cols, out=out, mode="clip")
        return
    if scratch.n <= FEW_DRAWS and max(sampler.blocks, sampler.block) <= FEW_WIDTH:
        _sample_few(sampler, cols, u, out, scratch)
        return
    values, below = scratch.values, scratch.below
    # Counted in bytes where a count fits (at most 255 block ends or slots), else in intp.
    small = sampler.blocks <= 256 and sampler.block <= 256
    step = below.view(np.uint8) if small else below
    # The last block end and the last slot of the chosen block are > u by construction (1.0 or
    # padding), so they are never counted and not compared.
    if sampler.blocks > 1:
        block = scratch.block_count if small else scratch.block
        block.fill(0)
        for k in range(sampler.blocks - 1):
            np.take(sampler.block_ends[k], cols, out=values, mode="clip")
            np.less_equal(values, u, out=below)
            np.add(block, step, out=block)
        rows = scratch.index
        np.multiply(cols, sampler.blocks, out=rows)
        np.add(rows, block, out=rows)
    else:
        rows = cols
    slot = scratch.slot_count if small else scratch.slot
    slot.fill(0)
    for k in range(sampler.block - 1):
        np.take(sampler.cdf_slots[k], rows, out=values, mode="clip")
        np.less_equal(values, u, out=below)
        np.add(slot, step, out=slot)
    _take_drawn(sampler, cols, block if sampler.blocks > 1 else None, slot, out=out,
                scratch=scratch)


def _take_drawn(
    sampler: ColumnSampler,
    cols: IndexArray,
    block: np.ndarray | None,
    slot: np.ndarray,
    *,
    out: IndexArray,
    scratch: SamplerScratch,
) -> None:
    """``out``: the outcomes drawn, each agent's ``slot`` of its ``block`` (None: one block a
    column) in column ``cols``; ``scratch.block`` and ``scratch.index`` written."""
    if block is not None:  # the slot among the column's: its block's first, plus the count
        first = scratch.block
        np.multiply(block, sampler.block, out=first, dtype=np.intp)
        np.add(first, slot, out=first)
        slot = first
    flat = scratch.index
    np.multiply(cols, sampler.slots, out=flat)
    np.add(flat, slot, out=flat)
    np.take(sampler.support, flat, out=out, mode="clip")


def _count_at_most(
    table: FloatArray, cols: IndexArray, u: FloatArray, count: IndexArray, scratch: SamplerScratch
) -> None:
    """``count[i]``: how many of the rows of ``table (w, C)`` have ``table[:, cols[i]] <= u[i]``
    (:func:`sample_columns`' counts of block ends and of slots, for a few agents at once)."""
    w, n = table.shape[0], cols.shape[0]
    values = scratch.few_values[: w * n].reshape(w, n)
    below = scratch.few_below[: w * n].reshape(w, n)
    np.take(table, cols, axis=1, out=values, mode="clip")
    np.less_equal(values, u, out=below)
    np.add.reduce(below, axis=0, dtype=np.intp, out=count)


def _sample_few(
    sampler: ColumnSampler,
    cols: IndexArray,
    u: FloatArray,
    out: IndexArray,
    scratch: SamplerScratch,
) -> None:
    """:func:`sample_columns` of at most :data:`FEW_DRAWS` agents: each level's comparisons
    (the block ends, then the slots of each agent's block) in one pass, counted as the per-slot
    passes count them: the same outcome for the same ``u``."""
    if sampler.blocks > 1:
        block = scratch.block
        _count_at_most(sampler.block_ends[: sampler.blocks - 1], cols, u, block, scratch)
        rows = scratch.index
        np.multiply(cols, sampler.blocks, out=rows)
        np.add(rows, block, out=rows)
    else:
        rows = cols
    slot = scratch.slot
    if sampler.block > 1:
        _count_at_most(sampler.cdf_slots[: sampler.block - 1], rows, u, slot, scratch)
    else:
        slot.fill(0)
    _take_drawn(sampler, cols, scratch.block if sampler.blocks > 1 else None, slot, out=out,
                scratch=scratch)


def format_summary(
    summary: Mapping[str, int | float], references: Mapping[str, str] | None = None
) -> str:
    """``goals_reached 131026, mean_steps_to_goal 9.2 (fewest possible 9.09, random walk
    265)``: counts (``int`` or numpy integers) as integers, the rest to three significant digits
    but never in exponent form (``mean_episode_steps 1234``, not ``1.23e+03``), a mean of
    nothing yet (NaN) as ``n/a``; ``references`` (a world's :meth:`BatchEnv.references`) in
    brackets after the value they are for."""
    refs = references or {}
    return ", ".join(
        f"{k} {_format_number(v)}" + (f" ({refs[k]})" if k in refs else "")
        for k, v in summary.items()
    )


def _format_number(v: float) -> str:
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if math.isnan(v):
        return "n/a"
    if abs(v) >= 1000:  # also inf
        return f"{v:.0f}"
    return f"{v:.3g}"


def check_n_agents(n_agents: object) -> int:
    """An agent count from outside: a positive int, else :class:`InputError`."""
    if isinstance(n_agents, bool) or not isinstance(n_agents, (int, np.integer)):
        raise InputError(f"n_agents must be an int, got {type(n_agents).__name__}")
    n = int(n_agents)
    if n < 1:
        raise InputError(f"n_agents must be >= 1, got {n}")
    return n


class World(Protocol):
    """What the daemon needs of a simulated world: :class:`BatchEnv` and
    :class:`~edge_agent.sim.sensors.SensorWorld` both are one."""

    @property
    def n_agents(self) -> int: ...

    @property
    def episode_start(self) -> NDArray[np.bool_]: ...

    def reset(self, mask: np.ndarray | None = None) -> np.ndarray: ...

    def step(self, actions: np.ndarray) -> np.ndarray: ...

    def summary(self) -> dict[str, int | float]: ...

    def references(self) -> dict[str, str]: ...


#: Agents per pass of a world's sampling: its scratch (and its generator's) holds this many,
#: and a larger world is sampled a chunk at a time, in the same order (the same numbers: the
#: generator's stream does not depend on how it is split), and in cache.
SAMPLE_CHUNK = 1 << 14


class BatchEnv:
    """``N`` independent copies of one world, stepped together.

    Used directly, it simulates any model as its own generative process (or ``process``, one of
    the same shape its agents are not told): hidden states start from ``D``, move by ``B`` and are
    observed through ``A``, with no episodes. The built-in worlds
    subclass it and add episode rules and statistics through the ``_`` hooks below.

    Step order: validate ``actions``; decide which agents start a new episode at this step
    (:meth:`_restart_before_step`); move every agent by ``B``; put the restarting agents at fresh
    spawn states (their action is ignored) and zero their ``episode_steps``; observe every agent
    through ``A``; update statistics (:meth:`_record_step`).

    Sampling runs :data:`SAMPLE_CHUNK` agents at a time, with scratch of that size. A subclass
    that needs per-agent temporaries says how many: ``_FLAG_ROWS`` rows of ``_flags (rows, N)
    bool`` and, with ``_AGENT_TMP``, ``_tmp (N,) intp``.
    """

    _FLAG_ROWS: ClassVar[int] = 0
    _AGENT_TMP: ClassVar[bool] = False

    def __init__(
        self,
        model: GenerativeModel,
        n_agents: int,
        *,
        seed: int = 0,
        process: GenerativeModel | None = None,
        model_recipe: Callable[[], GenerativeModel] | None = None,
    ) -> None:
        n = check_n_agents(n_agents)
        # A world made from parameters (``model_recipe`` makes ``model`` from them: the built-in
        # worlds) keeps its model only while it is built: stepping reads the samplers, never
        # the model, and a daemon running the world never asks for it (grid10's float64 ``A``
        # and ``B``: 480 KB). :attr:`model` makes it again when asked.
        self._model: GenerativeModel | None = model
        self._model_recipe = model_recipe
        # What the world samples from: the model itself, or a process its agents are not told
        # (``process``, the same shape), read here to build the samplers and not kept.
        source = model if process is None else process
        self._seed = seed
        self._rng = SplitMix64(seed)
        self._num_states = model.num_states
        self._num_controls = model.num_controls
        # A[m] flattened to (O_m, S_0 * ... * S_{F-1}): the column of a state is its row-major
        # joint index sum_f s_f * stride_f.
        self._obs_samplers = tuple(
            ColumnSampler.from_table(a.reshape(a.shape[0], -1)) for a in source.A
        )
        # B[f] flattened to (S_f, S_f * U_f): the column of (s, u) is s * U_f + u.
        self._move_samplers = tuple(
            ColumnSampler.from_table(b.reshape(b.shape[0], -1)) for b in source.B
        )
        spawn = self._spawn_distributions()
        if len(spawn) != model.num_factors:
            raise ModelError(f"{len(spawn)} spawn distributions for {model.num_factors} factors")
        self._spawn_samplers = tuple(
            ColumnSampler.from_table(np.asarray(d, dtype=np.float64).reshape(-1, 1)) for d in spawn
        )
        for f, sampler in enumerate(self._spawn_samplers):
            if sampler.num_outcomes != self._num_states[f]:
                raise ModelError(
                    f"spawn distribution {f} has {sampler.num_outcomes} states, "
                    f"factor {f} has {self._num_states[f]}"
                )
        strides = [1] * model.num_factors
        for f in range(model.num_factors - 2, -1, -1):
            strides[f] = strides[f + 1] * self._num_states[f + 1]
        self._strides = tuple(strides)
        self._n = 0
        self._arrays: dict[str, NDArray[Any]] = {}
        self._views: dict[str, NDArray[Any]] = {}
        self._allocate(n)
        self.reset()
        if model_recipe is not None:
            self._model = None

    # -- public interface ------------------------------------------------------------------

    @property
    def model(self) -> GenerativeModel:
        """The generative model an agent should use for this world (the process itself unless
        the world was built with another ``process``). A world built with a ``model_recipe``
        makes it again at each call (keep it to use it twice): nothing the world does reads
        it."""
        if self._model is not None:
            return self._model
        assert self._model_recipe is not None  # only a world with a recipe lets it go
        return self._model_recipe()

    @property
    def n_agents(self) -> int:
        return self._n

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def true_states(self) -> StateArray:
        """``(N, F) int32`` hidden states, read-only view."""
        return self._views["states"]

    @property
    def obs(self) -> IntArray:
        """``(N, M) int64`` last observation of every agent, read-only view."""
        return self._views["obs"]

    @property
    def episode_steps(self) -> StateArray:
        """``(N,) int32`` steps taken since each agent's episode began (0 on the first obs)."""
        return self._views["episode_steps"]

    @property
    def episode_start(self) -> BoolArray:
        """``(N,) bool``: the last ``reset``/``step`` began a new episode for this agent.

        Its hidden state was redrawn, so a controller should reset that agent's beliefs to ``D``.
        """
        return self._views["episode_start"]

    def reset(self, mask: ArrayLike | None = None) -> IntArray:
        """Start new episodes for all agents, or for those where ``mask`` ``(N,) bool`` is True.

        Masked agents get spawn states, ``episode_steps`` 0 and a new observation; the others
        keep their state, observation and counters. Returns the ``(N, M)`` observation view.
        """
        where = self._mask
        if mask is None:
            where.fill(True)
        else:
            arr = mask if isinstance(mask, np.ndarray) else np.asarray(mask)
            if arr.shape != (self._n,):
                raise InputError(f"mask has shape {arr.shape}, expected ({self._n},)")
            if arr.dtype != np.bool_:
                raise InputError(f"mask has dtype {arr.dtype}, expected bool")
            np.copyto(where, arr)
        self._spawn(where)
        steps = self._arrays["episode_steps"]
        np.copyto(steps, 0, where=where)
        np.copyto(self._arrays["episode_start"], where)
        self._begin_episodes(where)
        self._observe(where)
        return self._views["obs"]

    def step(self, actions: ArrayLike) -> IntArray:
        """Apply ``actions`` ``(N, F)`` int and return the new ``(N, M)`` observation view."""
        acts = self._check_actions(actions)
        restart = self._restart
        self._restart_before_step(restart)
        states = self._arrays["states"]
        for f, sampler in enumerate(self._move_samplers):
            for sl in self._chunks:
                c = sl.stop - sl.start
                cols, draw = self._cols[:c], self._draw[:c]
                np.multiply(states[sl, f], self._num_controls[f], out=cols)
                np.add(cols, acts[sl, f], out=cols)
                self._sample(sampler, cols, draw)
                states[sl, f] = draw
        steps = self._arrays["episode_steps"]
        np.add(steps, 1, out=steps)
        if restart.any():
            self._spawn(restart)
            np.copyto(steps, 0, where=restart)
            self._begin_episodes(restart)
        np.copyto(self._arrays["episode_start"], restart)
        self._observe(None)
        self._record_step()
        return self._views["obs"]

    def resize(self, n_agents: int) -> None:
        """Change the number of agents, keeping the first ``min(old, new)`` agents as they are.

        New agents start fresh episodes with zero counters. Every buffer is reallocated, so views
        returned before are stale.
        """
        n = check_n_agents(n_agents)
        old, keep = self._arrays, min(n, self._n)
        self._allocate(n)
        for name, arr in old.items():
            self._arrays[name][:keep] = arr[:keep]
        if n > keep:
            fresh = np.zeros(n, dtype=np.bool_)
            fresh[keep:] = True
            self.reset(fresh)

    def summary(self) -> dict[str, int | float]:
        """Aggregate statistics over all agents, for logs and the demo: counts as ``int``,
        rates and means as ``float`` (:func:`format_summary` prints them so)."""
        return {
            "agents": self._n,
            "mean_episode_steps": float(self._arrays["episode_steps"].mean()),
        }

    def scores(self) -> np.ndarray | None:
        """``(N,) float64``: each agent's score so far as the world defines it (a new array),
        whose growth over a window is the ``score`` health measure (docs/health.md); None:
        the world defines none (the default)."""
        return None

    def references(self) -> dict[str, str]:
        """What some numbers of :meth:`summary` compare to, by their key (``mean_steps_to_goal``:
        ``fewest possible 9.09, random walk 265``): the demo's report prints them beside the
        numbers. Default: none."""
        return {}

    # -- hooks for the worlds ----------------------------------------------------------------

    def _spawn_distributions(self) -> Sequence[np.ndarray]:
        """Per factor, the distribution new episodes start from (asked once, while the world is
        built). Default: the model's ``D``."""
        return self.model.D

    def _agent_arrays(self, n: int) -> dict[str, NDArray[Any]]:
        """Per-agent statistics and flags (first axis ``n``), kept by :meth:`resize`."""
        del n
        return {}

    def _restart_before_step(self, out: BoolArray) -> None:
        """Write into ``out`` which agents start a new episode at this step. Default: none."""
        out.fill(False)

    def _begin_episodes(self, mask: BoolArray) -> None:
        """Clear per-episode flags of the agents in ``mask`` (their states were just spawned)."""
        del mask

    def _record_step(self) -> None:
        """Update statistics from ``states`` and ``obs`` after a step."""

    # -- internals ---------------------------------------------------------------------------

    def _allocate(self, n: int) -> None:
        F, M = len(self._num_states), len(self._obs_samplers)
        arrays: dict[str, NDArray[Any]] = {
            # int32: a state index, a step count (a million agents: 8 MB less); the outcomes stay
            # int64, the agents' dtype (a narrower one would be converted every tick)
            "states": np.zeros((n, F), dtype=np.int32),
            "obs": np.zeros((n, M), dtype=np.int64),
            "episode_steps": np.zeros(n, dtype=np.int32),
            "episode_start": np.zeros(n, dtype=np.bool_),
        }
        extra = self._agent_arrays(n)
        clash = sorted(set(extra) & set(arrays))
        if clash:
            raise ValueError(f"per-agent arrays {clash} shadow the base arrays")
        arrays.update(extra)
        self._arrays = arrays
        self._views = {}
        for name, arr in arrays.items():
            view = arr.view()
            view.flags.writeable = False
            self._views[name] = view
        self._n = n
        self._mask: BoolArray = np.zeros(n, dtype=np.bool_)
        self._restart: BoolArray = np.zeros(n, dtype=np.bool_)
        self._flags: BoolArray = np.zeros((self._FLAG_ROWS, n), dtype=np.bool_)
        self._tmp: IndexArray = np.zeros(n if self._AGENT_TMP else 0, dtype=np.intp)
        # Sampling scratch, a chunk of agents at a time.
        c = min(n, SAMPLE_CHUNK)
        self._chunks = [slice(start, min(start + c, n)) for start in range(0, n, c)]
        self._u: FloatArray = np.empty(c, dtype=np.float64)
        self._cols: IndexArray = np.zeros(c, dtype=np.intp)
        self._joint_tmp: IndexArray = np.zeros(c + 1, dtype=np.intp)
        self._front: IndexArray = np.zeros(c + 1, dtype=np.intp)
        self._places: IndexArray = np.arange(c, dtype=np.intp)
        self._draw: IndexArray = np.zeros(c, dtype=np.intp)
        self._zeros: IndexArray = np.zeros(c, dtype=np.intp)
        self._scratch = SamplerScratch(c)

    def _sample(self, sampler: ColumnSampler, cols: IndexArray, out: IndexArray) -> None:
        """Draw ``out`` from the sampler's columns ``cols`` (a chunk's, at most its size)."""
        c = cols.shape[0]
        u = self._u[:c]
        if not sampler.deterministic:
            self._rng.random(out=u)
        sample_columns(sampler, cols, u, out, self._scratch.head(c))

    def _spawn(self, where: BoolArray) -> None:
        """Spawn states for the agents in ``where``. A draw is one uniform for every agent
        (the stream's numbers do not depend on who spawns), but only the agents that spawn are
        sampled (a world's restarts are a few of its agents): their uniforms are made and
        sampled and written to their rows. Finding them, numpy makes their indices once (8 B an
        agent that spawns), 7 us for 16,384 agents where ranking every agent into buffers of
        ours took 99 us."""
        states = self._arrays["states"]
        for f, sampler in enumerate(self._spawn_samplers):
            for sl in self._chunks:
                c = sl.stop - sl.start
                chosen = where[sl]
                k = int(np.count_nonzero(chosen))
                if k == 0:
                    if not sampler.deterministic:
                        self._rng.skip(c)  # the stream moves past the chunk's all the same
                    continue
                if sampler.deterministic or k == c:
                    draw = self._draw[:c]
                    self._sample(sampler, self._zeros[:c], draw)
                    np.copyto(states[sl, f], draw, where=chosen)
                    continue
                spawning = np.compress(chosen, self._places[:c], out=self._front[:k])
                u = self._u[:k]
                self._rng.random_at(spawning, out=u)
                self._rng.skip(c)
                drawn = self._joint_tmp[:k]
                sample_columns(sampler, self._zeros[:k], u, drawn, self._scratch.head(k))
                states[sl, f][spawning] = drawn

    def _observe(self, where: BoolArray | None) -> None:
        states, obs = self._arrays["states"], self._arrays["obs"]
        for m, sampler in enumerate(self._obs_samplers):
            for sl in self._chunks:
                c = sl.stop - sl.start
                joint, tmp, draw = self._cols[:c], self._joint_tmp[:c], self._draw[:c]
                np.multiply(states[sl, 0], self._strides[0], out=joint)
                for f in range(1, len(self._strides)):
                    np.multiply(states[sl, f], self._strides[f], out=tmp)
                    np.add(joint, tmp, out=joint)
                self._sample(sampler, joint, draw)
                if where is None:
                    obs[sl, m] = draw
                else:
                    np.copyto(obs[sl, m], draw, where=where[sl])

    def _check_actions(self, actions: object) -> NDArray[np.integer[Any]]:
        acts = actions if isinstance(actions, np.ndarray) else np.asarray(actions)
        expected = (self._n, len(self._num_controls))
        if acts.shape != expected:
            raise InputError(f"actions has shape {acts.shape}, expected {expected}")
        if not np.issubdtype(acts.dtype, np.integer):
            raise InputError(f"actions has dtype {acts.dtype}, expected an integer dtype")
        for f, num in enumerate(self._num_controls):
            col = acts[:, f]
            if int(col.min()) < 0 or int(col.max()) >= num:
                bad = int(np.flatnonzero((col < 0) | (col >= num))[0])
                raise InputError(
                    f"actions[{bad}, {f}] = {int(col[bad])} is out of range: "
                    f"factor {f} has {num} action(s), 0..{num - 1}"
                )
        return acts

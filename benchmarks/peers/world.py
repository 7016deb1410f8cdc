"""The closed-loop world every implementation in ``bench_peers.py`` acts in (numpy only).

It runs in three interpreters (the project's venv and the two pymdp venvs, numpy 1.x and 2.x),
so it imports nothing but numpy. The workload file (``.npz``, written by ``bench_peers.py``)
holds the generative model handed to every agent and the world's episode rule:

* ``A{m}`` ``(O_m, S_0, ..., S_{F-1})``, ``B{f}`` ``(S_f, S_f, U_f)``, ``C{m}`` ``(O_m,)``,
  ``D{f}`` ``(S_f,)``: the model, float64, the same arrays for every implementation; the world
  is its own generative process (hidden states move by ``B``, are seen through ``A``);
* ``spawn{f}`` ``(S_f,)``: where a new episode puts factor ``f``;
* ``rule``: ``"goal"`` (``goal_state``: an agent that reaches this state of factor 0 respawns at
  its next step, its action ignored: ``edge_agent.sim.gridworld``) or ``"trial"``
  (``trial_len``: a new trial every ``trial_len`` steps, the action at the last one ignored:
  ``edge_agent.sim.tmaze``, ``edge_agent.sim.grid2f``);
* optionally (``bench_learning_peers.py``'s reversal T-maze) ``reverse_every`` (0: never),
  ``reward_modality``, ``reward_outcome``, ``loss_outcome``: the world of
  ``edge_agent.sim.tmaze_reversal``, whose rewarded arm swaps every ``reverse_every`` trials: in
  an agent's reversed phase (its trials so far ``// reverse_every`` odd) a reward outcome of
  ``reward_modality`` is seen as a loss and a loss as a reward (only the arms give either).

Every step draws the same random numbers whatever the actions are (one uniform per agent and
factor for the move, per factor for a respawn, per modality for the observation), so two
implementations that choose the same actions see exactly the same observations: their action
sequences, and so their digests, are then equal.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from typing import Any

import numpy as np


def load_workload(path: str) -> dict[str, Any]:
    """The arrays and episode rule of a workload file, as plain Python values."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: np.array(data[key]) for key in data.files}
    num_modalities = sum(1 for k in arrays if k.startswith("A"))
    num_factors = sum(1 for k in arrays if k.startswith("B"))
    return {
        "A": [arrays[f"A{m}"] for m in range(num_modalities)],
        "B": [arrays[f"B{f}"] for f in range(num_factors)],
        "C": [arrays[f"C{m}"] for m in range(num_modalities)],
        "D": [arrays[f"D{f}"] for f in range(num_factors)],
        "spawn": [arrays[f"spawn{f}"] for f in range(num_factors)],
        "rule": str(arrays["rule"]),
        "goal_state": int(arrays["goal_state"]),
        "trial_len": int(arrays["trial_len"]),
        "reverse_every": int(arrays.get("reverse_every", 0)),
        "reward_modality": int(arrays.get("reward_modality", -1)),
        "reward_outcome": int(arrays.get("reward_outcome", -1)),
        "loss_outcome": int(arrays.get("loss_outcome", -1)),
    }


def _cdf_rows(table: np.ndarray) -> np.ndarray:
    """``(C, O)`` cumulative distribution of each column of a column-stochastic ``(O, C)``."""
    cdf = np.cumsum(table, axis=0)
    cdf /= cdf[-1:, :]
    cdf[-1, :] = 1.0  # exact, so that every u < 1 falls inside the column
    return np.ascontiguousarray(cdf.T)


class _Stacked:
    """The tables' ``(C_t, K_t)`` cumulative rows (:func:`_cdf_rows`) in one ``(T * C, W)``
    array, table ``t``'s rows from ``t * C`` on (``first``, ``(T, 1)``), each row kept only at
    its **support**, the outcomes ``k`` where the cumulative value rises (``cdf[k] >
    cdf[k - 1]``): ``breaks`` those values, ``outcomes`` those ``k``, ``W`` the widest support
    (grid10: 1 of 100 for a move, 5 of 100 for an observation), padded with 2.0 (never at most a
    ``u < 1``, so a padded value draws nothing; a padded row is never indexed). The inverse-CDF
    draw, the first ``k`` with ``u < cdf[k]``, is always such a ``k`` (``cdf[k - 1] <= u``), so
    the draws are those of the full rows, exactly, at ``W / K`` of the compares. ``dense``: every
    row rises at every ``k`` (the outcome is the break's position, no second gather)."""

    def __init__(self, cdfs: list[np.ndarray]) -> None:
        C, K = max(c.shape[0] for c in cdfs), max(c.shape[1] for c in cdfs)
        stack = np.ones((len(cdfs), C, K))
        for t, cdf in enumerate(cdfs):
            stack[t, : cdf.shape[0], : cdf.shape[1]] = cdf
        self.tables = len(cdfs)
        self.first = np.arange(len(cdfs), dtype=np.intp)[:, None] * C
        full = stack.reshape(-1, K)
        rises = full > np.concatenate([np.zeros((full.shape[0], 1)), full[:, :-1]], axis=1)
        width = int(rises.sum(axis=1).max())
        self.dense = bool(rises.all())
        self.width = K if self.dense else width
        self.breaks = np.full((full.shape[0], self.width), 2.0)
        self.outcomes = np.zeros((full.shape[0], self.width), dtype=np.intp)
        for r in range(full.shape[0]):
            (ks,) = np.nonzero(rises[r])
            self.breaks[r, : ks.size] = full[r, ks]
            self.outcomes[r, : ks.size] = ks
        self.outcomes_flat = self.outcomes.reshape(-1)
        #: The breaks a uniform can pass, column by column ``(W - 1, R)``: a row's last break
        #: is its maximum, exactly 1.0 (a pad is 2.0), never at most a ``u < 1``, so the count
        #: of a row's breaks at most ``u`` is that of its first ``W - 1`` (0 of a row of one
        #: outcome: the draw is that outcome, whatever ``u``).
        self.columns = np.ascontiguousarray(self.breaks[:, : self.width - 1].T)
        #: Each row's breaks and outcomes as Python lists (one agent's draw: a ``bisect``).
        self.breaks_rows = [self.breaks[r, : int(rises[r].sum())].tolist()
                            for r in range(full.shape[0])]
        self.outcome_rows = [self.outcomes[r, : int(rises[r].sum())].tolist()
                             for r in range(full.shape[0])]
        self.first_rows = self.first.reshape(-1).tolist()
        #: Whether table ``t``'s draws depend on the uniform: some row of it has two outcomes or
        #: more (a table of one outcome a row draws that outcome whatever ``u``: its uniforms
        #: need not be made, only skipped, :meth:`ClosedLoopWorld._uniforms_of`).
        self.random = [any(len(self.breaks_rows[r]) > 1 for r in range(t * C, (t + 1) * C))
                       for t in range(self.tables)]

    def draw_one(self, rows: list[int], u: list[float]) -> list[int]:
        """One agent's draws, table ``t`` at its row ``rows[t]`` (flat, ``first`` included)
        under ``u[t]``: the count of the row's breaks at most ``u``, the outcome there (what
        :class:`_Draws` gives, without a numpy call)."""
        breaks, outcomes = self.breaks_rows, self.outcome_rows
        return [outcomes[r][bisect.bisect_right(breaks[r], x)]
                for r, x in zip(rows, u, strict=True)]


class _Draws:
    """Inverse-CDF draws of one :class:`_Stacked` for ``n`` agents into buffers reserved once:
    the flat row indices ``index`` ``(T, n)`` (written by the caller, table ``t``'s rows offset
    by ``first``), the uniforms ``u`` ``(T, n)`` (``u``: a view the world gives, into the
    buffer it fills for a whole step in one call), the gathered breaks, their comparison and the
    draws ``out`` ``(T, n)``: a step allocates nothing and makes a few numpy calls whatever
    ``T``. The draw is the count of the row's breaks at most ``u`` (the outcome there, at the
    row's flat position in ``outcomes``). Narrow rows (:data:`COLUMNS` breaks at most) count
    column by column (:attr:`_Stacked.columns`: a 1-D ``take`` of each column's break, a
    comparison and an add, the last column never passed: a table of one outcome per row is one
    ``take`` of its outcomes); wider rows are gathered whole with one ``take`` of flat indices
    (``mode="clip"``: into ``out`` unbuffered; the indices are in range) and the count is the
    first break above ``u`` (a row rises to exactly 1.0, so there is one), which ``argmin``
    finds faster than a sum counts."""

    #: Rows of at most this many breaks are counted column by column.
    COLUMNS = 3

    def __init__(self, stack: _Stacked, n: int, u: np.ndarray | None = None,
                 out: np.ndarray | None = None) -> None:
        T, W = stack.tables, stack.width
        self.stack = stack
        self.first = stack.first  # (T, 1)
        self.index = np.zeros((T, n), dtype=np.intp)
        self.u = np.zeros((T, n)) if u is None else u
        self.by_column = W <= self.COLUMNS
        self.rows = np.zeros((0 if self.by_column else T * n, W))
        self.below = np.zeros((T * n, 1 if self.by_column else W), dtype=np.bool_)
        self.values = np.zeros(T * n if self.by_column else 0)
        self.at = np.zeros(T * n, dtype=np.intp)
        #: The draws (``out``: a ``(T, n)`` intp C-order buffer the world gives, written only
        #: once the draw's reads of ``index`` are done).
        self.out = np.zeros((T, n), dtype=np.intp) if out is None else out
        self._flat_index = self.index.reshape(-1)
        self._flat_u = self.u.reshape(-1, 1)
        self._u_1d = self.u.reshape(-1)
        self._flat_out = self.out.reshape(-1)
        self._below_1d = self.below.reshape(-1)

    def uniforms(self, rng: np.random.Generator) -> None:
        """This step's uniforms, the numbers ``rng.random((T, n))`` gives."""
        rng.random(out=self.u)

    def draw(self) -> np.ndarray:
        """The outcomes ``(T, n)`` at the rows of ``index`` under ``u`` (the buffer ``out``)."""
        stack = self.stack
        if self.by_column:
            if stack.width == 1:  # one outcome a row: its outcome
                stack.outcomes_flat.take(self._flat_index, out=self._flat_out, mode="clip")
                return self.out
            at, values, below = self.at, self.values, self._below_1d
            np.multiply(self._flat_index, stack.width, out=at)  # the row's first outcome
            for column in stack.columns:
                column.take(self._flat_index, out=values, mode="clip")
                np.less_equal(values, self._u_1d, out=below)
                np.add(at, below, out=at)
            stack.outcomes_flat.take(at, out=self._flat_out, mode="clip")
            return self.out
        stack.breaks.take(self._flat_index, axis=0, out=self.rows, mode="clip")
        np.less_equal(self.rows, self._flat_u, out=self.below)
        if stack.dense:
            self.below.argmin(axis=1, out=self._flat_out)
            return self.out
        at = self.at
        self.below.argmin(axis=1, out=at)
        at += self._flat_index * stack.width  # the break's flat position in ``outcomes``
        stack.outcomes_flat.take(at, out=self._flat_out, mode="clip")
        return self.out


class ClosedLoopWorld:
    """``n`` independent copies of the workload's world, stepped together, seeded.

    ``reset()`` and ``step(actions)`` return ``(obs, episode_start)``: ``obs`` ``(n, M)`` int64
    outcomes and ``episode_start`` ``(n,)`` bool, True where the agent's episode began at this
    step (its beliefs must go back to ``D`` before it sees ``obs``); both are the world's own
    buffers, overwritten by the next step.

    What the agents achieved, the same counting whoever acts: ``score`` names it
    (``mean_reward``: +1 a reward, -1 a loss, where the workload names a reward modality;
    ``reach_rate``: goals reached, under the goal rule; None: neither) and ``scores`` holds its
    sum over the agents at every observation since the world was made (``reset`` included);
    :func:`achieved` makes it a rate.

    A step is a fixed set of batched numpy calls into buffers reserved here (:class:`_Draws`),
    the hidden states kept by factor (``states`` ``(n, F)`` is a view of them): its cost at
    N = 1 is those calls, the same for every implementation that acts in it. Its uniforms, the
    move's, the respawn's and the observation's, are drawn in that order (the same numbers as
    one call each: a double is one draw of the generator), into one buffer whose three parts
    the draws read. Only the uniforms a draw reads are made: those of the tables whose draws
    depend on them (:attr:`_Stacked.random`; a deterministic move or outcome reads none), and
    the respawn's only at a step where some agent respawns; the others are skipped by
    advancing the generator as far as drawing them would (``PCG64.advance``: a double is one
    step of its state), so every uniform that is read is the number it would be had all been
    drawn, and the generator's state after a step is the same.
    """

    #: Uniforms no draw reads are skipped in runs of at least this many (an advance of the
    #: generator costs about what drawing 300 doubles does, numpy 2.4 on x86-64); shorter runs
    #: are drawn, unread.
    SKIP_AT_LEAST = 512

    def __init__(self, workload: dict[str, Any], n: int, seed: int) -> None:
        self.n = n
        self.rng = np.random.default_rng(seed)
        A, B = workload["A"], workload["B"]
        self.num_states = [b.shape[0] for b in B]
        self.num_controls = [b.shape[2] for b in B]
        self.obs_cdf = _Stacked([_cdf_rows(a.reshape(a.shape[0], -1)) for a in A])
        self.move_cdf = _Stacked([_cdf_rows(b.reshape(b.shape[0], -1)) for b in B])
        self.spawn_cdf = _Stacked([_cdf_rows(np.asarray(d, dtype=np.float64)[:, None])
                                   for d in workload["spawn"]])
        sizes = [self.move_cdf.tables * n, self.spawn_cdf.tables * n, self.obs_cdf.tables * n]
        #: A step's uniforms: the move's, the respawn's, the observation's (reset: the last two).
        self._uniforms = np.zeros(sum(sizes))
        move_u, spawn_u, obs_u = np.split(self._uniforms, np.cumsum(sizes[:2]))
        self._obs_draws = _Draws(self.obs_cdf, n, obs_u.reshape(-1, n))
        #: The hidden states by factor ``(F, n)`` (the move's draws, drawn in place); ``states``
        #: is its ``(n, F)`` view.
        self.by_factor = np.zeros((len(B), n), dtype=np.intp)
        self._move_draws = _Draws(self.move_cdf, n, move_u.reshape(-1, n), out=self.by_factor)
        self._spawn_draws = _Draws(self.spawn_cdf, n, spawn_u.reshape(-1, n))
        #: How a step makes its uniforms (:meth:`_uniforms_of`): with a respawn, without one, and
        #: the reset's (the respawn's and the observation's, everyone respawning).
        self._bits = self.rng.bit_generator
        tables = [(s, t) for s in (self.move_cdf, self.spawn_cdf, self.obs_cdf)
                  for t in range(s.tables)]
        self._plan_spawn = self._uniforms_of(n, tables, spawn=True, skip=0)
        self._plan_stay = self._uniforms_of(n, tables, spawn=False, skip=0)
        self._plan_reset = self._uniforms_of(n, tables, spawn=True, skip=self.move_cdf.tables)
        self._spawn_draws.index[:] = self.spawn_cdf.first  # the one row of each table
        self.controls = np.asarray(self.num_controls, dtype=np.int64)
        self._controls_col = self.controls.reshape(-1, 1)
        #: The joint state's index: ``states @ strides`` (C order, the layout of ``A``'s columns).
        self.strides = np.array([math.prod(self.num_states[f + 1 :])
                                 for f in range(len(B))], dtype=np.int64)
        self.rule = workload["rule"]
        self.goal_state = workload["goal_state"]
        self.trial_len = workload["trial_len"]
        self.states = self.by_factor.T
        self._joint = np.zeros(n, dtype=np.intp)
        self._term = np.zeros(n, dtype=np.intp)
        self.obs = np.zeros((n, len(A)), dtype=np.int64)
        self.episode_steps = np.zeros(n, dtype=np.int64)
        self._restart = np.zeros(n, dtype=np.bool_)
        self._reached = np.zeros(n, dtype=np.bool_)
        self.reverse_every = workload.get("reverse_every", 0)
        self.reward_modality = workload.get("reward_modality", -1)
        self.reward_outcome = workload.get("reward_outcome", -1)
        self.loss_outcome = workload.get("loss_outcome", -1)
        self.trials = np.zeros(n, dtype=np.int64)
        #: The agents in a reversed phase (their trials so far ``// reverse_every`` odd), kept
        #: as the trials change (at the episode starts), not recomputed every observation.
        self.reversed = np.zeros(n, dtype=np.bool_)
        #: The reward modality's outcome as seen, by phase: ``(2 * O,)``, ``O`` outcomes each,
        #: the reversed phase's (the second) with reward and loss swapped; an agent's phase
        #: offset ``_phase_at`` (``O`` when reversed), kept with :attr:`reversed`.
        bins = int(A[self.reward_modality].shape[0]) if self.reward_modality >= 0 else 0
        swapped = np.arange(bins, dtype=np.int64)
        if self.reverse_every > 0:
            swapped[[self.reward_outcome, self.loss_outcome]] = \
                swapped[[self.loss_outcome, self.reward_outcome]]
        self._seen_as = np.concatenate([np.arange(bins, dtype=np.int64), swapped])
        self._phase_at = np.zeros(n, dtype=np.intp)
        self._seen_at = np.zeros(n, dtype=np.intp)
        self._seen = np.zeros(n, dtype=np.int64)
        self._outcome_bins = int(A[self.reward_modality].shape[0]) if self.reward_modality >= 0 \
            else 0
        self.score: str | None = (
            "mean_reward" if self.reward_modality >= 0
            else "reach_rate" if self.rule == "goal" else None)
        self.scores: list[int] = []
        #: One agent: :meth:`step` in Python scalars (:meth:`_step_one`), the same results.
        self.one = n == 1

    def _uniforms_of(self, n: int, tables: list[tuple[_Stacked, int]], *, spawn: bool,
                     skip: int) -> list[tuple[np.ndarray | None, int]]:
        """A step's uniforms as runs over :attr:`_uniforms` (its ``tables``, ``n`` each, in the
        buffer's order, the first ``skip`` not drawn at all): ``(view, 0)`` a run drawn into
        ``view``, ``(None, k)`` ``k`` skipped (the generator advanced by ``k``). A table's run is
        drawn where its draws read it (:attr:`_Stacked.random`; the respawn's where ``spawn``)."""
        def merged(runs: list[tuple[bool, int, int]]) -> list[tuple[bool, int, int]]:
            out: list[tuple[bool, int, int]] = []
            for drawn, a, b in runs:
                if out and out[-1][0] == drawn:
                    out[-1] = (drawn, out[-1][1], b)
                else:
                    out.append((drawn, a, b))
            return out

        runs = merged([(stack.random[t] and (spawn or stack is not self.spawn_cdf), i * n,
                        (i + 1) * n) for i, (stack, t) in enumerate(tables[skip:], start=skip)])
        # a run too short to be worth an advance is drawn (its uniforms unread)
        runs = merged([(drawn or b - a < self.SKIP_AT_LEAST, a, b) for drawn, a, b in runs])
        return [(self._uniforms[a:b], 0) if drawn else (None, b - a) for drawn, a, b in runs]

    def _draw_uniforms(self, plan: list[tuple[np.ndarray | None, int]]) -> None:
        """The uniforms of ``plan`` (:meth:`_uniforms_of`) drawn, the others skipped."""
        for view, skipped in plan:
            if view is None:
                self._bits.advance(skipped)
            else:
                self.rng.random(out=view)

    def _spawn(self, where: np.ndarray, count: int) -> bool:
        """The agents ``where`` respawn, ``count`` of them (the uniforms drawn by the caller);
        whether any did."""
        draws = self._spawn_draws
        if not count:
            return False
        drawn = draws.draw()
        if count == self.n:
            self.by_factor[:] = drawn
            self.episode_steps[:] = 0
        else:
            self.by_factor[:, where] = drawn[:, where]
            self.episode_steps[where] = 0
        return True

    def _observe(self) -> np.ndarray:
        """The agents' outcomes (the uniforms drawn by the caller)."""
        draws, joint = self._obs_draws, self._joint
        by_factor, strides = self.by_factor, self.strides
        np.multiply(by_factor[0], strides[0], out=joint)
        for f in range(1, len(strides)):  # (the last factor's stride is 1)
            if f < len(strides) - 1:
                np.multiply(by_factor[f], strides[f], out=self._term)
                np.add(joint, self._term, out=joint)
            else:
                np.add(joint, by_factor[f], out=joint)
        np.add(draws.first, joint, out=draws.index)
        self.obs[:] = draws.draw().T
        if self.reward_modality >= 0:
            self.scores.append(self._rewards(self.obs[:, self.reward_modality]))
        return self.obs

    def _rewards(self, outcome: np.ndarray) -> int:
        """Swap reward and loss in the reversed phases (in place); rewards less losses."""
        reward, loss = self.reward_outcome, self.loss_outcome
        if self.reverse_every > 0 and np.count_nonzero(self.reversed):
            np.add(self._phase_at, outcome, out=self._seen_at)
            self._seen_as.take(self._seen_at, out=self._seen, mode="clip")
            outcome[:] = self._seen
        counts = np.bincount(outcome, minlength=self._outcome_bins)
        return int(counts[reward]) - int(counts[loss])

    def _count_trials(self, restart: np.ndarray) -> None:
        """The agents of ``restart`` start a trial: their count and reversed phase follow."""
        self.trials += restart
        if self.reverse_every > 0:
            np.equal((self.trials // self.reverse_every) % 2, 1, out=self.reversed)
            np.multiply(self.reversed, self._outcome_bins, out=self._phase_at)

    def reset(self) -> tuple[np.ndarray, np.ndarray]:
        start = np.ones(self.n, dtype=np.bool_)
        self._draw_uniforms(self._plan_reset)  # the respawn's and the observation's uniforms
        self._spawn(start, self.n)
        self.trials[:] = 0
        self.reversed[:] = False
        self._phase_at[:] = 0
        if self.rule == "goal":
            self.scores.append(0)
        return self._observe(), start

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Move every agent by ``actions`` ``(n, F)`` int; start episodes by the rule."""
        if self.one:
            return self._step_one(actions)
        by_factor, restart = self.by_factor, self._restart
        if self.rule == "goal":
            np.equal(by_factor[0], self.goal_state, out=restart)
        else:
            np.greater_equal(self.episode_steps, self.trial_len - 1, out=restart)
        move = self._move_draws
        # the move's, the respawn's (where some agent respawns), the observation's
        respawns = int(np.count_nonzero(restart))  # (a count: cheaper than any's reduction)
        self._draw_uniforms(self._plan_spawn if respawns else self._plan_stay)
        index = move.index  # (F, n): state * controls + action, in table f's rows
        np.multiply(by_factor, self._controls_col, out=index)
        index += actions.T
        index += move.first
        move.draw()  # into by_factor
        self.episode_steps += 1
        if self._spawn(restart, respawns):
            self._count_trials(restart)
        if self.rule == "goal":
            reached = self._reached
            np.equal(by_factor[0], self.goal_state, out=reached)
            reached &= ~restart
            self.scores.append(int(np.count_nonzero(reached)))
        return self._observe(), restart


    def _step_one(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`step` of a world of one agent, in Python scalars: the same random numbers in
        the same order (``rng.random`` of the same sizes), the same draws (:meth:`_Stacked.
        draw_one`), the same state, scores and buffers after it; three ``rng`` calls and a few
        list operations instead of some thirty numpy calls on arrays of one."""
        rng, move, spawn, see = self.rng, self.move_cdf, self.spawn_cdf, self.obs_cdf
        states = self.by_factor[:, 0].tolist()
        steps = int(self.episode_steps[0])
        if self.rule == "goal":
            restart = states[0] == self.goal_state
        else:
            restart = steps >= self.trial_len - 1
        u = rng.random(move.tables).tolist()
        chosen = actions[0].tolist()
        states = move.draw_one(
            [first + s * c + a for first, s, c, a in zip(
                move.first_rows, states, self.num_controls, chosen, strict=True)], u)
        steps += 1
        u = rng.random(spawn.tables).tolist()  # drawn whoever respawns
        if restart:
            states = spawn.draw_one(spawn.first_rows, u)
            steps = 0
            trials = int(self.trials[0]) + 1
            self.trials[0] = trials
            if self.reverse_every > 0:
                self.reversed[0] = (trials // self.reverse_every) % 2 == 1
                self._phase_at[0] = self._outcome_bins * int(self.reversed[0])
        self.by_factor[:, 0] = states
        self.episode_steps[0] = steps
        self._restart[0] = restart
        if self.rule == "goal":
            self.scores.append(int(states[0] == self.goal_state and not restart))
        joint = sum(s * stride for s, stride in zip(states, self.strides.tolist(), strict=True))
        u = rng.random(see.tables).tolist()
        seen = see.draw_one([first + joint for first in see.first_rows], u)
        if self.reward_modality >= 0:
            m, reward, loss = self.reward_modality, self.reward_outcome, self.loss_outcome
            o = seen[m]
            if self.reverse_every > 0 and self.reversed[0] and o in (reward, loss):
                seen[m] = o = reward + loss - o
            self.scores.append(int(o == reward) - int(o == loss))
        self.obs[0] = seen
        return self.obs, self._restart


def achieved(scores: list[int], n: int, steps: int | None = None) -> float:
    """The rate of a world's ``scores`` per agent-step over its first ``steps`` observations
    (all by default), ``n`` agents."""
    taken = scores if steps is None else scores[:steps]
    return sum(taken) / max(n * len(taken), 1)


def actions_digest(actions: np.ndarray) -> str:
    """A short digest of an action record ``(steps, n, F)``, the same on every numpy."""
    return hashlib.sha256(np.ascontiguousarray(actions, dtype=np.int64).tobytes()).hexdigest()[:16]

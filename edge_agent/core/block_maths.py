"""The batched Active Inference maths of an agent group, block by block: check the inputs, make
a block's prior, infer states, evaluate policies, select and commit actions, stage the history row.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from edge_agent.aif import kernels
from edge_agent.aif.quant import encode_beliefs_u8
from edge_agent.core.group_blocks import (
    IntArray,
    _BlockRows,
)
from edge_agent.core.group_memory import GroupMemory
from edge_agent.core.priors import make_block_prior
from edge_agent.errors import InputError


class BlockMaths(GroupMemory):
    """The maths of an agent group over its blocks (see
    :class:`~edge_agent.core.agents.AifAgentGroup`)."""

    def _new(self, shape: int | tuple[int, ...], dtype: npt.DTypeLike) -> np.ndarray:
        """A zero-filled array of per-agent state that workers write: in shared memory when the
        group is (or will be) stepped by workers, so that starting them copies nothing."""
        if not self._shared_state:
            return np.zeros(shape, dtype=dtype)
        from edge_agent.core.workers import shared_empty  # noqa: PLC0415 - multi-core groups only

        return shared_empty(shape, dtype)

    def _workspace_block(self, nb: int) -> kernels.Block:
        assert self._workspace is not None  # allocated with the agents
        return self._workspace.block(nb)

    def _new_scratch(self) -> None:
        """Allocate the kernel scratch for blocks of this group (the old one released first);
        the block views are rebuilt on it when next needed."""
        self._workspace = None
        self._deep_scratch = None
        capacity = min(self.block_size, self.n_agents)
        # The prior of the block being stepped, when the group keeps none.
        self._prior_scratch = [
            np.empty((0 if self.keeps_prior else capacity, s), dtype=self.dtype)
            for s in self.cm.num_states
        ]
        info_gain = self.settings.use_states_info_gain
        self._workspace = kernels.Workspace(
            self.cm,
            capacity,
            info_gain=info_gain,
            dense_capacity=min(self.dense_block_size, self.n_agents),
        )
        if self.cm.deep is not None:
            self._deep_scratch = kernels.DeepScratch(
                self.cm,
                self.cm.deep,
                capacity,
                info_gain=info_gain,
                dense_capacity=min(self.deep_dense_block_size, capacity),
            )
        self._rows.clear()
        self._dense_rows.clear()

    # -- the maths, batched ---------------------------------------------------------------------
    def reset(self, mask: np.ndarray | None = None) -> None:
        """Start a new trial for the agents in ``mask`` (all by default): prior back to ``D``."""
        sel: slice | np.ndarray = slice(None)
        if mask is not None:
            chosen = np.asarray(mask, dtype=bool)
            if chosen.shape != (self.n_agents,):
                raise InputError(
                    f"reset mask has shape {chosen.shape}, expected ({self.n_agents},)"
                )
            # Every agent (trials in step): slices. Else the agents' indices, found once: each
            # array's rows by index (a boolean mask finds them again for each array, and scans
            # every agent; at 9 % of 200,000 agents 1.5 against 4.8 ms)
            sel = slice(None) if chosen.all() else np.flatnonzero(chosen)
        for f, d in enumerate(self.cm.D):
            if self.keeps_prior:
                self.prior[f][sel] = d
            self.qs[f][sel] = d
        if not self.keeps_prior:
            self._prior_reset[sel] = True
        self.has_action[sel] = False
        self.q_pi[sel] = 1.0 / self.cm.num_policies
        self.G[sel] = 0.0
        if not self.planning.every_tick:  # a new trial: plan at its first tick
            self.plan_left[sel] = 0
            self.plan_age[sel] = 0

    def check_obs(self, obs: np.ndarray) -> IntArray:
        """Validate ``obs (N, M)`` integer outcomes; raise InputError naming what is wrong."""
        return self._checked_obs(np.asarray(obs))

    def _checked_obs(self, arr: np.ndarray) -> IntArray:
        """:meth:`check_obs` of an array."""
        expected = (self.n_agents, len(self._obs_limit))
        if arr.shape != expected:
            raise InputError(f"obs has shape {arr.shape}, expected {expected}")
        if arr.dtype.kind not in "iu":
            raise InputError(f"obs must be integer outcomes, got dtype {arr.dtype}")
        o = np.ascontiguousarray(arr, dtype=np.int64)
        if self.n_agents == 1:  # one agent: plain Python beats numpy calls (loop over modalities)
            values = o[0].tolist()
            ok = min(values) >= 0 and all(map(operator.lt, values, self.cm.num_obs))
        else:  # one pass over the batch: negative outcomes wrap to huge unsigned values
            ok = bool(np.logical_and.reduce(np.less(o.view(np.uint64), self._obs_limit), axis=None))
        if not ok:
            self._raise_out_of_range(o)
        return o

    def check_evidence(
        self, obs: np.ndarray | Sequence[np.ndarray]
    ) -> tuple[IntArray | None, list[np.ndarray] | None]:
        """``(hard, None)`` for ``(N, M)`` integer outcomes (see :meth:`check_obs`), or
        ``(None, soft)`` for soft evidence: a sequence of ``M`` float arrays ``(N, O_m)``, a
        distribution over each modality's outcomes (pymdp's ``distr_obs``: the likelihood is
        ``sum_o p_m(o) A[m][o]``)."""
        if (
            isinstance(obs, list | tuple)
            and obs
            and all(isinstance(p, np.ndarray) and p.dtype.kind == "f" for p in obs)
        ):
            M = self.cm.num_modalities
            if len(obs) != M:
                raise InputError(f"soft evidence has {len(obs)} modalities, expected {M}")
            soft = []
            for m, (p, o) in enumerate(zip(obs, self.cm.num_obs, strict=True)):
                if p.shape != (self.n_agents, o):
                    raise InputError(
                        f"soft evidence of modality {m} has shape {p.shape}, "
                        f"expected {(self.n_agents, o)}"
                    )
                if not (np.isfinite(p).all() and (p >= 0).all()):
                    raise InputError(
                        f"soft evidence of modality {m} must be finite and non-negative"
                    )
                soft.append(np.ascontiguousarray(p, dtype=self.dtype))
            return None, soft
        return self._checked_obs(np.asarray(obs)), None

    def _raise_out_of_range(self, obs: IntArray) -> None:
        for m, o in enumerate(self.cm.num_obs):
            col = obs[:, m]
            bad = (col < 0) | (col >= o)
            if bad.any():
                agent = int(np.flatnonzero(bad)[0])
                raise InputError(
                    f"obs[{agent}, {m}] = {int(col[agent])} is out of range [0, {o}) "
                    f"({int(bad.sum())} agent(s) out of range in modality {m})"
                )

    def check_actions(self, actions: np.ndarray) -> IntArray:
        arr = np.asarray(actions)
        expected = (self.n_agents, self.cm.num_factors)
        if arr.shape != expected:
            raise InputError(f"actions has shape {arr.shape}, expected {expected}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"actions must be integers, got dtype {arr.dtype}")
        for f, u in enumerate(self.cm.num_controls):
            col = arr[:, f]
            if col.min() < 0 or col.max() >= u:
                raise InputError(f"actions on factor {f} must be in [0, {u}), got {int(col.max())}")
        return arr.astype(np.int64, copy=False)

    def _blocks(self, dense: bool = False) -> list[_BlockRows]:
        """The group cut into blocks of ``block_size`` agents (``dense_block_size`` if ``dense``).

        Cached until the arrays are reallocated: a tick slices nothing.
        """
        cached = self._dense_rows if dense else self._rows
        if cached:
            return cached
        assert self._workspace is not None  # allocated with the agents
        step = self.dense_block_size if dense else self.block_size
        for index, start in enumerate(range(0, self.n_agents, step)):
            nb = min(step, self.n_agents - start)
            sl = slice(start, start + nb)
            cached.append(
                _BlockRows(
                    sl=sl,
                    blk=self._workspace.block(nb),
                    qs=[q[sl] for q in self.qs],
                    prior=(
                        [p[sl] for p in self.prior]
                        if self.keeps_prior
                        else [p[:nb] for p in self._prior_scratch]
                    ),
                    G=self.G[sl],
                    q_pi=self.q_pi[sl],
                    action=self.action[sl],
                    has_action=self.has_action[sl],
                    index=-1 if dense else index,
                )
            )
        return cached

    # -- the prior of a group that keeps none (keep_prior=False) --------------------------------
    def _derive_prior(
        self, rows: _BlockRows, reset: np.ndarray | None = None, small: bool | None = None
    ) -> None:
        """The block's prior for this tick's inference, into ``rows.prior`` (its scratch):
        what the tick that committed its actions would have kept (see :meth:`_prior_committed`;
        ``reset`` and ``small``: the group's flags of the block, by default)."""
        make_block_prior(
            self.cm, rows.qs, rows.action, rows.prior, rows.blk,
            reset=self._prior_reset[rows.sl] if reset is None else reset,
            small=bool(self._prior_small[rows.index]) if small is None else small,
        )

    def _prior_committed(self, rows: _BlockRows, *, small: bool) -> None:
        """The block's agents committed actions: their next prior follows from their beliefs
        and actions (through the small-block planner's predictions if ``small``)."""
        self._prior_reset[rows.sl] = False
        self._prior_small[rows.index] = small

    def _carry_priors(
        self, keep: int, prior: list[np.ndarray], reset: np.ndarray, small: np.ndarray
    ) -> None:
        """The first ``keep`` agents' priors (or what they follow from) into the arrays of a
        resized group: ``prior`` when it keeps them (made, if this group did not), else
        ``reset`` and ``small``."""
        if prior and not self.keeps_prior:  # kept from now on: made for the agents kept
            self._make_priors(prior, keep)
        elif prior:
            for new, cur in zip(prior, self.prior, strict=True):
                new[:keep] = cur[:keep]
        else:
            reset[:keep] = self._prior_reset[:keep]
            # Whole blocks keep where their priors come from; a last block that grows
            # propagates them (equal to the small-block product to rounding).
            whole = keep // self.block_size
            small[:whole] = self._prior_small[:whole]

    def _make_priors(self, out: list[np.ndarray], n: int) -> None:
        """The priors of the first ``n`` agents, made (the group keeps none) into ``out``."""
        for rows in self._blocks():
            if rows.sl.start >= n:
                break
            self._derive_prior(rows)
            stop = min(rows.sl.stop, n)
            for o, p in zip(out, rows.prior, strict=True):
                o[rows.sl.start : stop] = p[: stop - rows.sl.start]

    def _check_beliefs_behind(self) -> None:
        """A group that keeps no prior makes it from its beliefs: refuse to infer twice without
        an action committed between (the second inference would start from the first's)."""
        if self._beliefs_ahead:
            raise InputError(
                f"group {self.name!r} keeps no prior between ticks (keep_prior=False): commit "
                "actions (sample_action, set_action) before inferring again"
            )

    # -- infer, plan, act -----------------------------------------------------------------------
    def infer_states(self, obs: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        """Update every agent's posterior from ``obs (N, M)`` (or soft evidence, see
        :meth:`check_evidence`); returns ``qs`` (views)."""
        o, soft = self.check_evidence(obs)
        derive = not self.keeps_prior
        if derive:
            self._check_beliefs_behind()
            self._beliefs_ahead = True
        for rows in self._blocks():
            if derive:
                self._derive_prior(rows)
            self._infer_block(o, soft, rows, roots=False)
        return self.qs

    def _infer_block(
        self,
        obs: IntArray | None,
        soft: list[np.ndarray] | None,
        rows: _BlockRows,
        *,
        roots: bool,
    ) -> None:
        sl = rows.sl
        kernels.infer_block(
            self.cm,
            None if obs is None else obs[sl],
            rows.prior,
            rows.qs,
            rows.blk,
            num_iter=self._num_iter,
            dF_tol=self._dF_tol,
            roots=roots,
            soft=None if soft is None else [p[sl] for p in soft],
        )

    def infer_policies(self) -> tuple[np.ndarray, np.ndarray]:
        """``q_pi`` and ``G`` ``(N, P)`` for the current beliefs."""
        for rows in self._blocks(dense=True):
            kernels.load_roots(rows.qs, rows.blk)
            self._plan_block(rows, None, self._planner(rows, None))
        return self.q_pi, self.G

    def _planner(self, rows: _BlockRows, obs: IntArray | None) -> str:
        """Which evaluation a block gets: ``"joint"`` (a whole tick on the joint small-block
        path, see :meth:`_joint_block`), ``"small"``, ``"deep"`` (policies of two or more steps
        under deterministic transitions), ``"local"``, ``"tree"`` (dense) or ``"chunks"`` (dense
        in sub-blocks: a block larger than the dense scratch, as with a local planner and soft
        evidence)."""
        if obs is not None and rows.blk.joint_small is not None:
            return "joint"
        if rows.blk.small and self.cm.small is not None:
            return "small"
        if self.cm.deep is not None:
            return "deep"
        if obs is not None and self.cm.local is not None:
            return "local"
        return "tree" if rows.blk.dense else "chunks"

    def _plan_block(self, rows: _BlockRows, obs: IntArray | None, planner: str) -> None:
        """``G`` and ``q_pi`` of the block (``q_pi`` also left in ``blk.x``, state-major).

        ``obs``: the observation :meth:`_infer_block` just used (the local planner needs it);
        ``planner``: from :meth:`_planner`.
        """
        cm, blk, G = self.cm, rows.blk, rows.G
        if planner == "deep":
            assert cm.deep is not None
            assert self._deep_scratch is not None
            refused = kernels.evaluate_deep_rows(
                cm,
                cm.deep,
                rows.qs[0],
                self._deep_scratch,
                G,
                obs=None if obs is None else obs[:, 0],
                evidence=None if obs is None else blk.evidence,
                use_utility=self._use_utility,
                use_info_gain=self._use_info_gain,
            )
            if len(refused):
                self._plan_agents_densely(rows, refused)
        elif planner == "small":
            kernels.evaluate_small_block(
                cm,
                rows.qs[0],
                blk,
                G,
                use_utility=self._use_utility,
                use_info_gain=self._use_info_gain,
            )
        elif planner == "local":
            assert obs is not None
            dense = kernels.evaluate_local_block(
                cm,
                obs[:, 0],
                rows.qs[0],
                blk,
                G,
                use_utility=self._use_utility,
                use_info_gain=self._use_info_gain,
            )
            if len(dense):
                self._plan_agents_densely(rows, dense)
        elif planner == "chunks":  # larger than the dense scratch: plan it in sub-blocks
            self._plan_agents_densely(rows, np.arange(blk.nb))
        else:
            kernels.evaluate_block(
                cm,
                blk,
                use_utility=self._use_utility,
                use_info_gain=self._use_info_gain,
                gamma=self._gamma,
            )
            np.copyto(G, blk.G.T)
            np.copyto(rows.q_pi, blk.x.T)
            return
        kernels.policy_posterior_block(cm, G, blk, self._gamma)
        np.copyto(rows.q_pi, blk.x.T)

    def _joint_block(self, rows: _BlockRows, obs: IntArray) -> None:
        """A whole tick of a small block of a multi-factor model on the joint small-block path:
        infer, plan, act and the next prior (same results as the other paths, to rounding)."""
        cm, blk = self.cm, rows.blk
        plan, sc = cm.joint, blk.joint_small
        assert plan is not None  # the model has joint tables: _planner checked
        assert sc is not None
        kernels.infer_joint(
            plan, obs, rows.prior, rows.qs, sc, num_iter=self._num_iter, dF_tol=self._dF_tol
        )
        kernels.evaluate_joint(
            plan, sc, rows.G, use_utility=self._use_utility, use_info_gain=self._use_info_gain
        )
        kernels.posterior_joint(plan, rows.G, rows.q_pi, sc, self._gamma)
        if self._deterministic and self._sampling_mode == "marginal":
            kernels.select_joint(plan, rows.q_pi, sc, rows.action)
        else:
            np.copyto(blk.x, rows.q_pi.T)
            kernels.select_block(
                cm,
                blk.x,
                blk,
                rows.action,
                mode=self._sampling_mode,
                deterministic=self._deterministic,
                alpha=self._alpha,
                rng=self.selection_rng(),
            )
        rows.has_action.fill(True)
        kernels.prior_joint(plan, sc, rows.action, rows.prior)

    def _plan_agents_densely(self, rows: _BlockRows, agents: np.ndarray) -> None:
        """``G`` of a few agents of a block (indices ``agents``) with the dense evaluation."""
        assert self._workspace is not None
        for start in range(0, len(agents), self.dense_block_size):
            chunk = agents[start : start + self.dense_block_size]
            sub = self._workspace.block(len(chunk))  # buffers the local planner does not use
            kernels.load_roots([q[chunk] for q in rows.qs], sub)
            kernels.evaluate_block(
                self.cm,
                sub,
                use_utility=self._use_utility,
                use_info_gain=self._use_info_gain,
                gamma=self._gamma,
            )
            rows.G[chunk] = sub.G.T

    def sample_action(self) -> IntArray:
        """Select and commit each agent's next action ``(N, F)``; it drives the next prior."""
        for rows in self._blocks():
            np.copyto(rows.blk.x, rows.q_pi.T)
            self._act_block(rows, "propagate")
        self._beliefs_ahead = False
        return self.action

    def _act_block(self, rows: _BlockRows, planner: str) -> None:
        """Select actions from ``blk.x`` (q_pi, state-major) and commit them; ``planner`` (see
        :meth:`_plan_block`) says where the next prior can come from."""
        cm, blk, actions = self.cm, rows.blk, rows.action
        kernels.select_block(
            cm,
            blk.x,
            blk,
            actions,
            mode=self._sampling_mode,
            deterministic=self._deterministic,
            alpha=self._alpha,
            rng=self.selection_rng(),
        )
        rows.has_action.fill(True)
        if not self.keeps_prior:  # made again at the next tick, as it would be made here
            self._prior_committed(rows, small=planner == "small")
            return
        if planner == "small" and kernels.small_prior_block(cm, blk, actions[:, 0], rows.prior[0]):
            return
        if planner == "tree" and kernels.prior_block(cm, blk, actions, rows.prior):
            return
        kernels.propagate_block(cm, rows.qs, actions, rows.prior, blk)

    def set_action(self, actions: np.ndarray) -> None:
        """Commit externally chosen actions ``(N, F)`` (replay, manual control)."""
        a = self.check_actions(actions)
        self.action[...] = a
        self.has_action[...] = True
        self._propagate(a)

    def drive_prior(self, actions: np.ndarray) -> None:
        """The next prior from ``actions (N, F)`` without committing them: each agent keeps
        its own action and committed plan (replay under a planning policy, where the recorded
        action moved the world but an agent between plannings acts from its plan). Only a
        group that keeps its prior: another's follows from its own actions."""
        if not self.keeps_prior:
            raise InputError(
                f"group {self.name!r} keeps no prior between ticks (keep_prior=False): its "
                "prior follows from its own actions, drive_prior needs a group that keeps it"
            )
        self._propagate(self.check_actions(actions))

    def _propagate(self, actions: IntArray) -> None:
        self._beliefs_ahead = False
        for rows in self._blocks():
            if self.keeps_prior:
                kernels.propagate_block(self.cm, rows.qs, actions[rows.sl], rows.prior, rows.blk)
            else:  # the committed actions are the group's: made at the next tick
                self._prior_committed(rows, small=False)

    def _step_rows(
        self, rows: _BlockRows, o: IntArray | None, soft: list[np.ndarray] | None, record: bool
    ) -> None:
        """One block's tick: infer, plan, act, and stage its history row if ``record``."""
        ob = None if o is None else o[rows.sl]
        planner = self._planner(rows, ob)
        if not self.keeps_prior:
            self._derive_prior(rows)
        if planner == "joint":
            assert ob is not None  # _planner checked
            self._joint_block(rows, ob)
        else:
            self._infer_block(o, soft, rows, roots=planner == "tree")
            self._plan_block(rows, ob, planner)
            self._act_block(rows, planner)
        if record:
            self._encode_block(rows)

    def _encode_block(self, rows: _BlockRows) -> None:
        """Quantize the block's beliefs into the staged history row (uint8, see quant): every
        state's probability, or (``history_beliefs = "map"``) the most probable state's index
        and probability per factor."""
        if self.history_beliefs == "map":
            blk = rows.blk
            idx, pmax = blk.ibuf, self._pmax[rows.sl]  # the block's index scratch
            at = blk.ibuf2
            for f, q in enumerate(rows.qs):
                np.argmax(q, axis=1, out=idx)
                np.copyto(self._map_row[rows.sl, f], idx, casting="unsafe")
                # the maximum is the belief at the argmax: read it (a pass over q less)
                np.add(idx, blk.row_start(q.shape[1]), out=at)
                q.reshape(-1).take(at, out=pmax, mode="clip")
                np.multiply(pmax, 255.0, out=pmax)
                np.add(pmax, 0.5, out=pmax)
                np.copyto(self._p_row[rows.sl, f], pmax, casting="unsafe")
            return
        offset = 0
        for q in rows.qs:
            w = q.shape[1]
            cols = slice(offset, offset + w)
            encode_beliefs_u8(q, out=self._qs_row[rows.sl, cols], scratch=rows.blk.enc[:, cols])
            offset += w

    def _set_rng(self, rng: np.random.Generator) -> None:
        self._rng = rng

    @property
    def rng(self) -> np.random.Generator:
        """The generator of stochastic action selection (seeded by ``seed``), made on first use:
        a deterministic group never imports ``numpy.random`` (2.4 MB resident)."""
        if self._rng is None:
            self._rng = np.random.default_rng(self._seed)
        return self._rng

    def selection_rng(self) -> np.random.Generator | None:
        """What action selection draws from: :attr:`rng`, or None when it is deterministic."""
        return None if self._deterministic else self.rng

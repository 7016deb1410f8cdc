"""The batched Active Inference maths of an agent group, one block at a time: make a block's prior,
infer states, evaluate policies, select and commit actions; the kernel scratch it runs in.

:class:`BlockStepper` holds what every block's kernels read besides the agents' state: the
compiled model tables (``cm``), the settings unpacked once, the preallocated scratch
(:class:`~edge_agent.aif.kernels.Workspace`, the deep planner's) and the generator of stochastic
action selection. Its functions take the group's state (:class:`~edge_agent.core.agent_state.
AgentState`) and one block (:class:`~edge_agent.core.group_blocks.BlockRows`: views of that
state for the block's agents, and the block's scratch) and call :mod:`edge_agent.aif.kernels`.
"""

from __future__ import annotations

import numpy as np

from edge_agent.aif import kernels
from edge_agent.aif.kernels.transitions import propagate_per_agent
from edge_agent.aif.settings import AifSettings
from edge_agent.core.agent_state import AgentState
from edge_agent.core.group_blocks import BlockRows, BlockSizes, IntArray, block_sizes
from edge_agent.core.priors import make_block_prior


class BlockStepper:
    """One block's tick of a group on the compiled model ``cm`` with ``settings`` (``dtype``: the
    compute dtype; ``block_size``: the most agents a block may have; ``seed``: of the generator
    of stochastic action selection)."""

    def __init__(
        self,
        cm: kernels.CompiledModel,
        settings: AifSettings,
        dtype: np.dtype,
        *,
        block_size: int,
        seed: int | None,
    ) -> None:
        self.cm = cm
        self.dtype = dtype
        self.info_gain = settings.use_states_info_gain
        self.sizes: BlockSizes = block_sizes(cm, info_gain=self.info_gain, block_size=block_size)
        # The settings the kernels read, unpacked once.
        self.num_iter, self.dF_tol, self.alpha = settings.num_iter, settings.dF_tol, settings.alpha
        self.gamma = np.array(settings.gamma, dtype=dtype)  # 0-d: cheap in tiny blocks
        self.use_utility, self.use_info_gain = settings.use_utility, settings.use_states_info_gain
        self.sampling_mode = settings.sampling_mode
        self.deterministic = settings.action_selection == "deterministic"
        self.workspace: kernels.Workspace | None = None
        self.deep_scratch: kernels.DeepScratch | None = None
        #: The prior of the block being stepped, when the group keeps none.
        self.prior_scratch: list[np.ndarray] = []
        self._rows: list[BlockRows] = []
        self._dense_rows: list[BlockRows] = []
        self._rows_of = self._dense_rows_of = -1  # the state's version the views are of
        self._seed = seed
        self._rng: np.random.Generator | None = None

    # -- tables and scratch ------------------------------------------------------------------------
    def install(self, cm: kernels.CompiledModel, *, same_layout: bool = False) -> bool:
        """Step with ``cm`` from now on (a learning group's refreshed tables); True if its blocks
        need other scratch (then call :meth:`resize_scratch`). ``same_layout``: only the tables'
        values changed (nothing to compare)."""
        if same_layout:
            self.cm = cm
            return False
        old = kernels.Workspace.bytes_per_agent(self.cm, info_gain=self.use_info_gain)
        self.cm = cm
        return kernels.Workspace.bytes_per_agent(cm, info_gain=self.use_info_gain) != old or (
            cm.deep is not None
        )

    def resize_scratch(self, state: AgentState) -> None:
        """Block sizes for the current tables (never larger than they were), and new scratch."""
        self.sizes = block_sizes(self.cm, info_gain=self.info_gain, block_size=self.sizes.block)
        self.new_scratch(state)

    def scratch_fits(self, state: AgentState, keeps_prior_changed: bool) -> bool:
        """Whether the scratch serves ``state`` as it is (sized for as many agents a block)."""
        ws = self.workspace
        n = state.n_agents
        return not (
            ws is None
            or keeps_prior_changed
            or (ws.capacity, ws.dense_capacity)
            != (min(self.sizes.block, n), min(self.sizes.dense, n))
        )

    def new_scratch(self, state: AgentState) -> None:
        """Allocate the kernel scratch for blocks of ``state`` (the old one released first); the
        block views are made again on it when next needed. Also each worker's, after the fork: a
        fresh allocation is private to its process from the start."""
        self.workspace = None
        self.deep_scratch = None
        cm, sizes = self.cm, self.sizes
        capacity = min(sizes.block, state.n_agents)
        self.prior_scratch = [
            np.empty((0 if state.keeps_prior else capacity, s), dtype=self.dtype)
            for s in cm.num_states
        ]
        self.workspace = kernels.Workspace(
            cm,
            capacity,
            info_gain=self.info_gain,
            dense_capacity=min(sizes.dense, state.n_agents),
        )
        if cm.deep is not None:
            self.deep_scratch = kernels.DeepScratch(
                cm,
                cm.deep,
                capacity,
                info_gain=self.info_gain,
                dense_capacity=min(sizes.deep_dense, capacity),
            )
        self._rows_of = self._dense_rows_of = -1

    def after_fork(self, state: AgentState) -> None:
        """In the caller and in each worker once the workers are forked: scratch of its own.
        The scratch allocated before the fork is shared copy-on-write, and the first writes of
        either process would copy it page by page (splitting numpy's large pages); a new
        allocation is private from the start."""
        self.new_scratch(state)
        self.blocks(state)

    def workspace_block(self, nb: int) -> kernels.Block:
        """The scratch of a block of ``nb`` agents."""
        assert self.workspace is not None  # allocated with the agents
        return self.workspace.block(nb)

    def blocks(self, state: AgentState, dense: bool = False) -> list[BlockRows]:
        """``state`` cut into blocks of ``sizes.block`` agents (``sizes.dense`` if ``dense``).
        Made again only when the state's arrays or the scratch were replaced: a tick slices
        nothing."""
        if not dense and self._rows_of == state.version:
            return self._rows
        if dense and self._dense_rows_of == state.version:
            return self._dense_rows
        assert self.workspace is not None  # allocated with the agents
        cached = self._dense_rows if dense else self._rows
        cached.clear()
        step = self.sizes.dense if dense else self.sizes.block
        for index, start in enumerate(range(0, state.n_agents, step)):
            nb = min(step, state.n_agents - start)
            sl = slice(start, start + nb)
            cached.append(
                BlockRows(
                    sl=sl,
                    blk=self.workspace.block(nb),
                    qs=[q[sl] for q in state.qs],
                    prior=(
                        [p[sl] for p in state.prior]
                        if state.keeps_prior
                        else [p[:nb] for p in self.prior_scratch]
                    ),
                    G=state.G[sl],
                    q_pi=state.q_pi[sl],
                    action=state.action[sl],
                    has_action=state.has_action[sl],
                    index=-1 if dense else index,
                )
            )
        if dense:
            self._dense_rows_of = state.version
        else:
            self._rows_of = state.version
        return cached

    # -- action selection's generator --------------------------------------------------------------
    def set_rng(self, rng: np.random.Generator) -> None:
        """Draw from ``rng`` from now on (a block's own stream, on several cores)."""
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
        return None if self.deterministic else self.rng

    # -- one block's tick --------------------------------------------------------------------------
    def step_block(
        self,
        state: AgentState,
        rows: BlockRows,
        obs: IntArray | None,
        soft: list[np.ndarray] | None,
    ) -> None:
        """One block's tick: its prior (a group that keeps none), infer, plan, act. ``obs``:
        the group's outcomes ``(N, M)``, or None with ``soft`` evidence."""
        ob = None if obs is None else obs[rows.sl]
        planner = self.planner(rows, ob)
        if not state.keeps_prior:
            self.derive_prior(state, rows)
        if planner == "joint":
            assert ob is not None  # planner() checked
            self.joint_tick(rows, ob)
        else:
            self.infer(rows, obs, soft, roots=planner == "tree")
            self.plan(rows, ob, planner)
            self.act(state, rows, planner)

    def planner(self, rows: BlockRows, obs: IntArray | None, *, joint: bool = True) -> str:
        """Which evaluation a block gets: ``"joint"`` (a whole tick on the joint small-block
        path, :meth:`joint_tick`; not if ``joint`` is False), ``"small"``, ``"deep"`` (policies of
        two or more steps under deterministic transitions), ``"local"``, ``"tree"`` (dense) or
        ``"chunks"`` (dense in sub-blocks: a block larger than the dense scratch, as with a local
        planner and soft evidence). ``obs``: the block's outcomes (None: without)."""
        if joint and obs is not None and rows.blk.joint_small is not None:
            return "joint"
        if rows.blk.small and self.cm.small is not None:
            return "small"
        if self.cm.deep is not None:
            return "deep"
        if obs is not None and self.cm.local is not None:
            return "local"
        return "tree" if rows.blk.dense else "chunks"

    def derive_prior(
        self,
        state: AgentState,
        rows: BlockRows,
        reset: np.ndarray | None = None,
        small: bool | None = None,
    ) -> None:
        """The block's prior for this tick's inference, into ``rows.prior``, for a group that
        keeps none: what the tick that committed its actions would have kept (``reset`` and
        ``small``: the state's flags of the block, by default)."""
        make_block_prior(
            self.cm, rows.qs, rows.action, rows.prior, rows.blk,
            reset=state.prior_reset[rows.sl] if reset is None else reset,
            small=bool(state.prior_small[rows.index]) if small is None else small,
        )

    def priors_of_first(self, state: AgentState, out: list[np.ndarray], n: int) -> None:
        """The priors of the first ``n`` agents of a group that keeps none, made into ``out``
        (it keeps them from now on: :meth:`AgentState.allocate`)."""
        for rows in self.blocks(state):
            if rows.sl.start >= n:
                break
            self.derive_prior(state, rows)
            stop = min(rows.sl.stop, n)
            for o, p in zip(out, rows.prior, strict=True):
                o[rows.sl.start : stop] = p[: stop - rows.sl.start]

    def priors_from_flags(self, state: AgentState, reset: np.ndarray, small: np.ndarray) -> None:
        """Every block's prior made from the beliefs and actions, with a saved group's flags
        (per agent ``reset``, per block ``small``: :meth:`AgentState.load_state_dict`)."""
        for rows in self.blocks(state):
            self.derive_prior(state, rows, reset[rows.sl], bool(small[rows.index]))

    def remade_prior(self, state: AgentState, rows: IntArray) -> list[np.ndarray]:
        """The prior of the agents ``rows`` (indices) for this tick, made again for a group that
        keeps none (as :func:`~edge_agent.core.priors.make_block_prior` makes it, in float64:
        ``D`` for an agent reset since it acted, else its beliefs propagated by its action): what
        the health part measures them with."""
        reset = state.prior_reset[rows]
        out = []
        for f, (trans, d) in enumerate(zip(self.cm.transitions, self.cm.D, strict=True)):
            q = np.asarray(state.qs[f][rows], dtype=np.float64)
            p = np.asarray(propagate_per_agent(trans, q, state.action[rows, f]), dtype=np.float64)
            p[reset] = d
            out.append(p)
        return out

    def infer(
        self,
        rows: BlockRows,
        obs: IntArray | None,
        soft: list[np.ndarray] | None,
        *,
        roots: bool,
    ) -> None:
        """The block's posteriors from its prior and outcomes (``obs`` the group's, or ``soft``
        evidence); ``roots``: leave them as the dense tree's roots too."""
        sl = rows.sl
        kernels.infer_block(
            self.cm,
            None if obs is None else obs[sl],
            rows.prior,
            rows.qs,
            rows.blk,
            num_iter=self.num_iter,
            dF_tol=self.dF_tol,
            roots=roots,
            soft=None if soft is None else [p[sl] for p in soft],
        )

    def plan(self, rows: BlockRows, obs: IntArray | None, planner: str) -> None:
        """``G`` and ``q_pi`` of the block (``q_pi`` also left in ``blk.x``, state-major).

        ``obs``: the block's outcomes :meth:`infer` just used (the local planner needs them);
        ``planner``: from :meth:`planner`.
        """
        cm, blk, G = self.cm, rows.blk, rows.G
        if planner == "deep":
            assert cm.deep is not None
            assert self.deep_scratch is not None
            refused = kernels.evaluate_deep_rows(
                cm,
                cm.deep,
                rows.qs[0],
                self.deep_scratch,
                G,
                obs=None if obs is None else obs[:, 0],
                evidence=None if obs is None else blk.evidence,
                use_utility=self.use_utility,
                use_info_gain=self.use_info_gain,
            )
            if len(refused):
                self.plan_densely(rows, refused)
        elif planner == "small":
            kernels.evaluate_small_block(
                cm,
                rows.qs[0],
                blk,
                G,
                use_utility=self.use_utility,
                use_info_gain=self.use_info_gain,
            )
        elif planner == "local":
            assert obs is not None
            dense = kernels.evaluate_local_block(
                cm,
                obs[:, 0],
                rows.qs[0],
                blk,
                G,
                use_utility=self.use_utility,
                use_info_gain=self.use_info_gain,
            )
            if len(dense):
                self.plan_densely(rows, dense)
        elif planner == "chunks":  # larger than the dense scratch: plan it in sub-blocks
            self.plan_densely(rows, np.arange(blk.nb))
        else:
            kernels.evaluate_block(
                cm,
                blk,
                use_utility=self.use_utility,
                use_info_gain=self.use_info_gain,
                gamma=self.gamma,
            )
            np.copyto(G, blk.G.T)
            np.copyto(rows.q_pi, blk.x.T)
            return
        kernels.policy_posterior_block(cm, G, blk, self.gamma)
        np.copyto(rows.q_pi, blk.x.T)

    def plan_densely(self, rows: BlockRows, agents: np.ndarray) -> None:
        """``G`` of a few agents of a block (indices ``agents``) with the dense evaluation."""
        assert self.workspace is not None
        chunk_size = self.sizes.dense
        for start in range(0, len(agents), chunk_size):
            chunk = agents[start : start + chunk_size]
            sub = self.workspace.block(len(chunk))  # buffers the local planner does not use
            kernels.load_roots([q[chunk] for q in rows.qs], sub)
            kernels.evaluate_block(
                self.cm,
                sub,
                use_utility=self.use_utility,
                use_info_gain=self.use_info_gain,
                gamma=self.gamma,
            )
            rows.G[chunk] = sub.G.T

    def joint_tick(self, rows: BlockRows, obs: IntArray) -> None:
        """A whole tick of a small block of a multi-factor model on the joint small-block path:
        infer, plan, act and the next prior (same results as the other paths, to rounding)."""
        cm, blk = self.cm, rows.blk
        plan, sc = cm.joint, blk.joint_small
        assert plan is not None  # the model has joint tables: planner() checked
        assert sc is not None
        kernels.infer_joint(
            plan, obs, rows.prior, rows.qs, sc, num_iter=self.num_iter, dF_tol=self.dF_tol
        )
        kernels.evaluate_joint(
            plan, sc, rows.G, use_utility=self.use_utility, use_info_gain=self.use_info_gain
        )
        kernels.posterior_joint(plan, rows.G, rows.q_pi, sc, self.gamma)
        if self.deterministic and self.sampling_mode == "marginal":
            kernels.select_joint(plan, rows.q_pi, sc, rows.action)
        else:
            np.copyto(blk.x, rows.q_pi.T)
            self.select(rows)
        rows.has_action.fill(True)
        kernels.prior_joint(plan, sc, rows.action, rows.prior)

    def select(self, rows: BlockRows) -> None:
        """The block's actions from ``blk.x`` (its ``q_pi``, state-major), into ``rows.action``."""
        kernels.select_block(
            self.cm,
            rows.blk.x,
            rows.blk,
            rows.action,
            mode=self.sampling_mode,
            deterministic=self.deterministic,
            alpha=self.alpha,
            rng=self.selection_rng(),
        )

    def act(self, state: AgentState, rows: BlockRows, planner: str) -> None:
        """Select actions from ``blk.x`` (q_pi, state-major) and commit them; ``planner`` (see
        :meth:`plan`) says where the next prior can come from."""
        cm, blk, actions = self.cm, rows.blk, rows.action
        kernels.select_block(
            cm,
            blk.x,
            blk,
            actions,
            mode=self.sampling_mode,
            deterministic=self.deterministic,
            alpha=self.alpha,
            rng=self.selection_rng(),
        )
        rows.has_action.fill(True)
        if not state.keeps_prior:  # made again at the next tick, as it would be made here
            state.commit(rows.sl, small=planner == "small", index=rows.index)
            return
        if planner == "small" and kernels.small_prior_block(cm, blk, actions[:, 0], rows.prior[0]):
            return
        if planner == "tree" and kernels.prior_block(cm, blk, actions, rows.prior):
            return
        kernels.propagate_block(cm, rows.qs, actions, rows.prior, blk)

    def propagate(self, rows: BlockRows, actions: np.ndarray) -> None:
        """The block's next prior from its beliefs and ``actions`` ``(nb, F)``."""
        kernels.propagate_block(self.cm, rows.qs, actions, rows.prior, rows.blk)

    def drive(self, state: AgentState, actions: IntArray) -> None:
        """Every agent's next prior from ``actions (N, F)`` (a group that keeps no prior: the
        committed actions, which are the group's, make it at the next tick)."""
        state.beliefs_ahead = False
        for rows in self.blocks(state):
            if state.keeps_prior:
                self.propagate(rows, actions[rows.sl])
            else:
                state.commit(rows.sl, small=False, index=rows.index)

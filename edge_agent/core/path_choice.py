"""Where an Active Inference group's tick path is chosen (:mod:`edge_agent.core.tick_paths`): one
function, :func:`tick_path`, asked when the group is made and again only when what it depends on
changes; the learning paths' module is imported only for a group that learns.

Whether a group that does not learn steps in the compiled tick or on numpy is measured once,
when the group is made (:func:`measure_costs`): a few ticks of each path on the group's own
model, settings and agent count (at most :data:`MEASURE_AGENTS` of them), on scratch state of
their own, alternated, each path's fastest tick kept. numpy's kernels multiply a shared table
for the whole batch in one BLAS call (a dense ``B``: the slippery grid's learned transitions,
``(N, S) @ (S, S)`` per action in float32), which the compiled pass, agent block by agent block
in double, does not outrun; on the small models it does. The cheaper path is kept (a tie: the
compiled tick), the numbers in the group's status and the log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from edge_agent.aif.kernels import dense_table
from edge_agent.core.agent_state import AgentState
from edge_agent.core.block_stepper import BlockStepper
from edge_agent.core.tick_paths import BlockTicks, CompiledTick, FusedTick, PolicyTick, TickPath
from edge_agent.sim import ColumnSampler, SamplerScratch, sample_columns
from edge_agent.sim.uniforms import SplitMix64

if TYPE_CHECKING:
    from edge_agent.aif import kernels
    from edge_agent.aif.kernels.native.binding import NativeTick
    from edge_agent.aif.settings import AifSettings
    from edge_agent.core.agent_state import AgentState
    from edge_agent.core.block_stepper import BlockStepper
    from edge_agent.core.history_recorder import HistoryRecorder
    from edge_agent.core.installer import TablesInstaller
    from edge_agent.core.learning import AgentStepping, GroupLearning
    from edge_agent.core.planning_pass import PolicyTicks
    from edge_agent.core.workers import BlockWorkers

__all__ = [
    "MEASURE_AGENTS", "MEASURE_TICKS", "WARM_TICKS", "TickCosts", "measure_costs", "tick_path",
]

#: The most agents the measured choice steps (a larger group is measured on this many: both
#: paths' cost grows with the agents, numpy's per-call floor shared by fewer of them here).
MEASURE_AGENTS = 1024
#: The ticks of each path that are timed, after the untimed ones (each path's first-tick costs,
#: and the beliefs settling as they do in use).
MEASURE_TICKS = 5
WARM_TICKS = 4


class TickCosts(NamedTuple):
    """Seconds a tick of ``agents`` agents in the compiled tick (``native_s``) and on numpy
    (``numpy_s``), each path's fastest timed tick (:func:`measure_costs`)."""

    native_s: float
    numpy_s: float
    agents: int

    @property
    def native_faster(self) -> bool:
        """Whether the compiled tick is kept (a tie: it is)."""
        return self.native_s <= self.numpy_s

    def describe(self) -> str:
        """The measurement in words: ``"numpy 0.31 ms a tick, the compiled tick 7.02 ms (1,000
        agents)"``."""
        return (f"numpy {1e3 * self.numpy_s:.3g} ms a tick, the compiled tick "
                f"{1e3 * self.native_s:.3g} ms ({self.agents:,} agents)")

    def as_dict(self) -> dict[str, float | int]:
        """The status's ``stepping_cost``: milliseconds a tick of each path, and the agents."""
        return {"native_ms": round(1e3 * self.native_s, 4),
                "numpy_ms": round(1e3 * self.numpy_s, 4), "agents": self.agents}


class _ModelWorld:
    """``n`` agents' world as their own model says it goes (seeded: the same every time): each
    agent's hidden state drawn from ``D``, its outcomes from ``A`` at that state, its next state
    from ``B`` under the action it took. Beliefs there become what they are in use (a belief
    spread over every state plans otherwise than a settled one, on either path)."""

    def __init__(self, cm: kernels.CompiledModel, n: int) -> None:
        # The worlds' column samplers (edge_agent.sim): A's columns are joint states, B's
        # (S_f', S_f * U_f) a state and an action, D's one column.
        self._A = [ColumnSampler.from_table(np.asarray(a, dtype=np.float64)) for a in cm.A_rows]
        dense = [dense_table(t) for t in cm.transitions]  # (S_f, S_f, U_f)
        self._B = [ColumnSampler.from_table(b.reshape(b.shape[0], -1)) for b in dense]
        self._controls = [b.shape[2] for b in dense]
        self._sizes = tuple(b.shape[0] for b in dense)
        self._rng = SplitMix64(0)  # not numpy.random: a daemon keeps it out (docs/memory.md)
        self._scratch = SamplerScratch(n)
        self._u = np.empty(n)
        zeros = np.zeros(n, dtype=np.intp)
        self._states = [
            self._draw(ColumnSampler.from_table(np.asarray(d, dtype=np.float64)[:, None]), zeros)
            for d in cm.D
        ]

    def _draw(self, sampler: ColumnSampler, cols: np.ndarray) -> np.ndarray:
        """One index per agent, drawn from column ``cols[i]`` of ``sampler``'s table."""
        out = np.empty(len(cols), dtype=np.intp)
        sample_columns(sampler, cols, self._rng.random(self._u), out, self._scratch)
        return out

    def outcomes(self) -> np.ndarray:
        """Every agent's outcomes ``(n, M)`` at its state."""
        joint = np.ravel_multi_index(tuple(self._states), self._sizes)
        return np.stack([self._draw(a, joint) for a in self._A], axis=1)

    def step(self, action: np.ndarray) -> None:
        """Every agent's next state under its ``action`` ``(n, F)``."""
        self._states = [
            self._draw(b, s * u + action[:, f].astype(np.intp))
            for f, (b, s, u) in enumerate(zip(self._B, self._states, self._controls, strict=True))
        ]


def measure_costs(
    kernel: NativeTick,
    cm: kernels.CompiledModel,
    settings: AifSettings,
    dtype: np.dtype,
    *,
    n_agents: int,
    keeps_prior: bool,
    block_size: int,
    ticks: int = MEASURE_TICKS,
    timer: Callable[[], float] = time.perf_counter,
) -> TickCosts:
    """What a tick of a group of ``cm`` with ``settings`` (state in ``dtype``, keeping its prior
    or not, in blocks of ``block_size``) costs in the compiled ``kernel`` and on numpy: both
    paths step ``min(n_agents, MEASURE_AGENTS)`` agents of scratch state of their own (the
    group's is not touched) on the same outcomes, alternated, in a world that goes as their
    model says (:class:`_ModelWorld`, seeded, moved by numpy's actions): ``WARM_TICKS`` untimed
    ticks each, then ``ticks`` timed by ``timer``; each path's fastest tick."""
    n = min(n_agents, MEASURE_AGENTS)
    stepper = BlockStepper(cm, settings, dtype, block_size=block_size, seed=0)
    paths: list[TickPath] = []
    states: list[AgentState] = []
    for native in (True, False):
        state = AgentState(cm.num_states, cm.num_policies, cm.num_factors, dtype,
                           keep_prior=keeps_prior)
        state.allocate(n, keeps_prior=keeps_prior, block_size=block_size, new=np.zeros,
                       make_priors=lambda out, k: None)
        state.reset(slice(None), cm.D)
        states.append(state)
        fused = FusedTick(BlockTicks(state, stepper, None), state=state, stepper=stepper,
                          recorder=None, workers=None, seed=None)
        if native:  # integer outcomes, no history: the stepper's blocks are not asked for
            paths.append(CompiledTick(kernel, fused, state=state, stepper=stepper,
                                      recorder=None))
        else:
            stepper.new_scratch(state)
            paths.append(fused)
    world = _ModelWorld(cm, n)
    best = [float("inf"), float("inf")]
    for t in range(WARM_TICKS + ticks):
        obs = world.outcomes()
        for i, path in enumerate(paths):
            start = timer()
            path.run(obs, None, None, False, who_plans=None, ticks=t)
            if t >= WARM_TICKS:
                best[i] = min(best[i], timer() - start)
        world.step(states[1].action)  # numpy's actions move the world (the reference twin)
    return TickCosts(native_s=best[0], numpy_s=best[1], agents=n)


def tick_path(
    *,
    state: AgentState,
    stepper: BlockStepper,
    recorder: HistoryRecorder | None,
    blocks: BlockTicks,
    plans: PolicyTicks | None,
    learning: GroupLearning | None,
    stages: AgentStepping,
    installer: TablesInstaller,
    workers: BlockWorkers | None,
    seed: int | None,
    kernel: NativeTick | None,
) -> TickPath:
    """The path of a group with these parts now: its ``plans`` (None: every agent plans every
    tick), its ``learning`` (None: it does not learn) and ``stages`` (each agent's own tables,
    or :class:`~edge_agent.core.tick_paths.SharedStages`), its running ``workers`` (None: the
    caller steps every block) and their ``seed``, and the compiled tick of a group that does not
    learn (``kernel``; None: numpy steps it, :func:`~edge_agent.core.native_pass.frozen_kernel`
    says why)."""
    if plans is not None:
        return PolicyTick(plans, state=state, stepper=stepper, recorder=recorder,
                          workers=workers, learning=learning, installer=installer)
    fused = FusedTick(blocks, state=state, stepper=stepper, recorder=recorder, workers=workers,
                      seed=seed)
    if learning is None:
        if kernel is not None and workers is None:
            return CompiledTick(kernel, fused, state=state, stepper=stepper, recorder=recorder)
        return fused
    from edge_agent.core.learning_ticks import learning_path  # noqa: PLC0415 - it learns

    return learning_path(fused, state=state, stepper=stepper, recorder=recorder,
                         learning=learning, stages=stages, installer=installer)

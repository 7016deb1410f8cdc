"""The daemon's coordination layer: one :class:`CoordinationEngine` between edge-agentd's groups
and its :class:`~edge_agent.fleet.link.FleetLink`.

:class:`CoordinationRuntime` is what ``service.py`` holds when ``[mqtt]`` is enabled and a group
has a ``[groups.coordination]`` table (:func:`wanted`). It adds to the engine what a long-running
daemon needs:

* **Its groups, whatever happens to them.** The daemon hands a *provider*: a function returning
  the coordinated groups as they are now (:class:`GroupBinding`: the agent group and its
  coordination table). Before every tick the runtime compares it with what the engine holds;
  after a reload, a resize, a deployment or a rollback it rebinds the engine
  (:meth:`CoordinationEngine.rebind`: unchanged agents keep their evidence and tasks, changed
  ones give their tasks up for re-auction). The daemon calls nothing extra at those places.
* **Memory: reserve, then allocate.** :meth:`CoordinationEngine.bytes_for` of the groups is
  reserved in the daemon's :class:`~edge_agent.core.budget.MemoryBudget` (owner ``coordination``)
  before the engine allocates anything; a reload's new budget gets a new reservation. A request
  that does not fit raises :class:`~edge_agent.errors.BudgetError` at start; later (a reload that
  grew a group) the groups that do not fit run uncoordinated and the status says why.
* **The tick**, in the order of ``docs/coordination.md``: :meth:`handle` for every received
  message (queues only), :meth:`before_tick` (merge, fuse), :meth:`step` / :meth:`reset` in place
  of ``agents.step`` / ``agents.reset`` (plain calls for groups the engine does not hold),
  :meth:`after_tick` (publish, auction). Nothing blocks.
* **What an operator sees:** :meth:`status` for the status file (the local award, what this
  node's agents hold, when the award last changed, the engine's metrics, the first agents'
  beliefs about each shared factor) and :meth:`telemetry_counters` (``coord.*``, bounded).

Tasks are announced on the fleet's ``tasks`` topic by anyone: the hub (``edge-agent-host
tasks announce``), or a node through :meth:`announce`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from edge_agent.coordination.config import (
    CoordinationConfig,
    GroupCoordinationConfig,
    coordinates,
)
from edge_agent.coordination.coordinated_group import CoordinatedGroup
from edge_agent.coordination.engine import (
    TELEMETRY_KEY_CHARS,
    CoordinationEngine,
    LinkLike,
    MessageLike,
)
from edge_agent.coordination.ledger import Team
from edge_agent.coordination.messages import TaskSpec
from edge_agent.coordination.signing import TaskSigner
from edge_agent.core.agents import AifAgentGroup
from edge_agent.core.budget import MemoryBudget, Reservation
from edge_agent.core.contract import AgentGroup
from edge_agent.errors import BudgetError, EdgeAgentError
from edge_agent.state_faults import StateFaults

logger = logging.getLogger(__name__)

__all__ = ["CoordinationRuntime", "GroupBinding", "wanted"]

BUDGET_OWNER: Final = "coordination"
STATUS_MAX_TASKS: Final = 1024
"""Tasks of the award listed in the status file (the rest are counted)."""
STATUS_BELIEF_AGENTS: Final = 256
"""Agents per sharing group whose beliefs about the shared factors the status file shows."""
TELEMETRY_MAX_KEYS: Final = 96
"""``coord.*`` counters per telemetry message (a message carries at most 256 counters)."""
_NODE_METRICS: Final = (
    "rounds",
    "tasks_open",
    "tasks_held",
    "tasks_done",
    "tasks_expired",
    "tasks_preempted",
    "tasks_abandoned",
    "reawards",
    "converge_s_mean",
    "converge_s_max",
    "conflicts_detected",
    "conflicts_resolved",
    "conflicts_open",
    "live_nodes",
    "deaths_seen",
    "death_reauctions",
    "task_msgs_sent",
    "task_msgs_received",
    "belief_msgs_sent",
    "belief_msgs_received",
    "syncs_sent",
    "syncs_received",
    "publish_refused",
    "malformed",
    "inbox_dropped",
    "board_overflow",
    "teams_open",
    "teams_formed",
    "team_form_s_max",
    "team_slots_vacant",
    "team_repairs",
    "team_repair_s_max",
)
"""The engine metrics first in telemetry (the per-group belief counters follow while room is
left)."""


@dataclass(frozen=True)
class GroupBinding:
    """A coordinated group as the daemon has it now: its agents and its coordination table
    (agents that are not Active Inference agents share nothing and are left out)."""

    agents: AgentGroup
    config: GroupCoordinationConfig


Bindings = Mapping[str, GroupBinding]


def wanted(coordination: CoordinationConfig | None, groups: Bindings, mqtt_enabled: bool) -> bool:
    """:func:`~edge_agent.coordination.config.coordinates` for the groups as bound."""
    return coordinates(coordination, (b.config for b in groups.values()), mqtt_enabled)


def _task_signer(link: object) -> TaskSigner:
    """The node's task key, kept in the link's state directory (a FleetLink's); a key for this
    run only when the link has none (tests' in-memory links)."""
    state_dir = getattr(link, "state_dir", None)
    if not isinstance(state_dir, Path):
        return TaskSigner.generate()
    faults = getattr(link, "faults", None)
    return TaskSigner.load_or_create(state_dir, faults if isinstance(faults, StateFaults) else None)


class CoordinationRuntime:
    """The daemon's coordination layer (see the module docstring)."""

    def __init__(
        self,
        config: CoordinationConfig,
        link: LinkLike,
        groups: Callable[[], Bindings],
        *,
        tick_period_s: float,
        budget: Callable[[], MemoryBudget | None] = lambda: None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        clock_synced: Callable[[], bool] | None = None,
        authorities: Collection[bytes] = (),
    ) -> None:
        """Reserve the engine's memory in ``budget()``, then build the engine over ``groups()``.
        ``authorities``: the raw public keys of the fleet's hubs (the daemon's hub keys), whose
        announcers own every task id they announce (:class:`CoordinationEngine`).

        Raises :class:`BudgetError` when the coordinated groups do not fit the budget and
        :class:`~edge_agent.errors.InputError` when a group's coordination table does not suit
        its model (a shared factor it does not have, channels beyond 2**32).
        """
        self.config = config
        self.link = link
        self.node_id = link.node_id
        self._provider = groups
        self._budget_of = budget
        self._wall = wall_clock
        self.settings = config.settings(tick_period_s)
        self._reservation: Reservation | None = None
        self._reserved_in: MemoryBudget | None = None
        self.problems: dict[str, str] = {}
        bindings = groups()
        specs = self._specs(bindings)
        self._reserve(specs, budget())
        try:
            self.engine = CoordinationEngine(
                link,
                specs,
                self.settings,
                monotonic=monotonic,
                wall_clock=wall_clock,
                clock_synced=clock_synced,
                signer=_task_signer(link),
                authorities=authorities,
            )
        except BaseException:
            self.close()
            raise
        self._bound = self._signature(bindings, specs)
        self._current: object = None
        self._current_teams: object = None
        self._holders: dict[str, tuple[str, str, int, int]] = {}
        self._teams: dict[str, dict[str, Any]] = {}
        self._rosters: dict[str, tuple[int, list[tuple[str, str, int, int]], int]] = {}
        self._rounds_seen = 0
        self.award_changed_at: float | None = None
        self.rounds_opened_at: float | None = None
        self.all_held_at: float | None = None
        """When every team of the newest rounds was whole with every member holding its slot."""
        self.rebinds = 0

    # -- wiring ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Subscribe to beliefs, tasks and presence (through the link: kept on reconnects)."""
        self.engine.start()

    def close(self) -> None:
        """Give the memory back (the engine is not used afterwards)."""
        if self._reservation is not None:
            self._reservation.release()
            self._reservation = None
            self._reserved_in = None

    def handle(self, msg: MessageLike) -> bool:
        """Queue a received message if it is coordination traffic; False otherwise."""
        return self.engine.handle(msg)

    def coordinates(self, name: str, agents: AgentGroup) -> bool:
        """Whether the engine holds exactly these agents as group ``name``."""
        gs = self.engine.groups.get(name)
        return gs is not None and gs.group is agents

    # -- the tick -------------------------------------------------------------------------------
    def before_tick(self, now: float | None = None) -> None:
        """Follow the daemon's groups, merge what arrived, fuse peers' evidence into priors."""
        self._follow_groups()
        self.engine.before_step(now)

    def step(
        self, name: str, agents: AgentGroup, obs: np.ndarray, now: float | None = None
    ) -> np.ndarray:
        """``agents.step(obs, now)``, with the task preferences of its holders when coordinated."""
        if self.coordinates(name, agents):
            return self.engine.step(name, obs, now)
        return agents.step(obs, now)

    def reset(self, name: str, agents: AgentGroup, mask: NDArray[np.bool_] | None = None) -> None:
        """``agents.reset(mask)``; coordinated agents also drop the evidence not sent yet."""
        agents.reset(mask)
        if self.coordinates(name, agents):
            self.engine.reset_agents(name, mask)

    def after_tick(self, now: float | None = None) -> None:
        """Publish evidence, run the auction (bids, award, holders, releases, task_state).

        The groups are followed again first: a group replaced during the tick (a deployment
        rolled back) must not publish what its discarded agents believed."""
        self._follow_groups()
        self.engine.after_step(now)
        self._note_award()

    def announce(self, specs: Sequence[TaskSpec]) -> None:
        """Announce tasks from this node (``announced_by`` must be this node)."""
        self.engine.announce(list(specs))

    # -- groups and memory ----------------------------------------------------------------------
    def _specs(self, bindings: Bindings) -> dict[str, CoordinatedGroup]:
        specs: dict[str, CoordinatedGroup] = {}
        for name, b in bindings.items():
            cfg = b.config
            if not cfg.active or not isinstance(b.agents, AifAgentGroup):
                continue
            n = b.agents.n_agents
            channels = None
            if cfg.channel_offset:
                channels = np.arange(cfg.channel_offset, cfg.channel_offset + n, dtype=np.int64)
            specs[name] = CoordinatedGroup(
                group=b.agents,
                sharing=cfg.sharing,
                capabilities=cfg.capabilities,
                channels=channels,
            )
        return specs

    @staticmethod
    def _signature(
        bindings: Bindings, coordinated: Collection[str]
    ) -> dict[str, tuple[AgentGroup, int, GroupCoordinationConfig, bool]]:
        """What a rebind depends on: every group's object, size and table, and whether the
        engine holds it."""
        return {
            name: (b.agents, b.agents.n_agents, b.config, name in coordinated)
            for name, b in bindings.items()
        }

    def _reserve(self, specs: Mapping[str, CoordinatedGroup], budget: MemoryBudget | None) -> None:
        """Reserve the bytes of an engine over ``specs`` (replacing the last reservation)."""
        nbytes = CoordinationEngine.bytes_for(specs, self.settings)
        if budget is None:
            self.close()
            return
        if self._reservation is not None and self._reserved_in is budget:
            self._reservation.resize(nbytes, hint=self._hint(specs))
            return
        reservation = budget.reserve(BUDGET_OWNER, "coordination", nbytes, hint=self._hint(specs))
        self.close()
        self._reservation, self._reserved_in = reservation, budget

    @staticmethod
    def _hint(specs: Mapping[str, CoordinatedGroup]) -> str:
        sharing = [n for n, s in specs.items() if s.sharing is not None]
        what = f" or [groups.coordination.sharing] max_peers of {', '.join(sharing)}"
        return "reduce the coordinated groups' counts" + (what if sharing else "")

    @property
    def reserved_bytes(self) -> int:
        return 0 if self._reservation is None else self._reservation.nbytes

    def _follow_groups(self) -> None:
        """Rebind the engine when the daemon's groups are not the ones it holds."""
        bindings = self._provider()
        if self._signature(bindings, self.engine.groups) == self._bound:
            return
        specs = self._specs(bindings)
        self.problems = {}
        try:
            self._reserve(specs, self._budget_of())
        except BudgetError as err:
            # Keep what fits: the unchanged groups; the others run uncoordinated.
            held = self.engine.groups
            keep = {
                n: s
                for n, s in specs.items()
                if n in held
                and held[n].group is s.group
                and held[n].prefs.n_agents == s.group.n_agents
            }
            for name in specs.keys() - keep.keys():
                self.problems[name] = f"not coordinated: {err}"
            logger.error("coordination: %s", err)
            specs = keep
            try:
                self._reserve(specs, self._budget_of())
            except BudgetError as again:  # a smaller budget after a reload: coordinate nothing
                self.problems = dict.fromkeys(bindings, f"not coordinated: {again}")
                specs = {}
                self.close()
        try:
            self.engine.rebind(specs)
        except EdgeAgentError as err:
            logger.error("coordination: groups not rebound: %s", err)
            self.problems["*"] = str(err)
            self.engine.rebind({})
        self._bound = self._signature(bindings, self.engine.groups)
        self.rebinds += 1
        logger.info(
            "coordination: now coordinating %s",
            ", ".join(sorted(self.engine.groups)) or "no group",
        )

    # -- what the operator sees -----------------------------------------------------------------
    def _note_award(self) -> None:
        auctioneer = self.engine.auctioneer
        wall = self._wall()
        if auctioneer.metrics.rounds != self._rounds_seen:
            self._rounds_seen = auctioneer.metrics.rounds
            self.rounds_opened_at = wall
            self.all_held_at = None
        if auctioneer.current is self._current and auctioneer.teams is self._current_teams:
            return
        self._current, self._current_teams = auctioneer.current, auctioneer.teams
        holders = {t: (*b.holder, b.epoch) for t, b in auctioneer.current.items()}
        self._teams = {t: _team_status(team) for t, team in auctioneer.teams.items()}
        # A member taking its slot (a hold) changes no one's place: the award is the same.
        rosters = {
            t: (team.epoch, sorted((*m.holder, m.role) for m in team.members), len(team.done))
            for t, team in auctioneer.teams.items()
        }
        if holders != self._holders or rosters != self._rosters:
            self._holders, self._rosters = holders, rosters
            self.award_changed_at = wall
        if (
            self.all_held_at is None
            and self._teams
            and all(
                not team["vacant"] and all(m[4] for m in team["members"])
                for team in self._teams.values()
            )
        ):
            self.all_held_at = wall

    def status(self) -> dict[str, Any]:
        """The ``coordination`` section of the daemon's status file (JSON-ready)."""
        engine = self.engine
        award = sorted(self._holders.items())
        holding: dict[str, list[Any]] = {}
        team_holding: dict[str, list[list[Any]]] = {}
        groups: dict[str, Any] = {}
        for name, gs in engine.groups.items():
            for agent, (task, epoch) in gs.prefs.held.items():
                if task in self._teams:
                    members = team_holding.setdefault(task, [])
                    members.append([name, agent, epoch, gs.prefs.role(agent)])
                else:
                    holding[task] = [name, agent, epoch]
            groups[name] = {
                "agents": gs.group.n_agents,
                "capabilities": sorted(gs.capabilities),
                "holding": int(gs.prefs.rows.size),
                "sharing": None if gs.sharer is None else _beliefs(gs.group, gs.sharer.factors),
            }
        metrics = engine.metrics()
        return {
            "node_id": self.node_id,
            "window_s": self.settings.auction.window_s,
            "reserved_bytes": self.reserved_bytes,
            "groups": groups,
            "problems": dict(self.problems),
            "digest": engine.board.digest().hex(),
            "rounds_opened_at": self.rounds_opened_at,
            "award_changed_at": self.award_changed_at,
            "formation": {**engine.formation, "all_held_at": self.all_held_at},
            "awarded": len(award),
            "assignment": {t: list(h) for t, h in award[:STATUS_MAX_TASKS]},
            "teams": dict(sorted(self._teams.items())[:STATUS_MAX_TASKS]),
            "holding": holding,
            "team_holding": team_holding,
            "metrics": {k: round(v, 6) for k, v in metrics.items()},
        }

    def telemetry_counters(self, max_keys: int = TELEMETRY_MAX_KEYS) -> dict[str, float]:
        """``coord.*`` counters for telemetry: the node's first, then the groups' while fewer
        than ``max_keys``."""
        metrics = self.engine.metrics()
        out = {f"coord.{k}": metrics[k] for k in _NODE_METRICS[:max_keys] if k in metrics}
        for key, value in metrics.items():
            if len(out) >= max_keys:
                break
            name = f"coord.{key}"
            if name not in out and len(name) <= TELEMETRY_KEY_CHARS:
                out[name] = value
        return out


def _team_status(team: Team) -> dict[str, Any]:
    """A team task in the status file: its round, slots per role, members (``[node, group,
    agent, role, held]``: ``held`` once the member took its slot), finished parts and vacant
    slots. Every member can read who its team-mates are (node, group, agent) here."""
    return {
        "epoch": team.epoch,
        "slots": list(team.slots),
        "members": [[m.node, m.group, m.agent, m.role, m.held] for m in team.members],
        "done": [[d.node, d.group, d.agent, d.role_index] for d in team.done],
        "vacant": team.vacant,
    }


def _beliefs(agents: AifAgentGroup, factors: tuple[int, ...]) -> dict[str, Any]:
    """The first agents' most probable state and its probability, per shared factor."""
    n = min(agents.n_agents, STATUS_BELIEF_AGENTS)
    out: dict[str, Any] = {"factors": list(factors), "agents": n}
    for f in factors:
        q = agents.qs[f][:n]
        best = q.argmax(axis=1)
        out[f"factor{f}"] = {
            "map": best.tolist(),
            "p": np.round(q[np.arange(n), best], 4).tolist(),
        }
    return out

"""CoordinationEngine: one node's coordination layer, between its agent groups and its FleetLink.

The daemon owns one engine per node and calls it around every tick:

1. for every message the FleetLink received, :meth:`CoordinationEngine.handle` (it keeps the
   coordination messages in a bounded queue and returns True; anything else returns False);
2. :meth:`CoordinationEngine.before_step`: up to ``max_messages_per_tick`` queued messages are
   merged (beliefs into the peer tables, task messages into the ledger, presence into the dead
   sessions), then peers' evidence is fused into every sharing group's prior;
3. each group steps -- :meth:`CoordinationEngine.step` runs ``group.step(obs)``, or, while some
   of its agents hold a task, the same step with their preferences replaced
   (:class:`~edge_agent.coordination.preferences.TaskPreferences`);
4. :meth:`CoordinationEngine.after_step`: own evidence is accumulated and belief messages go out;
   the auction moves on (bids for new rounds, awards, holders' preferences, releases of done or
   expired tasks, ``task_state`` and, on a digest mismatch, ``task_sync``).

Nothing here blocks: every message is handled in time proportional to its size, the queue is
bounded (the newest message is dropped and counted when it is full), and publishing goes through
the link (QoS 1 into its outbox, QoS 0 straight to the transport).

Presence: the engine subscribes to every node's ``state``, ``birth`` and ``death``. An offline
state (the MQTT will) or a death with ``bdseq = b`` makes sessions ``<= b`` of that node dead:
their bids stop counting, the tasks they won move to the next epoch (re-auctioned), and their
belief slot is freed.

The engine's state and its message traffic (wiring to the link, publishing, merging incoming
messages, anti-entropy) are :class:`~edge_agent.coordination.engine_io.EngineIO`'s; here are
the tick, announcing, the auction (bids, awards, team holds, releases), ``task_state`` and the
metrics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import numpy as np
from msgspec import UNSET
from numpy.typing import NDArray

from edge_agent.aif import kernels
from edge_agent.arrays import distinct
from edge_agent.coordination.coordinated_group import (
    NO_ROWS,
    GroupState,
)
from edge_agent.coordination.engine_io import (
    DIGEST_HISTORY,
    HOLD_WAIT_STATES,
    SILENCE_PERIODS,
    TELEMETRY_KEY_CHARS,
    EngineIO,
    LinkLike,
    MessageLike,
)
from edge_agent.coordination.ledger import (
    Bid,
)
from edge_agent.coordination.messages import (
    MAX_BIDS_PER_MESSAGE,
    MAX_CLAIMS,
    MAX_TASKS_PER_MESSAGE,
    MAX_TEAM_STATES,
    SIGNATURE_BYTES,
    Claim,
    Release,
    ReleaseStatus,
    TaskAnnounce,
    TaskBids,
    TaskSpec,
    TaskState,
    TeamState,
    announcement_parts,
)
from edge_agent.coordination.signing import sign_specs
from edge_agent.coordination.utility import select_bids, task_costs
from edge_agent.errors import EdgeAgentError, InputError
from edge_agent.fleet.protocol import BeliefBatch

__all__ = [
    "DIGEST_HISTORY",
    "HOLD_WAIT_STATES",
    "SILENCE_PERIODS",
    "TELEMETRY_KEY_CHARS",
    "CoordinationEngine",
    "LinkLike",
    "MessageLike",
]

logger = logging.getLogger(__name__)


class CoordinationEngine(EngineIO):
    """Belief sharing and task allocation for one node (see the module docstring)."""

    # -- the tick -------------------------------------------------------------------------------
    def before_step(self, now: float | None = None) -> None:
        """Merge queued messages, then fuse peers' evidence into the sharing groups' priors."""
        now = self._mono() if now is None else now
        if self._started_at is None:
            self._started_at = now
        for msg in self._queue.drain(self.settings.max_messages_per_tick):
            try:
                self._process(msg, now)
            except (EdgeAgentError, ValueError) as err:
                self.counters["malformed"] += 1
                logger.warning(
                    "coordination: dropped %s from %s: %s",
                    msg.envelope.type,
                    msg.envelope.node,
                    err,
                )
        for gs in self.groups.values():
            if gs.sharer is not None:
                gs.sharer.fuse(gs.group.prior)

    def step(self, name: str, obs: np.ndarray, now: float | None = None) -> NDArray[np.int64]:
        """Step group ``name`` with its holders' task preferences; returns its actions.

        ``now`` is passed to ``group.step`` (the history's timestamp). A group that does not
        step in a tick (paused, waiting for observations) simply is not passed here: it neither
        accumulates nor publishes evidence of its own that tick.

        The whole group takes its ordinary (fused) step; then the agents holding a task decide
        again with their preferences replaced: ``G += Delta G``, ``q_pi``, action and next prior
        recomputed for those rows only (pymdp's general-path kernels). Same result as planning
        them with the task's ``C`` in the first place. Until ``AifAgentGroup`` takes the
        preference hook (``docs/coordination.md``), a group's history records the holders'
        action from before the override.
        """
        gs = self.groups[name]
        group = gs.group
        actions = group.step(obs, now)
        gs.stepped = True
        rows = gs.prefs.rows
        if rows.size == 0:
            return actions
        s = group.settings
        cm = group.cm
        qs_rows = [q[rows] for q in group.qs]
        G_rows = group.G[rows] + gs.prefs.policy_delta(qs_rows, rows)
        q_rows = kernels.policy_posterior(G_rows, cm.lnE, s.gamma)
        group.G[rows] = G_rows
        group.q_pi[rows] = q_rows
        chosen = kernels.select_actions(
            cm,
            q_rows,
            mode=s.sampling_mode,
            deterministic=s.action_selection == "deterministic",
            alpha=s.alpha,
            rng=group.selection_rng(),
        )
        # The group's next prior already follows from the action it chose; only the holders
        # whose action changed need theirs again (most keep it: re-deciding is then cheap).
        changed = np.flatnonzero((chosen != actions[rows]).any(axis=1))
        actions[rows] = chosen
        if changed.size:
            moved = [q[changed] for q in qs_rows]
            for prior, new in zip(
                group.prior, kernels.next_prior(cm, moved, chosen[changed], None), strict=True
            ):
                prior[rows[changed]] = new
        return actions

    def after_step(self, now: float | None = None) -> None:
        """Publish beliefs, run the auction, update holders, release finished tasks."""
        now = self._mono() if now is None else now
        if self._started_at is None:
            self._started_at = now
        wall = self._wall()
        for gs in self.groups.values():
            stepped, gs.stepped = gs.stepped, False
            if gs.sharer is not None and stepped:
                gs.sharer.observe(gs.group.qs)
                for batch in gs.sharer.publish(self.tick, now):
                    if self._publish(
                        BeliefBatch.TYPE,
                        batch,
                        qos=gs.sharer.settings.qos,
                        topic=self.topics.beliefs(self.node_id),
                    ):
                        self.counters["belief_msgs_sent"] += 1
        self.tick += 1
        # Holders that finished let go first (their agents can bid again); then bids for the
        # rounds this node just saw and for rounds left without a winner; then one award.
        self._finish(wall)
        opened = self.auctioneer.open_rounds(now)  # the award once, after this node's bids
        if opened:
            self.formation = {"bid_lag_s_max": 0.0, "team_awards": 0.0}
            self._mark("opened", wall)
            self._formation_rounds = {key for key in opened if self.board.is_team(key[0])}
            self._bid(opened, now, rebid=False)
            self._mark("bids_sent")
        due = self.auctioneer.rebid_due(now)
        if due:
            self._bid(due, now, rebid=True)
        if opened or due:
            # Bids on the wire before the rest of the tick: every peer waits for the last
            # node's bids, and that node, holding every other node's by then, computed its
            # award first (12-16 ms of CPU at 20 x 500, many times that in wall clock on a
            # loaded machine) when its bids went out with the tick's end.
            self.link.send_now()
        self._update(now)
        self._act(now)
        if self._holds_pending:
            self._hold(self.auctioneer.holdings(now), now)
        self._anti_entropy(now)
        self._publish_state(now)

    # -- announcing -----------------------------------------------------------------------------
    def announce(self, specs: list[TaskSpec]) -> None:
        """Announce tasks from this node (the hub does the same on its own ``tasks`` topic).
        :class:`InputError` for a spec in another's name, or of a task id that belongs to an
        announcer that ranks before this node (peers would refuse it)."""
        for spec in specs:
            if spec.announced_by != self.node_id:
                raise InputError(
                    f"task {spec.task!r} says it is announced by "
                    f"{spec.announced_by!r}, not {self.node_id!r}"
                )
            if self.board.outranked(spec):
                raise InputError(
                    f"task {spec.task!r} is {self.board.owner(spec.task)!r}'s: "
                    "announce it under another id"
                )
        # Team specs in messages of their own: a node of the version before teams refuses a
        # message with one, and takes the one-agent tasks of the others.
        specs = [s for s in specs if not s.is_team] + [s for s in specs if s.is_team]
        sigs = sign_specs(self.signer.sign, self.topics.fleet, specs)
        for i, spec in enumerate(specs):
            self.board.add_spec(spec, sigs[i * SIGNATURE_BYTES : (i + 1) * SIGNATURE_BYTES])
        for start, end in announcement_parts(specs):
            part = sigs[start * SIGNATURE_BYTES : end * SIGNATURE_BYTES]
            self._publish_task(TaskAnnounce(tasks=specs[start:end], sigs=part))

    # -- internals: the auction -----------------------------------------------------------------
    def _update(self, now: float) -> list[tuple[str, int]]:
        awards = self.auctioneer.metrics.team_awards
        opened = self.auctioneer.update(now, teams=self._teams_ready(now))
        if self.formation and self.auctioneer.metrics.team_awards != awards:
            wall = self._wall()
            if "team_award_first_at" not in self.formation:
                self._mark("team_award_first", wall)
            self._mark("team_award_last", wall)
            self.formation["team_awards"] += 1
        return opened

    def _teams_ready(self, now: float) -> bool:
        """Whether to compute the team award now: unless a team round lacks bids of a live
        peer here and is younger than the holds' wait (its window and :data:`HOLD_WAIT_STATES`
        state periods). Until then the fill would change with every peer's bids that come (one
        fill per peer's message, each of every slot); with them in, one fill gives the award
        the wait's end would. No member holds before that either (:meth:`_hold`), so an award
        computed earlier would fix nothing: on a loaded fleet whose bids took longer than the
        window, every node computed it again for each late peer's message (issue 55: 3-9 team
        awards a node at 20 x 500). A peer with no agent to bid holds the award back until the
        wait ends, as it holds back the members' holds."""
        if not self.auctioneer.teams_stale():
            return True
        auction = self.settings.auction
        late = auction.window_s + HOLD_WAIT_STATES * auction.state_every_s
        peers: list[str] | None = None
        waited_out: list[str] = []
        for task, epoch in self.auctioneer.rounds:
            if not self.board.is_team(task):
                continue
            if self.auctioneer.open_for(task, epoch, now) >= late:
                if (task, epoch) in self._formation_rounds:
                    waited_out.append(task)
                continue
            if peers is None:
                peers = self.admission.live_peer_names(self.node_id)
            if not self.board.bid_by_all(task, peers):
                return False
        if self._formation_rounds and not self.formation.keys() & {
            "all_bids_at",
            "rounds_waited_out",
        }:
            self._note_bids_in(waited_out)
        return True

    def _note_bids_in(self, waited_out: list[str]) -> None:
        """Once a formation (its team rounds): ``all_bids_at`` (every live peer's bids of them
        are here) and ``live_peers``; or, when the holds' wait ended first,
        ``rounds_waited_out``: its team rounds still lacking a live peer's bids (a peer that
        cannot or did not bid)."""
        peers = self.admission.live_peer_names(self.node_id)
        missing = sum(not self.board.bid_by_all(t, peers) for t in waited_out)
        self.formation["live_peers"] = float(len(peers))
        if missing:
            self.formation["rounds_waited_out"] = float(missing)
        else:
            self._mark("all_bids")

    def _eligible(self, gs: GroupState, winners: set[tuple[str, int]]) -> NDArray[np.int64]:
        mask = np.ones(gs.group.n_agents, dtype=bool)
        mask[gs.prefs.rows] = False
        taken = [a for g, a in winners if g == gs.name and a < mask.size]
        if taken:
            mask[taken] = False
        return np.flatnonzero(mask)

    def _bid(self, rounds: list[tuple[str, int]], now: float, *, rebid: bool) -> None:
        """Bids of every group for ``rounds``: per role of each task (a one-agent task has
        one), the ``k`` cheapest agents that neither hold nor win anything, ``k =
        clamp(ceil(S / live_nodes), min_bids_per_task, max_bids_per_task)`` with ``S`` the slots
        of the group's new rounds (their tasks, for one-agent tasks); a rebid bids
        ``min_bids_per_task`` agents that have not bid on the role yet, and of a team only for
        the roles with a vacant slot."""
        auction = self.settings.auction
        winners = self.auctioneer.winners()
        specs = [self.board.specs[t] for t, _ in rounds if t in self.board.specs]
        epochs = dict(rounds)
        # Each spec's roles made once (slots() builds them at every call; a formation's bids
        # asked for them five times a column).
        roles = {s.task: s.slots() for s in specs}
        for gs in self.groups.values():
            columns = [
                (s, r)
                for s in specs
                for r in self._roles_wanted(s, rebid=rebid)
                if gs.takes(roles[s.task][r])
            ]
            if not columns:
                continue
            rows = self._eligible(gs, winners)
            if rows.size == 0:
                continue
            group = gs.group
            gs.prepare_utilities([roles[s.task][r] for s, r in columns], auction.preference_scale)
            U = np.stack([gs.utility(s, auction.preference_scale, r) for s, r in columns], axis=1)
            costs = task_costs(
                group.cm,
                [q[rows] for q in group.qs],
                group.G[rows],
                U,
                base_utility=group.cm.utility if group.settings.use_utility else None,
            )
            if rebid:
                k = auction.min_bids_per_task
                for j, (s, r) in enumerate(columns):
                    already = self.board.bidders(s.task, self.node_id, gs.name, r)
                    if already:
                        costs[np.isin(rows, list(already)), j] = np.inf
            else:
                slots = sum(roles[s.task][r].agents for s, r in columns)
                k = math.ceil(slots / self.live_nodes())
                k = max(auction.min_bids_per_task, min(auction.max_bids_per_task, k))
            column, agent_pos, cost = select_bids(costs, k)
            keep = np.isfinite(cost)
            column, agents, cost = column[keep], rows[agent_pos[keep]], cost[keep]
            team = np.array([s.is_team for s, _ in columns], dtype=bool)
            for is_team in (False, True):
                sel = team[column] == is_team
                if sel.any():
                    self._send_bids(
                        gs.name,
                        columns,
                        epochs,
                        column=column[sel],
                        agents=agents[sel],
                        costs=cost[sel],
                        team=is_team,
                    )
        for t, e in rounds:
            self.auctioneer.note_bid(t, e, now)

    def _roles_wanted(self, spec: TaskSpec, *, rebid: bool) -> range | list[int]:
        """The roles of ``spec`` to bid on: all of them, or in a rebid of a team those with a
        vacant slot."""
        n = spec.n_roles
        team = self.auctioneer.teams.get(spec.task) if rebid and spec.is_team else None
        if team is None:
            return range(n)
        filled = [0] * n
        for m in team.members:
            filled[m.role] += 1
        for d in team.done:
            filled[d.role_index] += 1
        return [r for r in range(n) if filled[r] < team.slots[r]]

    def _send_bids(
        self,
        group: str,
        columns: list[tuple[TaskSpec, int]],
        epochs: Mapping[str, int],
        *,
        column: NDArray[np.int64],
        agents: NDArray[np.int64],
        costs: np.ndarray,
        team: bool,
        holds: NDArray[np.bool_] | None = None,
    ) -> None:
        """Send (and merge) bids on ``columns`` (a task and its role each); a team task's bids
        carry their role (and ``holds``), in messages of their own."""
        if column.size == 0:
            return
        names = sorted({columns[c][0].task for c in distinct(column).tolist()})
        index = {n: i for i, n in enumerate(names)}
        task_of = np.array([index.get(s.task, -1) for s, _ in columns], dtype=np.int64)
        role_of = np.array([r for _, r in columns], dtype=np.int64)
        task_index, roles = task_of[column], role_of[column]
        held = np.zeros(column.size, dtype=bool) if holds is None else holds
        order = np.argsort(task_index, kind="stable")
        task_index, agents, costs = task_index[order], agents[order], costs[order]
        roles, held = roles[order], held[order]
        costs32 = costs.astype(np.float32)
        bdseq = self.my_bdseq
        for t0 in range(0, len(names), MAX_TASKS_PER_MESSAGE):
            t1 = min(len(names), t0 + MAX_TASKS_PER_MESSAGE)
            lo, hi = np.searchsorted(task_index, [t0, t1])
            part = names[t0:t1]
            part_epochs = [epochs[n] for n in part]
            for b0 in range(int(lo), int(hi), MAX_BIDS_PER_MESSAGE):
                b1 = min(int(hi), b0 + MAX_BIDS_PER_MESSAGE)
                sub_t = task_index[b0:b1] - t0
                bseq = self._next_bseq()
                body = TaskBids.from_arrays(
                    group,
                    bseq,
                    part,
                    epochs=part_epochs,
                    task_index=sub_t,
                    agents=agents[b0:b1],
                    costs=costs32[b0:b1],
                    roles=roles[b0:b1] if team else None,
                    holds=held[b0:b1] if team else None,
                )
                self.board.add_bids(
                    self.node_id,
                    group,
                    bdseq,
                    bseq,
                    part,
                    epochs=part_epochs,
                    task_index=sub_t.tolist(),
                    agents=agents[b0:b1].tolist(),
                    costs=costs32[b0:b1].tolist(),
                    roles=roles[b0:b1].tolist() if team else None,
                    holds=held[b0:b1].tolist() if team else None,
                )
                if self._publish_task(body):
                    self.counters["bids_sent"] += b1 - b0

    def _act(self, now: float) -> None:
        """Give this node's winners and team members their tasks' preferences (a member its
        role's goal, once it holds its slot), take them from agents that lost theirs; members
        take their slots (:meth:`_hold`). Runs when the board or the team award changed, or a
        bidding window closed."""
        teams = self.auctioneer.teams
        if (
            self.board.version == self._acted_version
            and teams is self._acted_teams
            and now < self._act_due
        ):
            return
        self._acted_version, self._acted_teams = self.board.version, teams
        self._act_due = self.auctioneer.next_window_close(now)
        holdings = self.auctioneer.holdings(now)
        auction = self.settings.auction
        for gs in self.groups.values():
            prefs = gs.prefs
            for agent, held in prefs.held.items():
                bid = holdings.get((gs.name, agent))
                if bid is None or (bid.task, bid.epoch, bid.role) != (*held, prefs.role(agent)):
                    prefs.release(agent)
                    self.counters["tasks_preempted"] += 1
                    self._state_dirty = True
        ghosts = []
        for (group, agent), bid in holdings.items():
            target = self.groups.get(group)
            if target is None or agent >= target.prefs.n_agents:
                ghosts.append(bid)  # the group was removed or shrunk since the agent bid
                continue
            if target.prefs.slot[agent] >= 0:
                continue
            if bid.task in self.auctioneer.teams and not bid.held:
                continue  # a team member pursues once it took its slot (its team is fixed)
            spec = self.board.specs[bid.task]
            utility = target.utility(spec, auction.preference_scale, bid.role)
            goal = spec.slots()[bid.role]
            key = (goal.goal_factor, goal.goal_state)
            if target.prefs.assign(agent, spec, bid.epoch, utility, key=key, role=bid.role):
                self._state_dirty = True
            else:
                self.counters["holdings_refused"] += 1
        if ghosts:
            self._give_up(ghosts)
        self._hold(holdings, now)

    def _hold(self, holdings: Mapping[tuple[str, int], Bid], now: float) -> None:
        """This node's team members whose window closed take their slots: each sends its bid
        again as a *hold* (the award then keeps it in the team whatever else is bid) -- once
        this node holds bids of the round from every live peer (a node that held with a peer's
        bids missing would fix a team the others would not form), or :data:`HOLD_WAIT_STATES`
        state periods after its window closed (a peer with no agent to bid), whichever comes
        first. A hold the award no longer counts (another agent's won the slot after a
        partition healed) is sent again as a plain bid, so that it cannot count later over what
        the agent won since."""
        mine: dict[tuple[str, str], list[tuple[Bid, bool]]] = {}
        late = self.settings.auction.window_s + HOLD_WAIT_STATES * (
            self.settings.auction.state_every_s
        )
        peers = self.admission.live_peer_names(self.node_id)
        ready: dict[str, bool] = {}
        self._holds_pending = False
        for bid in holdings.values():
            if bid.task in self.auctioneer.teams and not bid.held:
                if bid.task not in ready:
                    ready[bid.task] = (
                        self.board.bid_by_all(bid.task, peers)
                        or self.auctioneer.open_for(bid.task, bid.epoch, now) >= late
                    )
                if ready[bid.task]:
                    mine.setdefault((bid.group, bid.task), []).append((bid, True))
                else:
                    self._holds_pending = True
        members = {(b.task, b.group, b.agent, b.role) for b in holdings.values()}
        teams = self.auctioneer.teams
        for bid in self.board.holds_of(self.node_id, teams):
            if (bid.task, bid.group, bid.agent, bid.role) not in members and (
                teams[bid.task].member(bid.holder) is None
            ):
                mine.setdefault((bid.group, bid.task), []).append((bid, False))
        by_group: dict[str, list[tuple[Bid, bool]]] = {}
        for (group, _), rows in sorted(mine.items()):
            by_group.setdefault(group, []).extend(rows)
        if (
            self.formation
            and "holds_sent_at" not in self.formation
            and any(held for rows in by_group.values() for _, held in rows)
        ):
            self._mark("holds_sent")
        for group, rows in by_group.items():
            columns = [(self.board.specs[b.task], b.role) for b, _ in rows]
            self._send_bids(
                group,
                columns,
                {b.task: b.epoch for b, _ in rows},
                column=np.arange(len(rows), dtype=np.int64),
                agents=np.array([b.agent for b, _ in rows], dtype=np.int64),
                costs=np.array([b.cost for b, _ in rows]),
                team=True,
                holds=np.array([held for _, held in rows], dtype=bool),
            )
            self._state_dirty = True

    def complete(self, group: str, agents: NDArray[np.integer] | list[int]) -> None:
        """The application says these agents of ``group`` finished their tasks (released as
        ``done`` at the end of this tick); agents without a task are ignored."""
        gs = self.groups[group]
        rows = np.asarray(agents, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= gs.group.n_agents):
            raise InputError(f"agents out of range [0, {gs.group.n_agents}) in group {group!r}")
        gs.completed = distinct(np.concatenate([gs.completed, rows]))

    def _finish(self, wall: float) -> bool:
        """Release the tasks of holders that reached their goal, were told so (:meth:`complete`)
        or ran past the deadline."""
        auction = self.settings.auction
        items: list[Release] = []
        bdseq = self.my_bdseq
        for gs in self.groups.values():
            prefs = gs.prefs
            if prefs.rows.size == 0:
                gs.completed = NO_ROWS
                continue
            done = gs.completed
            gs.completed = NO_ROWS
            if auction.done_belief is not None:
                reached = prefs.reached(gs.group.qs, auction.done_belief)
                done = distinct(np.concatenate([done, reached])) if done.size else reached
            expired = prefs.expired(wall)
            for rows, status in ((done, ReleaseStatus.DONE), (expired, ReleaseStatus.EXPIRED)):
                for agent in rows.tolist():
                    role = prefs.role(agent)
                    held = prefs.release(agent)
                    if held is None:
                        continue
                    task, epoch = held
                    items.append(
                        Release(
                            task=task,
                            epoch=epoch,
                            node=self.node_id,
                            group=gs.name,
                            agent=agent,
                            bdseq=bdseq,
                            bseq=self._next_bseq(),
                            status=status,
                            role=role if self.board.is_team(task) else UNSET,
                        )
                    )
                    key = "tasks_done" if status is ReleaseStatus.DONE else "tasks_expired"
                    self.counters[key] += 1
        if not items:
            return False
        self._release(items)
        self._state_dirty = True
        return True

    def _publish_state(self, now: float) -> None:
        auction = self.settings.auction
        due = now >= self._next_state or (
            self._state_dirty and now - self._last_state >= auction.state_min_interval_s
        )
        if not due:
            return
        claims = []
        for gs in self.groups.values():
            for agent, (task, epoch) in gs.prefs.held.items():
                role = gs.prefs.role(agent) if self.board.is_team(task) else UNSET
                claims.append(Claim(task=task, epoch=epoch, group=gs.name, agent=agent, role=role))
        teams = [
            TeamState(
                task=t.task,
                epoch=t.epoch,
                slots=t.size,
                filled=len(t.members),
                done=len(t.done),
            )
            for t in list(self.auctioneer.teams.values())[:MAX_TEAM_STATES]
        ]
        body = TaskState(
            digest=self.board.digest(),
            open_tasks=len(self.board.open_epochs()),
            claims=claims[:MAX_CLAIMS],
            teams=teams or UNSET,
        )
        self._publish_task(body)
        self._last_state = now
        self._next_state = now + auction.state_every_s
        self._state_dirty = False

    # -- metrics --------------------------------------------------------------------------------
    def telemetry_counters(self, now: float | None = None) -> dict[str, float]:
        """:meth:`metrics` as ``coord.*`` keys for ``Telemetry.counters`` (keys of at most 64
        characters: per-group keys of very long group names are left out)."""
        return {
            f"coord.{k}": v
            for k, v in self.metrics(now).items()
            if len(k) + len("coord.") <= TELEMETRY_KEY_CHARS
        }

    def assignment(self) -> dict[str, tuple[str, str, int]]:
        """The local award: ``task -> (node, group, agent)``."""
        return {t: b.holder for t, b in self.board.award().items()}

    def metrics(self, now: float | None = None) -> dict[str, float]:
        """Counters and derived figures for telemetry (flat, numeric)."""
        now = self._mono() if now is None else now
        out: dict[str, float] = {k: float(v) for k, v in self.counters.items()}
        m = self.auctioneer.metrics
        mean, worst, n = self.auctioneer.converge_stats()
        out.update(
            rounds=float(m.rounds),
            reawards=float(m.reawards),
            conflicts_detected=float(m.conflicts_detected),
            conflicts_resolved=float(m.conflicts_resolved),
            conflicts_open=float(len(self.auctioneer.conflicts)),
            resolve_s_mean=m.resolve_s_total / m.conflicts_resolved
            if m.conflicts_resolved
            else 0.0,
            converge_s_mean=mean,
            converge_s_max=worst,
            converged_rounds=float(n),
            messages_per_task=self.counters["task_msgs_sent"] / m.rounds if m.rounds else 0.0,
            **self.auctioneer.team_stats(),
            tasks_open=float(len(self.board.open_epochs())),
            tasks_held=float(sum(gs.prefs.rows.size for gs in self.groups.values())),
            live_nodes=float(self.live_nodes()),
            board_bids=float(self.board.n_bids),
            board_overflow=float(self.board.overflow),
            stale_bids=float(self.board.stale_bids),
            inbox_depth=float(len(self._queue)),
            inbox_dropped=float(self._queue.dropped),
        )
        elapsed = now - self._started_at if self._started_at is not None else 0.0
        for name, gs in self.groups.items():
            if gs.sharer is not None:
                for key, value in gs.sharer.stats(elapsed).items():
                    out[f"beliefs.{name}.{key}"] = value
        return out

"""One node's auction bookkeeping around the ledger: :class:`Auctioneer` keeps bidding windows on
the local clock, award changes, claims of peers and the conflicts they reveal, and the metrics.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from edge_agent.coordination.ledger import Bid, TaskBoard, Team
from edge_agent.coordination.messages import (
    Claim,
)
from edge_agent.coordination.settings import AuctionSettings

#: Largest ``P * S`` for which :class:`TaskPreferences` keeps each holder's utility along every
#: policy precomputed (single-factor models); above it, the policy tree is walked every tick.
PRECOMPUTE_MAX: Final = 4096


# --------------------------------------------------------------------------------------------
# one node's auction bookkeeping
# --------------------------------------------------------------------------------------------


@dataclass
class _Round:
    """One (task, epoch) as this node saw it."""

    opened: float
    first_award: float | None = None
    last_change: float | None = None
    last_bid: float = -math.inf
    complete: bool = False
    """A team round: whether every slot is filled (or done) in the award now."""
    left: int = 0
    """A team round: slots members that had taken them left, not filled again yet."""
    formed_once: bool = False
    """A team round: whether every slot was filled at some time (counted in teams_formed)."""
    vacant_since: float | None = None
    """A team round that formed: since when a slot is vacant (None: none is)."""


def _roster(team: Team) -> set[tuple[str, str, int, int]]:
    return {(*m.holder, m.role) for m in team.members}


@dataclass
class _Conflict:
    detected: float


@dataclass
class AuctionMetrics:
    rounds: int = 0
    reawards: int = 0
    conflicts_detected: int = 0
    conflicts_resolved: int = 0
    resolve_s_total: float = 0.0
    converge_s_total: float = 0.0
    converge_s_max: float = 0.0
    converged_rounds: int = 0
    teams_formed: int = 0
    """Team rounds whose every slot was filled, once each."""
    form_s_total: float = 0.0
    form_s_max: float = 0.0
    team_repairs: int = 0
    """Slots of formed teams filled again by another agent (a member died, its session ended,
    it left)."""
    repair_s_total: float = 0.0
    repair_s_max: float = 0.0
    team_awards: int = 0
    """Team awards computed (fills over the bids of the team rounds open at the time)."""


class Auctioneer:
    """One node's view of the auctions around a :class:`TaskBoard` (no I/O, no clock reads:
    every method takes ``now``, the node's monotonic time).

    * A ``(task, epoch)`` round opens when this node first sees it open; its window closes
      ``window_s`` later *on this node's clock*. Winners act only after that.
    * After every change of the board the award is recomputed (:meth:`update`); a winner change
      after the window closed is a *re-award* (late bids, a merge after a partition, a death).
    * Peers' claims (``task_state``) that disagree with the local award are *conflicts*; a
      conflict is *resolved* when the claim goes away or the award agrees with it.
    * Time to converge of a round: from when it opened to its last winner change.
    """

    def __init__(
        self, node_id: str, board: TaskBoard, settings: AuctionSettings, *, max_peers: int = 4096
    ) -> None:
        self.node_id = node_id
        self.board = board
        self.settings = settings
        self.max_peers = max_peers
        self.rounds: dict[tuple[str, int], _Round] = {}
        self.current: dict[str, Bid] = {}
        self.teams: dict[str, Team] = {}
        self._seen_version = -1
        self._teams_version = -1
        self._rounds_version = -1
        self.peer_claims: OrderedDict[str, list[Claim]] = OrderedDict()
        self.conflicts: dict[tuple[str, str, str, int, int], _Conflict] = {}
        self.metrics = AuctionMetrics()

    # -- rounds and windows ---------------------------------------------------------------------
    def update(self, now: float, *, teams: bool = True) -> list[tuple[str, int]]:
        """Bring rounds and the award up to date with the board; returns rounds opened now.

        ``teams``: whether the team tasks' award is wanted now. The caller says no while a team
        round is in its bidding window with bids of a live peer missing: the fill is the costly
        part of an award, and until every peer's bids are in, what it gives would change as they
        come (it is computed at the first update with ``teams`` true after the board changed)."""
        board_changed = self.board.version != self._seen_version
        teams_due = teams and self._teams_version != self.board.version
        if not board_changed and not teams_due:
            return []
        opened: list[tuple[str, int]] = []
        if board_changed:
            self._seen_version = self.board.version
            opened = self.open_rounds(now)
            self._award(now)
        if teams_due:
            self._teams_version = self.board.version
            teams_now = self.board.teams()
            if teams_now:
                self.metrics.team_awards += 1
            self._update_teams(teams_now, now)
        self._check_conflicts(now)
        return opened

    def teams_stale(self) -> bool:
        """Whether the board changed since the team award was last computed."""
        return self._teams_version != self.board.version

    def open_rounds(self, now: float) -> list[tuple[str, int]]:
        """Bring the rounds (not the award) up to date with the board; returns rounds opened
        now. Cheap: what a node bids on is known before the award is computed again."""
        if self.board.version == self._rounds_version:
            return []
        self._rounds_version = self.board.version
        open_epochs = self.board.open_epochs()
        opened = []
        for task, epoch in open_epochs.items():
            key = (task, epoch)
            if key not in self.rounds:
                self.rounds[key] = _Round(opened=now)
                self.metrics.rounds += 1
                opened.append(key)
        for key in [k for k in self.rounds if open_epochs.get(k[0]) != k[1]]:
            self._finish(self.rounds.pop(key))
        return opened

    def _award(self, now: float) -> None:
        new = self.board.award()
        for task, bid in new.items():
            old = self.current.get(task)
            if old is not None and old.holder == bid.holder and old.epoch == bid.epoch:
                continue
            rnd = self.rounds.get((task, bid.epoch))
            if rnd is None:
                continue
            if rnd.first_award is None:
                rnd.first_award = now
            elif now >= rnd.opened + self.settings.window_s:
                self.metrics.reawards += 1
            rnd.last_change = now
        for task, old in self.current.items():
            if task not in new and (task, old.epoch) in self.rounds:
                self.rounds[(task, old.epoch)].last_change = now
        self.current = new

    def _update_teams(self, teams: dict[str, Team], now: float) -> None:
        """Membership changes of the team rounds: formation (every slot filled, once), and
        after it repairs (a slot filled again by another agent: a member died, its session
        ended, it left) and how long a slot stayed vacant."""
        m = self.metrics
        for task, team in teams.items():
            rnd = self.rounds.get((task, team.epoch))
            if rnd is None:
                continue
            old = self.teams.get(task)
            before = _roster(old) if old is not None and old.epoch == team.epoch else set()
            after = _roster(team)
            if after != before:
                if rnd.first_award is None and after:
                    rnd.first_award = now
                rnd.last_change = now
            complete = team.vacant == 0
            # A repair fills a slot a member that had taken it (a hold) left. Other changes of
            # members are the award moving with the bids that came in, not repairs.
            formed = False
            if old is not None and old.epoch == team.epoch and old.formed:
                formed = True
                rnd.left += len({(*x.holder, x.role) for x in old.members if x.held} - after)
            repaired = min(len(after - before), rnd.left)
            if repaired:
                rnd.left -= repaired
                m.team_repairs += repaired
                took = now - rnd.vacant_since if rnd.vacant_since is not None else 0.0
                m.repair_s_total += took * repaired
                m.repair_s_max = max(m.repair_s_max, took)
            if complete and not rnd.complete and not rnd.formed_once:
                rnd.formed_once = True
                m.teams_formed += 1
                took = now - rnd.opened
                m.form_s_total += took
                m.form_s_max = max(m.form_s_max, took)
            if complete:
                rnd.vacant_since = None
            elif formed and rnd.vacant_since is None:
                rnd.vacant_since = now
            rnd.complete = complete
        self.teams = teams

    def _finish(self, rnd: _Round) -> None:
        if rnd.last_change is not None:
            took = rnd.last_change - rnd.opened
            m = self.metrics
            m.converged_rounds += 1
            m.converge_s_total += took
            m.converge_s_max = max(m.converge_s_max, took)

    def open_for(self, task: str, epoch: int, now: float) -> float:
        """How long the round has been open on this node (0 when it is not open)."""
        rnd = self.rounds.get((task, epoch))
        return 0.0 if rnd is None else now - rnd.opened

    def window_closed(self, task: str, epoch: int, now: float) -> bool:
        rnd = self.rounds.get((task, epoch))
        return rnd is not None and now >= rnd.opened + self.settings.window_s

    def _mine(self) -> list[Bid]:
        """This node's winners and team members in the award."""
        mine = [b for b in self.current.values() if b.node == self.node_id]
        for team in self.teams.values():
            mine += [b for b in team.members if b.node == self.node_id]
        return mine

    def holdings(self, now: float) -> dict[tuple[str, int], Bid]:
        """``(group, agent) -> bid`` for this node's winners and team members whose window has
        closed (a team member's bid says its role)."""
        return {
            (b.group, b.agent): b for b in self._mine() if self.window_closed(b.task, b.epoch, now)
        }

    def winners(self) -> set[tuple[str, int]]:
        """``(group, agent)`` of this node's agents that win some task or fill a team's slot,
        window open or not."""
        return {(b.group, b.agent) for b in self._mine()}

    def rebid_due(self, now: float) -> list[tuple[str, int]]:
        """Open rounds past their window without a winner (a team: with a vacant slot), not
        rebid for one window."""
        due = []
        for (task, epoch), rnd in self.rounds.items():
            team = self.teams.get(task)
            if team is None and self.board.is_team(task):
                continue  # its award not computed yet (update): nothing known to be vacant
            short = task not in self.current if team is None else team.vacant > 0
            if (
                short
                and now >= rnd.opened + self.settings.window_s
                and now >= rnd.last_bid + self.settings.window_s
            ):
                due.append((task, epoch))
        return due

    def next_window_close(self, now: float) -> float:
        """When the next bidding window still open closes (``inf`` when none is open)."""
        window = self.settings.window_s
        return min(
            (r.opened + window for r in self.rounds.values() if r.opened + window > now),
            default=math.inf,
        )

    def note_bid(self, task: str, epoch: int, now: float) -> None:
        rnd = self.rounds.get((task, epoch))
        if rnd is not None:
            rnd.last_bid = now

    # -- claims and conflicts -------------------------------------------------------------------
    def on_claims(self, node: str, claims: list[Claim], now: float) -> None:
        """A peer's ``task_state`` claims (its agents pursuing tasks)."""
        self.peer_claims[node] = claims
        self.peer_claims.move_to_end(node)
        while len(self.peer_claims) > self.max_peers:
            self.peer_claims.popitem(last=False)
        self._check_conflicts(now)

    def forget_peer(self, node: str, now: float) -> None:
        """A dead peer's claims go away (its conflicts are resolved by its death)."""
        if self.peer_claims.pop(node, None) is not None:
            self._check_conflicts(now)

    def _check_conflicts(self, now: float) -> None:
        current: set[tuple[str, str, str, int, int]] = set()
        for node, claims in self.peer_claims.items():
            for c in claims:
                team = self.teams.get(c.task)
                if team is None and self.board.is_team(c.task):
                    continue  # its award not computed here yet: nothing to disagree with
                if team is not None:
                    member = team.member((node, c.group, c.agent))
                    if member is None or member.epoch != c.epoch:
                        current.add((c.task, node, c.group, c.agent, c.epoch))
                    continue
                w = self.current.get(c.task)
                if w is None or (w.node, w.group, w.agent, w.epoch) != (
                    node,
                    c.group,
                    c.agent,
                    c.epoch,
                ):
                    current.add((c.task, node, c.group, c.agent, c.epoch))
        m = self.metrics
        for key in current - self.conflicts.keys():
            self.conflicts[key] = _Conflict(detected=now)
            m.conflicts_detected += 1
        for key in self.conflicts.keys() - current:
            m.conflicts_resolved += 1
            m.resolve_s_total += now - self.conflicts.pop(key).detected

    # -- metrics --------------------------------------------------------------------------------
    def team_stats(self) -> dict[str, float]:
        """Teams formed and repaired (counts, mean and worst time), slots vacant now."""
        m = self.metrics
        formed = [t for t in self.teams.values() if t.formed or t.vacant == 0]
        return {
            "teams_open": float(len(self.teams)),
            "teams_formed": float(m.teams_formed),
            "team_form_s_mean": m.form_s_total / m.teams_formed if m.teams_formed else 0.0,
            "team_form_s_max": m.form_s_max,
            "team_repairs": float(m.team_repairs),
            "team_repair_s_mean": m.repair_s_total / m.team_repairs if m.team_repairs else 0.0,
            "team_repair_s_max": m.repair_s_max,
            "team_awards": float(m.team_awards),
            "team_slots_vacant": float(sum(t.vacant for t in formed)),
            "teams_forming": float(len(self.teams) - len(formed)),
        }

    def converge_stats(self) -> tuple[float, float, int]:
        """(mean, max, count) of time to converge over finished rounds and open ones."""
        m = self.metrics
        total, worst, n = m.converge_s_total, m.converge_s_max, m.converged_rounds
        for rnd in self.rounds.values():
            if rnd.last_change is not None:
                took = rnd.last_change - rnd.opened
                total += took
                worst = max(worst, took)
                n += 1
        return (total / n if n else 0.0, worst, n)

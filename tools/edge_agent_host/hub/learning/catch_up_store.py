"""The hub's catch-up deployments (docs/fleet-learning.md "A node that joins late or was
reset"): the attempts table (schema migration 5) and one look (:func:`catch_up`).

A look, on the learning policy's thread and connection (:mod:`.policy`):

1. **settles** the attempts whose one-node rollout ended: ``ok`` when it is ``done``, ``failed``
   otherwise (halted, rolled back);
2. takes each line's **current version**: the bundle of its newest round whose rollout is
   ``done`` (a round halted at its canaries is newer and must not be pulled);
3. asks :func:`~.catch_up.behind` which online nodes' groups run another
   version of a line, leaving out what an active rollout selected (it decides what the group
   runs), what is pending or failed for that version, and what succeeded in the node's same
   session (its birth may not say the new version yet: a rebirth keeps the session's
   ``bdseq``; a node that comes back reset connects with another one and is brought up again);
4. starts **one deployment per group behind**: a rollout of one node and one wave, with the
   round's rollout's transfer and preflight settings (``watch_ticks``, ``health_steps``),
   no soak and no behaviour criteria (no untouched node to compare with: the version passed its
   gate in its round's rollout), halted when the deployment fails. The rollout runner carries it
   out like any other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any, Final

from edge_agent_host.fleet.errors import FleetError
from edge_agent_host.hub.learning.catch_up import CatchUp, behind
from edge_agent_host.hub.learning.store import LearningStore, LeaseHeldError
from edge_agent_host.hub.rollouts.plan import ACTIVE, WENT_OFFLINE, RolloutPlan, RolloutState
from edge_agent_host.hub.rollouts.store import RolloutStore
from edge_agent_host.hub.storage.database import HubDatabase

__all__ = ["CATCH_UP_LEASE", "CATCH_UP_TIMEOUT_S", "RESULTS", "CatchUpStore", "catch_up"]

RESULTS: Final = ("pending", "ok", "failed", "offline")
"""An attempt's results (the label values of ``edge_agent_hub_learning_catch_ups``): ``offline``
when its node went offline before the deployment's answer (tried again in its next session)."""
CATCH_UP_TIMEOUT_S: Final = 120.0
"""``[learning] catch_up_timeout_s``'s default: the most a catch-up waits for its node."""
CATCH_UP_LEASE: Final = "catch-up look"
"""The lease (a row of ``learning_leases``; never a model line's name: those have no space) a
replica holds while it looks, so that two replicas never both deploy to the same late node."""

logger = logging.getLogger("edge_agent_host.hub.learning")


class CatchUpStore:
    """Reads and writes ``catch_up_attempts`` through ``db``."""

    def __init__(self, db: HubDatabase) -> None:
        self.db = db

    def current_versions(self, lines: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
        """Per line (all, or those of ``lines``): the newest round whose rollout is ``done``
        (``sha256``, ``round``, ``rollout``)."""
        out: dict[str, dict[str, Any]] = {}
        for line, sha, round_id, rollout in self.db.query(
            "SELECT r.line, r.bundle_sha256, r.id, r.rollout FROM learning_rounds r "
            "JOIN rollouts o ON o.id = r.rollout WHERE o.state = :done "
            "AND r.bundle_sha256 IS NOT NULL ORDER BY r.id",
            {"done": RolloutState.DONE.value},
        ):
            if not lines or line in lines:
                out[str(line)] = {"sha256": str(sha), "round": int(round_id), "rollout": rollout}
        return out

    def settle(self, now: float) -> dict[str, int]:
        """Give the pending attempts whose rollout ended their result; how many of each."""
        ended: dict[str, int] = {}
        for attempt_id, state, detail in self.db.query(
            "SELECT a.id, o.state, n.detail FROM catch_up_attempts a JOIN rollouts o ON "
            "o.id = a.rollout LEFT JOIN rollout_nodes n ON n.rollout = a.rollout AND "
            "n.node = a.node WHERE a.result = 'pending'"
        ):
            if RolloutState(state) in ACTIVE:
                continue
            result = (
                "ok" if state == RolloutState.DONE.value
                else "offline" if detail == WENT_OFFLINE
                else "failed"
            )  # fmt: skip
            with self.db.transaction():
                self.db.execute(
                    "UPDATE catch_up_attempts SET result = :result, updated = :now WHERE id = :id",
                    {"result": result, "now": now, "id": attempt_id},
                )
            ended[result] = ended.get(result, 0) + 1
        return ended

    def not_again(self, fleet: Iterable[dict[str, Any]]) -> set[tuple[str, str, str]]:
        """``(node, group, sha256)`` not to try: pending, failed, or ok or offline in the
        node's session of now (``bdseq`` of ``fleet``'s rows: a node that went offline during
        its deployment is tried again when it comes back)."""
        session = {str(r["node"]): r.get("bdseq") for r in fleet}
        out: set[tuple[str, str, str]] = set()
        for node, group, sha, result, bdseq in self.db.query(
            "SELECT node, grp, sha256, result, bdseq FROM catch_up_attempts"
        ):
            again = result in ("ok", "offline")
            if not again or (node in session and session[node] == bdseq):
                out.add((str(node), str(group), str(sha)))
        return out

    def add(self, c: CatchUp, bdseq: int | None, rollout_id: str, now: float) -> None:
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO catch_up_attempts (node, grp, line, sha256, running, bdseq, "
                "rollout, result, created, updated) VALUES (:node, :grp, :line, :sha, :running, "
                ":bdseq, :rollout, 'pending', :now, :now)",
                {
                    "node": c.node, "grp": c.group, "line": c.line, "sha": c.target,
                    "running": c.running, "bdseq": bdseq, "rollout": rollout_id, "now": now,
                },
            )  # fmt: skip

    def counts(self) -> dict[str, int]:
        """Attempts by result (every one of :data:`RESULTS`), for /metrics and ``learn status``."""
        out = dict.fromkeys(RESULTS, 0)
        for result, n in self.db.query(
            "SELECT result, COUNT(*) FROM catch_up_attempts GROUP BY result"
        ):
            out[str(result)] = out.get(str(result), 0) + int(n)
        return out

    def by_line(self) -> dict[str, dict[str, int]]:
        """Attempts by line and result (every one of :data:`RESULTS`): ``learn status``."""
        out: dict[str, dict[str, int]] = {}
        for line, result, n in self.db.query(
            "SELECT line, result, COUNT(*) FROM catch_up_attempts GROUP BY line, result"
        ):
            out.setdefault(str(line), dict.fromkeys(RESULTS, 0))[str(result)] = int(n)
        return out

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest attempts, newest first."""
        keys = ("node", "group", "line", "sha256", "running", "rollout", "result", "created",
                "updated")  # fmt: skip
        rows = self.db.query(
            "SELECT node, grp, line, sha256, running, rollout, result, created, updated "
            "FROM catch_up_attempts ORDER BY id DESC LIMIT :limit",
            {"limit": limit},
        )
        return [dict(zip(keys, r, strict=True)) for r in rows]


def _selected(rollouts: RolloutStore) -> set[tuple[str, str]]:
    """``(node, group)`` of every active rollout."""
    out: set[tuple[str, str]] = set()
    for rollout_id in rollouts.ids(active_only=True, limit=10_000):
        r = rollouts.get(rollout_id)
        out.update((node, r.plan.group) for node in r.nodes)
    return out


def _plan(c: CatchUp, model: RolloutPlan, timeout_s: float) -> RolloutPlan:
    """A one-node deployment of ``c`` with the transfer and preflight settings of ``model``
    (the round's rollout), ``timeout_s`` to answer, failed at once if its node goes offline: the
    runner carries one rollout at a time, and a node that stops answering must not hold the
    next round's rollout nor the other catch-ups longer than that."""
    return RolloutPlan(
        group=c.group,
        bundle_sha256=c.target,
        bundle_name=model.bundle_name,
        bundle_version=model.bundle_version,
        waves=[1],
        soak_s=0.0,
        chunk_size=model.chunk_size,
        rate_chunks_s=model.rate_chunks_s,
        deploy_timeout_s=min(timeout_s, model.deploy_timeout_s),
        watch_ticks=model.watch_ticks,
        health_steps=model.health_steps,
        selector={"catch_up": {"line": c.line, "running": c.running}},
        stop_if_offline=True,
    )


def catch_up(
    db: HubDatabase,
    *,
    lines: Sequence[str] = (),
    silent_after_s: float,
    now: float | None = None,
    owner: str | None = None,
    lease_s: float = 900.0,
    timeout_s: float = CATCH_UP_TIMEOUT_S,
) -> dict[str, Any]:
    """One look (module docstring): what it settled (``ok``, ``failed``), the rollouts it
    started (``started``: node, group, line, running, target, rollout) and the groups it could
    not start one for (``not_started``: node, group, why). With ``owner`` (a replica), only
    while it holds :data:`CATCH_UP_LEASE` (for ``lease_s`` at most, renewed before each
    deployment): ``skipped`` when another replica holds it (that one looks), ``lease_lost``
    when it was taken over meanwhile (the look stops; the one that took it looks on)."""
    now = time.time() if now is None else now
    if owner is None:
        return _look(db, lines=lines, silent_after_s=silent_after_s, now=now, owner=None,
                     lease_s=lease_s, timeout_s=timeout_s)  # fmt: skip
    leases = LearningStore(db)
    try:
        with leases.leased(CATCH_UP_LEASE, owner, now=now, lease_s=lease_s):
            return _look(db, lines=lines, silent_after_s=silent_after_s, now=now, owner=owner,
                         lease_s=lease_s, timeout_s=timeout_s)  # fmt: skip
    except LeaseHeldError as err:
        logger.debug("catch-up: %s", err)
        return {"skipped": True, "started": [], "not_started": []}


def _look(
    db: HubDatabase,
    *,
    lines: Sequence[str],
    silent_after_s: float,
    now: float,
    owner: str | None,
    lease_s: float,
    timeout_s: float,
) -> dict[str, Any]:
    store = CatchUpStore(db)
    rollouts = RolloutStore(db)
    settled = store.settle(now)
    current = store.current_versions(lines)
    out: dict[str, Any] = {**settled, "started": [], "not_started": []}
    if not current:
        return out
    fleet = db.fleet()
    skip = store.not_again(fleet)
    selected = _selected(rollouts)
    skip.update((n, g, v["sha256"]) for n, g in selected for v in current.values())
    bdseq = {str(r["node"]): r.get("bdseq") for r in fleet}
    targets = {line: v["sha256"] for line, v in current.items()}
    leases = LearningStore(db)
    for c in behind(fleet, targets, skip=skip, silent_after_s=silent_after_s, now=now):
        if owner is not None and not leases.take_lease(
            CATCH_UP_LEASE, owner, now=now, lease_s=lease_s
        ):  # it stalled past its lease: the replica that took it over looks on
            out["lease_lost"] = True
            logger.warning("catch-up: %s no longer holds the look's lease; it stops", owner)
            break
        model = rollouts.get(current[c.line]["rollout"]).plan
        try:
            rollout_id = rollouts.create(_plan(c, model, timeout_s), [c.node])
        except FleetError as err:
            out["not_started"].append({"node": c.node, "group": c.group, "why": str(err)})
            continue
        store.add(c, bdseq.get(c.node), rollout_id, now)
        logger.info("catch-up: %s/%s runs %s of %s, not %s: rollout %s",
                    c.node, c.group, (c.running or "?")[:12], c.line, c.target[:12],
                    rollout_id)  # fmt: skip
        out["started"].append({**asdict(c), "rollout": rollout_id})
    return out

"""The rollout tables (schema migration 2): rollouts, their nodes, the bundles they deploy.

Every method that reads or writes the database runs through the store's ``guard`` when it has
one: the hub service's rollout runner gives it its own database thread with the service's
deadline (``[database] operation_deadline_s``), so that a database that hangs makes a call fail
with :class:`~edge_agent_host.hub.storage.dbthread.DatabaseOverdueError` instead of hanging the
runner.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from edge_agent.fleet.outcomes import ResultCode
from edge_agent.fleet.protocol import CommandResult
from edge_agent_host.fleet.errors import FleetError
from edge_agent_host.hub.gates.health import Outcome, Verdict
from edge_agent_host.hub.rollouts.plan import (
    ACTIVE,
    NodeState,
    RolloutPlan,
    RolloutState,
    wave_of,
)
from edge_agent_host.hub.storage.database import HubDatabase

__all__ = ["Guard", "Rollout", "RolloutStore"]

P = ParamSpec("P")
T = TypeVar("T")


class Guard(Protocol):
    """Runs one database call (e.g. on a database thread, with a deadline) and returns its
    result; raises what the call raised, or DatabaseOverdueError."""

    def __call__(self, fn: Callable[[], T], /) -> T: ...


def _guarded(
    method: Callable[Concatenate[RolloutStore, P], T],
) -> Callable[Concatenate[RolloutStore, P], T]:
    """The method runs through the store's guard, when it has one."""

    @functools.wraps(method)
    def run(store: RolloutStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        if store.guard is None:
            return method(store, *args, **kwargs)
        return store.guard(lambda: method(store, *args, **kwargs))

    return run


@dataclass
class Rollout:
    id: str
    plan: RolloutPlan
    state: RolloutState
    wave: int
    phase: str
    phase_started: float | None
    request: str | None
    detail: str
    created: float
    updated: float
    owner: str | None
    nodes: dict[str, dict[str, Any]]
    verdicts: list[dict[str, Any]]
    """Every verdict of its gate, oldest first: ``wave`` (from 1), ``ts`` and the
    :class:`~edge_agent_host.hub.gates.health.Verdict`'s fields."""

    def wave_nodes(self, wave: int) -> list[str]:
        return sorted(n for n, r in self.nodes.items() if r["wave"] == wave)

    def untouched(self) -> list[str]:
        """Nodes of later waves the rollout has not sent anything yet."""
        return sorted(
            n for n, r in self.nodes.items() if r["wave"] > self.wave and r["state"] == "pending"
        )

    def deployed(self) -> list[str]:
        """Nodes that run the new bundle (their deployment came back ``ok``)."""
        return sorted(n for n, r in self.nodes.items() if r["state"] == NodeState.OK)

    def summary(self) -> dict[str, Any]:
        """What ``rollout status --json``, the API and the metrics show; waves counted from 1
        (the rows count them from 0)."""
        waves = []
        for w, count in enumerate(self.plan.waves):
            rows = [r for r in self.nodes.values() if r["wave"] == w]
            by_state: dict[str, int] = {}
            for r in rows:
                by_state[r["state"]] = by_state.get(r["state"], 0) + 1
            waves.append(
                {"wave": w + 1, "cumulative": count, "nodes": len(rows), "states": by_state}
            )
        return {
            "id": self.id,
            "group": self.plan.group,
            "bundle_sha256": self.plan.bundle_sha256,
            "bundle": f"{self.plan.bundle_name} {self.plan.bundle_version}".strip(),
            "state": self.state.value,
            "wave": self.wave + 1,
            "waves": len(self.plan.waves),
            "phase": self.phase,
            "phase_started": self.phase_started,
            "request": self.request,
            "detail": self.detail,
            "created": self.created,
            "updated": self.updated,
            "owner": self.owner,
            "soak_s": self.plan.soak_s,
            "shadow_s": self.plan.shadow_s,
            "criteria": self.plan.criteria.model_dump(),
            "rollback_sha256": self.plan.rollback_sha256,
            "selector": self.plan.selector,
            "nodes_total": len(self.nodes),
            "nodes_done": sum(r["state"] == NodeState.OK for r in self.nodes.values()),
            "nodes_failed": sum(r["state"] == NodeState.FAILED for r in self.nodes.values()),
            "wave_table": waves,
            "verdicts": self.verdicts,
            "nodes": {n: {**r, "wave": r["wave"] + 1} for n, r in sorted(self.nodes.items())},
        }


class RolloutStore:
    """The rollout tables (schema migration 2) over an open :class:`HubDatabase`; every call
    through ``guard`` when one is given (module docstring)."""

    def __init__(self, db: HubDatabase, guard: Guard | None = None) -> None:
        self.db = db
        self.guard = guard

    # bundles ---------------------------------------------------------------------------------
    @_guarded
    def put_bundle(self, data: bytes, sha256: str, name: str, version: str) -> None:
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO bundles (sha256, name, version, size, file_sha256, added, data) "
                "VALUES (:sha, :name, :version, :size, :file_sha, :added, :data) "
                "ON CONFLICT (sha256) DO NOTHING",
                {
                    "sha": sha256,
                    "name": name,
                    "version": version,
                    "size": len(data),
                    "file_sha": hashlib.sha256(data).hexdigest(),
                    "added": time.time(),
                    "data": data,
                },
            )

    @_guarded
    def bundle(self, sha256: str) -> bytes:
        rows = self.db.query("SELECT data FROM bundles WHERE sha256 = :sha", {"sha": sha256})
        if not rows:
            raise FleetError(f"bundle {sha256[:12]} is not in the hub's database")
        return bytes(rows[0][0])

    # rollouts --------------------------------------------------------------------------------
    @_guarded
    def create(self, plan: RolloutPlan, nodes: Sequence[str]) -> str:
        """A pending rollout of ``plan`` to ``nodes`` (in wave order); returns its id."""
        if len(nodes) != plan.waves[-1]:
            raise FleetError(f"{len(nodes)} nodes for waves ending at {plan.waves[-1]}")
        now = time.time()
        rollout_id = f"r-{time.strftime('%Y%m%d', time.gmtime(now))}-{os.urandom(3).hex()}"
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO rollouts (id, created, updated, grp, bundle_sha256, plan, state, "
                "wave, phase, detail) VALUES (:id, :now, :now, :grp, :sha, :plan, :state, 0, "
                "'', '')",
                {
                    "id": rollout_id,
                    "now": now,
                    "grp": plan.group,
                    "sha": plan.bundle_sha256,
                    "plan": plan.model_dump_json(),
                    "state": RolloutState.PENDING.value,
                },
            )
            self.db.execute_many(
                "INSERT INTO rollout_nodes (rollout, node, wave, state, detail, updated) "
                "VALUES (:rollout, :node, :wave, :state, '', :now)",
                [
                    {
                        "rollout": rollout_id,
                        "node": node,
                        "wave": wave_of(i, plan.waves),
                        "state": NodeState.PENDING.value,
                        "now": now,
                    }
                    for i, node in enumerate(nodes)
                ],
            )
        return rollout_id

    @_guarded
    def get(self, rollout_id: str) -> Rollout:
        rows = self.db.query(
            "SELECT id, plan, state, wave, phase, phase_started, request, detail, created, "
            "updated, owner FROM rollouts WHERE id = :id",
            {"id": rollout_id},
        )
        if not rows:
            raise FleetError(f"no rollout {rollout_id!r}")
        r = rows[0]
        nodes = {
            n[0]: {
                "wave": int(n[1]),
                "state": n[2],
                "detail": n[3],
                "updated": n[4],
                "baseline_p99_ms": n[5],
            }
            for n in self.db.query(
                "SELECT node, wave, state, detail, updated, baseline_p99_ms FROM rollout_nodes "
                "WHERE rollout = :id",
                {"id": rollout_id},
            )
        }
        return Rollout(
            id=r[0],
            plan=RolloutPlan.model_validate_json(r[1]),
            state=RolloutState(r[2]),
            wave=int(r[3]),
            phase=r[4],
            phase_started=r[5],
            request=r[6],
            detail=r[7],
            created=r[8],
            updated=r[9],
            owner=r[10],
            nodes=nodes,
            verdicts=[
                {"wave": int(v[0]) + 1, "ts": v[1], **json.loads(v[2])}
                for v in self.db.query(
                    "SELECT wave, ts, body FROM rollout_verdicts WHERE rollout = :id ORDER BY id",
                    {"id": rollout_id},
                )
            ],
        )

    @_guarded
    def ids(self, *, active_only: bool = False, limit: int = 100) -> list[str]:
        where = ""
        if active_only:
            states = ", ".join(f"'{s.value}'" for s in ACTIVE)
            where = f"WHERE state IN ({states}) "
        rows = self.db.query(
            f"SELECT id FROM rollouts {where}ORDER BY created DESC LIMIT :limit",
            {"limit": limit},
        )
        return [r[0] for r in rows]

    @_guarded
    def request(self, rollout_id: str, action: str) -> Rollout:
        """Ask the runner to ``pause``, ``resume`` or ``abort`` (refused when it cannot apply)."""
        r = self.get(rollout_id)
        allowed = {
            "pause": {RolloutState.PENDING, RolloutState.RUNNING},
            "resume": {RolloutState.PAUSED},
            "abort": {RolloutState.PENDING, RolloutState.RUNNING, RolloutState.PAUSED},
        }
        if action not in allowed:
            raise FleetError(f"unknown request {action!r}: pause, resume or abort")
        if r.state not in allowed[action]:
            raise FleetError(f"rollout {rollout_id} is {r.state.value}: cannot {action}")
        with self.db.transaction():
            self.db.execute(
                "UPDATE rollouts SET request = :req, updated = :now WHERE id = :id",
                {"req": action, "now": time.time(), "id": rollout_id},
            )
        return self.get(rollout_id)

    @_guarded
    def claim(self, owner: str, lease_s: float, now: float | None = None) -> str | None:
        """Take the oldest active rollout that nobody holds (or whose lease ran out, or that
        ``owner`` holds already); None when there is none."""
        now = time.time() if now is None else now
        states = ", ".join(f"'{s.value}'" for s in ACTIVE)
        for (rollout_id,) in self.db.query(
            f"SELECT id FROM rollouts WHERE state IN ({states}) ORDER BY created",
        ):
            if self.renew(rollout_id, owner, lease_s, now):
                return str(rollout_id)
        return None

    @_guarded
    def renew(self, rollout_id: str, owner: str, lease_s: float, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self.db.transaction():
            count = self.db.execute(
                "UPDATE rollouts SET owner = :owner, lease_until = :until WHERE id = :id AND "
                "(owner IS NULL OR owner = :owner OR lease_until IS NULL OR lease_until < :now)",
                {"owner": owner, "until": now + lease_s, "id": rollout_id, "now": now},
            )
        return count == 1

    @_guarded
    def release(self, rollout_id: str, owner: str) -> None:
        with self.db.transaction():
            self.db.execute(
                "UPDATE rollouts SET owner = NULL, lease_until = NULL "
                "WHERE id = :id AND owner = :owner",
                {"id": rollout_id, "owner": owner},
            )

    @_guarded
    def update(self, rollout_id: str, /, **fields: Any) -> None:
        allowed = {"state", "wave", "phase", "phase_started", "request", "detail"}
        if not fields or set(fields) - allowed:
            raise FleetError(f"cannot update {sorted(set(fields) - allowed)}")
        sets = ", ".join(f"{k} = :{k}" for k in sorted(fields))
        params = {k: (v.value if isinstance(v, StrEnum) else v) for k, v in fields.items()}
        with self.db.transaction():
            self.db.execute(
                f"UPDATE rollouts SET {sets}, updated = :now WHERE id = :id",
                {**params, "now": time.time(), "id": rollout_id},
            )

    @_guarded
    def set_nodes(
        self,
        rollout_id: str,
        states: Mapping[str, tuple[NodeState, str]],
        *,
        baseline: Mapping[str, float | None] | None = None,
    ) -> None:
        now = time.time()
        with self.db.transaction():
            self.db.execute_many(
                "UPDATE rollout_nodes SET state = :state, detail = :detail, updated = :now "
                "WHERE rollout = :rollout AND node = :node",
                [
                    {
                        "state": state.value,
                        "detail": detail[:1024],
                        "now": now,
                        "rollout": rollout_id,
                        "node": node,
                    }
                    for node, (state, detail) in states.items()
                ],
            )
            if baseline:
                self.db.execute_many(
                    "UPDATE rollout_nodes SET baseline_p99_ms = :p99 "
                    "WHERE rollout = :rollout AND node = :node",
                    [
                        {"p99": p99, "rollout": rollout_id, "node": node}
                        for node, p99 in baseline.items()
                    ],
                )

    @_guarded
    def add_verdicts(
        self, rollout: Rollout, verdicts: Sequence[Verdict], *, hub: str, now: float
    ) -> None:
        """Record the verdicts on the rollout's current wave, and each as one of the hub's
        events (node: the hub replica ``hub``, kind ``rollout``; severity: info for a pass,
        warning for an inconclusive verdict or a dry-run fail, error for a fail)."""
        with self.db.transaction():
            for v in verdicts:
                body = v.as_dict()
                self.db.execute(
                    "INSERT INTO rollout_verdicts (rollout, wave, ts, criterion, verdict, "
                    "dry_run, body) VALUES (:rollout, :wave, :ts, :criterion, :verdict, "
                    ":dry_run, :body)",
                    {
                        "rollout": rollout.id, "wave": rollout.wave, "ts": now,
                        "criterion": v.criterion, "verdict": v.outcome.value,
                        "dry_run": int(v.dry_run), "body": json.dumps(body, sort_keys=True),
                    },
                )  # fmt: skip
                severity = "info"
                if v.outcome is Outcome.FAIL and not v.dry_run:
                    severity = "error"
                elif v.outcome is not Outcome.PASS:
                    severity = "warning"
                self.db.execute(
                    "INSERT INTO events (node, ts, bdseq, seq, received, kind, severity, grp, "
                    "detail, data) VALUES (:node, :ts, 0, (SELECT COUNT(*) FROM "
                    "rollout_verdicts), :ts, 'rollout', :severity, :grp, :detail, :data) "
                    "ON CONFLICT (node, seq, ts) DO NOTHING",
                    {
                        "node": hub, "ts": now, "severity": severity,
                        "grp": rollout.plan.group,
                        "detail": f"rollout {rollout.id} wave {rollout.wave + 1}: "
                        f"{v.criterion}: {v.detail}"[:1024],
                        "data": json.dumps(
                            {"rollout": rollout.id, "wave": rollout.wave + 1, **body},
                            sort_keys=True,
                        ),
                    },
                )  # fmt: skip

    @_guarded
    def health_means(
        self, nodes: Sequence[str], group: str, measure: str, since: float, until: float
    ) -> dict[str, list[float]]:
        """The health gate's samples (:meth:`HubDatabase.health_means`)."""
        return self.db.health_means(nodes, group, measure, since, until)

    # what the nodes said ---------------------------------------------------------------------
    @_guarded
    def offline(self, nodes: Sequence[str]) -> list[str]:
        """Those of ``nodes`` whose newest state says offline (their will, or a clean stop)."""
        if not nodes:
            return []
        rows = self.db.query("SELECT node FROM nodes WHERE online = 0")
        gone = {str(r[0]) for r in rows}
        return [n for n in nodes if n in gone]

    @_guarded
    def mean_tick_p99(self, nodes: Sequence[str], since: float, until: float) -> dict[str, float]:
        if not nodes:
            return {}
        rows = self.db.query(
            "SELECT node, AVG(tick_p99_ms) FROM telemetry WHERE ts >= :since AND ts < :until "
            "AND tick_p99_ms IS NOT NULL GROUP BY node",
            {"since": since, "until": until},
        )
        wanted = set(nodes)
        return {r[0]: float(r[1]) for r in rows if r[0] in wanted and r[1] is not None}

    @_guarded
    def nodes_with_events(
        self, nodes: Sequence[str], since: float, *, kind: str | None = None, group: str = ""
    ) -> set[str]:
        if not nodes:
            return set()
        if kind is None:
            rows = self.db.query(
                "SELECT DISTINCT node FROM events WHERE ts >= :since AND severity = 'error'",
                {"since": since},
            )
        else:
            rows = self.db.query(
                "SELECT DISTINCT node FROM events WHERE ts >= :since AND kind = :kind "
                "AND (grp = :grp OR grp IS NULL)",
                {"since": since, "kind": kind, "grp": group},
            )
        return {r[0] for r in rows} & set(nodes)

    @_guarded
    def results(self, nonces: Sequence[bytes]) -> list[tuple[int, CommandResult]]:
        """The results the service stored for the commands ``nonces`` (row id, result), oldest
        first. Bytes in a result's data come back as bytes for ``have`` (the chunk bitmap a
        deploy answer carries; the journal stores bytes as hex)."""
        out: list[tuple[int, CommandResult]] = []
        wanted = list(dict.fromkeys(n.hex() for n in nonces))  # each row once
        for start in range(0, len(wanted), _IN_BATCH):
            part = wanted[start : start + _IN_BATCH]
            names = {f"n{i}": nonce for i, nonce in enumerate(part)}
            rows = self.db.query(
                "SELECT id, nonce, name, code, detail, data FROM results WHERE nonce IN ("
                + ", ".join(f":{k}" for k in names)
                + ")",
                names,
            )
            for row_id, nonce, name, code, detail, data in rows:
                out.append((int(row_id), _stored_result(nonce, name, code, detail, data)))
        out.sort(key=lambda item: item[0])
        return out


_IN_BATCH = 500


def _stored_result(nonce: str, name: str, code: str, detail: str, data: str) -> CommandResult:
    values = json.loads(data) if data else {}
    have = values.get("have")
    if isinstance(have, str):
        values["have"] = bytes.fromhex(have)
    return CommandResult(
        nonce=bytes.fromhex(nonce), name=name, code=ResultCode(code), detail=detail, data=values
    )

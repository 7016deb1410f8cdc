"""The learning tables (schema migration 4): the deltas the nodes sent, and the rounds.

:class:`LearningStore` is the hub's one reader and writer of them. :meth:`LearningStore.ingest`
is the service's writer of :class:`~edge_agent.fleet.protocol.LearningDelta` messages
(:meth:`~edge_agent_host.hub.storage.database.HubDatabase.add_writer`): inside the batch's
transaction, it stores each delta once per ``(node, group, seq)`` (``ON CONFLICT DO NOTHING``: a
re-send or a second replica never counts twice), ``accepted`` or with the :class:`Refusal` it
earned. A model line is a bundle name; its current version is the newest bundle of that name the hub
holds (the one it deployed last: ``rollout start`` and ``learn publish`` store it).

**One replica builds a line's round at a time.** :meth:`LearningStore.take_lease` gives a
replica the line's lease (schema migration 6: a row per line, its owner and when it expires)
when nobody holds it, it holds it already, or the owner's lease expired (a replica that
crashed in a round); :meth:`LearningStore.add_round` with ``owner`` stores the round only while
that replica still holds it (in the same transaction: a replica that stalled past its lease and
was taken over stores nothing). ``learn build`` run by hand holds the line's lease the same way
(:meth:`LearningStore.leased`), and the catch-up look holds a lease of its own
(:data:`~.catch_up_store.CATCH_UP_LEASE`). The same on both engines; on
SQLite the hub has one replica, whose policy and a ``learn build`` by hand still take turns.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from edge_agent.errors import EdgeAgentError
from edge_agent.fleet.protocol import CountsDelta, LearningDelta
from edge_agent_host.fleet.errors import FleetError
from edge_agent_host.fleet.presence import presence
from edge_agent_host.hub.learning.checks import Allowance, Refusal, allowance, check_tables
from edge_agent_host.hub.learning.model import LineModel, line_model
from edge_agent_host.hub.rollouts.plan import ACTIVE, NodeState, RolloutState, not_trusting
from edge_agent_host.hub.storage.database import HubDatabase
from edge_agent_host.hub.storage.writers import to_json
from edge_agent_host.hub.traffic.queue import Heard

logger = logging.getLogger("edge_agent_host.hub.learning")

__all__ = [
    "ACCEPTED",
    "LearningStore",
    "LeaseHeldError",
    "LeaseLostError",
    "Pending",
    "split_model",
    "unknown_model_fix",
]

ACCEPTED: Final = "accepted"
_MODELS_KEPT: Final = 8
_TOLD_KEPT: Final = 1024
_SUM_EXPERIENCE: Final = "SUM(CAST(experience AS DOUBLE PRECISION))"
"""A sum of the stored experience that cannot overflow on either engine (a float: SQLite's
SUM of integers raises at 2**63, and a node's experience may be up to 2**63 - 1)."""
_UNKNOWN_SHOWN: Final = 5
_ENDED_UNDEPLOYED: Final = {
    "halted": RolloutState.HALTED.value,
    "rolled_back": RolloutState.ROLLED_BACK.value,
}
"""How a staged rollout ends that leaves its bundle on no node's group (SQL parameters)."""
_STAGED_STATE: Final = (
    "(SELECT o.state FROM rollouts o WHERE o.bundle_sha256 = b.sha256 AND o.id NOT IN "
    "(SELECT a.rollout FROM catch_up_attempts a) ORDER BY o.created DESC LIMIT 1)"
)
"""The state of bundle ``b``'s newest staged rollout (catch-ups left out: see
:meth:`LearningStore.current_sha256`)."""
_TABLES: Final = msgspec.msgpack.Decoder(list[CountsDelta])
_ENCODE: Final = msgspec.msgpack.Encoder()


def unknown_model_fix(group: str) -> str:
    """What makes the hub hold a bundle its nodes learn on: the command, in one line."""
    return (
        "the hub holds no such bundle; 'edge-agent-hub rollout start FILE --group "
        f"{group}' stores it (FILE: that bundle; a node that runs it already answers ok at "
        "once), and deltas on it are accepted from then on"
    )


def split_model(model: str) -> tuple[str, str]:
    """``"name@version"`` -> ``(name, version)`` (version empty when there is no ``@``)."""
    name, _, version = model.rpartition("@")
    return (name, version) if name else (model, "")


class LeaseLostError(FleetError):
    """A round not stored: its replica no longer holds the line's lease (another took it)."""


class LeaseHeldError(FleetError):
    """A lease another replica (or another ``learn build``) holds."""


@dataclass(frozen=True)
class Pending:
    """An accepted delta not merged yet."""

    id: int
    node: str
    group: str
    experience: int
    tables: list[CountsDelta]


class LearningStore:
    """Reads and writes the learning tables through ``db`` (see the module docstring)."""

    def __init__(self, db: HubDatabase) -> None:
        self.db = db
        self._models: OrderedDict[str, LineModel] = OrderedDict()
        self._told: OrderedDict[str, None] = OrderedDict()
        """The bundles an ``unknown_model`` refusal was logged for (once each, bounded)."""

    # the bundles the hub holds ------------------------------------------------------------------
    def model(self, sha256: str) -> LineModel | None:
        """The model of the bundle ``sha256`` the hub holds (None: it holds none, or cannot read
        it). A few bundles held are kept in memory (a bundle never changes); one not held is
        looked up again each time, so that a bundle stored after a node's first delta (``rollout
        start``, ``learn publish``) is learned from at once."""
        if sha256 in self._models:
            self._models.move_to_end(sha256)
            return self._models[sha256]
        rows = self.db.query("SELECT data FROM bundles WHERE sha256 = :sha", {"sha": sha256})
        if not rows:
            return None
        try:
            found = line_model(bytes(rows[0][0]))
        except EdgeAgentError:
            return None
        self._models[sha256] = found
        while len(self._models) > _MODELS_KEPT:
            self._models.popitem(last=False)
        return found

    def current_sha256(self, line: str) -> str | None:
        """The line's current bundle, the version the nodes run: the newest of that name the
        hub holds, but one whose newest staged rollout halted or was rolled back (it never
        reached the fleet, or every node it reached was given the rollback bundle again: the
        nodes run the version before it). A catch-up (a one-node deployment of a version its
        round's rollout judged already) does not count: a failed one leaves the version the
        line's."""
        rows = self.db.query(
            f"SELECT b.sha256 FROM bundles b WHERE b.name = :name AND COALESCE({_STAGED_STATE}, "
            "'') NOT IN (:halted, :rolled_back) ORDER BY b.added DESC, b.sha256 LIMIT 1",
            {"name": line, **_ENDED_UNDEPLOYED},
        )
        return str(rows[0][0]) if rows else None

    def accepted_versions(self, line: str) -> tuple[str, ...]:
        """The bundles of ``line`` a delta may be learned against: the current one, and while
        its staged rollout runs, the rollout's rollback bundle (the version the nodes not yet
        reached still run: should the rollout halt, it is the line's version again and their
        deltas on it go into the next round). Empty when the hub holds no bundle of the line."""
        current = self.current_sha256(line)
        if current is None:
            return ()
        rows = self.db.query(
            "SELECT o.state, o.plan FROM rollouts o WHERE o.bundle_sha256 = :sha AND o.id NOT IN "
            "(SELECT a.rollout FROM catch_up_attempts a) ORDER BY o.created DESC LIMIT 1",
            {"sha": current},
        )
        if rows and RolloutState(str(rows[0][0])) in ACTIVE:
            rollback = json.loads(rows[0][1]).get("rollback_sha256")
            if rollback and rollback != current:
                return (current, str(rollback))
        return (current,)

    def chained_round(self, line: str, sha256: str) -> dict[str, Any] | None:
        """The round a new round of ``line`` on its current bundle ``sha256`` goes on from: the
        newest built round that became that bundle or was built on it, but one whose rollout
        halted or was rolled back (it never became the nodes' version, or its merge was judged
        worse: the next starts from the version the nodes run, and the deltas it merged are not
        merged again)."""
        rows = self.db.query(
            "SELECT r.id FROM learning_rounds r LEFT JOIN rollouts o ON o.id = r.rollout "
            "WHERE r.line = :line AND r.state = 'built' AND (r.bundle_sha256 = :sha OR "
            "r.parent_sha256 = :sha) AND (o.state IS NULL OR o.state NOT IN (:halted, "
            ":rolled_back)) ORDER BY r.id DESC LIMIT 1",
            {"line": line, "sha": sha256, **_ENDED_UNDEPLOYED},
        )
        return self.latest_round(line, round_id=int(rows[0][0])) if rows else None

    def rollout_end(self, rollout_id: str | None) -> dict[str, Any] | None:
        """A round's rollout as ``learn status`` shows it: ``id``, ``state`` and, when it halted
        or was rolled back, ``why`` (the rollout's detail and its first failed node's answer,
        such as a canary's ``verify: bundle signed by untrusted key ...``); None without one."""
        if rollout_id is None:
            return None
        rows = self.db.query(
            "SELECT state, detail FROM rollouts WHERE id = :id", {"id": rollout_id}
        )
        if not rows:
            return None
        state, detail = str(rows[0][0]), str(rows[0][1])
        out: dict[str, Any] = {"id": rollout_id, "state": state}
        if state in _ENDED_UNDEPLOYED.values():
            failed = self.db.query(
                "SELECT node, detail FROM rollout_nodes WHERE rollout = :id AND state IN "
                "(:failed, :revert_failed) ORDER BY wave, node LIMIT 1",
                {"id": rollout_id, "failed": NodeState.FAILED.value,
                 "revert_failed": NodeState.REVERT_FAILED.value},
            )  # fmt: skip
            node = f"; {failed[0][0]}: {failed[0][1]}" if failed else ""
            out["why"] = f"{detail}{node}"[:1024]
        return out

    def version_of(self, sha256: str | None) -> str | None:
        """``name@version`` of a bundle the hub holds (None: none)."""
        if sha256 is None:
            return None
        rows = self.db.query(
            "SELECT name, version FROM bundles WHERE sha256 = :sha", {"sha": sha256}
        )
        return f"{rows[0][0]}@{rows[0][1]}" if rows else None

    def not_trusting(
        self, line: str, key_id: str, *, silent_after_s: float
    ) -> dict[str, list[str]]:
        """The online nodes whose groups run a bundle of ``line`` (their births) and whose
        births say they do not trust ``key_id`` for bundles (``{node: the key ids they
        trust}``): they could not verify a round signed with it."""
        fleet = self.db.fleet()
        running = [
            str(row["node"])
            for row in fleet
            if presence(row, silent_after_s) == "online"
            and any(
                split_model(str(g.get("bundle")))[0] == line
                for g in ((row.get("birth") or {}).get("groups") or {}).values()
                if g.get("bundle") is not None
            )
        ]
        return not_trusting(fleet, running, key_id)

    def lines(self) -> list[str]:
        """Model lines with a delta or a round."""
        rows = self.db.query(
            "SELECT line FROM learning_deltas UNION SELECT line FROM learning_rounds"
        )
        return sorted(str(r[0]) for r in rows)

    # ingestion (inside the service's transaction) -------------------------------------------
    def ingest(self, heard: Heard) -> None:
        """Store one heard LearningDelta, accepted or refused (idempotent)."""
        body = heard.envelope.body
        if not isinstance(body, LearningDelta):
            raise TypeError(f"ingest takes learning deltas, not {type(body).__name__}")
        line, version = split_model(body.model)
        status, left = self.verdict(heard.node, body, sent=heard.envelope.ts,
                                    received=heard.received)  # fmt: skip
        if status == Refusal.UNKNOWN_MODEL.value:
            self._tell_unknown(body)
        if left is not None:  # accepted: what it claimed is spent from the group's allowance
            self.db.execute(
                "INSERT INTO learning_allowance (node, grp, agent_ticks, at) VALUES (:node, "
                ":grp, :ticks, :at) ON CONFLICT (node, grp) DO UPDATE SET agent_ticks = "
                "excluded.agent_ticks, at = excluded.at",
                {"node": heard.node, "grp": body.group, "ticks": left.agent_ticks,
                 "at": left.at},
            )  # fmt: skip
        self.db.execute(
            "INSERT INTO learning_deltas (node, grp, seq, received, line, version, model_sha256,"
            " experience, status, tables) VALUES (:node, :grp, :seq, :received, :line, :version,"
            " :sha, :experience, :status, :tables) ON CONFLICT (node, grp, seq) DO NOTHING",
            {
                "node": heard.node,
                "grp": body.group,
                "seq": body.seq,
                "received": heard.received,
                "line": line,
                "version": version,
                "sha": body.model_sha256,
                "experience": max(t.experience for t in body.tables),
                "status": status,
                "tables": _ENCODE.encode(body.tables) if status == ACCEPTED else None,
            },
        )

    def _tell_unknown(self, body: LearningDelta) -> None:
        """Log a bundle the hub does not hold once (per bundle, the newest few remembered)."""
        key = f"{body.model_sha256} {body.model}"
        if key in self._told:
            return
        self._told[key] = None
        while len(self._told) > _TOLD_KEPT:
            self._told.popitem(last=False)
        logger.warning(
            "learning deltas against %s (%s) refused as unknown_model: %s",
            body.model, body.model_sha256[:12], unknown_model_fix(body.group),
        )  # fmt: skip

    def unknown_models(self, line: str, limit: int = _UNKNOWN_SHOWN) -> list[dict[str, Any]]:
        """The bundles of ``line`` its deltas were refused ``unknown_model`` for, most refused
        first (at most ``limit``): ``model`` (``name@version`` as the deltas said), ``sha256``,
        ``group``, ``deltas``, ``last`` (when the newest came), ``held`` (whether the hub holds
        that bundle now: deltas after it came are accepted) and ``fix`` (the command that makes
        the hub hold it)."""
        rows = self.db.query(
            "SELECT version, model_sha256, grp, COUNT(*), MAX(received) FROM learning_deltas "
            "WHERE line = :line AND status = :unknown GROUP BY version, model_sha256, grp "
            "ORDER BY COUNT(*) DESC, MAX(received) DESC LIMIT :limit",
            {"line": line, "unknown": Refusal.UNKNOWN_MODEL.value, "limit": limit},
        )
        return [
            {
                "model": f"{line}@{version}" if version else line,
                "sha256": str(sha),
                "group": str(group),
                "deltas": int(n),
                "last": float(last),
                "held": self.model(str(sha)) is not None,
                "fix": unknown_model_fix(str(group)),
            }
            for version, sha, group, n, last in rows
        ]

    def verdict(
        self, node: str, body: LearningDelta, *, sent: float, received: float
    ) -> tuple[str, Allowance | None]:
        """``accepted`` or the :class:`Refusal` of ``body`` sent by ``node`` at ``sent`` (its
        clock; the hub heard it at ``received``), and for an accepted one the group's allowance
        left once its experience is spent (:func:`~.checks.allowance`)."""
        rows = self.db.query(  # the group, its birth's numbers and what it has left to claim
            "SELECT g.agents, g.tick_hz, a.agent_ticks, a.at FROM node_groups g LEFT JOIN "
            "learning_allowance a ON a.node = g.node AND a.grp = g.grp "
            "WHERE g.node = :node AND g.grp = :grp",
            {"node": node, "grp": body.group},
        )
        if not rows:
            return Refusal.UNKNOWN_GROUP.value, None
        model = self.model(body.model_sha256)
        if model is None or f"{model.name}@{model.version}" != body.model:
            return Refusal.UNKNOWN_MODEL.value, None
        if not model.counts:
            return Refusal.NO_LEARNING.value, None
        if model.sha256 not in self.accepted_versions(model.name):
            return Refusal.STALE_VERSION.value, None
        refusal = check_tables(body.tables, model.shapes)
        if refusal is not None:
            return refusal.value, None
        agents, hz, left, at = rows[0]
        before = None if left is None else Allowance(float(left), float(at))
        now = allowance(before, agents=int(agents), tick_hz=None if hz is None else float(hz),
                        sent=sent, received=received)  # fmt: skip
        claimed = float(max(t.experience for t in body.tables))
        if claimed > now.agent_ticks:
            return Refusal.EXPERIENCE.value, None
        return ACCEPTED, Allowance(now.agent_ticks - claimed, now.at)

    # rounds -------------------------------------------------------------------------------------
    def pending(self, line: str, sha256: str) -> list[Pending]:
        """Accepted deltas of ``line`` against bundle ``sha256`` no round merged yet."""
        rows = self.db.query(
            "SELECT id, node, grp, experience, tables FROM learning_deltas WHERE line = :line "
            "AND model_sha256 = :sha AND status = :ok AND round_id IS NULL ORDER BY id",
            {"line": line, "sha": sha256, "ok": ACCEPTED},
        )
        out: list[Pending] = []
        unreadable: list[int] = []
        for r in rows:
            try:
                tables = _TABLES.decode(bytes(r[4]))
            except (msgspec.DecodeError, TypeError, ValueError):
                unreadable.append(int(r[0]))
                continue
            out.append(Pending(int(r[0]), str(r[1]), str(r[2]), int(r[3]), tables))
        if unreadable:  # one refused delta each, counted; the round goes on without them
            logger.warning("%d learning delta(s) of %s could not be read back: refused as %s",
                           len(unreadable), line, Refusal.UNREADABLE.value)  # fmt: skip
            with self.db.transaction():
                self.db.execute_many(
                    "UPDATE learning_deltas SET status = :status WHERE id = :id",
                    [{"status": Refusal.UNREADABLE.value, "id": i} for i in unreadable],
                )
        return out

    def latest_round(
        self, line: str, *, built_only: bool = True, round_id: int | None = None
    ) -> dict[str, Any] | None:
        """The newest round of ``line`` (built ones only by default; round ``round_id`` when
        given), with its blobs."""
        rows = self.db.query(
            "SELECT id, created, state, parent_sha256, version, bundle_sha256, bundle, counts, "
            "base, provenance, rollout FROM learning_rounds WHERE line = :line"
            + (" AND state = 'built'" if built_only else "")
            + ("" if round_id is None else " AND id = :id")
            + " ORDER BY id DESC LIMIT 1",
            {"line": line, "id": round_id},
        )
        if not rows:
            return None
        r = rows[0]
        return {
            "id": int(r[0]),
            "created": float(r[1]),
            "state": str(r[2]),
            "parent_sha256": str(r[3]),
            "version": str(r[4]),
            "bundle_sha256": r[5],
            "bundle": None if r[6] is None else bytes(r[6]),
            "counts": bytes(r[7]),
            "base": bytes(r[8]),
            "provenance": json.loads(r[9]),
            "rollout": r[10],
        }

    def take_lease(self, line: str, owner: str, *, now: float, lease_s: float) -> bool:
        """Whether ``owner`` now holds ``line``'s lease until ``now + lease_s``: nobody held
        it, ``owner`` did, or the lease had expired (module docstring)."""
        with self.db.transaction():
            changed = self.db.execute(
                "INSERT INTO learning_leases (line, owner, lease_until) VALUES (:line, :owner, "
                ":until) ON CONFLICT (line) DO UPDATE SET owner = excluded.owner, "
                "lease_until = excluded.lease_until WHERE learning_leases.owner = :owner "
                "OR learning_leases.lease_until <= :now",
                {"line": line, "owner": owner, "until": now + lease_s, "now": now},
            )
        return changed == 1

    @contextmanager
    def leased(self, line: str, owner: str, *, now: float, lease_s: float) -> Iterator[None]:
        """Hold ``line``'s lease (:meth:`take_lease`) for the ``with`` block, then give it up;
        LeaseHeldError (one line: who holds it, until when) when another holds it."""
        if not self.take_lease(line, owner, now=now, lease_s=lease_s):
            held = self.lease(line)
            who = "another replica" if held is None else f"{held[0]!r}"
            until = "" if held is None else " until " + time.strftime(
                "%Y-%m-%d %H:%M:%S", time.localtime(held[1]))  # fmt: skip
            raise LeaseHeldError(f"{line!r}: {who} holds its lease{until}; try again after it")
        try:
            yield
        finally:
            self.release_lease(line, owner)

    def release_lease(self, line: str, owner: str) -> None:
        """``owner`` gives ``line``'s lease up (nothing when another holds it)."""
        with self.db.transaction():
            self.db.execute(
                "DELETE FROM learning_leases WHERE line = :line AND owner = :owner",
                {"line": line, "owner": owner},
            )

    def lease(self, line: str) -> tuple[str, float] | None:
        """``line``'s lease: its owner and until when (None: nobody's)."""
        rows = self.db.query(
            "SELECT owner, lease_until FROM learning_leases WHERE line = :line", {"line": line}
        )
        return (str(rows[0][0]), float(rows[0][1])) if rows else None

    def set_rollout(self, round_id: int, rollout_id: str) -> None:
        """Round ``round_id`` was published by rollout ``rollout_id``."""
        with self.db.transaction():
            self.db.execute(
                "UPDATE learning_rounds SET rollout = :rollout WHERE id = :id",
                {"rollout": rollout_id, "id": round_id},
            )

    def recent_rounds(self, limit: int = 10) -> list[dict[str, Any]]:
        """The newest rounds of every line, newest first, without their blobs: what the fleet
        page shows (version, nodes, experience, refused and capped, the rollout)."""
        rows = self.db.query(
            "SELECT id, line, created, state, version, bundle_sha256, provenance, rollout "
            "FROM learning_rounds ORDER BY id DESC LIMIT :limit",
            {"limit": limit},
        )
        out = []
        for r in rows:
            prov = json.loads(r[6])
            out.append(
                {
                    "id": int(r[0]),
                    "line": str(r[1]),
                    "created": float(r[2]),
                    "state": str(r[3]),
                    "version": str(r[4]),
                    "bundle_sha256": r[5],
                    "nodes": len(prov.get("nodes", {})),
                    "deltas": int(prov.get("deltas", 0)),
                    "experience": int(prov.get("experience", 0)),
                    "refused": len(prov.get("outliers", [])),
                    "capped": len(prov.get("capped", [])),
                    "rollout": r[7],
                }
            )
        return out

    def rounds(self, line: str) -> int:
        """How many rounds of ``line`` were built or refused."""
        rows = self.db.query(
            "SELECT COUNT(*) FROM learning_rounds WHERE line = :line", {"line": line}
        )
        return int(rows[0][0])

    def add_round(
        self,
        line: str,
        *,
        state: str,
        parent_sha256: str,
        version: str,
        bundle_sha256: str | None,
        bundle: bytes | None,
        counts: bytes,
        base: bytes,
        provenance: Mapping[str, Any],
        merged: Sequence[int],
        now: float | None = None,
        owner: str | None = None,
    ) -> int:
        """Store a round; the deltas ``merged`` (ids) become its own. Returns its id. With
        ``owner``: only while it holds ``line``'s lease, else LeaseLostError (nothing stored;
        the check locks the lease's row until the round is stored)."""
        with self.db.transaction():
            if owner is not None and not self.db.execute(
                "UPDATE learning_leases SET owner = owner WHERE line = :line AND owner = :owner",
                {"line": line, "owner": owner},
            ):
                raise LeaseLostError(
                    f"model line {line!r}: replica {owner!r} no longer holds its lease "
                    "(it outlived it and another replica took the line over)"
                )
            self.db.execute(
                "INSERT INTO learning_rounds (line, created, state, parent_sha256, version, "
                "bundle_sha256, bundle, counts, base, provenance) VALUES (:line, :created, "
                ":state, :parent, :version, :sha, :bundle, :counts, :base, :provenance)",
                {
                    "line": line,
                    "created": time.time() if now is None else now,
                    "state": state,
                    "parent": parent_sha256,
                    "version": version,
                    "sha": bundle_sha256,
                    "bundle": bundle,
                    "counts": counts,
                    "base": base,
                    "provenance": to_json(dict(provenance)),
                },
            )
            round_id = int(
                self.db.query(
                    "SELECT MAX(id) FROM learning_rounds WHERE line = :line", {"line": line}
                )[0][0]
            )
            self.db.execute_many(
                "UPDATE learning_deltas SET round_id = :round WHERE id = :id",
                [{"round": round_id, "id": i} for i in merged],
            )
        return round_id

    # what `learn status` and /metrics show --------------------------------------------------
    def counts_by_reason(self) -> dict[str, int]:
        """Deltas by status over every line (``accepted`` and each refusal), for /metrics;
        ``outlier`` from the rounds."""
        out = {ACCEPTED: 0, **{r.value: 0 for r in Refusal}}
        for r in self.db.query("SELECT status, COUNT(*) FROM learning_deltas GROUP BY status"):
            out[str(r[0])] = out.get(str(r[0]), 0) + int(r[1])
        for (text,) in self.db.query("SELECT provenance FROM learning_rounds"):
            out[Refusal.OUTLIER.value] += len(json.loads(text).get("outliers", []))
        return out

    def per_node(self, line: str, current: str | None) -> list[dict[str, Any]]:
        """``line``'s deltas node by node, as ``learn status`` shows them: ``accepted`` (and
        their ``experience``), ``merged`` (round id -> deltas that round merged), ``waiting``
        (accepted against ``current``, the line's version: the next round merges them),
        ``replaced`` (accepted against a version since replaced or halted: never merged) and
        ``refused`` (reason -> deltas)."""
        out: dict[str, dict[str, Any]] = {}
        for node, status, round_id, sha, n, exp in self.db.query(
            f"SELECT node, status, round_id, model_sha256, COUNT(*), {_SUM_EXPERIENCE} FROM "
            "learning_deltas WHERE line = :line GROUP BY node, status, round_id, model_sha256 "
            "ORDER BY node",
            {"line": line},
        ):
            row = out.setdefault(str(node), {
                "node": str(node), "accepted": 0, "experience": 0, "merged": {}, "waiting": 0,
                "replaced": 0, "refused": {},
            })  # fmt: skip
            if status != ACCEPTED:
                row["refused"][str(status)] = row["refused"].get(str(status), 0) + int(n)
                continue
            row["accepted"] += int(n)
            row["experience"] += int(exp or 0)
            if round_id is not None:
                key = str(int(round_id))
                row["merged"][key] = row["merged"].get(key, 0) + int(n)
            elif sha == current:
                row["waiting"] += int(n)
            else:
                row["replaced"] += int(n)
        return list(out.values())

    def status(self) -> list[dict[str, Any]]:
        """Per model line: deltas accepted and refused by reason, experience accepted, nodes,
        what waits for the next round (accepted deltas against the current version that no
        round merged: one accepted against a version since replaced or rolled back is never
        merged), and the last round."""
        out = []
        for line in self.lines():
            by_status: dict[str, int] = {}
            experience = 0
            for status, n, exp in self.db.query(
                f"SELECT status, COUNT(*), {_SUM_EXPERIENCE} FROM learning_deltas "
                "WHERE line = :line GROUP BY status",
                {"line": line},
            ):
                by_status[str(status)] = int(n)
                if status == ACCEPTED:
                    experience = int(exp or 0)
            nodes = self.db.query(
                "SELECT COUNT(DISTINCT node) FROM learning_deltas WHERE line = :line "
                "AND status = :ok",
                {"line": line, "ok": ACCEPTED},
            )[0][0]
            current = self.current_sha256(line)
            waiting = self.db.query(  # what the next round merges: against the current version
                f"SELECT COUNT(*), {_SUM_EXPERIENCE} FROM learning_deltas WHERE line = :line "
                "AND model_sha256 = :sha AND status = :ok AND round_id IS NULL",
                {"line": line, "sha": current, "ok": ACCEPTED},
            )[0]
            rounds = self.rounds(line)
            last = self.latest_round(line, built_only=False)
            refused = {k: v for k, v in sorted(by_status.items()) if k != ACCEPTED}
            capped = outliers = 0
            for (text,) in self.db.query(
                "SELECT provenance FROM learning_rounds WHERE line = :line", {"line": line}
            ):
                prov = json.loads(text)
                capped += len(prov.get("capped", []))
                outliers += len(prov.get("outliers", []))
            if outliers:
                refused[Refusal.OUTLIER.value] = outliers
            out.append(
                {
                    "line": line,
                    "current_sha256": current,
                    "version": self.version_of(current),
                    "accepted": by_status.get(ACCEPTED, 0),
                    "refused": refused,
                    "capped": capped,
                    "experience": experience,
                    "nodes": int(nodes),
                    "waiting": {"deltas": int(waiting[0]), "experience": int(waiting[1] or 0)},
                    "per_node": self.per_node(line, current),
                    "unknown_models": self.unknown_models(line)
                    if Refusal.UNKNOWN_MODEL.value in by_status
                    else [],
                    "rounds": int(rounds),
                    "last_round": None
                    if last is None
                    else {
                        "id": last["id"],
                        "state": last["state"],
                        "version": last["version"],
                        "created": last["created"],
                        "bundle_sha256": last["bundle_sha256"],
                        "nodes": len(last["provenance"].get("nodes", {})),
                        "experience": last["provenance"].get("experience", 0),
                        "rollout": self.rollout_end(last["rollout"]),
                    },
                }
            )
        return out

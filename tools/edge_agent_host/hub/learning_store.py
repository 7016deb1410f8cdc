"""The learning tables (schema migration 4): the deltas the nodes sent, and the rounds.

:class:`LearningStore` is the hub's one reader and writer of them. :meth:`LearningStore.ingest`
is the service's writer of :class:`~edge_agent.fleet.protocol.LearningDelta` messages
(:meth:`~edge_agent_host.hub.store.HubDatabase.add_writer`): inside the batch's transaction, it
stores each delta once per ``(node, group, seq)`` (``ON CONFLICT DO NOTHING``: a re-send or a
second replica never counts twice), ``accepted`` or with the :class:`Refusal` it earned. A
model line is a bundle name; its current version is the newest bundle of that name the hub
holds (the one it deployed last: ``rollout start`` and ``learn publish`` store it).

**One replica builds a line's round at a time.** :meth:`LearningStore.take_lease` gives a
replica the line's lease (schema migration 6: a row per line, its owner and when it expires)
when nobody holds it, it holds it already, or the owner's lease expired (a replica that
crashed in a round); :meth:`LearningStore.add_round` with ``owner`` stores the round only while
that replica still holds it (in the same transaction: a replica that stalled past its lease and
was taken over stores nothing). ``learn build`` run by hand holds the line's lease the same way
(:meth:`LearningStore.leased`), and the catch-up look holds a lease of its own
(:data:`~edge_agent_host.hub.catch_up_store.CATCH_UP_LEASE`). The same on both engines; on
SQLite the hub has one replica, whose policy and a ``learn build`` by hand still take turns.
"""

from __future__ import annotations

import json
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
from edge_agent_host.hub.learning_checks import Refusal, check_tables
from edge_agent_host.hub.learning_model import LineModel, line_model
from edge_agent_host.hub.queue import Heard
from edge_agent_host.hub.rollout_plan import RolloutState
from edge_agent_host.hub.store import HubDatabase, to_json

__all__ = [
    "ACCEPTED",
    "LearningStore",
    "LeaseHeldError",
    "LeaseLostError",
    "Pending",
    "split_model",
]

ACCEPTED: Final = "accepted"
_MODELS_KEPT: Final = 8
_TABLES: Final = msgspec.msgpack.Decoder(list[CountsDelta])
_ENCODE: Final = msgspec.msgpack.Encoder()


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
        self._models: OrderedDict[str, LineModel | None] = OrderedDict()

    # the bundles the hub holds ------------------------------------------------------------------
    def model(self, sha256: str) -> LineModel | None:
        """The model of the bundle ``sha256`` the hub holds (None: it holds none; a few are
        kept in memory: a bundle never changes)."""
        if sha256 in self._models:
            self._models.move_to_end(sha256)
            return self._models[sha256]
        rows = self.db.query("SELECT data FROM bundles WHERE sha256 = :sha", {"sha": sha256})
        found = None
        if rows:
            try:
                found = line_model(bytes(rows[0][0]))
            except EdgeAgentError:
                found = None
        self._models[sha256] = found
        while len(self._models) > _MODELS_KEPT:
            self._models.popitem(last=False)
        return found

    def current_sha256(self, line: str) -> str | None:
        """The line's current bundle: the newest of that name the hub holds, but one whose
        newest rollout was rolled back (no node runs it: every node it reached was given the
        rollback bundle again)."""
        rows = self.db.query(
            "SELECT b.sha256 FROM bundles b WHERE b.name = :name AND COALESCE((SELECT o.state "
            "FROM rollouts o WHERE o.bundle_sha256 = b.sha256 ORDER BY o.created DESC LIMIT 1),"
            " '') <> :rolled_back ORDER BY b.added DESC, b.sha256 LIMIT 1",
            {"name": line, "rolled_back": RolloutState.ROLLED_BACK.value},
        )
        return str(rows[0][0]) if rows else None

    def chained_round(self, line: str, sha256: str) -> dict[str, Any] | None:
        """The round a new round of ``line`` on its current bundle ``sha256`` goes on from: the
        newest built round that became that bundle or was built on it, but one whose rollout
        was rolled back (its merge was judged worse: the next starts from the version the
        nodes went back to, and the deltas it merged are not merged again)."""
        rows = self.db.query(
            "SELECT r.id FROM learning_rounds r LEFT JOIN rollouts o ON o.id = r.rollout "
            "WHERE r.line = :line AND r.state = 'built' AND (r.bundle_sha256 = :sha OR "
            "r.parent_sha256 = :sha) AND (o.state IS NULL OR o.state <> :rolled_back) "
            "ORDER BY r.id DESC LIMIT 1",
            {"line": line, "sha": sha256, "rolled_back": RolloutState.ROLLED_BACK.value},
        )
        return self.latest_round(line, round_id=int(rows[0][0])) if rows else None

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
        status = self.verdict(heard.node, body)
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

    def verdict(self, node: str, body: LearningDelta) -> str:
        """``accepted`` or the :class:`Refusal` of ``body`` sent by ``node``."""
        rows = self.db.query(
            "SELECT 1 FROM node_groups WHERE node = :node AND grp = :grp",
            {"node": node, "grp": body.group},
        )
        if not rows:
            return Refusal.UNKNOWN_GROUP.value
        model = self.model(body.model_sha256)
        if model is None or f"{model.name}@{model.version}" != body.model:
            return Refusal.UNKNOWN_MODEL.value
        if not model.counts:
            return Refusal.NO_LEARNING.value
        if self.current_sha256(model.name) != model.sha256:
            return Refusal.STALE_VERSION.value
        refusal = check_tables(body.tables, model.shapes)
        return ACCEPTED if refusal is None else refusal.value

    # rounds -------------------------------------------------------------------------------------
    def pending(self, line: str, sha256: str) -> list[Pending]:
        """Accepted deltas of ``line`` against bundle ``sha256`` no round merged yet."""
        rows = self.db.query(
            "SELECT id, node, grp, experience, tables FROM learning_deltas WHERE line = :line "
            "AND model_sha256 = :sha AND status = :ok AND round_id IS NULL ORDER BY id",
            {"line": line, "sha": sha256, "ok": ACCEPTED},
        )
        return [
            Pending(int(r[0]), str(r[1]), str(r[2]), int(r[3]), _TABLES.decode(bytes(r[4])))
            for r in rows
        ]

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
                "SELECT status, COUNT(*), SUM(experience) FROM learning_deltas "
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
                "SELECT COUNT(*), SUM(experience) FROM learning_deltas WHERE line = :line "
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
                    "accepted": by_status.get(ACCEPTED, 0),
                    "refused": refused,
                    "capped": capped,
                    "experience": experience,
                    "nodes": int(nodes),
                    "waiting": {"deltas": int(waiting[0]), "experience": int(waiting[1] or 0)},
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
                    },
                }
            )
        return out

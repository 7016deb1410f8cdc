"""The hub database's schema, as versioned migrations shared by both engines.

A migration is a version number, a description and SQL statements written once for SQLite and
PostgreSQL: the only words that differ are the two placeholders below, which each engine fills in
(:attr:`~.engines.Engine.types`):

* ``{id}``: an integer primary key that numbers rows in insertion order;
* ``{real}``: a double-precision float (PostgreSQL's ``REAL`` is single precision);
* ``{blob}``: bytes (``BLOB``, ``BYTEA``).

Everything else is the common subset: ``TEXT``, ``INTEGER``, ``BIGINT``, ``UNIQUE``,
``ON CONFLICT``. Booleans are ``INTEGER`` 0/1 and structured values JSON ``TEXT`` in both.
The table ``schema_migrations`` records what was applied; :func:`pending` says what is missing.
A new migration is appended with the next number and never edits an older one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = ["LATEST", "MIGRATIONS", "VERSIONS_TABLE", "Migration", "pending"]


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: Final = (
    Migration(
        1,
        "fleet registry, telemetry history, events, command journal, replicas",
        (
            # The registry: one row per node. Presence (online, state_*) and the birth (birth_*)
            # are applied in (bdseq, ts) order, so a late or replayed message cannot undo a newer
            # one; telemetry_* is the newest telemetry, for the fleet table.
            """CREATE TABLE nodes (
                node TEXT PRIMARY KEY,
                first_seen {real} NOT NULL,
                last_seen {real},
                online INTEGER,
                state_bdseq BIGINT,
                state_ts {real},
                birth_bdseq BIGINT,
                birth_ts {real},
                birth TEXT,
                software_version TEXT,
                profile TEXT,
                deaths INTEGER NOT NULL DEFAULT 0,
                death_ts {real},
                death_reason TEXT,
                telemetry_ts {real},
                telemetry TEXT
            )""",
            # Groups and the bundle each runs, from the newest birth.
            """CREATE TABLE node_groups (
                node TEXT NOT NULL,
                grp TEXT NOT NULL,
                agents BIGINT NOT NULL,
                bundle TEXT,
                bundle_sha256 TEXT,
                since {real} NOT NULL,
                PRIMARY KEY (node, grp)
            )""",
            "CREATE INDEX node_groups_bundle ON node_groups (bundle_sha256)",
            # Telemetry history: raw rows (coarse 0), and older ones downsampled to one point per
            # step (coarse 1, samples = how many raw rows it stands for).
            """CREATE TABLE telemetry (
                id {id},
                node TEXT NOT NULL,
                ts {real} NOT NULL,
                bdseq BIGINT NOT NULL,
                seq BIGINT NOT NULL,
                received {real} NOT NULL,
                coarse INTEGER NOT NULL DEFAULT 0,
                samples INTEGER NOT NULL DEFAULT 1,
                uptime_s {real},
                rss_bytes BIGINT,
                budget_used_bytes BIGINT,
                budget_total_bytes BIGINT,
                ticks BIGINT,
                tick_p50_ms {real},
                tick_p99_ms {real},
                overruns BIGINT,
                cpu_temp_c {real},
                outbox_depth BIGINT,
                body TEXT NOT NULL,
                UNIQUE (node, seq, ts)
            )""",
            "CREATE INDEX telemetry_node_ts ON telemetry (node, ts)",
            "CREATE INDEX telemetry_ts ON telemetry (ts)",
            """CREATE TABLE events (
                id {id},
                node TEXT NOT NULL,
                ts {real} NOT NULL,
                bdseq BIGINT NOT NULL,
                seq BIGINT NOT NULL,
                received {real} NOT NULL,
                kind TEXT NOT NULL,
                severity TEXT NOT NULL,
                grp TEXT,
                detail TEXT NOT NULL,
                data TEXT NOT NULL,
                UNIQUE (node, seq, ts)
            )""",
            "CREATE INDEX events_node_ts ON events (node, ts)",
            "CREATE INDEX events_ts ON events (ts)",
            # The command journal: every signed command heard on the fleet's cmd topics (by any
            # hub client), and every result the nodes sent.
            """CREATE TABLE commands (
                nonce TEXT PRIMARY KEY,
                target TEXT NOT NULL,
                name TEXT NOT NULL,
                key_id TEXT NOT NULL,
                verified INTEGER NOT NULL,
                sender TEXT NOT NULL,
                ts {real} NOT NULL,
                expires {real} NOT NULL,
                received {real} NOT NULL,
                args TEXT NOT NULL
            )""",
            "CREATE INDEX commands_ts ON commands (ts)",
            """CREATE TABLE results (
                id {id},
                node TEXT NOT NULL,
                ts {real} NOT NULL,
                bdseq BIGINT NOT NULL,
                seq BIGINT NOT NULL,
                received {real} NOT NULL,
                nonce TEXT NOT NULL,
                name TEXT NOT NULL,
                code TEXT NOT NULL,
                detail TEXT NOT NULL,
                data TEXT NOT NULL,
                UNIQUE (node, seq, ts)
            )""",
            "CREATE INDEX results_nonce ON results (nonce)",
            "CREATE INDEX results_ts ON results (ts)",
            # Hub replicas: a heartbeat and a status summary each.
            """CREATE TABLE hubs (
                hub_id TEXT PRIMARY KEY,
                host TEXT NOT NULL,
                pid INTEGER NOT NULL,
                started {real} NOT NULL,
                heartbeat {real} NOT NULL,
                status TEXT NOT NULL
            )""",
        ),
    ),
    Migration(
        2,
        "staged rollouts and the bundles they deploy",
        (
            # Signed bundle files the hub deploys (a rollout's and its rollback bundle).
            """CREATE TABLE bundles (
                sha256 TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                version TEXT NOT NULL,
                size BIGINT NOT NULL,
                file_sha256 TEXT NOT NULL,
                added {real} NOT NULL,
                data {blob} NOT NULL
            )""",
            # One row per rollout: its plan (JSON), where it is, who carries it (a lease).
            """CREATE TABLE rollouts (
                id TEXT PRIMARY KEY,
                created {real} NOT NULL,
                updated {real} NOT NULL,
                grp TEXT NOT NULL,
                bundle_sha256 TEXT NOT NULL,
                plan TEXT NOT NULL,
                state TEXT NOT NULL,
                wave INTEGER NOT NULL,
                phase TEXT NOT NULL,
                phase_started {real},
                request TEXT,
                detail TEXT NOT NULL,
                owner TEXT,
                lease_until {real}
            )""",
            "CREATE INDEX rollouts_state ON rollouts (state, created)",
            """CREATE TABLE rollout_nodes (
                rollout TEXT NOT NULL,
                node TEXT NOT NULL,
                wave INTEGER NOT NULL,
                state TEXT NOT NULL,
                detail TEXT NOT NULL,
                updated {real} NOT NULL,
                baseline_p99_ms {real},
                PRIMARY KEY (rollout, node)
            )""",
        ),
    ),
    Migration(
        3,
        "group health per window, the newest per node and group, rollout verdicts",
        (
            # One row per node, group and window (docs/health.md): the measures as JSON
            # {measure: [mean, p95, n]}, the drift detector in columns. Downsampled and bounded
            # like telemetry (coarse, samples: the same rule, per node and group).
            """CREATE TABLE health (
                id {id},
                node TEXT NOT NULL,
                grp TEXT NOT NULL,
                ts {real} NOT NULL,
                bdseq BIGINT NOT NULL,
                seq BIGINT NOT NULL,
                received {real} NOT NULL,
                coarse INTEGER NOT NULL DEFAULT 0,
                samples INTEGER NOT NULL DEFAULT 1,
                window_s {real} NOT NULL,
                model TEXT NOT NULL,
                agent_steps BIGINT NOT NULL,
                drift_alarm INTEGER,
                drift_statistic {real},
                drift_threshold {real},
                measures TEXT NOT NULL,
                UNIQUE (node, grp, seq, ts)
            )""",
            "CREATE INDEX health_grp_ts ON health (grp, ts)",
            "CREATE INDEX health_node_ts ON health (node, ts)",
            # The newest window of each node's groups (the page, /metrics, `health`, and which
            # groups report which measures: what `rollout start` checks a criterion against).
            """CREATE TABLE node_health (
                node TEXT NOT NULL,
                grp TEXT NOT NULL,
                ts {real} NOT NULL,
                window_s {real} NOT NULL,
                model TEXT NOT NULL,
                body TEXT NOT NULL,
                PRIMARY KEY (node, grp)
            )""",
            # Every verdict of a rollout's gate (docs/hub.md "Rollouts gated on behaviour").
            """CREATE TABLE rollout_verdicts (
                id {id},
                rollout TEXT NOT NULL,
                wave INTEGER NOT NULL,
                ts {real} NOT NULL,
                criterion TEXT NOT NULL,
                verdict TEXT NOT NULL,
                dry_run INTEGER NOT NULL,
                body TEXT NOT NULL
            )""",
            "CREATE INDEX rollout_verdicts_rollout ON rollout_verdicts (rollout, id)",
        ),
    ),
    Migration(
        4,
        "learning deltas and the rounds that merge them",
        (
            # Every learning delta heard (docs/fleet-learning.md "On the hub"), once per
            # (node, group, seq): status 'accepted' or the reason it was refused (then tables is
            # NULL). line / version: the model line and version it says it learned against;
            # experience: its largest per-table agent-ticks; tables: the msgpack of its
            # CountsDelta list; round_id: the round that merged it (NULL: not merged yet).
            """CREATE TABLE learning_deltas (
                id {id},
                node TEXT NOT NULL,
                grp TEXT NOT NULL,
                seq BIGINT NOT NULL,
                received {real} NOT NULL,
                line TEXT NOT NULL,
                version TEXT NOT NULL,
                model_sha256 TEXT NOT NULL,
                experience BIGINT NOT NULL,
                status TEXT NOT NULL,
                tables {blob},
                round_id BIGINT,
                UNIQUE (node, grp, seq)
            )""",
            "CREATE INDEX learning_deltas_line ON learning_deltas (line, status, round_id)",
            # One row per round built (or refused by the converter's gate): the bundle it made,
            # the merged counts and the line's first prior (npz), its provenance (JSON:
            # nodes, experience, what was refused or capped), the rollout that published it.
            """CREATE TABLE learning_rounds (
                id {id},
                line TEXT NOT NULL,
                created {real} NOT NULL,
                state TEXT NOT NULL,
                parent_sha256 TEXT NOT NULL,
                version TEXT NOT NULL,
                bundle_sha256 TEXT,
                bundle {blob},
                counts {blob} NOT NULL,
                base {blob} NOT NULL,
                provenance TEXT NOT NULL,
                rollout TEXT
            )""",
            "CREATE INDEX learning_rounds_line ON learning_rounds (line, id)",
        ),
    ),
    Migration(
        5,
        "catch-up deployments of a model line's current version",
        (
            # Each deployment the hub started to bring a node's group to its line's current
            # version (docs/fleet-learning.md "A node that joins late or was reset"): the
            # version it deployed (sha256) over the one the birth named (running), the node's
            # bdseq then, the one-node rollout that carries it, and its result: 'pending' while
            # the rollout runs, then 'ok' or 'failed' (not tried again for that version).
            """CREATE TABLE catch_up_attempts (
                id {id},
                node TEXT NOT NULL,
                grp TEXT NOT NULL,
                line TEXT NOT NULL,
                sha256 TEXT NOT NULL,
                running TEXT,
                bdseq BIGINT,
                rollout TEXT NOT NULL,
                result TEXT NOT NULL,
                created {real} NOT NULL,
                updated {real} NOT NULL
            )""",
            "CREATE INDEX catch_up_attempts_result ON catch_up_attempts (result)",
        ),
    ),
    Migration(
        6,
        "a lease per model line: one replica builds its round at a time",
        (
            # The replica (hub id) building a model line's round, until ``lease_until`` (a time of
            # the replicas' clocks): another replica takes the line over only once it expired
            # (docs/fleet-learning.md "Rounds run by the service").
            """CREATE TABLE learning_leases (
                line TEXT PRIMARY KEY,
                owner TEXT NOT NULL,
                lease_until {real} NOT NULL
            )""",
        ),
    ),
    Migration(
        7,
        "a learning delta's experience bounded by the node's birth",
        (
            # The node's base tick rate, from its newest birth (NULL: it does not say).
            "ALTER TABLE node_groups ADD COLUMN tick_hz {real}",
            # What each node's group may still claim as experience (agent-ticks), as of its
            # last accepted delta (``at``: the node's clock): docs/fleet-learning.md "On the hub".
            """CREATE TABLE learning_allowance (
                node TEXT NOT NULL,
                grp TEXT NOT NULL,
                agent_ticks {real} NOT NULL,
                at {real} NOT NULL,
                PRIMARY KEY (node, grp)
            )""",
        ),
    ),
)

LATEST: Final = MIGRATIONS[-1].version

#: Created before anything else, the same way by both engines.
VERSIONS_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied {real} NOT NULL)"
)


def pending(applied: Iterable[int]) -> list[Migration]:
    """The migrations not yet in ``applied``, in order."""
    done = set(applied)
    return [m for m in MIGRATIONS if m.version not in done]

"""The hub's data layer on SQLite: migrations, idempotent writes in protocol order, the command
journal, downsampling and the retention bounds, and what happens with trouble.

The ``check_*`` scenarios take an open :class:`HubDatabase` of any engine: the same ones run
against a real PostgreSQL in ``tests/integration/hub/test_hubd.py``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from edge_agent.fleet.protocol import (
    Birth,
    Command,
    CommandResult,
    Death,
    DeathReason,
    DriftState,
    Envelope,
    Event,
    EventKind,
    GroupHealth,
    GroupInfo,
    Health,
    MeasureSummary,
    NodeState,
    ResultCode,
    Severity,
    Telemetry,
)
from edge_agent_host.fleet.table import format_fleet
from edge_agent_host.hub.config.hub_toml import RetentionSection
from edge_agent_host.hub.storage.database import HubDatabase, SchemaError
from edge_agent_host.hub.storage.downsample import downsample_cut, plan_downsample
from edge_agent_host.hub.storage.engines import SqliteEngine
from edge_agent_host.hub.storage.schema import LATEST, MIGRATIONS
from edge_agent_host.hub.traffic.queue import Heard

SHA = "ab" * 32


# ----------------------------------------------------------------------------------- builders
def telemetry_body(ticks: int = 1, n: int = 1) -> Telemetry:
    return Telemetry(
        uptime_s=float(ticks),
        rss_bytes=50 * 2**20,
        budget_used_bytes=1000,
        budget_total_bytes=2000,
        ticks=ticks,
        tick_p50_ms=0.5,
        tick_p99_ms=1.5,
        overruns=0,
        groups={"grid": 10},
        counters={"telemetry.n": n},
    )


def heard(
    node: str,
    body: Any,
    *,
    seq: int = 0,
    bdseq: int = 1,
    ts: float = 1000.0,
    retained: bool = False,
    received: float | None = None,
    sender: str | None = None,
) -> Heard:
    env = Envelope(
        type=body.TYPE,
        node=sender or node,
        seq=seq,
        bdseq=bdseq,
        ts=ts,
        clock_synced=True,
        body=body,
    )
    return Heard(
        kind=body.TYPE,
        node=node,
        envelope=env,
        retained=retained,
        received=ts if received is None else received,
        size=100,
    )


def birth(agents: int = 10, sha: str | None = None) -> Birth:
    return Birth(
        software_version="0.1.0",
        profile="x86-dev",
        budget_bytes=2**30,
        groups={"grid": GroupInfo(agents=agents, bundle="b" if sha else None, bundle_sha256=sha)},
    )


def health_birth(ts: float = 0.0, node: str = "h1") -> Heard:
    """``node``'s birth that declares the groups of :func:`health_body` (``grid`` and ``cam``):
    a hub keeps health windows of the groups a node's birth declares, no others."""
    body = Birth(software_version="0.1.0", profile="x86-dev", budget_bytes=2**30,
                 groups={"grid": GroupInfo(agents=10), "cam": GroupInfo(agents=4)})  # fmt: skip
    return heard(node, body, ts=ts, seq=0)


def online(db: HubDatabase, node: str) -> bool | None:
    return next(r["online"] for r in db.fleet() if r["node"] == node)


def count(db: HubDatabase, table: str, where: str = "1 = 1") -> int:
    row = db._query(f"SELECT COUNT(*) FROM {table} WHERE {where}")[0]
    return int(row[0])


def write_all(db: HubDatabase, *items: Heard) -> None:
    outcome = db.write(list(items))
    assert (outcome.written, outcome.rejected, outcome.left) == (len(items), 0, [])


def health_body(excess: float = 0.0, *, alarm: bool = False, window_s: float = 10.0) -> Health:
    """Two groups' health: ``grid`` (an Active Inference group with a drift detector) and
    ``cam`` (a neural one)."""
    return Health(
        window_s=window_s,
        groups={
            "grid": GroupHealth(
                model="grid10@1",
                agent_steps=1000,
                measures={
                    "excess_surprise": MeasureSummary(mean=excess, p95=excess + 1.0, n=1000),
                    "surprise": MeasureSummary(mean=1.2 + excess, p95=2.5, n=1000),
                },
                drift=DriftState(alarm=alarm, statistic=3.0, threshold=50.0, since=None),
            ),
            "cam": GroupHealth(
                model="cam@2",
                agent_steps=40,
                measures={"confidence": MeasureSummary(mean=0.9, p95=0.99, n=40)},
            ),
        },
    )


# ---------------------------------------------------------------------------------- scenarios
def check_presence_follows_sessions_not_arrival(db: HubDatabase) -> None:
    on = NodeState(online=True)
    off = NodeState(online=False)
    write_all(db, heard("n1", on, bdseq=5, ts=100.0))
    assert online(db, "n1") is True
    write_all(db, heard("n1", off, bdseq=5, ts=99.0))  # session 5's will (built before it)
    assert online(db, "n1") is False
    write_all(db, heard("n1", on, bdseq=5, ts=100.0))  # session 5's online, replayed late
    assert online(db, "n1") is False
    write_all(db, heard("n1", on, bdseq=6, ts=200.0))
    write_all(db, heard("n1", off, bdseq=5, ts=99.0))  # a stale will of session 5
    assert online(db, "n1") is True
    write_all(db, heard("n1", off, bdseq=6, ts=199.0))
    write_all(db, heard("n1", on, bdseq=1, ts=300.0))  # state directory wiped: bdseq restarts
    assert online(db, "n1") is True
    assert next(r["bdseq"] for r in db.fleet() if r["node"] == "n1") == 1
    write_all(db, heard("n1", on, bdseq=0, ts=250.0))  # older and smaller: ignored
    assert next(r["bdseq"] for r in db.fleet() if r["node"] == "n1") == 1


def check_births_keep_the_newest_with_their_groups(db: HubDatabase) -> None:
    write_all(db, heard("n2", birth(10), bdseq=3, ts=100.0, retained=True))
    write_all(db, heard("n2", birth(12, SHA), bdseq=3, ts=150.0))  # a rebirth: same session
    write_all(db, heard("n2", birth(8), bdseq=2, ts=90.0))  # an older session's, late
    (row,) = [r for r in db.fleet() if r["node"] == "n2"]
    assert row["birth"]["groups"]["grid"] == {"agents": 12, "bundle": "b", "bundle_sha256": SHA}
    assert row["profile"] == "x86-dev"
    assert [(g["group"], g["agents"], g["bundle_sha256"]) for g in db.groups()] == [
        ("grid", 12, SHA)
    ]
    write_all(db, heard("n2", birth(4), bdseq=4, ts=80.0))  # a newer session (clock behind)
    assert [g["agents"] for g in db.groups()] == [4]


def check_resends_are_written_once(db: HubDatabase) -> None:
    tel = heard("n3", telemetry_body(5, n=1), seq=7, ts=500.0)
    ev = heard("n3", Event(kind=EventKind.OTHER, detail="x\x00y", data={"n": 1}), seq=8, ts=501.0)
    older = heard("n3", telemetry_body(4, n=0), seq=6, ts=499.0)
    write_all(db, tel, ev, tel, ev)
    write_all(db, tel, older)  # an outbox re-send after a reconnect, and a late older one
    assert count(db, "telemetry", "node = 'n3'") == 2
    assert count(db, "events", "node = 'n3'") == 1
    (row,) = [r for r in db.fleet() if r["node"] == "n3"]
    assert row["telemetry"]["ticks"] == 5  # the newest by the node's clock
    assert row["telemetry_ts"] == 500.0
    (event,) = db.events(node="n3")
    assert event["detail"] == "x\ufffdy"  # PostgreSQL's TEXT holds no NUL: both store this
    assert event["data"] == {"n": 1}


def check_commands_and_results_are_journaled(db: HubDatabase) -> None:
    nonce = bytes(range(16))
    cmd = Command(
        target="n4",
        nonce=nonce,
        expires=2000.0,
        key_id="k1",
        signature=b"s" * 64,
        name="resize_group",
        args={"group": "grid", "agents": 12, "blob": b"\x01\x02"},
    )
    other = replace(cmd, nonce=b"\xff" * 16, name="ping", args={})
    accepted = CommandResult(nonce=nonce, name="resize_group", code=ResultCode.ACCEPTED)
    done = CommandResult(nonce=nonce, name="resize_group", code=ResultCode.OK, detail="12 now")
    write_all(
        db,
        heard("n4", cmd, ts=1000.0, sender="hub"),
        heard("n4", cmd, ts=1000.0, sender="hub"),  # heard twice: journaled once
        heard("n4", other, ts=1001.0, sender="hub"),
        heard("n4", accepted, seq=1, ts=1000.5),
        heard("n4", done, seq=2, ts=1002.0),
        heard("n4", done, seq=2, ts=1002.0),
    )
    rows = {r["name"]: r for r in db.commands()}
    assert rows["resize_group"]["code"] == "ok"
    assert rows["resize_group"]["detail"] == "12 now"
    assert rows["resize_group"]["args"] == {"agents": 12, "blob": "0102", "group": "grid"}
    assert rows["resize_group"]["sender"] == "hub"
    assert rows["ping"]["code"] is None  # unanswered
    assert count(db, "results", "node = 'n4'") == 2


def check_deaths_and_last_seen(db: HubDatabase) -> None:
    write_all(db, heard("n5", birth(), ts=100.0, retained=True, received=5000.0))
    (row,) = [r for r in db.fleet() if r["node"] == "n5"]
    assert row["last_seen"] is None  # a retained message says who, not that it is there
    death = heard("n5", Death(reason=DeathReason.SHUTDOWN), ts=200.0, received=5001.0)
    write_all(db, death, death)
    (row,) = [r for r in db.fleet() if r["node"] == "n5"]
    assert (row["deaths"], row["death_reason"], row["last_seen"]) == (1, "shutdown", 5001.0)


def check_downsampling_and_bounds(db: HubDatabase) -> None:
    now = 100_000.0
    step, raw = 600.0, 3600.0
    # Three hours of one message a minute, ending now.
    rows = [
        heard("d1", telemetry_body(i, n=i), seq=i, ts=now - 3 * 3600 + 60 * i) for i in range(181)
    ]
    for i in range(0, len(rows), 50):
        write_all(db, *rows[i : i + 50])
    retention = RetentionSection(telemetry_raw_s=raw, telemetry_step_s=step, maintenance_batch=100)
    cut = downsample_cut(now, raw, step)
    raw_before = sum(1 for r in rows if r.envelope.ts < cut)
    for _ in range(5):  # a limited pass leaves work for the next one
        db.maintain(retention, now)
    history = db.telemetry("d1", since=0, limit=10_000)
    coarse = [h for h in history if h["coarse"]]
    fine = [h for h in history if not h["coarse"]]
    assert len(fine) == sum(1 for r in rows if r.envelope.ts >= cut)
    last_of_bucket: dict[int, float] = {}
    for r in rows:
        if r.envelope.ts < cut:
            bucket = int(r.envelope.ts // step)
            last_of_bucket[bucket] = max(last_of_bucket.get(bucket, 0.0), r.envelope.ts)
    assert len(last_of_bucket) == 12  # 114 raw rows: a partial first bucket, 11 of ten each
    assert sorted(h["ts"] for h in coarse) == sorted(last_of_bucket.values())  # each one's last
    assert sum(h["samples"] for h in coarse) == raw_before == 114  # every raw row counted
    # The per-node bound keeps the newest rows.
    db.maintain(retention.model_copy(update={"telemetry_max_rows_per_node": 50}), now)
    history = db.telemetry("d1", since=0, limit=10_000)
    assert len(history) == 50
    assert history[-1]["ts"] == now
    # Age: nothing older than telemetry_keep_s survives.
    db.maintain(retention.model_copy(update={"telemetry_keep_s": 3600.0}), now)
    assert min(h["ts"] for h in db.telemetry("d1", since=0)) >= now - 3600.0


def check_events_and_journal_are_bounded(db: HubDatabase) -> None:
    now = 50_000.0
    events = [
        heard("e1", Event(kind=EventKind.ALARM, severity=Severity.WARNING), seq=i, ts=now - 200 + i)
        for i in range(150)
    ]
    write_all(db, *events)
    retention = RetentionSection(events_max_rows=100)
    done = db.maintain(retention, now)
    assert done["events_over_bound"] == 50
    assert [e["seq"] for e in db.events(node="e1", limit=1000)] == list(range(50, 150))
    assert [e["seq"] for e in db.events(node="e1", limit=3, newest=True)] == [147, 148, 149]
    db.maintain(retention.model_copy(update={"events_keep_s": 100.0}), now)
    assert min(e["ts"] for e in db.events(node="e1")) >= now - 100.0


def check_health_is_stored_per_group_and_window(db: HubDatabase) -> None:
    now = 200_000.0
    write_all(db, health_birth(ts=1.0))
    # A window a minute for three hours, re-sent once (written once), then one late and older.
    rows = [
        heard("h1", health_body(0.01 * i), seq=i, ts=now - 3 * 3600 + 60 * i) for i in range(181)
    ]
    for i in range(0, len(rows), 60):
        write_all(db, *rows[i : i + 60])
    write_all(db, rows[-1], heard("h1", health_body(9.0, alarm=True), seq=7, ts=now - 5000))
    history = db.health("h1", group="grid", since=0, limit=10_000)
    assert len(history) == 182
    assert history[-1]["measures"]["excess_surprise"] == {"mean": 1.8, "p95": 2.8, "n": 1000}
    assert history[-1]["drift"] == {"alarm": False, "statistic": 3.0, "threshold": 50.0}
    assert db.health("h1", group="cam", limit=1)[0]["drift"] is None
    # The newest window per node and group: a late older message does not replace it.
    latest = {(r["node"], r["group"]): r for r in db.latest_health()}
    assert set(latest) == {("h1", "grid"), ("h1", "cam")}
    grid = latest["h1", "grid"]
    assert (grid["ts"], grid["model"], grid["agent_steps"]) == (now, "grid10@1", 1000)
    assert grid["measures"]["excess_surprise"]["mean"] == pytest.approx(1.8)
    assert grid["drift"]["alarm"] is False
    assert db.health_reported() == {
        "grid": {"excess_surprise", "surprise"},
        "cam": {"confidence"},
    }
    # The gate's samples: each window inside [since, until] (not one begun before since).
    means = db.health_means(["h1", "other"], "grid", "excess_surprise", now - 600, now)
    assert means == {"h1": [pytest.approx(0.01 * i) for i in range(171, 181)]}
    assert db.health_means(["h1"], "grid", "confidence", now - 600, now) == {}
    # Retention: downsampled per node and group, then bounded, then aged.
    retention = RetentionSection(telemetry_raw_s=3600.0, telemetry_step_s=600.0)
    db.maintain(retention, now)
    grid_rows = db.health("h1", group="grid", since=0, limit=10_000)
    assert sum(r["samples"] for r in grid_rows) == 182
    assert sum(r["coarse"] for r in grid_rows) == 12  # as telemetry: the late row joins one
    assert len(db.health("h1", group="cam", since=0, limit=10_000)) == len(grid_rows)
    db.maintain(retention.model_copy(update={"telemetry_max_rows_per_node": 20}), now)
    assert len(db.health("h1", group="grid", since=0, limit=10_000)) == 20
    assert len(db.health("h1", group="cam", since=0, limit=10_000)) == 20
    db.maintain(retention.model_copy(update={"telemetry_keep_s": 3600.0}), now + 10 * 3600)
    assert db.health("h1", since=0) == []
    assert db.latest_health() == []


def check_health_is_kept_for_the_groups_a_birth_declares(db: HubDatabase) -> None:
    """Bounds from the birth, not the message: a window of a group the node's newest birth does
    not declare is counted and dropped (1,024 new names a message change nothing), at most
    ``health_groups_per_node`` of its groups are kept (the first by name), and a new birth
    without a group takes that group's newest window with it (its history at maintenance)."""
    write_all(db, health_birth(ts=1.0))
    measures = {"excess_surprise": MeasureSummary(mean=0.1, p95=0.2, n=10)}
    churn = Health(window_s=10.0, groups={
        f"g{i:04d}": GroupHealth(model="m@1", agent_steps=10, measures=measures)
        for i in range(1024)})  # fmt: skip
    for k in range(3):
        write_all(db, heard("h1", churn, seq=1 + k, ts=10.0 + k))
    assert db.health_dropped == {"unknown_group": 3 * 1024, "over_cap": 0}
    assert count(db, "health") == 0
    assert count(db, "node_health") == 0
    db.health_groups_per_node = 1
    write_all(db, heard("h1", health_body(0.0), seq=5, ts=20.0))
    assert db.health_dropped == {"unknown_group": 3 * 1024, "over_cap": 1}
    assert [(r["node"], r["group"]) for r in db.latest_health()] == [("h1", "cam")]
    db.health_groups_per_node = 64
    write_all(db, heard("h1", health_body(0.0), seq=6, ts=30.0))
    assert {r["group"] for r in db.latest_health()} == {"cam", "grid"}
    assert count(db, "health") == 3
    only_grid = Birth(software_version="0.1.0", profile="x86-dev", budget_bytes=2**30,
                      groups={"grid": GroupInfo(agents=10)})  # fmt: skip
    write_all(db, heard("h1", only_grid, seq=7, ts=40.0))
    assert {r["group"] for r in db.latest_health()} == {"grid"}
    done = db.maintain(RetentionSection(), 100.0)
    assert done["health_undeclared"] == 2
    assert [r["group"] for r in db.health("h1", since=0)] == ["grid"]


SCENARIOS = [
    check_presence_follows_sessions_not_arrival,
    check_births_keep_the_newest_with_their_groups,
    check_resends_are_written_once,
    check_commands_and_results_are_journaled,
    check_deaths_and_last_seen,
    check_downsampling_and_bounds,
    check_events_and_journal_are_bounded,
    check_health_is_stored_per_group_and_window,
    check_health_is_kept_for_the_groups_a_birth_declares,
]


# -------------------------------------------------------------------------------------- tests
@pytest.fixture
def db(tmp_path: Path) -> Iterator[HubDatabase]:
    database = HubDatabase(SqliteEngine(tmp_path / "hub.sqlite3"))
    database.open()
    yield database
    database.close()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__[len("check_") :])
def test_scenario_on_sqlite(db: HubDatabase, scenario: Any) -> None:
    scenario(db)


def test_the_fleet_rows_are_the_cli_hubs(db: HubDatabase) -> None:
    write_all(
        db,
        heard("n1", NodeState(online=True), retained=True),
        heard("n1", birth(10, SHA), retained=True),
        heard("n1", telemetry_body(40), received=time.time()),  # heard now: not 'silent'
    )
    table = format_fleet(db.fleet())
    line = table.splitlines()[1]
    assert line.startswith("n1 ")
    assert " online " in line
    assert f"grid=10@{SHA[:8]}" in line
    assert "0.50/1.50" in line
    assert "50MiB" in line


def test_the_schema_is_versioned(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite3"
    for _ in range(2):  # a second open finds nothing to do
        db = HubDatabase(SqliteEngine(path))
        db.open()
        assert db.schema_version == LATEST
        assert count(db, "schema_migrations") == len(MIGRATIONS)
        db.close()
    with closing(sqlite3.connect(path)) as conn, conn:  # closed, and committed before
        conn.execute(
            "INSERT INTO schema_migrations VALUES (?, 'from the future', 0)", (LATEST + 1,)
        )
    db = HubDatabase(SqliteEngine(path))
    with pytest.raises(SchemaError, match=f"version {LATEST + 1} is newer"):
        db.open()
    assert not db.is_open


def test_readers_do_not_create_or_migrate(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite3"
    sqlite3.connect(path).close()
    db = HubDatabase(SqliteEngine(path, readonly=True))
    with pytest.raises(SchemaError, match="not a hub database"):
        db.open(migrate=False)


def test_an_unreachable_database_leaves_the_batch(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    db = HubDatabase(SqliteEngine(blocker / "hub.sqlite3"))  # its directory is a file
    from edge_agent_host.hub.storage.database import DatabaseUnavailableError

    with pytest.raises(DatabaseUnavailableError, match="sqlite"):
        db.open()
    batch = [heard("n1", NodeState(online=True))]
    assert db.write(batch).left == batch


def test_a_database_lost_inside_a_parts_writer_leaves_the_batch(tmp_path: Path) -> None:
    """A part's writer (the learning deltas' reads the delta's line through ``query``) that
    meets an unavailable database leaves the whole batch to be held, as the writers' own
    statements do; before, every message of the batch was dropped as refused."""
    from edge_agent_host.hub.storage.database import DatabaseUnavailableError

    db = HubDatabase(SqliteEngine(tmp_path / "hub.sqlite3"))
    db.open()

    def reads_a_lost_table(_heard: Heard) -> None:
        db.query("SELECT line FROM a_table_gone")  # OperationalError: the database's trouble

    db.add_writer("event", reads_a_lost_table)
    batch = [heard("n1", telemetry_body(1), seq=1), heard("n1", Event(kind=EventKind.OTHER))]
    outcome = db.write(batch)
    assert (outcome.written, outcome.rejected, outcome.left) == (0, 0, batch)
    assert not db.is_open
    assert "a_table_gone" in db.last_error
    with pytest.raises(DatabaseUnavailableError):
        db.query("SELECT 1")


class _Poisoned:
    """A connection that refuses one node's rows as bad data (as PostgreSQL refuses a value)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Any = ()) -> Any:
        if isinstance(params, dict) and params.get("node") == "poison":
            raise sqlite3.IntegrityError("refused")
        return self._conn.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class _PoisonEngine(SqliteEngine):
    def connect(self) -> Any:
        return _Poisoned(super().connect())


def test_a_message_the_database_refuses_is_dropped_alone(tmp_path: Path) -> None:
    db = HubDatabase(_PoisonEngine(tmp_path / "hub.sqlite3"))
    db.open()
    batch = [
        heard("n1", telemetry_body(1), seq=1),
        heard("poison", Event(kind=EventKind.OTHER), seq=1),
        heard("n1", telemetry_body(2), seq=2, ts=1001.0),
    ]
    outcome = db.write(batch)
    assert (outcome.written, outcome.rejected, outcome.left) == (2, 1, [])
    assert count(db, "telemetry") == 2
    assert db.rejected == 1
    db.close()


def test_downsample_plan() -> None:
    rows = [
        (1, "a", 0.0, 1),
        (2, "a", 5.0, 1),
        (3, "a", 12.0, 1),
        (4, "b", 1.0, 2),
        (5, "b", 2.0, 1),
    ]
    plan = plan_downsample(rows, 10.0, complete=True)
    assert plan.keep == {2: 2, 3: 1, 5: 3}
    assert sorted(plan.drop) == [1, 4]
    partial = plan_downsample(rows, 10.0, complete=False)  # b's bucket may go on: left
    assert partial.keep == {2: 2, 3: 1}
    assert partial.drop == [1]
    alone = plan_downsample(rows[:2], 10.0, complete=False)  # one bucket only: done in parts
    assert alone.keep == {2: 2}
    assert downsample_cut(7265.0, 3600.0, 300.0) == 3600.0

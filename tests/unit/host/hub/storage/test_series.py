"""Telemetry and health kept by one rule (tools/edge_agent_host/hub/storage/series.py): the same
arrivals, as a node's telemetry and as its groups' health windows, leave the same points per key,
standing for the same raw rows, through downsampling, the bound per key and the age bound."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent_host.hub.config.hub_toml import RetentionSection
from edge_agent_host.hub.storage.database import HubDatabase
from edge_agent_host.hub.storage.engines import SqliteEngine
from tests.unit.host.hub.storage.test_database import (
    health_birth,
    health_body,
    heard,
    telemetry_body,
    write_all,
)

NOW = 300_000.0


@pytest.fixture
def db(tmp_path: Path) -> Iterator[HubDatabase]:
    db = HubDatabase(SqliteEngine(tmp_path / "hub.sqlite3"))
    db.open()
    try:
        yield db
    finally:
        db.close()


def points(db: HubDatabase) -> dict[str, list[tuple[float, int, int]]]:
    """Each key's rows (ts, coarse, samples), oldest first: the node's telemetry, and each of
    its groups' health."""
    out = {"telemetry": [(r["ts"], int(r["coarse"]), r["samples"])
                         for r in db.telemetry("n1", since=0, limit=10_000)]}  # fmt: skip
    for group in ("grid", "cam"):
        out[group] = [
            (r["ts"], int(r["coarse"]), r["samples"])
            for r in db.health("n1", group=group, since=0, limit=10_000)
        ]
    return out


def test_telemetry_and_health_keep_the_same_points(db: HubDatabase) -> None:
    write_all(db, health_birth(ts=1.0, node="n1"))
    # Three hours of one message every 47 s (buckets of uneven fill), in batches of 40.
    arrivals = [NOW - 3 * 3600 + 47 * i for i in range(230)]
    for start in range(0, len(arrivals), 40):
        write_all(db, *[
            item
            for i, ts in enumerate(arrivals[start : start + 40], start)
            for item in (heard("n1", telemetry_body(i), seq=2 * i + 1, ts=ts),
                         heard("n1", health_body(0.01 * i), seq=2 * i + 2, ts=ts))
        ])  # fmt: skip
    retention = RetentionSection(
        telemetry_raw_s=3600.0, telemetry_step_s=600.0, maintenance_batch=100
    )
    done: dict[str, int] = {}
    for _ in range(8):  # limited passes: each leaves work for the next
        for key, n in db.maintain(retention, NOW).items():
            done[key] = done.get(key, 0) + n
    kept = points(db)
    assert kept["telemetry"] == kept["grid"] == kept["cam"]
    assert sum(samples for _, _, samples in kept["telemetry"]) == len(arrivals)
    assert 0 < sum(coarse for _, coarse, _ in kept["telemetry"]) < len(kept["telemetry"])
    # Per key: the health table downsamples two groups' rows, telemetry one node's.
    assert done["health_downsampled"] == 2 * done["telemetry_downsampled"] > 0
    assert done["health_points_kept"] == 2 * done["telemetry_points_kept"]

    db.maintain(retention.model_copy(update={"telemetry_max_rows_per_node": 25}), NOW)
    kept = points(db)
    assert len(kept["telemetry"]) == 25
    assert kept["telemetry"] == kept["grid"] == kept["cam"]
    assert kept["telemetry"][-1][0] == arrivals[-1]  # the newest stay

    db.maintain(retention.model_copy(update={"telemetry_keep_s": 1800.0}), NOW)
    kept = points(db)
    assert kept["telemetry"] == kept["grid"] == kept["cam"]
    assert min(ts for ts, _, _ in kept["telemetry"]) >= NOW - 1800.0


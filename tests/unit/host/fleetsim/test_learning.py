"""A simulated node's learning reports are what the hub accepts from a real node, and the
schedule names who reports when."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_agent.errors import EdgeAgentError
from edge_agent_host.fleetsim.learning import DeltaMaker, Schedule
from edge_agent_host.hub.storage.database import HubDatabase
from edge_agent_host.hub.storage.engines import SqliteEngine
from tests.unit.host.hub.learning.test_store import deploy, learning_db, line_bundle, statuses
from tests.unit.host.hub.storage.test_database import birth, heard, write_all


def test_reports_are_accepted_by_the_hub_with_their_experience(tmp_path: Path) -> None:
    path = tmp_path / "tmaze.tar"
    path.write_bytes(line_bundle()[0])
    maker = DeltaMaker(path, group="grid", agents=7, ticks=3, lr=0.5)
    db = HubDatabase(SqliteEngine(tmp_path / "hub.db"))
    db.open()
    try:
        learning_db(db)
        sha = deploy(db)
        assert (maker.model, maker.sha256) == ("tmaze@1.0.0", sha)
        write_all(db, heard("n1", birth(sha=sha), ts=1.0))
        rng = np.random.default_rng(0)
        sent = [maker.deltas(rng, next_seq=seq, max_payload_bytes=65536) for seq in (1, 2)]
        for report in sent:
            assert len(report) == 1
            (table,) = report[0].tables
            assert table.experience == 21
            assert float(np.frombuffer(table.values, "<f4").sum()) == pytest.approx(21 * 0.5)
        write_all(db, *[heard("n1", d, seq=d.seq, ts=2.0 + d.seq) for r in sent for d in r])
        assert statuses(db) == {("n1", 1): "accepted", ("n1", 2): "accepted"}
    finally:
        db.close()


def test_only_transition_tables_are_simulated(tmp_path: Path) -> None:
    with pytest.raises(EdgeAgentError, match="only transition tables"):
        DeltaMaker(tmp_path / "none.tar", group="grid", table="A1")


def test_the_schedule_names_the_nodes_due_and_follows_its_file(tmp_path: Path) -> None:
    path = tmp_path / "schedule.json"
    schedule = Schedule(path)
    assert schedule.due(0.0, 100.0) == 0  # no file yet
    path.write_text(json.dumps({"sends": [[10.0, 3], [20.0, 5]]}))
    assert schedule.due(0.0, 9.0) == 0
    assert schedule.due(9.0, 10.0) == 3
    assert schedule.due(10.0, 19.0) == 0
    assert schedule.due(0.0, 25.0) == 5
    path.write_text("{")  # being written: the last one read stands
    assert schedule.due(19.0, 20.0) == 5

"""``edge-agent-hub health`` (``tools/edge_agent_host/hub/cli/health.py``) on a SQLite hub
database: the newest window of every node's groups, one node's history, JSON lines, and a node
the hub never saw."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent_host.hub.cli import main
from edge_agent_host.hub.storage.database import HubDatabase
from edge_agent_host.hub.storage.engines import SqliteEngine
from tests.unit.host.hub.storage.test_database import health_birth, health_body, heard, write_all

NOW = 1_800_000_000.0


@pytest.fixture
def config(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    path = tmp_path / "hub.toml"
    path.write_text(f'[hub]\nstate_dir = "{state}"\n[database]\ntype = "sqlite"\n')
    db = HubDatabase(SqliteEngine(state / "hub.sqlite3"))
    db.open()
    try:
        write_all(
            db,
            health_birth(node="pi-a"),
            health_birth(node="pi-b"),
            heard("pi-a", health_body(0.0), seq=1, ts=NOW - 20),
            heard("pi-a", health_body(0.75, alarm=True), seq=2, ts=NOW - 10),
            heard("pi-b", health_body(0.125), seq=1, ts=NOW - 10),
        )
    finally:
        db.close()
    return path


def test_the_newest_window_of_every_group(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4  # two nodes, two groups each
    (a_grid,) = [line for line in lines if "pi-a" in line and " grid " in line]
    assert "grid10@1  1000 steps  drift ALARM 3/50" in a_grid
    assert "surprise 1.95/2.5  excess_surprise 0.75/1.75" in a_grid
    (b_cam,) = [line for line in lines if "pi-b" in line and " cam " in line]
    assert "drift -  confidence 0.9/0.99" in b_cam
    assert main(["health", "--config", str(config), "--group", "cam", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["node"], r["group"]) for r in rows] == [("pi-a", "cam"), ("pi-b", "cam")]
    assert rows[0]["measures"]["confidence"] == {"mean": 0.9, "p95": 0.99, "n": 40}


def test_one_nodes_history(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["health", "pi-a", "--config", str(config), "--group", "grid", "--since", "1e10"]
    assert main([*args, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["measures"]["excess_surprise"]["mean"] for r in rows] == [0.0, 0.75]
    assert [r["drift"]["alarm"] for r in rows] == [False, True]


def test_a_node_never_seen_is_one_line(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", "pi-zz", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "pi-zz" in err


def test_a_group_the_node_does_not_have_is_one_line_naming_its_groups(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--group`` with a group the node has not (a typo) said what it is in one line, exit 1,
    instead of listing nothing with exit 0; without a node, a group no node has; --force reads
    it all the same (nothing)."""
    assert main(["health", "pi-a", "--config", str(config), "--group", "gird"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "edge-agent-hub health: node 'pi-a' has no group 'gird' (its groups: cam, grid); "
        "--force to read it all the same"
    ]
    assert main(["health", "--config", str(config), "--group", "gird", "--json"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "edge-agent-hub health: no node has a group 'gird' (the fleet's groups: cam, grid); "
        "--force to read it all the same"
    ]
    assert main(["health", "pi-a", "--config", str(config), "--group", "gird", "--force"]) == 0
    assert capsys.readouterr().out == "no health reported for group gird\n"
    # A group the node has: read as before.
    assert main(["health", "pi-a", "--config", str(config), "--group", "cam"]) == 0
    assert "pi-a" in capsys.readouterr().out

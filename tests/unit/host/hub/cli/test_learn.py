"""``edge-agent-hub learn status | build | publish`` (``tools/edge_agent_host/hub/cli/learn.py``)
on a SQLite hub database: what status says (human and ``--json``), build's exit status (0 built,
1 refused by the converter's int8 gate, 2 nothing to build, 3 the line's lease held elsewhere) with
one line for each thing a user can get wrong, ``--out``, and publish: a staged rollout of the
round's bundle with ``rollout start``'s options, recorded with the round."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from edge_agent.bundle.loader import load_bundle
from edge_agent.bundle.signing import TrustedKeys
from edge_agent.fleet.protocol import NodeState
from edge_agent_host.hub.cli import main
from edge_agent_host.hub.learning.store import LearningStore
from edge_agent_host.hub.storage.database import HubDatabase
from edge_agent_host.hub.storage.engines import SqliteEngine
from edge_agent_host.keys import generate_keypair
from tests.unit.host.hub.learning.test_store import (
    LINE,
    LR,
    delta,
    deploy,
    increments,
    learning_db,
)
from tests.unit.host.hub.storage.test_database import birth, health_body, heard, write_all

NODES = ("pi-1", "pi-2", "pi-3")
GATE = ["--rollouts", "20", "--steps", "4"]  # the converter's gate, small


@pytest.fixture
def hub(tmp_path: Path) -> dict[str, Path]:
    """A hub database that holds the T-maze line's bundle and three online nodes running group
    ``grid`` with it (their health reported), each with an accepted delta; ``pi-1`` also sent
    one with a negative increment. Two configs: with the hub's key and without."""
    state = tmp_path / "state"
    state.mkdir()
    keys = generate_keypair(tmp_path / "keys", "learning")  # a bundle key: signs the rounds
    hub_key = generate_keypair(tmp_path / "hub-keys", "hub")  # the command key
    base = f'[hub]\nstate_dir = "{state}"\n[database]\ntype = "sqlite"\n'
    command = f'[rollouts]\nkey_file = "{hub_key.private_path}"\n'
    (tmp_path / "hub.toml").write_text(
        f'{base}{command}[learning]\nkey_file = "{keys.private_path}"\n'
    )
    (tmp_path / "nokey.toml").write_text(base + command)  # a hub of before: the command key
    (tmp_path / "samekey.toml").write_text(
        f'{base}{command}[learning]\nkey_file = "{hub_key.private_path}"\n'
    )
    db = HubDatabase(SqliteEngine(state / "hub.sqlite3"))
    db.open()
    try:
        learning_db(db)
        sha = deploy(db)
        now = time.time()
        bad = increments(9)
        bad["B0"].flat[0] = -LR
        for i, node in enumerate(NODES):
            write_all(
                db,
                heard(node, NodeState(online=True), retained=True, ts=now),
                heard(node, birth(sha=sha), seq=1, ts=now),
                heard(node, health_body(0.0), seq=2, ts=now),
                heard(node, delta(sha, 1, increments(i)), seq=3, ts=now),
            )
        write_all(db, heard("pi-1", delta(sha, 2, bad), seq=4, ts=now))
    finally:
        db.close()
    return {
        "config": tmp_path / "hub.toml",
        "nokey": tmp_path / "nokey.toml",
        "samekey": tmp_path / "samekey.toml",
        "db": state / "hub.sqlite3",
        "keys": keys.public_path.parent,
        "dir": tmp_path,
    }


def learn(hub: dict[str, Path], *args: str, config: str = "config") -> list[str]:
    action, *rest = args
    return ["learn", action, "--config", str(hub[config]), *rest]


def one_line(capsys: pytest.CaptureFixture[str], prefix: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(prefix), err
    return err


def test_learn_status_human_and_json(
    hub: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(learn(hub, "status", "--json")) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["line"] == LINE
    assert (row["accepted"], row["refused"], row["nodes"]) == (3, {"negative": 1}, 3)
    assert row["experience"] == 120
    assert row["waiting"] == {"deltas": 3, "experience": 120}
    assert (row["rounds"], row["last_round"]) == (0, None)
    assert row["per_node"][0] == {
        "node": "pi-1", "accepted": 1, "experience": 40, "merged": {}, "waiting": 1,
        "replaced": 0, "refused": {"negative": 1},
    }  # fmt: skip
    assert main(learn(hub, "status")) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{LINE}: 3 deltas accepted (120 agent-ticks, 3 nodes), refused: negative 1; 0 capped",
        f"  version {LINE}@1.0.0 ({row['current_sha256'][:12]}): what the nodes run and learn on",
        "  waiting for a round: 3 deltas, 120 agent-ticks",
        "  no round yet",
        "  pi-1: 1 accepted (40 agent-ticks); merged: none; 1 waiting; refused negative 1",
        "  pi-2: 1 accepted (40 agent-ticks); merged: none; 1 waiting",
        "  pi-3: 1 accepted (40 agent-ticks); merged: none; 1 waiting",
    ]
    empty = tmp_path / "empty.toml"
    empty.write_text(f'[hub]\nstate_dir = "{tmp_path}"\n[database]\ntype = "sqlite"\n')
    made = HubDatabase(SqliteEngine(tmp_path / "hub.sqlite3"))  # the schema, no delta
    made.open()
    made.close()
    assert main(["learn", "status", "--config", str(empty)]) == 0
    assert capsys.readouterr().out == "no learning deltas heard\n"


def test_learn_build_says_what_it_cannot_build_in_one_line_and_exits_2(
    hub: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(learn(hub, "build", LINE, config="nokey")) == 2
    one_line(
        capsys,
        "edge-agent-hub learn build: rounds are signed with a bundle key of their own: set "
        "[learning] key_file (make one with 'edge-agent-host keygen --out DIR --name learning' "
        "and put learning.pub in the nodes' [daemon] trusted_keys_dir;",
    )
    assert main(learn(hub, "build", LINE, config="samekey")) == 2
    err = one_line(capsys, f"{hub['samekey']}:")
    assert "learning.key_file: " in err, err
    assert "is the hub's command key ([rollouts] key_file): rounds are signed with" in err, err
    assert main(learn(hub, "build", "doors", *GATE)) == 2
    err = one_line(capsys, "edge-agent-hub learn build: model line 'doors'")
    assert "no bundle of that name" in err
    assert main(learn(hub, "build", LINE, "--forgetting", "2")) == 2
    one_line(capsys, "edge-agent-hub learn build: forgetting 2.0 must be in [0, 1]")
    nowhere = hub["dir"] / "no-such-dir" / "round.tar"
    assert main(learn(hub, "build", LINE, "--out", str(nowhere))) == 2
    err = one_line(capsys, f"edge-agent-hub learn build: {nowhere}: cannot write it: ")
    assert "no such directory" in err


def test_learn_build_refused_by_the_gate_then_built_then_nothing_left(
    hub: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # A gate no int8 model meets: the round is stored as refused and merges nothing.
    assert main(learn(hub, "build", LINE, *GATE, "--min-action-agreement", "1.01")) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"round 1: REFUSED by the int8 gate: {LINE}@1.0.0+learn1 from ")
    assert any("agreement" in line for line in out[1:]), out
    out_file = hub["dir"] / "round.tar"
    assert main(learn(hub, "build", LINE, *GATE, "--out", str(out_file), "--json")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["state"], summary["version"], summary["deltas"]) == (
        "built", "1.0.0+learn2", 3,
    )  # fmt: skip
    assert sorted(summary["nodes"]) == list(NODES)
    bundle = load_bundle(out_file, trusted_keys=TrustedKeys.from_dir(hub["keys"]))
    assert bundle.sha256 == summary["bundle_sha256"]
    assert main(learn(hub, "build", LINE, *GATE)) == 2
    one_line(capsys, f"edge-agent-hub learn build: model line '{LINE}': no accepted experience")
    assert main(learn(hub, "status")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "  waiting for a round: 0 deltas, 0 agent-ticks"
    assert lines[3].endswith(f": built {LINE}@1.0.0+learn2 (3 nodes, 120 agent-ticks)")
    # per node: what round 2 merged (round 1 was refused by the gate and merged nothing)
    assert lines[4] == (
        "  pi-1: 1 accepted (40 agent-ticks); merged: round 2 1; 0 waiting; refused negative 1"
    )


def test_learn_build_waits_for_whoever_holds_the_lines_lease_and_exits_3(
    hub: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A build by hand takes the line's lease: while a replica's policy holds it (a round under
    way), one line and exit 3, nothing built; once given up, the build holds it and gives it up."""
    db = HubDatabase(SqliteEngine(hub["db"]))
    db.open()
    try:
        store = LearningStore(db)
        assert store.take_lease(LINE, "hub-a", now=time.time(), lease_s=600.0)
        assert main(learn(hub, "build", LINE, *GATE)) == 3
        err = one_line(capsys, f"edge-agent-hub learn build: model line '{LINE}': 'hub-a' holds")
        assert err.endswith("; try again after it\n")
        assert store.rounds(LINE) == 0
        store.release_lease(LINE, "hub-a")
        assert main(learn(hub, "build", LINE, *GATE)) == 0
        assert (store.rounds(LINE), store.lease(LINE)) == (1, None)
    finally:
        db.close()


def test_learn_publish_starts_a_gated_rollout_of_the_rounds_bundle(
    hub: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(learn(hub, "publish", LINE, "--group", "grid")) == 2
    one_line(capsys, f"edge-agent-hub learn publish: model line '{LINE}' has no built round")
    assert main(learn(hub, "build", LINE, *GATE, "--json")) == 0
    built = json.loads(capsys.readouterr().out)
    bad = "surprize:max_increase=0.1"
    assert main(learn(hub, "publish", LINE, "--group", "grid", "--criterion", bad)) == 2
    one_line(capsys, f"edge-agent-hub learn publish: --criterion '{bad}'")
    criterion = "excess_surprise:max_increase=0.2"
    args = ["--group", "grid", "--waves", "1,100%", "--soak", "5", "--criterion", criterion]
    assert main(learn(hub, "publish", LINE, *args, "--json")) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["bundle_sha256"] == built["bundle_sha256"]
    assert (plan["nodes"], plan["waves"]) == (list(NODES), [1, 3])
    assert plan["criteria"] == [f"{criterion}:min_samples=50:alpha=0.05"]
    assert main(["rollout", "status", "--config", str(hub["config"]), plan["id"], "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["bundle"] == f"{LINE} 1.0.0+learn1"
    with closing(sqlite3.connect(hub["db"])) as conn:
        (rollout,) = conn.execute("SELECT rollout FROM learning_rounds").fetchone()
    assert rollout == plan["id"]
    assert main(learn(hub, "status", "--json")) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["current_sha256"] == built["bundle_sha256"]  # the line's newest version

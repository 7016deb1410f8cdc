"""``edge-agent-hub rollout ...`` (``tools/edge_agent_host/hub/cli/rollout.py``): the
``--follow`` line for each move of a rollout and the exit status of how it ended; health
criteria at ``rollout start`` (taken, said, or refused in one line before anything is stored).
The whole command against the real hub service: ``tests/integration/hub/test_rollouts.py``."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import msgspec
import pytest

from edge_agent.fleet.protocol import NodeState
from edge_agent_host.fleet.transfer import DeployPlan
from edge_agent_host.hub.cli import main
from edge_agent_host.hub.cli.rollout import FOLLOW_EXIT, follow_line
from edge_agent_host.hub.rollouts.plan import RolloutState
from edge_agent_host.hub.storage.database import HubDatabase
from edge_agent_host.hub.storage.engines import SqliteEngine
from edge_agent_host.keys import generate_keypair
from tests.unit.fleet.test_deploy import bundle_tar
from tests.unit.host.hub.storage.test_database import birth, health_body, heard, write_all


def summary(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "r-1", "state": "running", "wave": 1, "waves": 2, "phase": "deploying",
        "request": None, "detail": "", "nodes_total": 3, "nodes_done": 0, "nodes_failed": 0,
        "wave_table": [
            {"wave": 1, "cumulative": 1, "nodes": 1, "states": {"pending": 1}},
            {"wave": 2, "cumulative": 3, "nodes": 2, "states": {"pending": 2}},
        ],
    }  # fmt: skip
    return {**base, **changes}


def test_a_running_wave_with_its_nodes_by_state() -> None:
    assert follow_line(summary()) == "r-1 wave 1/2 deploying: 1 node(s): pending 1"
    table = summary()["wave_table"]
    table[1] = {**table[1], "states": {"ok": 1, "pending": 1}}
    line = follow_line(summary(wave=2, phase="soaking", wave_table=table, request="pause"))
    assert line == "r-1 wave 2/2 soaking: 2 node(s): ok 1, pending 1 (pause requested)"


def test_a_pause_a_halt_and_a_rollout_nobody_carries() -> None:
    assert follow_line(summary(state="paused", phase="soaking")) == "r-1 paused at wave 1/2 soaking"
    assert follow_line(summary(state="halting", detail="wave 1: 1 failed")) == (
        "r-1 halting at wave 1/2 deploying; wave 1: 1 failed"
    )
    assert follow_line(summary(state="pending", phase="")) == (
        "r-1 pending: the replica with [rollouts] key_file has not taken it yet"
    )


@pytest.mark.parametrize(
    ("state", "status"), [("done", 0), ("halted", 4), ("rolled_back", 5)]
)
def test_the_end_and_its_exit_status(state: str, status: int) -> None:
    line = follow_line(summary(state=state, nodes_done=1, nodes_failed=1, detail="why"))
    assert line == f"r-1 {state}: 1 of 3 node(s) ok, 1 failed; why"
    assert FOLLOW_EXIT[state] == status


def test_every_end_has_a_status_and_nothing_else_does() -> None:
    ends = {RolloutState.DONE, RolloutState.HALTED, RolloutState.ROLLED_BACK}
    assert set(FOLLOW_EXIT) == {s.value for s in ends}
    assert sorted(FOLLOW_EXIT.values()) == [0, 4, 5]  # 1, 2 and 3 are edge-agent-hub's own


# ------------------------------------------------------------------------- health criteria
@pytest.fixture(scope="module")
def signed_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("bundle")
    return bundle_tar(tmp, generate_keypair(tmp / "keys", "ci").private_path)


@pytest.fixture
def hub_with_health(tmp_path: Path, signed_bundle: Path) -> dict[str, Path]:
    """A SQLite hub database that knows three online nodes running group ``grid``, whose
    newest health windows report the excess surprise and the surprise; a signed bundle."""
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "hub.toml"
    config.write_text(f'[hub]\nstate_dir = "{state}"\n[database]\ntype = "sqlite"\n')
    db = HubDatabase(SqliteEngine(state / "hub.sqlite3"))
    db.open()
    now = time.time()
    try:
        for i in range(3):
            node = f"pi-{i}"
            write_all(
                db,
                heard(node, NodeState(online=True), retained=True, ts=now),
                heard(node, birth(10), seq=1, ts=now),
                heard(node, health_body(0.0), seq=2, ts=now),
            )
    finally:
        db.close()
    return {"config": config, "db": state / "hub.sqlite3", "bundle": signed_bundle}


def start(hub: dict[str, Path], *args: str) -> list[str]:
    return ["rollout", "start", "--config", str(hub["config"]), str(hub["bundle"]),
            "--group", "grid", *args]  # fmt: skip


def rollouts_stored(path: Path) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM rollouts").fetchone()[0])


@pytest.mark.parametrize(
    ("criterion", "message"),
    [
        ("surprize:max_increase=0.1", "unknown health measure 'surprize'"),
        ("surprise:max_increase=-0.1", "max_increase=-0.1 must be >= 0"),
        ("score:max_increase=0.1", "score is better higher"),
        ("surprise:max_increase", "is not KEY=VALUE"),
        ("confidence:max_decrease=0.1", "group 'grid' does not report confidence"),
        ("surprise:max_increase=0.1:group=doors", "no node has reported health for group 'doors'"),
        ("shadow:surprise:max_increase=0.1", "a shadow pairs excess_surprise, not 'surprise'"),
        ("shadow:excess_surprise:max_increase=-1", "max_increase=-1 must be >= 0"),
        ("shadow:excess_surprise:max_decrease=0.1", "use max_increase=D"),
        ("shadow:excess_surprise:min_pairs=30", "give max_increase=D"),
        ("shadow:excess_surprise:max_increase=0.1:min_pairs=2", "min_pairs: Input should be"),
        ("shadow:excess_surprise:max_increase=0.1", "give it a time with --shadow-s S"),
    ],
)
def test_rollout_start_refuses_a_bad_criterion_in_one_line_before_anything_is_stored(
    hub_with_health: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    criterion: str,
    message: str,
) -> None:
    assert main(start(hub_with_health, "--criterion", criterion)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"edge-agent-hub rollout start: --criterion '{criterion}")
    assert message in err
    assert rollouts_stored(hub_with_health["db"]) == 0


def test_rollout_start_takes_health_criteria_and_says_them(
    hub_with_health: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--criterion", "excess_surprise:max_increase=0.2", "--criterion",
            "surprise:max_increase=0.5:min_samples=20:dry_run"]  # fmt: skip
    assert main(start(hub_with_health, *args, "--dry-run")) == 0
    out = capsys.readouterr().out
    assert "  criterion excess_surprise:max_increase=0.2:min_samples=50:alpha=0.05\n" in out
    assert "  criterion surprise:max_increase=0.5:min_samples=20:alpha=0.05:dry_run" in out
    assert rollouts_stored(hub_with_health["db"]) == 0
    assert main(start(hub_with_health, *args, "--json")) == 0
    stored = json.loads(capsys.readouterr().out)
    assert main(["rollout", "status", "--config", str(hub_with_health["config"]), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["id"] == stored["id"]
    assert [c["measure"] for c in status["criteria"]["health"]] == ["excess_surprise", "surprise"]
    assert status["verdicts"] == []
    assert main(["rollout", "status", "--config", str(hub_with_health["config"])]) == 0
    text = capsys.readouterr().out
    assert "  health criteria (each wave against the untouched nodes):\n" in text
    assert "    surprise:max_increase=0.5:min_samples=20:alpha=0.05:dry_run" in text


def test_rollout_start_takes_a_shadow_criterion_and_its_time(
    hub_with_health: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--shadow-s", "30", "--criterion", "shadow:excess_surprise:max_increase=0.1"]
    assert main(start(hub_with_health, *args, "--dry-run")) == 0
    out = capsys.readouterr().out
    assert "  the first wave runs it as a shadow for 30 s\n" in out
    assert "  criterion shadow:excess_surprise:max_increase=0.1:min_pairs=20:alpha=0.05" in out
    assert main(start(hub_with_health, *args, "--json")) == 0
    capsys.readouterr()
    assert main(["rollout", "status", "--config", str(hub_with_health["config"]), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["shadow_s"] == 30.0
    assert [c["threshold"] for c in status["criteria"]["shadow"]] == [0.1]
    assert main(["rollout", "status", "--config", str(hub_with_health["config"])]) == 0
    text = capsys.readouterr().out
    assert "  shadow criteria (the first wave's shadow of 30 s):\n" in text
    assert "    shadow:excess_surprise:max_increase=0.1:min_pairs=20:alpha=0.05\n" in text


def test_rollout_start_refuses_a_bundle_the_nodes_say_they_do_not_trust(
    tmp_path: Path, signed_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nodes whose births list the bundle keys they trust, without the one that signed the
    bundle, would refuse it at their canary (``verify: bundle signed by untrusted key``): one
    line that names them, the key and the directory, and nothing is stored. A node that does
    not say (of an earlier version) is not held against the rollout."""
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "hub.toml"
    config.write_text(f'[hub]\nstate_dir = "{state}"\n[database]\ntype = "sqlite"\n')
    signer = DeployPlan.from_bundle(signed_bundle).key_id
    db = HubDatabase(SqliteEngine(state / "hub.sqlite3"))
    db.open()
    now = time.time()
    trusts = {"pi-0": ["0123456789abcdef"], "pi-1": None, "pi-2": [signer]}
    try:
        for node, keys in trusts.items():
            said = msgspec.structs.replace(birth(10), bundle_keys=keys)
            write_all(db, heard(node, NodeState(online=True), retained=True, ts=now),
                      heard(node, said, seq=1, ts=now))  # fmt: skip
    finally:
        db.close()
    hub = {"config": config, "bundle": signed_bundle}
    assert main(start(hub)) == 1
    err = capsys.readouterr().err
    assert err == (
        f"edge-agent-hub rollout: 1 node(s) (pi-0) do not trust bundle key {signer}, "
        f"which signed {DeployPlan.from_bundle(signed_bundle).name} "
        f"{DeployPlan.from_bundle(signed_bundle).version}: put its .pub in their [daemon] "
        f"trusted_keys_dir (their births say they trust 0123456789abcdef; key {signer})\n"
    )
    assert rollouts_stored(state / "hub.sqlite3") == 0
    assert main(start(hub, "--node", "pi-[12]", "--json")) == 0  # pi-1 does not say: taken
    assert json.loads(capsys.readouterr().out)["nodes"] == ["pi-1", "pi-2"]


def test_every_timeout_of_rollout_start_says_its_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``rollout start --help`` gives each time's default, as docs/hub.md does."""
    with pytest.raises(SystemExit, match="0"):
        main(["rollout", "start", "--help"])
    text = " ".join(capsys.readouterr().out.split("\noptions:", 1)[1].split())
    for option, default in (("--deploy-timeout", "600"), ("--soak", "60"), ("--baseline", "300")):
        said = text[text.index(f"{option} ") :].split(" --", 1)[0]
        assert f"default {default})" in said, said

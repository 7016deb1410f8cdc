"""Staged rollouts, end to end: the hub service (edge-agent-hub run, SQLite) carries rollouts that
`edge-agent-hub rollout ...` stores, to real daemons over a loopback mosquitto."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.bundle.loader import load_bundle
from edge_agent.bundle.signing import TrustedKeys
from edge_agent_host.hub.rollouts.store import Rollout, RolloutStore
from edge_agent_host.keys import generate_keypair
from tests.integration.fleet.test_fleet_daemon import Node, wait_until
from tests.integration.hub.test_hubd import Hub, sqlite_table
from tests.support.broker import MosquittoBroker
from tests.support.doc_blocks import doc_block
from tests.support.readme_venv import ReadmeVenv
from tests.unit.fleet.test_deploy import bundle_tar

pytestmark = pytest.mark.integration

TMAZE_GROUP = """
[[groups]]
name = "grid"
model = { type = "builtin", name = "tmaze" }
count = 10
source = { type = "sim" }
sink = { type = "sim" }
"""


@pytest.fixture
def fleet(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[dict[str, Any]]:
    """Four daemons (pi-a..pi-c on the grid world, pi-d's group 'grid' on the T-maze: a grid10
    bundle fails its health check there) and a hub service that carries rollouts."""
    trusted = tmp_path / "trusted"
    hub_pair = generate_keypair(trusted, "hub")
    ci = generate_keypair(trusted, "ci").private_path
    nodes = [
        Node(tmp_path, mosquitto, name, keys_dir=trusted, tick_hz=10, telemetry_s=0.3)
        for name in ("pi-a", "pi-b", "pi-c")
    ]
    nodes.append(
        Node(tmp_path, mosquitto, "pi-d", keys_dir=trusted, tick_hz=10, groups=TMAZE_GROUP)
    )
    hub = Hub(
        tmp_path,
        "hub-1",
        mosquitto,
        sqlite_table(),
        extra_hub="",
    )
    hub.config.write_text(
        hub.config.read_text()
        + f'\n[rollouts]\nkey_file = "{hub_pair.private_path}"\npoll_interval_s = 0.2\n'
    )
    try:
        for node in nodes:
            node.start(wait_ready=False)
        for node in nodes:
            assert node.notify is not None
            node.notify.wait_for("READY=1", 90)
        hub.start()
        yield {"nodes": {n.name: n for n in nodes}, "hub": hub, "ci": ci, "trusted": trusted}
    finally:
        hub.kill()
        for node in nodes:
            node.close()


def rollout(hub: Hub, action: str, *rest: str) -> Any:
    """``edge-agent-hub rollout ACTION --config CFG REST...``: its JSON (``--json``) or text."""
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent_host.hub", "rollout", action, "--config",
         str(hub.config), *rest],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=hub.env(),
    )  # fmt: skip
    assert done.returncode == 0, f"rollout {action} {rest}: {done.stderr}{done.stdout}"
    return json.loads(done.stdout) if "--json" in rest else done.stdout


def stored(hub: Hub, rollout_id: str) -> Rollout:
    """The rollout as the service's database holds it (what ``rollout status`` reads), without
    a process per look."""
    db = hub.database()
    try:
        return RolloutStore(db).get(rollout_id)
    finally:
        db.close()


def wait_rollout(hub: Hub, rollout_id: str, states: set[str], what: str) -> dict[str, Any]:
    """``rollout status --json`` once the rollout's state is one of ``states`` (watched in the
    service's database until then: ``rollout status`` is asked when it has moved there)."""
    last: dict[str, Any] = {}

    def reached() -> bool:
        nonlocal last
        if stored(hub, rollout_id).state not in states:
            return False
        last = rollout(hub, "status", rollout_id, "--json")
        return last["state"] in states

    try:
        wait_until(reached, what, timeout=180)
    except BaseException:
        print(
            json.dumps(last or stored(hub, rollout_id).summary(), indent=1, default=str)[:4000],
            hub.log()[-4000:],
        )
        raise
    return last


def sha_of(tar: Path, trusted: Path) -> str:
    return load_bundle(tar, trusted_keys=TrustedKeys.from_dir(trusted)).sha256


def runs(node: Node, sha: str | None) -> bool:
    try:
        status = json.loads((node.state / "status.json").read_text())
    except (FileNotFoundError, ValueError):
        return False
    grid = next(g for g in status["groups"] if g["name"] == "grid")
    return bool(grid["bundle_sha256"] == sha)


def test_waves_soak_pause_resume_and_a_hub_restart(fleet: dict[str, Any], tmp_path: Path) -> None:
    hub, nodes, trusted = fleet["hub"], fleet["nodes"], fleet["trusted"]
    good = bundle_tar(tmp_path, fleet["ci"], policy_len=1)
    sha = sha_of(good, trusted)
    wait_until(
        lambda: len([r for r in rollout_fleet(hub) if r["online"]]) == 4, "four nodes online"
    )
    plan = rollout(hub, "start", str(good), "--group", "grid", "--node", "pi-[abc]",
                   "--waves", "1,100%", "--soak", "30", "--watch-ticks", "5", "--json")  # fmt: skip
    assert plan["nodes"] == ["pi-a", "pi-b", "pi-c"]
    assert plan["waves"] == [1, 3]
    rid = plan["id"]
    # The canary soaks: pause there at once (the soak is 30 s: room for a loaded machine to
    # get the pause in before it ends), restart the hub, resume.
    soaking = wait_rollout(hub, rid, {"running"}, "the canary wave")
    wait_until(lambda: stored(hub, rid).phase == "soaking", "the canary's soak")
    rollout(hub, "pause", rid)
    wait_rollout(hub, rid, {"paused"}, "the pause")
    # The hub heard the canary's result before the canary's next status file says so.
    wait_until(lambda: runs(nodes["pi-a"], sha), "the canary on the new bundle")
    assert not runs(nodes["pi-b"], sha)  # nothing beyond the canary: paused in its soak
    del soaking
    assert hub.stop() == 0
    assert hub.notify is not None
    hub.notify.close()
    hub.notify.path.unlink(missing_ok=True)
    hub.start()
    paused = rollout(hub, "status", rid, "--json")
    assert paused["state"] == "paused"
    assert paused["nodes"]["pi-b"]["state"] == "pending"
    rollout(hub, "resume", rid)
    done = wait_rollout(hub, rid, {"done", "halted", "rolled_back"}, "the end of the rollout")
    assert done["state"] == "done", done
    assert {n: r["state"] for n, r in done["nodes"].items()} == dict.fromkeys(
        ["pi-a", "pi-b", "pi-c"], "ok"
    )
    for name in ("pi-a", "pi-b", "pi-c"):
        wait_until(lambda n=name: runs(nodes[n], sha), f"{name} on the new bundle")
    assert runs(nodes["pi-d"], None)  # not selected
    text = rollout(hub, "status", rid)
    assert f"rollout {rid}: done" in text
    assert "wave 2: 2 node(s)" in text


def test_a_failing_wave_halts_and_the_waves_done_are_rolled_back(
    fleet: dict[str, Any], tmp_path: Path
) -> None:
    hub, nodes, trusted = fleet["hub"], fleet["nodes"], fleet["trusted"]
    old = bundle_tar(tmp_path, fleet["ci"], policy_len=1)
    new = bundle_tar(tmp_path, fleet["ci"], policy_len=2)
    old_sha, new_sha = sha_of(old, trusted), sha_of(new, trusted)
    wait_until(
        lambda: len([r for r in rollout_fleet(hub) if r["online"]]) == 4, "four nodes online"
    )
    # pi-d's group runs a T-maze: the grid10 bundle fails its health check there (wave 2).
    plan = rollout(hub, "start", str(new), "--group", "grid", "--all", "--waves", "2,100%",
                   "--soak", "1", "--watch-ticks", "5", "--rollback-bundle", str(old),
                   "--json")  # fmt: skip
    assert plan["nodes"] == ["pi-a", "pi-b", "pi-c", "pi-d"]
    # Followed to its end: a line per move from where it is when --follow starts (on a busy
    # machine that can be wave 2 already: wave 1's passage shows in the status below), exit 5
    # for a rollout rolled back.
    followed = hub_cli(hub, "rollout", "status", plan["id"], "--follow")
    lines = followed.stdout.splitlines()
    assert followed.returncode == 5, followed
    assert any(line.startswith(f"{plan['id']} wave 2/2 ") for line in lines), lines
    assert lines[-1].startswith(f"{plan['id']} rolled_back: 0 of 4 node(s) ok, 1 failed; "
                                "wave 2: 1 failed (50.0 % > 0 %)"), lines  # fmt: skip
    end = rollout(hub, "status", plan["id"], "--json")
    assert end["state"] == "rolled_back", end
    assert end["detail"].startswith("wave 2: 1 failed (50.0 % > 0 %)"), end["detail"]
    states = {n: r["state"] for n, r in end["nodes"].items()}
    assert states == {
        "pi-a": "reverted",
        "pi-b": "reverted",
        "pi-c": "reverted",
        "pi-d": "failed",
    }, end["nodes"]
    assert end["nodes"]["pi-d"]["detail"].startswith("failed: health"), end["nodes"]["pi-d"]
    text = rollout(hub, "status", plan["id"])  # what docs/hub.md shows
    print(text)
    assert f"rollout {plan['id']}: rolled_back" in text
    assert "wave 1: 2 node(s) (up to 2): reverted 2" in text
    assert "wave 2: 2 node(s) (up to 4): failed 1, reverted 1" in text
    for name in ("pi-a", "pi-b", "pi-c"):
        wait_until(lambda n=name: runs(nodes[n], old_sha), f"{name} rolled back")
    assert runs(nodes["pi-d"], None)
    assert not any(runs(n, new_sha) for n in nodes.values())
    # A canary that fails: nothing is deployed beyond the first wave, nothing to roll back.
    broken = bundle_tar(tmp_path, fleet["ci"], world="tmaze", policy_len=1)
    plan = rollout(hub, "start", str(broken), "--group", "grid", "--node", "pi-[abc]",
                   "--waves", "1,100%", "--soak", "1", "--rollback-bundle", str(old),
                   "--json")  # fmt: skip
    end = wait_rollout(hub, plan["id"], {"done", "halted", "rolled_back"}, "the canary's halt")
    assert end["state"] == "halted", end
    assert end["nodes"]["pi-a"]["state"] == "failed"
    assert end["nodes"]["pi-b"]["state"] == end["nodes"]["pi-c"]["state"] == "pending"
    for name in ("pi-a", "pi-b", "pi-c"):
        assert runs(nodes[name], old_sha)


def test_rollout_start_refuses_what_it_cannot_do(fleet: dict[str, Any], tmp_path: Path) -> None:
    hub = fleet["hub"]
    wait_until(lambda: len(rollout_fleet(hub)) == 4, "four nodes known")
    good = bundle_tar(tmp_path, fleet["ci"], policy_len=1)
    dry = rollout(hub, "start", str(good), "--group", "grid", "--exponential", "2",
                  "--dry-run", "--json")  # fmt: skip
    assert dry["waves"] == [1, 3, 4]
    assert "id" not in dry
    for args, message in [
        (("--group", "nope"), "no online node runs group 'nope'"),
        (("--group", "grid", "--waves", "0"), "wave '0'"),
        (("--group", "grid", "--label", "ring"), "--label 'ring': KEY=VALUE"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "edge_agent_host.hub", "rollout", "start", "--config",
             str(hub.config), str(good), *args],
            capture_output=True, text=True, timeout=60, check=False, env=hub.env(),
        )  # fmt: skip
        assert done.returncode == 1, done
        assert message in done.stderr, done.stderr


def hub_cli(hub: Hub, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``edge-agent-hub ARGS --config CFG`` as the operator runs it: the installed command."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "edge-agent-hub"), *args, "--config", str(hub.config)],
        capture_output=True, text=True, timeout=600, check=False, cwd=cwd,
    )  # fmt: skip


def shell(script: str, cwd: Path, venv: ReadmeVenv) -> subprocess.CompletedProcess[str]:
    """A docs block as written, in ``bash`` (without ``-e``: its status is its last command's),
    in the venv docs/hub.md's commands run in (the README's)."""
    env = venv.env()
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=900,
        check=False,
    )  # fmt: skip


DOORS_GROUP = TMAZE_GROUP.replace('name = "grid"', 'name = "doors"').replace("tmaze", "grid10")


@pytest.fixture
def doors(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[dict[str, Any]]:
    """Two daemons whose group ``doors`` runs grid10, and a hub service that carries rollouts:
    docs/hub.md's names."""
    trusted = tmp_path / "trusted"
    generate_keypair(trusted, "hub")
    ci = generate_keypair(trusted, "ci").private_path
    nodes = [
        Node(tmp_path, mosquitto, name, keys_dir=trusted, tick_hz=10, telemetry_s=0.3,
             groups=DOORS_GROUP)
        for name in ("pi-0417", "pi-0418")
    ]  # fmt: skip
    hub = Hub(tmp_path, "hub-1", mosquitto, sqlite_table())
    hub.config.write_text(
        hub.config.read_text()
        + f'\n[rollouts]\nkey_file = "{trusted / "hub.key"}"\npoll_interval_s = 0.2\n'
    )
    try:
        for node in nodes:
            node.start(wait_ready=False)
        for node in nodes:
            assert node.notify is not None
            node.notify.wait_for("READY=1", 90)
        hub.start()
        yield {"nodes": {n.name: n for n in nodes}, "hub": hub, "ci": ci}
    finally:
        hub.kill()
        for node in nodes:
            node.close()


@pytest.mark.timeout(1800)
def test_a_rollout_is_followed_to_its_end_and_its_exit_status_says_how_it_ended(
    doors: dict[str, Any], tmp_path: Path, readme_venv: ReadmeVenv
) -> None:
    """docs/hub.md's follow block as written, in the venv the page names (the README's:
    :mod:`tests.support.readme_venv`), in a directory holding its hub.toml and door-v8.tar: to
    the end (exit 0), and with a door-v8.tar that fails its health check (halted at the canary,
    exit 4); and a rollout started without --follow, followed by the command its start
    printed."""
    hub, nodes = doors["hub"], doors["nodes"]
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(hub.config, work / "hub.toml")
    wait_until(
        lambda: len([r for r in rollout_fleet(hub) if r["online"]]) == 2, "two nodes online"
    )
    block = doc_block("docs/hub.md", 4)

    # Started, then followed by the command 'start' printed.
    v7 = bundle_tar(tmp_path, doors["ci"], policy_len=1)
    started = hub_cli(hub, "rollout", "start", str(v7), "--group", "doors", "--all", "--soak", "1")
    assert started.returncode == 0, started
    rid = started.stdout.split()[1]
    follow = started.stdout.splitlines()[-1]
    assert follow == (
        f"follow it: edge-agent-hub rollout status --config {hub.config} {rid} --follow"
    ), started.stdout
    followed = shell(follow.removeprefix("follow it: "), work, readme_venv)
    assert followed.returncode == 0, followed
    done_line = f"{rid} done: 2 of 2 node(s) ok, 0 failed; every wave deployed"
    assert followed.stdout.splitlines()[-1] == done_line, followed.stdout

    # The block as written: to the end.
    shutil.copy(bundle_tar(tmp_path, doors["ci"], policy_len=2), work / "door-v8.tar")
    v8 = sha_of(work / "door-v8.tar", tmp_path / "trusted")
    done = shell(block, work, readme_venv)
    print(done.stdout)
    assert done.returncode == 0, done
    lines = done.stdout.splitlines()
    rid = lines[0].removeprefix("rollout ")
    assert lines[1] == "2 node(s) of group doors in 2 wave(s) of 1, 1", lines
    moves = [line.split(":")[0] for line in lines[2:-2]]
    for wave in ("wave 1/2 deploying", "wave 1/2 soaking", "wave 2/2 soaking"):
        assert f"{rid} {wave}" in moves, lines
    assert lines[-2] == lines[-1] == f"{rid} done: 2 of 2 node(s) ok, 0 failed; every wave deployed"
    for node in nodes.values():
        wait_until(lambda n=node: runs_doors(n, v8), f"{node.name} on door-v8")

    # The block again, with a door-v8.tar whose model fails the canary's health check.
    (work / "door-v8.tar").unlink()
    shutil.copy(bundle_tar(tmp_path, doors["ci"], world="tmaze", policy_len=1),
                work / "door-v8.tar")  # fmt: skip
    halted = shell(block, work, readme_venv)
    assert halted.returncode == 4, halted
    lines = halted.stdout.splitlines()
    rid = lines[0].removeprefix("rollout ")
    end = f"{rid} halted: 0 of 2 node(s) ok, 1 failed; wave 1: 1 failed"
    assert lines[-2].startswith(end), lines
    assert lines[-1] == lines[-2], lines  # status --follow: the same end, at once
    for node in nodes.values():
        assert runs_doors(node, v8)


def runs_doors(node: Node, sha: str) -> bool:
    try:
        status = json.loads((node.state / "status.json").read_text())
    except (FileNotFoundError, ValueError):
        return False
    group = next(g for g in status["groups"] if g["name"] == "doors")
    return bool(group["bundle_sha256"] == sha)


def rollout_fleet(hub: Hub) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent_host.hub", "fleet", "--config", str(hub.config),
         "--json"],
        capture_output=True, text=True, timeout=60, check=False, env=hub.env(),
    )  # fmt: skip
    if done.returncode != 0:
        return []
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows

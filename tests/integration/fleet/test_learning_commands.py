"""The learning commands on the secured fleet, as docs/learning.md tells the operator to send them.

Real parts only: ``edge-agent-host broker init`` and mosquitto on its config (security.md block
0), the hub's signing key and ``H``/``K`` as fleet.md block 0 defines them, two daemons configured
from their generated snippets, each with a group ``maze`` that learns (``[groups.learning]``) and
a group ``doors`` that does not. learning.md block 4 runs as written; then the answers' data
show what each command did to the counts (frozen counts do not move while the daemon ticks, a
reset puts them back to their prior), a freeze survives a restart (the snapshot carries it), a
group that does not learn is refused with its reason, and commands signed by an unknown key,
unsigned or with a broken signature are refused and change nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from edge_agent.fleet.outcomes import ResultCode
from edge_agent_host.fleetctl.client import FleetClient
from edge_agent_host.keys import load_signing_key
from tests.integration.docs.test_operator_journey import (
    FLEET,
    NODES,
    Operator,
    start_broker,
    started,
)
from tests.integration.fleet.test_fleet_daemon import Node, wait_until
from tests.support.broker import MosquittoBroker
from tests.support.doc_blocks import doc_block
from tests.support.readme_venv import ReadmeVenv

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

__all__ = ["started"]  # the fixture, imported for the tests here

WAIT_S = 120.0

GROUPS = """
[[groups]]
name = "maze"
model = { type = "builtin", name = "tmaze-reversal" }
count = 16
source = { type = "sim" }
sink = { type = "sim" }

[groups.learning]
A = [1]
lr_pA = 0.5
prior_scale = 2.0
refresh_every = 4

[[groups]]
name = "doors"
model = { type = "builtin", name = "grid10" }
count = 4
source = { type = "sim" }
sink = { type = "sim" }
"""


def learning_daemon(op: Operator, broker: MosquittoBroker, name: str, hub_keys: Path) -> Node:
    """A daemon whose ``[mqtt]`` is its generated ``mqtt.toml``, trusting the hub's key."""
    node = Node(op.tmp / "nodes", broker, name)
    snippet = (op.dir / "clients" / name / "mqtt.toml").read_text()
    node.config.write_text(
        f"""
[daemon]
profile = "x86-dev"
state_dir = "{node.state}"
status_file = "{node.state / "status.json"}"
tick_hz = 20
log_level = "info"
{GROUPS}
{snippet}hub_keys_dir = "{hub_keys}"
keepalive_s = 5
telemetry_interval_s = 0.5
reconnect_initial_s = 0.05
reconnect_max_s = 0.5
"""
    )
    return node


def shell(op: Operator, script: str) -> subprocess.CompletedProcess[str]:
    """``script`` in the operator's shell (after the docs' names), whatever its exit status."""
    return subprocess.run(
        ["bash", "-e", "-c", f"{op.names}\n{script}"],
        capture_output=True, text=True, cwd=op.work, env=op.env, timeout=300, check=False,
        start_new_session=True,
    )


def answers(op: Operator, hk: str, command: str) -> dict[str, dict[str, Any]]:
    """``$H command --json ...`` (the docs' ``H`` and ``K``): each node's answer."""
    done = shell(op, f"{hk}\n$H command --json --key $K {command}")
    out = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            answer = json.loads(line)
            out[answer["node"]] = answer
    assert out, f"{command}: {done.stdout}\n{done.stderr}"
    return out


def maze_counts(answer: dict[str, Any]) -> dict[str, int]:
    """The ``pA`` counts' version and reset_at of group ``maze`` in a learning command's
    answer (its data is flat: one list entry per group)."""
    data = answer["data"]
    i = data["groups"].index("maze")
    return {"version": data["version_pA"][i], "reset_at": data["reset_at_pA"][i]}


def test_learning_commands_on_the_secured_fleet(
    tmp_path: Path, started: list[Any], readme_venv: ReadmeVenv
) -> None:
    op = Operator(tmp_path, readme_venv)
    broker = start_broker(op)
    started.append(broker)
    fleet_block = doc_block("docs/fleet.md", 0)
    keygen = fleet_block.split("\n", 1)[0]
    op.run(keygen)
    hk = "\n".join(
        line for line in fleet_block.splitlines() if line.startswith(("K=", "H="))
    )
    assert hk.count("\n") == 1, fleet_block
    key = op.home / ".config" / "edge-agent" / "hub.key"
    hub_keys = op.home / "hub-keys"
    hub_keys.mkdir()
    shutil.copy(key.with_suffix(".pub"), hub_keys / "hub.pub")
    nodes = {name: learning_daemon(op, broker, name, hub_keys) for name in NODES}
    for node in nodes.values():
        started.append(node)
        node.start(wait_ready=False)
    for node in nodes.values():
        assert node.notify is not None
        node.notify.wait_for("READY=1", 90)

    def online() -> bool:
        out = shell(op, f"{hk}\n$H fleet").stdout
        return all(
            f"{n} " in out and "online" in out.split(n, 1)[1].split("\n", 1)[0] for n in NODES
        )

    wait_until(online, "both nodes online in the hub CLI's fleet", timeout=WAIT_S)

    # learning.md block 3 as written: freeze and resume on one node, reset on every node.
    try:
        out = op.run(f"{hk}\n{doc_block('docs/learning.md', 4)}")
    except AssertionError:
        print("\n".join(n.log() for n in nodes.values()))
        raise
    assert "pi-0417: learning_freeze ok: group 'maze': learning frozen" in out, out
    assert "pi-0417: learning_resume ok: group 'maze': learning resumed" in out, out
    for name in NODES:
        assert f"{name}: learning_reset ok: group 'maze': counts back to the priors" in out, out

    # Frozen counts do not move while the daemon ticks; resumed ones do.
    node = "pi-0418"

    def ticks() -> int:
        return int((nodes[node].status().get("tick") or {}).get("ticks", 0))

    first = answers(op, hk, f"--node {node} learning_freeze group=maze")[node]
    assert first["code"] == "ok", first
    frozen = maze_counts(first)

    def status_frozen() -> bool:
        groups = nodes[node].status().get("groups") or []
        return any(g["name"] == "maze" and g["learning"]["frozen"] for g in groups)

    wait_until(status_frozen, "the status file showing the freeze")
    view = subprocess.run(
        [str(Path(sys.executable).parent / "edge-agent"), "status", "--status-file",
         str(nodes[node].state / "status.json")],
        capture_output=True, text=True, timeout=60, check=False,
    ).stdout
    assert "learning pA1 (shared, counts from priors, frozen)" in view, view
    later = ticks() + 20
    wait_until(lambda: ticks() >= later, "20 frozen ticks")
    again = answers(op, hk, f"--node {node} learning_freeze group=maze")[node]
    assert "already frozen" in again["detail"], again
    assert maze_counts(again) == frozen
    # The freeze is in the snapshot the command wrote: a restart keeps it.
    assert nodes[node].stop() == 0
    nodes[node].start()
    wait_until(online, "pi-0418 online again", timeout=WAIT_S)
    resumed = answers(op, hk, f"--node {node} learning_resume group=maze")[node]
    assert "learning resumed" in resumed["detail"], resumed  # it was still frozen
    assert maze_counts(resumed) == frozen
    later = ticks() + 20
    wait_until(lambda: ticks() >= later, "20 learning ticks")
    moved = maze_counts(answers(op, hk, f"--node {node} learning_freeze group=maze")[node])
    assert moved["version"] > frozen["version"], (moved, frozen)
    reset = answers(op, hk, "--all learning_reset")
    for name in NODES:
        assert reset[name]["code"] == "ok", reset[name]
    state = maze_counts(reset[node])
    assert state["version"] == state["reset_at"] == moved["version"] + 1, (state, moved)
    assert reset[node]["data"]["frozen"] == [True]  # a reset does not resume

    # Refused: a group that does not learn, an unknown key, no or a broken signature; the
    # counts are as they were.
    doors = shell(op, f"{hk}\n$H command --key $K --node {node} learning_freeze group=doors")
    assert doors.returncode == 1
    assert (
        f"{node}: learning_freeze bad_args: group 'doors' does not learn (it has no "
        "[groups.learning] table)" in doors.stdout
    ), doors.stdout
    op.run("edge-agent-host keygen --out ~/other --name other")
    foreign = shell(op, f"{hk}\n$H command --key ~/other/other.key --node {node} learning_reset")
    assert foreign.returncode == 1
    assert f"{node}: learning_reset unknown_key" in foreign.stdout, foreign.stdout
    clients = op.dir / "clients" / "hub"
    hub = FleetClient(
        fleet=FLEET, host="localhost", port=op.port, hub_id="hub", key=load_signing_key(key),
        ca_file=str(clients / "ca.crt"), cert_file=str(clients / "hub.crt"),
        key_file=str(clients / "hub.key"),
    )
    hub.connect()
    try:
        good = hub.make_command(node, "learning_reset", {"group": "maze"})
        broken = bytearray(good.signature)
        broken[7] ^= 0x10
        for cmd in (replace(good, signature=b""), replace(good, signature=bytes(broken))):
            hub.send(cmd)
            assert hub.wait_result(cmd.nonce, 30).code is ResultCode.BAD_SIGNATURE
    finally:
        hub.close()
    resumed = answers(op, hk, f"--node {node} learning_resume")[node]  # every learning group
    assert maze_counts(resumed) == state
    assert resumed["data"]["groups"] == ["maze"]

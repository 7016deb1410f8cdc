"""Five daemons and the hub CLI on one broker: births, deaths, rebirth on a sequence gap,
commands to the whole fleet and a deployment to two nodes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edge_agent.fleet.protocol import Envelope, Telemetry, encode
from edge_agent_host.fleetctl import FleetClient, FleetStore
from edge_agent_host.keys import generate_keypair
from tests.integration.daemon.test_daemon import REPO
from tests.integration.fleet.test_deploy import sha_of
from tests.integration.fleet.test_fleet_daemon import FLEET, TOPICS, Node, wait_until
from tests.support.broker import MosquittoBroker
from tests.unit.fleet.test_deploy import bundle_tar

pytestmark = pytest.mark.integration

TINY = """
[[groups]]
name = "grid"
model = { type = "builtin", name = "grid10" }
count = 10
source = { type = "sim" }
sink = { type = "sim" }
"""


def hub_cli(broker: MosquittoBroker, db: Path, *args: str, timeout: float = 120) -> str:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent_host.cli",
            "hub",
            "--port",
            str(broker.port),
            "--fleet",
            FLEET,
            "--db",
            str(db),
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        check=False,
        env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tools'}"},
    )
    assert out.returncode == 0, (
        f"hub {args[0]} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    )
    return out.stdout


def fleet_table(broker: MosquittoBroker, db: Path) -> tuple[str, dict[str, dict[str, Any]]]:
    """``hub fleet``'s table, and the rows it keeps in its SQLite file."""
    table = hub_cli(broker, db, "fleet", "--wait", "1.0")
    store = FleetStore(db)
    try:
        rows = {row["node"]: row for row in store.nodes()}
    finally:
        store.close()
    return table, rows


def test_five_daemons_and_the_hub(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    trusted = tmp_path / "trusted"
    hub_pair = generate_keypair(trusted, "hub")
    ci = generate_keypair(trusted, "ci")
    db = tmp_path / "hub.sqlite3"
    names = [f"n{i}" for i in range(1, 6)]
    nodes = [
        Node(tmp_path, mosquitto, name, groups=TINY, keys_dir=trusted, tick_hz=10, telemetry_s=0.5)
        for name in names
    ]
    try:
        for node in nodes:
            node.start(wait_ready=False)
        for node in nodes:
            assert node.notify is not None
            node.notify.wait_for("READY=1", 90)
        for node in nodes:
            node.wait_status(lambda s: s["fleet"]["online"], f"{node.name} online")

        # Births and retained presence: the CLI lists all five, with their groups.
        table, rows = fleet_table(mosquitto, db)
        assert sorted(rows) == names
        assert all(r["online"] for r in rows.values())
        assert all(r["birth"]["groups"]["grid"]["agents"] == 10 for r in rows.values())
        lines = table.splitlines()
        assert len(lines) == 6  # a header and five nodes
        assert all(" online " in line and "grid=10" in line for line in lines[1:])

        # A death: SIGKILL one node; the broker publishes its will (retained offline state).
        nodes[2].kill()
        table, rows = fleet_table(mosquitto, db)
        assert next(line for line in table.splitlines() if line.startswith("n3 ")).split()[1] == (
            "offline"
        )
        assert rows["n3"]["online"] is False
        assert [n for n, r in rows.items() if r["online"]] == ["n1", "n2", "n4", "n5"]

        # A command to every node online, signed with the hub key.
        out = hub_cli(
            mosquitto,
            db,
            "command",
            "--key",
            str(hub_pair.private_path),
            "--all",
            "--wait",
            "1.0",
            "resize_group",
            "group=grid",
            "agents=12",
        )
        assert sorted(line.split(":")[0] for line in out.splitlines()) == [
            "n1",
            "n2",
            "n4",
            "n5",
        ]
        assert out.count("resize_group ok") == 4

        # Rebirth on a gap: the hub sees n1's sequence jump and asks n1 for its birth again.
        with FleetClient(fleet=FLEET, port=mosquitto.port, rebirth_interval_s=0.0) as hub:
            hub.connect()
            hub.listen(1.0)
            view = hub.nodes["n1"]
            wait_until(lambda: hub.listen(0.1) is not None and view.telemetry is not None, "tel")
            births = view.birth
            last = view.tracker.last_seq
            forged = Envelope(
                type="telemetry",
                node="n1",
                seq=(last + 50) % (1 << 32),
                bdseq=view.tracker.bdseq or 0,
                ts=time.time(),
                clock_synced=False,
                body=Telemetry(
                    uptime_s=0,
                    rss_bytes=0,
                    budget_used_bytes=0,
                    budget_total_bytes=0,
                    ticks=0,
                    tick_p50_ms=0,
                    tick_p99_ms=0,
                    overruns=0,
                ),
            )
            # Published by another client: a subscriber does not hear its own messages.
            with FleetClient(fleet=FLEET, port=mosquitto.port, hub_id="forger") as forger:
                forger.connect()
                handle = forger.transport.publish(TOPICS.telemetry("n1"), encode(forged), 1)
                assert handle is not None
                forger.listen(0.2)
            wait_until(
                lambda: hub.listen(0.1) is not None and view.rebirths_requested >= 1,
                "the hub to ask for a rebirth",
            )
            wait_until(
                lambda: hub.listen(0.1) is not None and view.birth is not births,
                "n1's new birth",
            )
            assert view.gaps >= 1
        nodes[0].wait_status(
            lambda s: s["fleet"]["link"]["rebirths_received"] >= 1, "n1 to count the request"
        )

        # A deployment to two nodes from the CLI, with progress.
        tar = bundle_tar(tmp_path, ci.private_path)
        sha = sha_of(tar, trusted)
        out = hub_cli(
            mosquitto,
            db,
            "deploy",
            str(tar),
            "--key",
            str(hub_pair.private_path),
            "--group",
            "grid",
            "--node",
            "n4",
            "--node",
            "n5",
            "--wait",
            "0.3",
            "--chunk-size",
            "8192",
            "--watch-ticks",
            "5",
        )
        assert "n4: receiving" in out
        assert "n4: deploy ok" in out
        assert "n5: deploy ok" in out
        for node in (nodes[3], nodes[4]):
            status = node.wait_status(
                lambda s: s["groups"][0]["bundle_sha256"] == sha, f"{node.name} switched"
            )
            assert status["groups"][0]["agents"] == 12  # the resize carried over
        # A second of `watch`: the retained births and wills at once, then the live traffic. n1
        # sends telemetry every 0.5 s; a loaded machine may hold it past one window: a few more.
        lines = hub_cli(mosquitto, db, "watch", "--duration", "1.0").splitlines()
        for _ in range(10):
            if any(" n1 " in line and "telemetry" in line for line in lines):
                break
            lines = hub_cli(mosquitto, db, "watch", "--duration", "1.0").splitlines()
        assert any(" n1 " in line and "telemetry" in line for line in lines), lines
        assert not any(" n3 " in line and "telemetry" in line for line in lines)  # n3 is dead
        assert any(" n3 " in line and "OFFLINE" in line for line in lines)  # its retained will
        births = [line for line in lines if " birth " in line]
        assert any(" n4 " in line and f"grid=12@{sha[:8]}" in line for line in births)
        assert any(" n1 " in line and "grid=12" in line and "@" not in line for line in births)
        for node in nodes:
            if node is not nodes[2]:
                assert node.stop() == 0
    finally:
        for node in nodes:
            node.close()

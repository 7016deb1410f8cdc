"""A node the fleet never saw, named on a command line.

``edge-agent-host hub command --node pi-0499 ping`` used to wait its 30 s and say "no result";
``edge-agent-hub telemetry pi-0499`` and ``events --node pi-0499`` printed nothing and exited 0.
Now each says at once, in one line, that the node was never seen, with the known names closest
to it, and exits 1; ``--force`` goes ahead as before (the command is sent: a subscriber on the
node's command topic receives it). On a real mosquitto, with the hub service's registry and the
client's memory knowing pi-0049, pi-0409 and pi-1234 (nodes known by their retained state and
birth).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent_host.keys import generate_keypair
from tests.integration.fleet.test_fleet_daemon import FLEET, Listener, wait_until
from tests.integration.hub.test_hubd import Hub, db_rows, sqlite_table
from tests.support.broker import MosquittoBroker
from tests.support.retained_node import retain_node
from tests.unit.fleet.test_deploy import bundle_tar

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
KNOWN = ("pi-0049", "pi-0409", "pi-1234")


@pytest.fixture
def sniff(mosquitto: MosquittoBroker) -> Iterator[Listener]:
    """Every message of the fleet, the commands on its nodes' topics too."""
    heard = Listener(mosquitto)
    yield heard
    heard.close()


@pytest.fixture
def hub(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[Hub]:
    for node in KNOWN:
        retain_node("127.0.0.1", mosquitto.port, FLEET, node)
    service = Hub(tmp_path, "hub-1", mosquitto, sqlite_table())
    try:
        service.start()
        wait_until(
            lambda: set(db_rows(service, lambda db: db.node_names())) >= set(KNOWN),
            "the hub's registry",
        )
        yield service
    finally:
        service.kill()


def host(tmp_path: Path, broker: MosquittoBroker, *args: str) -> subprocess.CompletedProcess[str]:
    """``edge-agent-host hub --port P --fleet F --db D ARGS`` as the operator runs it."""
    return subprocess.run(
        [str(BIN / "edge-agent-host"), "hub", "--port", str(broker.port), "--fleet", FLEET,
         "--db", str(tmp_path / "client.sqlite3"), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def hub_cli(service: Hub, *args: str) -> subprocess.CompletedProcess[str]:
    """``edge-agent-hub ARGS --config C``."""
    return subprocess.run(
        [str(BIN / "edge-agent-hub"), *args, "--config", str(service.config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert len(lines) == 1, done.stderr
    assert done.stdout == ""
    return lines[0]


def test_the_client_refuses_a_node_never_seen_and_sends_with_force(
    tmp_path: Path, mosquitto: MosquittoBroker, sniff: Listener
) -> None:
    for node in KNOWN:
        retain_node("127.0.0.1", mosquitto.port, FLEET, node)
    key = generate_keypair(tmp_path / "keys", "hub").private_path
    never = f"node 'pi-0499' was never seen in fleet '{FLEET}' (known: pi-0409, pi-0049, ...)"

    line = one_line(host(tmp_path, mosquitto, "command", "--key", str(key), "--node", "pi-0499",
                         "--wait", "1", "ping"))  # fmt: skip
    assert line == f"error: {never}; --force to go ahead", line
    # deploy too, after reading its bundle (a wrong path is said before connecting)
    bundle = bundle_tar(tmp_path, key, policy_len=1)
    line = one_line(host(tmp_path, mosquitto, "deploy", str(bundle), "--key", str(key),
                         "--group", "grid", "--node", "pi-0499", "--wait", "1"))  # fmt: skip
    assert line == f"error: {never}; --force to go ahead", line
    # a name like none of them
    line = one_line(host(tmp_path, mosquitto, "command", "--key", str(key), "--node", "lab-x",
                         "--wait", "1", "ping"))  # fmt: skip
    assert "node 'lab-x' was never seen" in line, line
    assert "(none alike of 3 known)" in line, line
    # several at once, one line
    nodes = ("--node", "pi-0499", "--node", "pi-0049", "--node", "pi-1235")
    line = one_line(host(tmp_path, mosquitto, "command", "--key", str(key), *nodes,
                         "--wait", "1", "ping"))  # fmt: skip
    assert "nodes 'pi-0499' (known: pi-0409, pi-0049, ...), 'pi-1235' (known: pi-1234" in line

    # --force: sent as before (no node answers it).
    done = host(tmp_path, mosquitto, "command", "--key", str(key), "--node", "pi-0499",
                "--wait", "1", "--timeout", "1", "--force", "ping")  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "pi-0499: ping: no result to command" in done.stderr, done.stderr
    prefix = f"ea/v1/{FLEET}/node/pi-0499/cmd"
    wait_until(lambda: len(sniff.on_topic(prefix)) == 1, "the forced ping on pi-0499's topic")


def test_the_hub_s_readers_refuse_a_node_never_seen(hub: Hub) -> None:
    never = "node 'pi-0499' was never seen by the hub (known: pi-0409, pi-0049, ...)"
    for args in (("telemetry", "pi-0499"), ("events", "--node", "pi-0499")):
        line = one_line(hub_cli(hub, *args))
        assert line == f"edge-agent-hub {args[0]}: {never}; --force to go ahead", line
        forced = hub_cli(hub, *args, "--force")  # as before: nothing heard of it
        assert (forced.returncode, forced.stdout, forced.stderr) == (0, "", "")
    # A known node is read as before.
    for args in (("telemetry", "pi-0049"), ("events", "--node", "pi-0049")):
        done = hub_cli(hub, *args)
        assert done.returncode == 0, done.stderr
    # The hub's own id (a replica's: the rollouts' verdicts are stored under it) is known to
    # events; a name like it is said with the replica among the closest; telemetry, a node's
    # only, still refuses it.
    done = hub_cli(hub, "events", "--node", "hub-1")
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    line = one_line(hub_cli(hub, "events", "--node", "hub-2"))
    assert "node 'hub-2' was never seen by the hub (known: hub-1, ...)" in line, line
    line = one_line(hub_cli(hub, "telemetry", "hub-1"))
    assert "node 'hub-1' was never seen by the hub" in line, line

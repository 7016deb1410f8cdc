"""A client without TLS settings on the broker ``edge-agent-host broker init`` writes.

The hub CLI used to print eleven lines of ``Connection reset by peer`` and then ``no connection
within 10 s``. Now, on that broker as it runs (mosquitto on its generated config: TLS, a client
certificate required): ``edge-agent-host hub ... fleet`` and ``tasks list`` without
``--ca-file``, ``--cert-file`` and ``--key-file`` say in one line that the broker wants TLS with
a client certificate and which options give it, and exit 1; a daemon and the hub service whose
``[mqtt]`` has no ``tls`` keep trying (the broker never stops a daemon) and log it once, naming
their ``[mqtt.tls]`` keys, however many attempts fail; ``edge-agent status`` says it too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.fleet.test_broker_acl import broker_init, start_broker
from tests.integration.fleet.test_fleet_daemon import FLEET, Node, status_view, wait_until
from tests.integration.hub.test_hubd import Hub, sqlite_table
from tests.support.broker import MosquittoBroker, free_port

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
WANTS = "wants TLS with a client certificate"


@pytest.fixture
def secured(tmp_path: Path) -> MosquittoBroker:
    port = free_port()
    out = broker_init(tmp_path / "broker", port, "--node", "pi-0417", "--hub", "hub")
    return start_broker(tmp_path / "run", out / "mosquitto.conf", port)


@pytest.mark.parametrize("command", [["hub", "fleet"], ["tasks", "list"]])
def test_the_host_tool_says_what_the_broker_wants_in_one_line(
    secured: MosquittoBroker, command: list[str]
) -> None:
    try:
        done = subprocess.run(
            [str(BIN / "edge-agent-host"), command[0], "--port", str(secured.port),
             "--fleet", FLEET, *command[1:]],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        secured.kill()
    assert done.returncode == 1, done
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"error: broker 127.0.0.1:{secured.port} {WANTS}: give --ca-file, --cert-file and "
        "--key-file (edge-agent-host broker init issued them: DIR/clients/NAME/; "
        "docs/security.md)"
    ], done.stderr


def attempts(log: str) -> int:
    """Connection attempts a log shows, by their reconnect lines."""
    return log.count("MQTT reconnecting to")


def test_a_daemon_and_the_hub_service_say_it_once_and_keep_trying(
    tmp_path: Path, secured: MosquittoBroker
) -> None:
    node = Node(tmp_path, secured, "pi-0417")
    hub = Hub(tmp_path, "hub-1", secured, sqlite_table())
    try:
        node.start()
        hub.start()
        node_log = node.config.with_suffix(".log")
        wait_until(lambda: attempts(node_log.read_text()) >= 4, "the daemon's fourth attempt")
        wait_until(lambda: attempts(hub.log()) >= 4, "the hub service's fourth attempt")
        for log in (node_log.read_text(), hub.log()):
            said = [line for line in log.splitlines() if WANTS in line]
            assert len(said) == 1, said
            assert (
                f"MQTT broker 127.0.0.1:{secured.port} {WANTS}, and this client has no TLS "
                "settings: give [mqtt.tls] enabled, ca_file, cert_file and key_file"
            ) in said[0]
        # edge-agent status says it beside the node's OFFLINE.
        wanted = f"broker 127.0.0.1:{secured.port}: it {WANTS}: give [mqtt.tls] enabled"
        wait_until(lambda: wanted in status_view(node.state), "edge-agent status saying it")
        assert node.proc is not None
        assert node.proc.proc.poll() is None
        assert hub.proc is not None
        assert hub.proc.poll() is None
    finally:
        hub.kill()
        node.close()
        secured.kill()

"""The operator's client where no broker answers, or one sends nothing (issue 54, "the operator is
told").

``edge-agent-host hub ... fleet`` against a port where nothing listens used to print ten
``Connection refused`` warnings over 10 s before ``no connection to the broker within 10 s``; now
it says at once, in one line, that nothing listens there and what to check, and exits 1 (so does
``tasks list``, the other command on the same connection). Against a broker that sent nothing
while it listened, it printed the table cached by earlier runs (``silent 12m``) with no word that
it was cached; now one line on stderr says the broker sent nothing, that the table is the cached
one, where it is cached and how old it is. On the broker ``edge-agent-host broker init`` writes
(TLS, one identity per client, the ACL), with a real daemon, heard by the hub's identity; then the
broker set up again without what it retained (its persistence lost) before the node came back.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent_host.keys import generate_keypair
from tests.integration.fleet.test_broker_acl import broker_init, secure_node, start_broker
from tests.integration.fleet.test_fleet_daemon import FLEET
from tests.support.broker import free_port

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def host(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "edge-agent-host"), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("command", [["hub", "fleet"], ["tasks", "list"]])
def test_a_port_where_nothing_listens_is_one_line(tmp_path: Path, command: list[str]) -> None:
    port = free_port()  # bound and closed again: nothing listens there
    done = host(command[0], "--port", str(port), "--fleet", FLEET,
                *(("--db", str(tmp_path / "client.sqlite3")) if command[0] == "hub" else ()),
                *command[1:])  # fmt: skip
    assert done.returncode == 1, done
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"error: nothing listens on 127.0.0.1:{port} (connection refused): is the broker "
        "running on that host, and listening on that port?"
    ], done.stderr


def test_a_broker_that_sent_nothing_shows_the_cached_table_and_says_so(tmp_path: Path) -> None:
    """The hub's identity hears a daemon; then the broker is set up again without what it
    retained (its persistence file lost) before any node came back: it sends nothing."""
    port = free_port()
    clients = broker_init(tmp_path / "pki", port, "--node", "pi-0417", "--hub", "hub") / "clients"
    config = clients.parent / "mosquitto.conf"
    broker = start_broker(tmp_path / "mosq", config, port)
    keys = tmp_path / "keys"
    generate_keypair(keys, "ci")
    node = secure_node(tmp_path, broker, "pi-0417", clients, keys, tail="")
    db = tmp_path / "client.sqlite3"
    hint = "(no node online, none retained: is --fleet right, and may this identity read it?)"

    def fleet(cache: Path = db) -> subprocess.CompletedProcess[str]:
        files = clients / "hub"
        return host("hub", "--port", str(port), "--fleet", FLEET, "--hub-id", "hub",
                    "--ca-file", str(files / "ca.crt"), "--cert-file", str(files / "hub.crt"),
                    "--key-file", str(files / "hub.key"), "--db", str(cache),
                    "fleet", "--wait", "2")  # fmt: skip

    try:
        node.start()
        heard = fleet()
        assert heard.returncode == 0, heard.stderr
        assert heard.stderr == ""  # it heard the node: nothing said of a cache
        (row,) = [line for line in heard.stdout.splitlines() if line.startswith("pi-0417")]
        assert row.split()[1] == "online", row

        node.close()
        broker.kill()
        for saved in (clients.parent / "data").iterdir():
            saved.unlink()
        broker = start_broker(tmp_path / "mosq-again", config, port)
        quiet = fleet()
        assert quiet.returncode == 0, quiet.stderr
        # The table is the cached one, and one line says so: where, how old, what to check.
        assert [line.split()[0] for line in quiet.stdout.splitlines()] == ["NODE", "pi-0417"]
        (note,) = quiet.stderr.splitlines()
        said = re.fullmatch(
            rf"note: the broker 127\.0\.0\.1:{port} sent nothing in 2 s \(fleet '{FLEET}'\): the "
            rf"table is the one cached in {re.escape(str(db))} by earlier runs, last heard "
            rf"(\d+)s ago {re.escape(hint)}",
            note,
        )
        assert said is not None, note
        assert int(said.group(1)) < 120  # the first run heard it moments ago

        # Nothing cached either: said so, and the table has no row.
        fresh = fleet(tmp_path / "fresh.sqlite3")
        assert fresh.returncode == 0, fresh.stderr
        assert fresh.stdout.splitlines()[1:] == []
        assert fresh.stderr.splitlines() == [
            f"note: the broker 127.0.0.1:{port} sent nothing in 2 s (fleet '{FLEET}'), and "
            f"nothing is cached in {tmp_path / 'fresh.sqlite3'}: no node yet {hint}"
        ]
    finally:
        node.close()
        broker.kill()

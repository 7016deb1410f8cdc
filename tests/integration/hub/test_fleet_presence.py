"""A node's presence, the same in both fleet tables: ``edge-agent-host hub fleet`` (the operator's
client, a new process each time, its memory in SQLite between runs) and ``edge-agent-hub fleet``
(the hub service's registry), both by ``tools/edge_agent_host/fleet/presence.py``.

What must not come back: the client's table called a healthy node ``silent`` once the birth it had
heard live was older than ``--silent-after``, however much telemetry the node sent (only state
and birth messages counted as seen), and a node heard only through retained messages ``online``
for ever. Here, on a real mosquitto with two real daemons and the hub service, the client having
heard both daemons' births live (``hub watch`` while they start, into the same ``--db``): a node
that keeps sending telemetry stays ``online`` in both tables long after its birth; a node known
only by its retained state and birth turns ``silent`` in both once ``--silent-after`` has passed
since it was first heard, and stays so; a daemon that goes quiet (SIGSTOP) turns ``silent`` or
``offline`` in both, and ``online`` again when it comes back (SIGCONT).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.fleet.test_fleet_daemon import FLEET, Node, wait_until
from tests.integration.hub.test_hubd import Hub, sqlite_table
from tests.support.broker import MosquittoBroker
from tests.support.retained_node import retain_node

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
SILENT_AFTER_S = 6.0
"""``--silent-after`` of both tables: twelve telemetry periods of the daemons (0.5 s)."""
WAIT_S = 120.0


def table(text: str) -> dict[str, str]:
    """A fleet table's rows: node -> its STATE column."""
    rows = {}
    for line in text.splitlines()[1:]:
        if line.strip():
            node, state, *_ = line.split()
            rows[node] = state
    return rows


class Tables:
    """Both fleet tables, as the docs run them: the client's with its own memory (``--db``)."""

    def __init__(self, tmp: Path, broker: MosquittoBroker, hub: Hub) -> None:
        self.tmp = tmp
        self.broker = broker
        self.hub = hub

    def client_argv(self, *args: str) -> list[str]:
        """``edge-agent-host hub ... ARGS`` on the test's broker, with the client's memory."""
        return [str(BIN / "edge-agent-host"), "hub", "--port", str(self.broker.port),
                "--fleet", FLEET, "--db", str(self.tmp / "client.sqlite3"), *args]  # fmt: skip

    def client(self) -> dict[str, str]:
        done = subprocess.run(
            self.client_argv("fleet", "--wait", "1.5", "--silent-after", str(SILENT_AFTER_S)),
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return table(done.stdout)

    def service(self) -> dict[str, str]:
        done = subprocess.run(
            [str(BIN / "edge-agent-hub"), "fleet", "--config", str(self.hub.config),
             "--silent-after", str(SILENT_AFTER_S)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return table(done.stdout)

    def both(self) -> list[dict[str, str]]:
        return [self.client(), self.service()]

    def wait(self, what: str, cond: Callable[[dict[str, str]], bool]) -> list[dict[str, str]]:
        """Both tables once ``cond(rows)`` holds for each of them."""
        seen: list[dict[str, str]] = []

        def holds() -> bool:
            nonlocal seen
            seen = self.both()
            return all(cond(rows) for rows in seen)

        try:
            wait_until(holds, what, timeout=WAIT_S)
        except BaseException:
            print("tables:", seen)
            raise
        return seen


def births(watched: Path) -> set[str]:
    """The nodes whose birth ``hub watch`` printed (``HH:MM:SS NODE birth ...`` lines)."""
    rows = (line.split() for line in watched.read_text().splitlines())
    return {row[1] for row in rows if len(row) > 2 and row[2] == "birth"}


@pytest.fixture
def fleet(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[dict[str, object]]:
    nodes = {
        name: Node(tmp_path, mosquitto, name, telemetry_s=0.5, tick_hz=10)
        for name in ("pi-talk", "pi-quiet")
    }
    hub = Hub(tmp_path, "hub-1", mosquitto, sqlite_table())
    tables = Tables(tmp_path, mosquitto, hub)
    heard = tmp_path / "watch.out"
    watch: subprocess.Popen[bytes] | None = None
    try:
        hub.start()
        # The client hears both births live, as an operator watching the nodes start would.
        with heard.open("wb") as out:
            watch = subprocess.Popen(tables.client_argv("watch"), stdout=out)
        for node in nodes.values():
            node.start(wait_ready=False)
        for node in nodes.values():
            assert node.notify is not None
            node.notify.wait_for("READY=1", 90)
        wait_until(lambda: births(heard) >= set(nodes), "the client's watch hearing both births")
        watch.send_signal(signal.SIGINT)
        assert watch.wait(60) == 0
        yield {"nodes": nodes, "hub": hub, "tables": tables}
    finally:
        if watch is not None and watch.poll() is None:
            watch.kill()
        hub.kill()
        for node in nodes.values():
            if node.proc is not None:
                os.kill(node.pid, signal.SIGCONT)
            node.close()


def test_a_node_is_online_while_it_talks_and_silent_when_only_its_retained_state_says_so(
    fleet: dict[str, object], mosquitto: MosquittoBroker
) -> None:
    nodes: dict[str, Node] = fleet["nodes"]  # type: ignore[assignment]
    tables: Tables = fleet["tables"]  # type: ignore[assignment]
    born = time.monotonic()  # both daemons' births are older than this

    # A node known only by what the broker retained: both tables list it.
    retain_node("127.0.0.1", mosquitto.port, FLEET, "pi-ghost")
    tables.wait(
        "both daemons online, the ghost listed, in both tables",
        lambda rows: rows.get("pi-talk") == rows.get("pi-quiet") == "online" and "pi-ghost" in rows,
    )

    # --silent-after later: the ghost is silent, and the node that talks is still online
    # although its birth is older than --silent-after (telemetry counts as seen).
    seen = tables.wait("the ghost silent", lambda rows: rows.get("pi-ghost") == "silent")
    assert time.monotonic() - born > SILENT_AFTER_S
    for rows in seen:
        assert rows["pi-talk"] == "online", seen
        assert rows["pi-quiet"] == "online", seen
    for rows in tables.both():  # and it stays silent: retained messages are not live
        assert rows["pi-ghost"] == "silent", rows

    # A daemon that goes quiet: silent (nothing live for --silent-after), or offline once the
    # broker gives up on its session and publishes its will; the other stays online.
    quiet = nodes["pi-quiet"]
    os.kill(quiet.pid, signal.SIGSTOP)
    seen = tables.wait(
        "pi-quiet silent or offline",
        lambda rows: rows.get("pi-quiet") in ("silent", "offline"),
    )
    for rows in seen:
        assert rows["pi-talk"] == "online", seen

    # It comes back.
    os.kill(quiet.pid, signal.SIGCONT)
    seen = tables.wait("pi-quiet online again", lambda rows: rows.get("pi-quiet") == "online")
    for rows in seen:
        assert rows["pi-talk"] == "online", seen
        assert rows["pi-ghost"] == "silent", seen
    # --json gives each row its presence, in the client's table as in the hub's.
    done = subprocess.run(
        tables.client_argv("fleet", "--wait", "1.5", "--silent-after", str(SILENT_AFTER_S),
                           "--json"),
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    presence = {row["node"]: row["presence"] for row in json.loads(done.stdout)}
    assert presence == {"pi-talk": "online", "pi-quiet": "online", "pi-ghost": "silent"}

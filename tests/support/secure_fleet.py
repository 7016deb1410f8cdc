"""A fleet with real parts, set up as the docs recommend, for the end-to-end tests of the hub
(``tests/integration/hub/test_behaviour_gate_e2e.py``, ``test_fleet_learning_e2e.py``):
PostgreSQL, the broker ``edge-agent-host broker init`` made (TLS, one identity each, the ACL),
the hub service configured from its generated ``hub.toml`` with its two signing keys, and
edge-agentd processes, each on its own generated ``mqtt.toml``. The keys as docs/fleet.md ("Two
key directories, on purpose") and docs/fleet-learning.md ("Signing keys") say: the nodes'
``[daemon] trusted_keys_dir`` holds the bundle keys (``ci.pub``, the CI's, and ``learning.pub``,
the hub's learning key, ``[learning] key_file``), their ``[mqtt] hub_keys_dir`` the hub's
command key (``hub.pub``, ``[rollouts] key_file``) alone. :func:`secure_fleet` starts them and
stops them in reverse order; the readers below look at what the nodes run and what the hub
stored."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge_agent_host.keys import generate_keypair
from tests.integration.fleet.test_broker_acl import broker_init, secure_node, start_broker
from tests.integration.fleet.test_fleet_daemon import Node
from tests.integration.hub.test_hubd import Hub, db_rows
from tests.integration.hub.test_hubd_faults import HUB, secure_hub
from tests.support.broker import MosquittoBroker, free_port
from tests.support.postgres import PostgresMissingError, PostgresServer


@dataclass
class SecureFleet:
    """What :func:`secure_fleet` started: ``keys`` (the nodes' trusted bundle keys: ``ci``
    signs what a test signs, ``learning`` the hub's rounds), ``hub_keys`` (the nodes' hub keys:
    ``hub`` signs the hub's commands), ``clients`` (``broker init``'s identities)."""

    hub: Hub
    nodes: dict[str, Node]
    broker: MosquittoBroker
    clients: Path
    keys: Path
    hub_keys: Path
    hub_key: Path
    ci_key: Path
    learning_key: Path


@contextmanager
def secure_fleet(
    tmp: Path,
    nodes: Mapping[str, str],
    *,
    database: str,
    identities: tuple[str, ...] = (),
    hub_tail: str = "",
    tick_hz: float = 20,
    telemetry_s: float = 1.0,
    learning_trusted: bool = True,
) -> Iterator[SecureFleet]:
    """The fleet: ``nodes`` maps each daemon's name to its ``[[groups]]`` tables;
    ``identities``: more node identities ``broker init`` makes (clients a test runs itself);
    ``hub_tail``: tables after the hub's ``[rollouts]`` (which has the hub's command key); its
    ``[learning]`` gets ``key_file``, the learning key (without ``learning_trusted``, made in a
    directory of its own: the nodes do not trust it yet). The hub is up before the nodes (it
    hears every health window); yields once every node is READY."""
    keys = tmp / "trusted"
    hub_keys = tmp / "hub-keys"
    hub_key = generate_keypair(hub_keys, "hub").private_path
    ci_key = generate_keypair(keys, "ci").private_path
    learning_key = generate_keypair(
        keys if learning_trusted else tmp / "learning-key", "learning"
    ).private_path
    try:
        pg = PostgresServer()
    except PostgresMissingError as err:
        pytest.fail(str(err))
    started: list[Any] = [pg]
    try:
        with ThreadPoolExecutor(1) as pool:  # the server starts while broker init runs
            pg_up = pool.submit(pg.start)
            port = free_port()
            names = (*nodes, *identities)
            clients = (
                broker_init(tmp / "pki", port, *(a for n in names for a in ("--node", n)),
                            "--hub", HUB) / "clients"
            )  # fmt: skip
            broker = start_broker(tmp / "mosq", clients.parent / "mosquitto.conf", port)
            started.append(broker)
            pg_up.result()
        table = pg.config_table(pg.create_database(database), tmp / "db-password")
        hub = secure_hub(tmp, broker, clients, table)
        hub.config.write_text(
            hub.config.read_text()
            + f'\n[rollouts]\nkey_file = "{hub_key}"\npoll_interval_s = 0.2\n'
            + hub_tail.replace("[learning]\n", f'[learning]\nkey_file = "{learning_key}"\n')
        )
        started.append(hub)
        hub.start()
        daemons = {
            name: secure_node(tmp, broker, name, clients, keys, tick_hz=tick_hz,
                              telemetry_s=telemetry_s, groups=groups, tail="",
                              hub_keys=hub_keys)
            for name, groups in nodes.items()
        }  # fmt: skip
        for node in daemons.values():
            started.append(node)
            node.start(wait_ready=False)
        for node in daemons.values():
            assert node.notify is not None
            node.notify.wait_for("READY=1", 90)
        yield SecureFleet(hub, daemons, broker, clients, keys, hub_keys, hub_key, ci_key,
                          learning_key)  # fmt: skip
    finally:
        for part in reversed(started):
            if isinstance(part, Node):
                part.close()
            elif isinstance(part, Hub | MosquittoBroker):
                part.kill()
            else:
                part.cleanup()


def bundle_of(node: Node, group: str) -> str | None:
    """The sha256 of the bundle the node's ``group`` runs (None: the config's model)."""
    status = node.status()
    info = next(g for g in status["groups"] if g["name"] == group)
    sha: str | None = info["bundle_sha256"]
    return sha


def runs_sha(node: Node, group: str, sha: str) -> bool:
    """Whether the node's ``group`` runs the bundle ``sha`` (False while its status is being
    written or lacks the group)."""
    try:
        return bundle_of(node, group) == sha
    except (KeyError, StopIteration, ValueError):
        return False


def hub_events(hub: Hub) -> list[dict[str, Any]]:
    """The hub's events, as ``edge-agent-hub events --json`` reads them."""
    rows: list[dict[str, Any]] = db_rows(hub, lambda db: db.events(limit=10_000))
    return rows


def json_lines(done: Any) -> list[dict[str, Any]]:
    """A finished CLI's JSON lines (it must have exited 0)."""
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]

"""The secured fleet, end to end, as the docs tell the operator to run it.

With real parts only: ``edge-agent-host broker init`` (docs/security.md block 0, with the test's own
first line of names) -> mosquitto on the generated config (TLS, one identity per client, the ACL)
-> the hub CLI over mutual TLS (security.md block 1, fleet.md block 0: a signing key, the fleet,
``watch``, signed commands, a deployment) -> two daemons configured from their generated snippets
-> the hub service ``edge-agent-hub run`` started from its generated ``hub.toml`` (on PostgreSQL,
whose role and database hub.md block 1 creates: the engine for fleets beyond one machine; SQLite,
the default, carries the rollouts of tests/integration/hub/test_rollouts.py and the records of
test_hubd.py, and the rest of the journey does not depend on the engine) -> its readers (hub.md
block 2) ->
a staged rollout paused, resumed and aborted as hub.md block 3 writes it -> a staged rollout that
completes (its wave in ``rollout status --json`` is the metric's) -> one that halts at its canary
-> a revoked node: refused, its log naming ``0x87 not authorized``, and the hub calling it
``silent``. All along the broker never sees an identity connect twice (the hub service has one
connection; its rollout runner publishes through it). A hub service whose identity may not send
commands (an observer) halts its rollout at once with the broker's reason, by name.

Each doc block runs through ``bash -e`` as written; where it names the operator's own places (the
broker directory, port and host name; the hub config; a rollout's id) the test gives its own
value for that variable, as the docs say beside the block. A machine without mosquitto or
PostgreSQL fails with how to install them; nothing is skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_agent.bundle.loader import load_bundle
from edge_agent.fleet.agent_io import decode_actions, encode_observations
from edge_agent_host.keys import generate_keypair
from tests.integration.daemon.test_daemon import REPO, NotifySocket
from tests.integration.fleet.test_fleet_daemon import Node, wait_until
from tests.support.broker import MosquittoBroker, MosquittoMissingError, free_port
from tests.support.doc_blocks import doc_block
from tests.support.postgres import PostgresMissingError, PostgresServer
from tests.support.readme_venv import ReadmeVenv, clean_env
from tests.unit.fleet.test_deploy import bundle_tar

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

FLEET = "plant-3"
NODES = ("pi-0417", "pi-0418")
WAIT_S = 180.0
BIN = Path(sys.executable).parent

DOORS = """
[[groups]]
name = "doors"
model = { type = "builtin", name = "grid10" }
count = 10
source = { type = "sim" }
sink = { type = "sim" }
"""


# ------------------------------------------------------------------------------------ helpers
class Operator:
    """The operator's shells: ``bash -e`` with the docs' variables set to this test's values, a
    home of its own (``~/.config/edge-agent``) and the commands where the docs put them. On the
    operator's machine (security.md, fleet.md) the README's venv is activated: the host tool
    (``broker init``, the hub CLI, ``convert``). On the hub's machine (hub.md, ``on_hub``)
    ``edge-agent-hub`` is on PATH as hub.md installs it, a link in a ``bin`` directory to the
    hub venv's command, and no other venv (the README's has an ``edge-agent-hub`` of its own,
    without the ``hub`` extra, which would shadow it). The suite's venv stands for the hub's
    (``/opt/edge-agent-hub/venv``, made by hub.md's block as root on a Debian root booted under
    systemd: ``test_deb_booted.py``): it has what the ``hub`` extra installs (psycopg,
    prometheus_client), and the same code."""

    def __init__(self, tmp: Path, venv: ReadmeVenv) -> None:
        self.tmp = tmp
        self.home = tmp / "home"
        self.work = tmp / "work"
        self.home.mkdir()
        self.work.mkdir()
        self.dir = tmp / "mosquitto" / FLEET  # DIR
        self.device_dir = tmp / "device"  # DEVICE_DIR: both nodes' files, as on their devices
        self.port = free_port()
        self.names = (
            f"DIR={self.dir} PORT={self.port} HOST=localhost BIND=127.0.0.1 "
            f"DEVICE_DIR={self.device_dir}"
        )
        local_bin = tmp / "usr-local-bin"  # hub.md: ln -sf .../venv/bin/edge-agent-hub there
        local_bin.mkdir()
        (local_bin / "edge-agent-hub").symlink_to(BIN / "edge-agent-hub")
        self.env = venv.env(HOME=str(self.home), PYTHONUNBUFFERED="1")
        self.hub_env = {**clean_env(), "HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        self.hub_env["PATH"] = f"{local_bin}{os.pathsep}{self.hub_env['PATH']}"

    def run(
        self,
        script: str,
        *,
        stdin: str = "",
        timeout: float = 300,
        env: dict[str, str] | None = None,
        on_hub: bool = False,
    ) -> str:
        """``script`` after the test's names, in ``bash -e`` on the operator's machine (or the
        hub's); its output (fails the test on a non-zero exit)."""
        done = subprocess.run(
            ["bash", "-e", "-c", f"{self.names}\n{script}"],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=self.work,
            env={**(self.hub_env if on_hub else self.env), **(env or {})},
            timeout=timeout,
            check=False,
            start_new_session=True,  # no terminal: prompts read standard input
        )
        assert done.returncode == 0, (
            f"{script}\nexited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
        return done.stdout + done.stderr


def lines_without(block: str, prefix: str) -> str:
    """``block`` without its one line that starts with ``prefix`` (the operator's own value,
    which the test gives instead)."""
    lines = block.splitlines()
    found = [line for line in lines if line.startswith(prefix)]
    assert len(found) == 1, f"expected one line starting {prefix!r} in:\n{block}"
    return "\n".join(line for line in lines if not line.startswith(prefix)) + "\n"


def start_broker(op: Operator) -> MosquittoBroker:
    """security.md block 0: ``broker init`` as written, then its ``mosquitto -c`` line."""
    block = lines_without(doc_block("docs/security.md", 0), "DIR=")
    *init, last = [line for line in block.splitlines() if line.strip()]
    assert last.split("#")[0].split() == ["mosquitto", "-c", "$DIR/mosquitto.conf"], last
    out = op.run("\n".join(init))
    assert f"broker for fleet {FLEET}" in out, out
    assert (op.dir / "clients" / "hub-a" / "hub.toml").is_file()
    try:
        broker = MosquittoBroker(
            op.tmp / "broker-run", port=op.port, config_file=op.dir / "mosquitto.conf"
        )
    except MosquittoMissingError as err:
        pytest.fail(str(err))
    broker.start()
    # The operator copies each identity's files to its device or host (--device-dir): one
    # directory here.
    op.device_dir.mkdir()
    for files in (op.dir / "clients").iterdir():
        for f in files.iterdir():
            shutil.copy(f, op.device_dir / f.name)
    return broker


def broker_log(broker: MosquittoBroker) -> str:
    return "".join(
        p.read_text(errors="replace") for p in sorted(broker.workdir.glob("mosquitto-*.log"))
    )


def secure_daemon(
    op: Operator,
    broker: MosquittoBroker,
    name: str,
    keys: dict[str, Path],
    *,
    groups: str = DOORS,
    mqtt_extra: str = "",
) -> Node:
    """A daemon whose ``[mqtt]`` is its generated ``mqtt.toml`` (files in DEVICE_DIR), trusting
    the CI's bundle key and the hub's command key."""
    node = Node(op.tmp / "nodes", broker, name)
    snippet = (op.dir / "clients" / name / "mqtt.toml").read_text()
    assert f'"{op.device_dir}/{name}.key"' in snippet, snippet
    node.config.write_text(
        f"""
[daemon]
profile = "x86-dev"
state_dir = "{node.state}"
status_file = "{node.state / "status.json"}"
tick_hz = 10
log_level = "info"
trusted_keys_dir = "{keys["bundles"]}"
{groups}
{snippet}hub_keys_dir = "{keys["hubs"]}"
keepalive_s = 5
telemetry_interval_s = 0.5
reconnect_initial_s = 0.05
reconnect_max_s = 0.5
{mqtt_extra}
"""
    )
    return node


class HubService:
    """``edge-agent-hub run`` on a config that starts with the generated ``clients/NAME/hub.toml``
    (the test's [hub] keys inserted into its [hub] table, then [database], [rollouts], [http])."""

    def __init__(self, op: Operator, identity: str, database: str, key_file: Path) -> None:
        self.op = op
        self.dir = op.tmp / f"service-{identity}"
        self.dir.mkdir()
        self.state = self.dir / "state"
        generated = (op.dir / "clients" / identity / "hub.toml").read_text()
        head = f'[hub]\nid = "{identity}"\n'
        assert head in generated, generated
        hub_keys = f'state_dir = "{self.state}"\nstatus_interval_s = 0.5\n'
        self.config = self.dir / "hub.toml"
        self.config.write_text(
            generated.replace(head, head + hub_keys, 1)
            + f"""hub_keys_dir = "{op.home / "hub-keys"}"
keepalive_s = 5
reconnect_initial_s = 0.05
reconnect_max_s = 0.5

{database}

[rollouts]
key_file = "{key_file}"
poll_interval_s = 0.2

[http]
enabled = true
port = 0
"""
        )
        self.log_path = self.dir / "hub.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.notify = NotifySocket(self.dir / "notify.sock")

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "edge-agent-hub"), "run", "--config", str(self.config)],
                env={**self.op.hub_env, "NOTIFY_SOCKET": str(self.notify.path)},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.op.work,
            )
        try:
            self.notify.wait_for("READY=1", 90)
        except AssertionError:
            pytest.fail(f"the hub service did not start:\n{self.log()}")

    def status(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.state / "status.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data

    def cli(self, *args: str) -> str:
        command = " ".join(["edge-agent-hub", *args, "--config", str(self.config)])
        return self.op.run(command, on_hub=True)

    def rollout(self, rollout_id: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.cli("rollout", "status", rollout_id, "--json"))
        return out

    def wait_rollout(self, rollout_id: str, states: set[str], what: str) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def reached() -> bool:
            nonlocal last
            last = self.rollout(rollout_id)
            return last["state"] in states

        try:
            wait_until(reached, what, timeout=WAIT_S)
        except BaseException:
            print(json.dumps(last, indent=1)[:4000], self.log()[-4000:])
            raise
        return last

    def metric(self, name: str, labels: str) -> float | None:
        url = (self.status().get("http") or {}).get("url")
        assert url, self.status()
        with urllib.request.urlopen(f"{url}metrics", timeout=10) as answer:
            text = answer.read().decode()
        for line in text.splitlines():
            if line.startswith(f"{name}{{") and labels in line:
                return float(line.rsplit(" ", 1)[1])
        return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.notify.close()


def hub_md_door_v8() -> str:
    """The command hub.md names for ``door-v8.tar`` (beside its rollout block)."""
    text = (REPO / "docs" / "hub.md").read_text()
    found = re.search(r"`(edge-agent-host convert aif [^`]*--out door-v8\.tar[^`]*)`", text)
    assert found, "hub.md names no command that makes door-v8.tar"
    return " ".join(found.group(1).split())


def bundle_sha(tar: Path) -> str:
    return load_bundle(tar, trusted_keys=None, require_signature=False).sha256


def runs(node: Node, sha: str | None) -> bool:
    """The node's status file says its group ``doors`` runs bundle ``sha`` (None: the config's)."""
    try:
        status = json.loads((node.state / "status.json").read_text())
    except (FileNotFoundError, ValueError):
        return False
    doors = [g for g in status.get("groups", []) if g["name"] == "doors"]
    return bool(doors) and doors[0].get("bundle_sha256") == sha


def node_log(node: Node) -> str:
    try:
        return node.log()
    except (OSError, AttributeError):
        return ""


@pytest.fixture
def started() -> Iterator[list[Any]]:
    """Everything a test starts, stopped at its end (last started, first stopped)."""
    parts: list[Any] = []
    yield parts
    for part in reversed(parts):
        if isinstance(part, Node):
            part.close()
        elif isinstance(part, HubService | MosquittoBroker):
            part.kill()
        elif isinstance(part, PostgresServer):
            part.cleanup()


def postgres_database(op: Operator, started: list[Any]) -> str:
    """hub.md block 1 against a server of the test's own: ``sudo -u postgres`` stands for its
    superuser (PGHOST, PGPORT, PGUSER); the new role's password is typed on standard input."""
    try:
        server = PostgresServer()
    except PostgresMissingError as err:
        pytest.fail(str(err))
    started.append(server)
    server.start()
    password = "journey-hub-password"
    shim = 'sudo() { if [ "$1" = "-u" ]; then shift 2; fi; "$@"; }\n'
    op.run(
        shim + doc_block("docs/hub.md", 1),
        on_hub=True,
        stdin=f"{password}\n{password}\n",
        env={
            "PGHOST": server.host,
            "PGPORT": str(server.port),
            "PGUSER": server.user,
            "PGPASSWORD": server.password,
            "PGDATABASE": "postgres",
        },
    )
    secret = op.tmp / "pg-password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    return (
        f'[database]\ntype = "postgresql"\nhost = "{server.host}"\nport = {server.port}\n'
        f'dbname = "edge_agent_hub"\nuser = "edge_agent_hub"\npassword_file = "{secret}"\n'
    )


# -------------------------------------------------------------------------------------- tests
def test_the_operator_s_journey_on_a_secured_broker(
    tmp_path: Path, started: list[Any], readme_venv: ReadmeVenv
) -> None:
    op = Operator(tmp_path, readme_venv)
    broker = start_broker(op)
    started.append(broker)

    # fleet.md block 0, its first line: the hub's signing key; the operator copies hub.pub to the
    # nodes' hub_keys_dir. The working directory holds what the README's "Using it" leaves in a
    # checkout: examples/ and the CI's bundle key keys/fleet.key, whose fleet.pub the nodes
    # trust; it signs the bundles the docs make (door-v7, door-v8) and one the test makes, which
    # fails its health check on the doors group (a T-maze model on a grid world).
    fleet_block = doc_block("docs/fleet.md", 0)
    keygen, rest = fleet_block.split("\n", 1)
    op.run(keygen)
    key = op.home / ".config" / "edge-agent" / "hub.key"
    (op.home / "hub-keys").mkdir()
    shutil.copy(key.with_suffix(".pub"), op.home / "hub-keys" / "hub.pub")
    shutil.copytree(REPO / "examples", op.work / "examples")
    op.run("edge-agent-host keygen --out keys --name fleet")
    broken = bundle_tar(tmp_path, op.work / "keys" / "fleet.key", world="tmaze", policy_len=1)
    broken_sha = bundle_sha(broken)
    keys = {"bundles": op.work / "keys", "hubs": op.home / "hub-keys"}

    # Two daemons from their generated snippets.
    nodes = {name: secure_daemon(op, broker, name, keys) for name in NODES}
    for node in nodes.values():
        started.append(node)
        node.start(wait_ready=False)
    for node in nodes.values():
        assert node.notify is not None
        node.notify.wait_for("READY=1", 90)

    # The hub service, identity hub-a (a hub: it carries rollouts), on PostgreSQL.
    service = HubService(op, "hub-a", postgres_database(op, started), key)
    started.append(service)
    service.start()

    # security.md block 1: the hub CLI (identity hub) lists both nodes.
    def listed_online() -> bool:
        out = op.run(doc_block("docs/security.md", 1))
        return all(
            f"{n} " in out and "online" in out.split(n, 1)[1].split("\n", 1)[0] for n in NODES
        )

    wait_until(listed_online, "both nodes online in the hub CLI's fleet", timeout=WAIT_S)

    # fleet.md block 0, the rest as written: fleet, watch, signed commands, the bundle it makes
    # and deploys.
    out = op.run(rest, timeout=600)
    assert "pi-0417: resize_group ok" in out, out
    for name in NODES:
        assert f"{name}: ping ok" in out, out
        assert f"{name}: ok 1/1 chunks" in out, out  # the deployment's last progress line
    v7 = op.work / "door-v7.tar"
    v7_sha = bundle_sha(v7)
    for node in nodes.values():
        wait_until(lambda n=node: runs(n, v7_sha), f"{node.name} on door-v7")

    # hub.md block 2 on the service's config: its readers, with the commands journaled.
    readers = lines_without(doc_block("docs/hub.md", 2), "C=")
    out = op.run(f"C={service.config}\n{readers}", on_hub=True)
    for name in ("resize_group", "ping", "deploy"):
        assert name in out, out
    assert "running" in out, out

    # hub.md block 3 as written, beside hub.toml, fleet.md's door-v7 and door-v8, which the
    # operator made with the command hub.md names: rolled out with door-v7 as rollback; the
    # canary deploys and soaks (300 s), is paused, resumed, and the abort rolls it back.
    op.run(hub_md_door_v8())
    v8 = op.work / "door-v8.tar"
    v8_sha = bundle_sha(v8)
    block = doc_block("docs/hub.md", 3)
    start, after = block.split("\nID=", 1)
    after = after.split("\n", 1)[1]
    out = op.run(f"cd {service.dir}\ncp {v7} {v8} .\n{start}", on_hub=True)
    rollout_id = out.split("rollout ", 1)[1].split()[0]
    assert rollout_id.startswith("r-"), out
    wait_until(
        lambda: service.rollout(rollout_id)["phase"] == "soaking", "the canary's soak", WAIT_S
    )
    soaking = service.rollout(rollout_id)
    assert (soaking["wave"], soaking["waves"]) == (1, 2)  # waves count from 1
    canary = next(n for n, r in soaking["nodes"].items() if r["wave"] == 1)
    other = next(n for n in NODES if n != canary)
    assert soaking["nodes"][canary]["state"] == "ok"
    assert runs(nodes[other], v7_sha)
    (r_line,) = [line for line in start.splitlines() if line.startswith("R=")]
    assert r_line == 'R="edge-agent-hub rollout"', r_line
    op.run(f"cd {service.dir}\n{r_line}\nID={rollout_id}\n{after}", on_hub=True)
    end = service.wait_rollout(rollout_id, {"rolled_back", "halted"}, "the abort's rollback")
    assert end["state"] == "rolled_back", end
    assert end["detail"].startswith("aborted by the operator"), end
    wait_until(lambda: runs(nodes[canary], v7_sha), "the canary back on door-v7")
    assert runs(nodes[other], v7_sha)

    # A staged rollout that completes; its wave in status --json is the metric's.
    plan = json.loads(
        service.cli("rollout", "start", str(v8), "--group", "doors", "--all", "--waves",
                    "1,100%", "--soak", "1", "--json")
    )  # fmt: skip
    done = service.wait_rollout(plan["id"], {"done", "halted", "rolled_back"}, "the rollout")
    assert done["state"] == "done", done
    assert {n: r["state"] for n, r in done["nodes"].items()} == dict.fromkeys(NODES, "ok")
    for node in nodes.values():
        wait_until(lambda n=node: runs(n, v8_sha), f"{node.name} on door-v8")
    assert done["wave"] == 2
    wait_until(
        lambda: service.metric("edge_agent_hub_rollout_wave", f'rollout="{plan["id"]}"') == 2.0,
        "the metric's wave",
    )

    # One that halts at its canary: the T-maze bundle fails the canary's health check.
    plan = json.loads(
        service.cli("rollout", "start", str(broken), "--group", "doors", "--all", "--waves",
                    "1,100%", "--soak", "1", "--json")
    )  # fmt: skip
    halted = service.wait_rollout(plan["id"], {"done", "halted", "rolled_back"}, "the halt")
    assert halted["state"] == "halted", halted
    first, second = plan["nodes"]
    assert halted["nodes"][first]["state"] == "failed", halted
    assert halted["nodes"][first]["detail"].startswith("failed: health"), halted
    assert halted["nodes"][second]["state"] == "pending", halted
    assert halted["detail"].startswith("wave 1: 1 failed"), halted
    assert not any(runs(n, broken_sha) for n in nodes.values())

    # A revoked node: refused, named in its log, and 'silent' in the hub's fleet table.
    op.run(f"edge-agent-host broker revoke --out $DIR {NODES[1]}")
    broker.reload()
    wait_until(lambda: "0x87 not authorized" in node_log(nodes[NODES[1]]), "the refusal in its log")

    def revoked_is_silent() -> bool:
        table = service.cli("fleet", "--silent-after", "3")
        rows = {line.split()[0]: line.split()[1] for line in table.splitlines()[1:] if line}
        return rows.get(NODES[1]) == "silent" and rows.get(NODES[0]) == "online"

    wait_until(revoked_is_silent, "the revoked node 'silent', the other online", WAIT_S)

    # One connection per identity all along: no session was ever taken over.
    log = broker_log(broker)
    assert "already connected" not in log, log[-4000:]
    ended = [
        line for line in service.log().splitlines() if "MQTT session" in line and "ended" in line
    ]
    assert not ended, ended  # the service's one session lasted the whole journey
    assert service.status()["mqtt"]["connected"]


def test_a_hub_service_whose_identity_may_not_command_halts_its_rollout_with_the_reason(
    tmp_path: Path, started: list[Any], readme_venv: ReadmeVenv
) -> None:
    """The observer identity (docs/hub.md: enough for a service without rollouts) carrying a
    rollout: the broker refuses its commands (0x87), and the rollout halts at once saying so."""
    op = Operator(tmp_path, readme_venv)
    broker = start_broker(op)
    started.append(broker)
    key = generate_keypair(tmp_path / "hub-keys", "hub").private_path
    (op.home / "hub-keys").mkdir()
    shutil.copy(key.with_suffix(".pub"), op.home / "hub-keys" / "hub.pub")
    ci = generate_keypair(tmp_path / "ci", "ci").private_path
    good = bundle_tar(tmp_path, ci, policy_len=1)
    node = secure_daemon(
        op, broker, NODES[0], {"bundles": tmp_path / "ci", "hubs": op.home / "hub-keys"}
    )
    started.append(node)
    node.start()
    service = HubService(op, "dashboard", '[database]\ntype = "sqlite"\n', key)
    started.append(service)
    service.start()
    wait_until(lambda: f"{NODES[0]} " in service.cli("fleet"), "the node in the registry", WAIT_S)
    plan = json.loads(
        service.cli("rollout", "start", str(good), "--group", "doors", "--all", "--json")
    )
    end = service.wait_rollout(plan["id"], {"done", "halted", "rolled_back"}, "the halt")
    assert end["state"] == "halted", end
    assert "0x87 not authorized" in end["detail"], end
    assert "0x87 not authorized" in end["nodes"][NODES[0]]["detail"], end
    assert "the broker refused ea/v1/plant-3/node/pi-0417/cmd: 0x87 not authorized" in service.log()
    assert runs(node, None)
    # The hub CLI with that identity (the service stopped first: one connection per identity),
    # the refused command ends it at once, saying why.
    service.kill()
    files = op.dir / "clients" / "dashboard"
    cli = subprocess.run(
        [str(BIN / "edge-agent-host"), "hub", "--host", "localhost", "--port", str(op.port),
         "--fleet", FLEET, "--hub-id", "dashboard", "--ca-file", str(files / "ca.crt"),
         "--cert-file", str(files / "dashboard.crt"), "--key-file", str(files / "dashboard.key"),
         "command", "--key", str(key), "--node", NODES[0], "ping"],
        capture_output=True, text=True, timeout=120, check=False, env=op.env,
    )  # fmt: skip
    assert cli.returncode == 1, cli
    assert "0x87 not authorized" in cli.stdout + cli.stderr, cli


# ------------------------------------------------------------------ agent I/O on the same broker
def fleet_md_io_group() -> str:
    """fleet.md's agent I/O group as written (the TOML block of "Agent I/O over MQTT")."""
    section = (REPO / "docs" / "fleet.md").read_text().split("## Agent I/O over MQTT", 1)[1]
    found = re.search(r"```toml\n(.*?)```", section, flags=re.S)
    assert found, section[:2000]
    return found.group(1)


class DoorsClient:
    """The identity ``doors`` of security.md's block (``--sensor doors``): the door sensors'
    and actuators' process, over mutual TLS with its files from ``clients/doors/``."""

    def __init__(self, op: Operator) -> None:
        files = op.dir / "clients" / "doors"
        self.actions: dict[str, list[tuple[int, int]]] = {}  # topic -> (tick, agents)
        self.lock = threading.Lock()
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id="doors",
            protocol=MQTTProtocolVersion.MQTTv5,
        )  # fmt: skip
        context = ssl.create_default_context(cafile=str(files / "ca.crt"))
        context.load_cert_chain(str(files / "doors.crt"), str(files / "doors.key"))
        self.client.tls_set_context(context)
        self.client.on_connect = lambda c, *_: c.subscribe("actuators/+/doors", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("localhost", op.port)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        batch, ids, _actions = decode_actions(msg.payload)
        assert batch.group == "doors"
        with self.lock:
            self.actions.setdefault(msg.topic, []).append((batch.tick, len(ids)))

    def observe(self, tick: int, count: int) -> None:
        """Every door agent's observation (a cell of the grid10 model the bundle holds)."""
        values = (np.arange(count) + tick) % 100
        payload = encode_observations("doors", "doors", tick, np.arange(count), values[:, None])
        self.client.publish("sensors/doors/a", payload, qos=1).wait_for_publish(30)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_fleet_md_s_agent_io_runs_on_security_md_s_broker(
    tmp_path: Path, started: list[Any], readme_venv: ReadmeVenv
) -> None:
    """fleet.md's ``doors`` group, as written but for its bundle's path, on node pi-0417 of
    security.md's broker: the identity ``doors`` writes the observations, the group steps and
    its actions reach ``doors``, nothing is refused. Node pi-0418 runs the same group with the
    sink ``actuators/doors`` (a topic its ACL does not let it write) and a group whose source
    its ACL does not let it read: its log says each once, and its status counts them."""
    op = Operator(tmp_path, readme_venv)
    broker = start_broker(op)
    started.append(broker)
    ci = generate_keypair(tmp_path / "ci", "ci").private_path
    door = bundle_tar(tmp_path, ci, policy_len=1)  # grid10: one outcome of 100 per agent
    written = fleet_md_io_group()
    group = written.replace("/opt/models/door.tar", str(door))
    assert group != written
    count = int(re.search(r"^count = (\d+)", written, flags=re.M).group(1))  # type: ignore[union-attr]
    keys = {"bundles": tmp_path / "ci", "hubs": tmp_path / "ci"}
    wrong = group.replace('"actuators/pi-0417/doors"', '"actuators/doors"') + """
[[groups]]
name = "vents"
model = { type = "builtin", name = "grid10" }
count = 4
source = { type = "mqtt", topic = "vents/+" }
sink = { type = "log" }
"""
    assert '"actuators/doors"' in wrong
    nodes = {
        "pi-0417": secure_daemon(op, broker, "pi-0417", keys, groups=group),
        "pi-0418": secure_daemon(
            op, broker, "pi-0418", keys, groups=wrong, mqtt_extra="io_silent_after_s = 2"
        ),
    }
    for node in nodes.values():
        started.append(node)
        node.start()
    doors = DoorsClient(op)
    try:
        tick = 0

        def acted() -> bool:
            nonlocal tick
            tick += 1
            doors.observe(tick, count)
            with doors.lock:
                batches = doors.actions.get("actuators/pi-0417/doors", [])
            return sum(n for t, n in batches if t == batches[-1][0]) == count if batches else False

        wait_until(acted, "pi-0417's actions for every door agent at the actuators", WAIT_S)
        status = nodes["pi-0417"].wait_status(
            lambda s: s["groups"][0]["io"]["rows"] >= count and s["groups"][0]["steps"] > 0,
            "pi-0417's doors group stepping on the sensors' observations",
        )
        io, actions = status["groups"][0]["io"], status["groups"][0]["actions"]
        assert not io["waiting"]
        assert io["refused"] == 0
        assert actions["published"] >= count
        assert actions["refused"] == 0
        assert status["counters"]["fleet.io_refused"] == 0
        assert "refused" not in full_log(nodes["pi-0417"])
        with doors.lock:
            assert set(doors.actions) == {"actuators/pi-0417/doors"}  # nothing of pi-0418's

        refused = (
            "group 'doors': the broker refused the actions published on 'actuators/doors' "
            "(0x87 not authorized): its ACL must let node 'pi-0418' write it "
            "(edge-agent-host broker init --io-topic / --io-read, docs/security.md)"
        )
        silent = (
            "group 'vents': nothing arrived on 'vents/+' in 2 s online (4 agents never "
            "observed): does a sensor publish there, and may node 'pi-0418' read it? "
            "(mosquitto grants a subscription its ACL denies and delivers nothing: "
            "edge-agent-host broker init --io-read / --io-topic, docs/security.md)"
        )

        def said() -> bool:
            doors.observe(tick, count)  # pi-0418's doors group steps and publishes too
            log = full_log(nodes["pi-0418"])
            return refused in log and silent in log

        wait_until(said, "pi-0418's lines about its refused sink and its silent source", WAIT_S)
        status = nodes["pi-0418"].wait_status(
            lambda s: s["groups"][0]["actions"]["refused"] >= 3
            and {e["kind"] for e in s["events"]} >= {"io_refused", "io_silent"},
            "more refused batches, and both events",
        )
        log = full_log(nodes["pi-0418"])
        assert log.count(refused) == 1, log[-4000:]
        assert log.count(silent) == 1, log[-4000:]
        assert status["groups"][0]["actions"]["refusal"] == "0x87 not authorized"
        assert status["groups"][1]["io"]["waiting"]
    finally:
        doors.close()


def full_log(node: Node) -> str:
    return node.config.with_suffix(".log").read_text(errors="replace")

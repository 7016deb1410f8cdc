"""``edge-agent-host broker``: what ``init``, ``issue`` and ``revoke`` write, read without a broker;
and the hub's client certificate options.

The ACL is checked by evaluating it the way mosquitto does (``pattern`` lines for everyone with
``%u`` replaced by the identity, ``topic`` lines of the identity's ``user`` block, ``deny``
first) against the topics the protocol builds and the subscriptions the daemon makes;
``tests/integration/fleet/test_broker_acl.py`` runs the same files in a real mosquitto.
"""

from __future__ import annotations

import base64
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.client import topic_matches_sub

from edge_agent.config.daemon import parse_config
from edge_agent.coordination import CoordinationEngine
from edge_agent.errors import InputError
from edge_agent.fleet.topics import TopicKind, Topics
from edge_agent_host import cli
from edge_agent_host.broker.directory import init_broker, issue_identity, revoke_identity
from edge_agent_host.broker.identities import Auth, BrokerState, Identity, Role
from edge_agent_host.broker.mosquitto import acl_text, password_line
from edge_agent_host.fleetctl import FleetClient, FleetError
from edge_agent_host.hub.config.hub_toml import parse_hub_config

FLEET = "plant-3"
T = Topics(FLEET)
DAEMON = """[daemon]
profile = "x86-dev"
state_dir = "state"

[[groups]]
name = "grid"
model = { type = "builtin", name = "grid10" }
count = 10
source = { type = "sim" }
sink = { type = "sim" }

"""


# ---------------------------------------------------------------------------------- helpers
@dataclass
class Acl:
    """A mosquitto ``acl_file`` evaluated as mosquitto 2 does."""

    patterns: list[tuple[str, str]] = field(default_factory=list)
    users: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Acl:
        acl = cls()
        user: str | None = None
        for line in text.splitlines():
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            if words[0] == "user":
                user = words[1]
                acl.users.setdefault(user, [])
            elif words[0] == "pattern":
                acl.patterns.append((words[1], words[2]))
            elif words[0] == "topic":
                assert user is not None, "topic lines for anonymous clients"
                acl.users[user].append((words[1], words[2]))
            else:
                pytest.fail(f"unknown ACL line {line!r}")
        return acl

    def allows(self, user: str, access: str, topic: str) -> bool:
        rules = self.users.get(user, []) + [(a, p.replace("%u", user)) for a, p in self.patterns]
        if any(a == "deny" and topic_matches_sub(p, topic) for a, p in rules):
            return False
        return any(a in (access, "readwrite") and topic_matches_sub(p, topic) for a, p in rules)


def state(*, auth: Auth = Auth.CERT, **roles: Role) -> BrokerState:
    return BrokerState(
        fleet=FLEET,
        port=8883,
        bind="127.0.0.1",
        host="127.0.0.1",
        auth=auth,
        validity_days=30,
        run_as="mosquitto",
        io_topics=["sensors/%u/#"],
        io_reads=["ea/v1/plant-3/node/+/action/#"],
        identities={
            n: Identity(role=r, issued_at="2030-01-01T00:00:00+00:00") for n, r in roles.items()
        },
    )


def fleet(**extra: Role) -> BrokerState:
    return state(**{"pi-a": Role.NODE, "pi-b": Role.NODE, "hub": Role.HUB, **extra})


def own_topics(node: str) -> list[str]:
    """Every topic a node writes, as the protocol builds them."""
    return [
        T.node_state(node),
        T.birth(node),
        T.death(node),
        T.telemetry(node),
        T.event(node),
        T.command_result(node),
        T.beliefs(node),
        T.tasks(node),
        T.health(node),
        T.learning(node),
        T.action(node, "doors"),
        T.action(node, "doors", 7),
    ]


class RecordingLink:
    """What a CoordinationEngine subscribes to."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.topics = T
        self.bdseq: int | None = 0
        self.patterns: list[str] = []

    def publish(self, *_args: object, **_kwargs: object) -> int:
        return 0

    def subscribe(self, pattern: str, qos: int = 1) -> None:
        del qos
        self.patterns.append(pattern)

    def send_now(self) -> int:
        return 0


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ------------------------------------------------------------------------------------- ACL
def test_a_node_writes_only_its_own_topics_and_reads_what_it_subscribes_to() -> None:
    acl = Acl.parse(acl_text(fleet()))
    for topic in own_topics("pi-a"):
        assert acl.allows("pi-a", "write", topic), topic
    for topic in [*own_topics("pi-b"), *own_topics("ghost"), T.command("pi-b"), T.obs("pi-b", "g")]:
        assert not acl.allows("pi-a", "write", topic), topic
    assert acl.allows("pi-a", "write", T.rebirth("pi-b"))  # asking a peer for its birth
    assert not acl.allows("pi-a", "write", T.command("pi-a"))

    # Everything the daemon subscribes to: the link's inbox, the coordination engine's topics.
    link = RecordingLink("pi-a")
    CoordinationEngine(link, {}).start()
    subscriptions = [*T.node_inbox("pi-a"), *link.patterns]
    assert T.all_nodes(TopicKind.TASKS) in subscriptions
    for pattern in subscriptions:
        topic = pattern.replace("+", "pi-b").replace("#", "g/3")
        assert acl.allows("pi-a", "read", topic), pattern
    for topic in (T.telemetry("pi-b"), T.command("pi-b"), T.obs("pi-b", "g"), T.event("pi-b")):
        assert not acl.allows("pi-a", "read", topic), topic

    # Agent I/O outside the tree: its own sensors' topics, others' actions read-only.
    assert acl.allows("pi-a", "write", "sensors/pi-a/door/1")
    assert not acl.allows("pi-a", "write", "sensors/pi-b/door/1")
    assert acl.allows("pi-a", "read", T.action("pi-b", "doors"))


def test_hubs_observers_and_sensors_get_their_role_and_nothing_of_another_node() -> None:
    acl = Acl.parse(acl_text(fleet(watch=Role.OBSERVER, cam=Role.SENSOR)))
    for topic in (*own_topics("pi-a"), T.command("pi-b"), T.obs("pi-b", "g", 2)):
        assert acl.allows("hub", "read", topic)
        assert acl.allows("watch", "read", topic)
    assert acl.allows("hub", "write", T.command("pi-b"))
    assert acl.allows("hub", "write", T.tasks("hub"))  # its announcements
    assert not acl.allows("hub", "write", T.tasks("pi-a"))
    assert not acl.allows("hub", "write", T.node_state("pi-a"))
    assert not acl.allows("watch", "write", T.command("pi-b"))
    assert acl.allows("cam", "write", T.obs("pi-b", "doors", 4))
    assert not acl.allows("cam", "read", T.telemetry("pi-b"))
    assert not acl.allows("cam", "write", T.beliefs("pi-b"))


def test_a_revoked_identity_is_denied_everything() -> None:
    s = fleet()
    s.identities["pi-a"].revoked = True
    acl = Acl.parse(acl_text(s))
    assert not any(acl.allows("pi-a", a, t) for t in own_topics("pi-a") for a in ("read", "write"))
    assert acl.allows("pi-b", "write", T.telemetry("pi-b"))


# ------------------------------------------------------------------------------- passwords
def test_password_lines_are_mosquitto_passwd_s() -> None:
    # Written by mosquitto_passwd 2.0.11 (``mosquitto_passwd -c -b pw alice secret``).
    line = (
        "alice:$7$101$KT13XVJoKvfRqWfN$9OGACGpgNLxvHYPuP/1yVNBtth6xp+uL/lL/JgXLAGg2ZHTkA1fVf5EUV"
        "Z6i8Hy6CEdJYYGQ4g/1sGL30cGiMg=="
    )
    salt = base64.b64decode("KT13XVJoKvfRqWfN")
    assert password_line("alice", "secret", salt=salt, iterations=101) == line
    assert password_line("alice", "secreT", salt=salt, iterations=101) != line


# ------------------------------------------------------------------------------------ files
def test_init_writes_a_ca_the_broker_s_and_each_client_s_certificate(tmp_path: Path) -> None:
    out = tmp_path / "broker"
    init_broker(fleet(), out)
    conf = (out / "mosquitto.conf").read_text()
    for line in (
        "listener 8883 127.0.0.1",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "allow_anonymous false",
        f"acl_file {out.resolve() / 'acl'}",
        f"crlfile {out.resolve() / 'ca' / 'crl.pem'}",
        # the hub's persistent session: queued while it is away, bounded, kept on disk
        "persistence true",
        f"persistence_location {out.resolve() / 'data'}/",
        "autosave_interval 60",
        "max_queued_messages 200000",
        f"max_queued_bytes {128 * 2**20}",
        "persistent_client_expiration 14d",
    ):
        assert line in conf.splitlines(), line
    assert mode(out / "ca" / "ca.key") == 0o600
    assert mode(out / "broker" / "broker.key") == 0o600
    ca = x509.load_pem_x509_certificate((out / "ca" / "ca.crt").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server = x509.load_pem_x509_certificate((out / "broker" / "broker.crt").read_bytes())
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    crl = x509.load_pem_x509_crl((out / "ca" / "crl.pem").read_bytes())
    assert crl.is_signature_valid(ca.public_key())
    assert len(list(crl)) == 0
    assert crl.next_update_utc == ca.not_valid_after_utc

    for name in ("pi-a", "pi-b", "hub"):
        files = out / "clients" / name
        assert mode(files) == 0o700
        assert mode(files / f"{name}.key") == 0o600
        cert = x509.load_pem_x509_certificate((files / f"{name}.crt").read_bytes())
        cert.verify_directly_issued_by(ca)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        key = serialization.load_pem_private_key((files / f"{name}.key").read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.curve.name == "secp256r1"
        assert key.public_key() == cert.public_key()

    # The snippet is a valid [mqtt] table for the daemon, naming these files.
    snippet = (out / "clients" / "pi-a" / "mqtt.toml").read_text()
    config = parse_config(DAEMON + snippet, "pi-a.toml")
    m = config.mqtt
    assert (m.enabled, m.host, m.port, m.fleet, m.node_id) == (
        True,
        "127.0.0.1",
        8883,
        FLEET,
        "pi-a",
    )
    assert m.tls.enabled
    assert m.tls.cert_file == (out / "clients" / "pi-a" / "pi-a.crt").resolve()
    assert m.tls.key_file == (out / "clients" / "pi-a" / "pi-a.key").resolve()
    assert m.tls.ca_file is not None
    assert m.tls.ca_file.read_bytes() == (out / "ca" / "ca.crt").read_bytes()
    # A hub's snippet is the start of the hub service's config: edge-agent-hub takes it as is.
    assert not (out / "clients" / "hub" / "mqtt.toml").exists()
    hub_text = (out / "clients" / "hub" / "hub.toml").read_text()
    hub = parse_hub_config(hub_text + '[database]\ntype = "sqlite"\n', "hub.toml").config
    assert hub.hub.id == "hub"
    assert (hub.mqtt.host, hub.mqtt.port, hub.mqtt.fleet) == ("127.0.0.1", 8883, FLEET)
    assert hub.mqtt.tls.enabled
    assert hub.mqtt.tls.cert_file == (out / "clients" / "hub" / "hub.crt").resolve()
    assert hub.mqtt.tls.key_file == (out / "clients" / "hub" / "hub.key").resolve()
    assert "--cert-file" in hub_text
    assert "it may carry rollouts" in hub_text


def test_password_auth_writes_hashes_for_the_broker_and_passwords_for_the_clients(
    tmp_path: Path,
) -> None:
    out = tmp_path / "broker"
    init_broker(state(auth=Auth.PASSWORD, **{"pi-a": Role.NODE, "hub": Role.HUB}), out)
    conf = (out / "mosquitto.conf").read_text().splitlines()
    assert f"password_file {out.resolve() / 'passwords'}" in conf
    assert "require_certificate false" in conf
    assert mode(out / "passwords") == 0o600
    entries = dict(line.split(":", 1) for line in (out / "passwords").read_text().splitlines())
    assert sorted(entries) == ["hub", "pi-a"]
    password = (out / "clients" / "pi-a" / "password").read_text().strip()
    assert mode(out / "clients" / "pi-a" / "password") == 0o600
    _, alg, iterations, salt, _ = entries["pi-a"].split("$")
    line = password_line("pi-a", password, salt=base64.b64decode(salt), iterations=int(iterations))
    assert alg == "7"
    assert line == f"pi-a:{entries['pi-a']}"
    m = parse_config(
        DAEMON + (out / "clients" / "pi-a" / "mqtt.toml").read_text(),
        "pi-a.toml",
    ).mqtt
    assert (m.username, m.password_file) == (
        "pi-a",
        (out / "clients" / "pi-a" / "password").resolve(),
    )
    assert m.tls.enabled
    assert m.tls.cert_file is None
    service = parse_hub_config((out / "clients" / "hub" / "hub.toml").read_text(), "hub.toml")
    assert (service.config.mqtt.username, service.config.mqtt.password_file) == (
        "hub",
        (out / "clients" / "hub" / "password").resolve(),
    )


def test_issue_rotate_and_revoke(tmp_path: Path) -> None:
    out = tmp_path / "broker"
    init_broker(fleet(), out)
    ca = x509.load_pem_x509_certificate((out / "ca" / "ca.crt").read_bytes())

    def serial(name: str) -> int:
        return x509.load_pem_x509_certificate(
            (out / "clients" / name / f"{name}.crt").read_bytes()
        ).serial_number

    def revoked() -> set[int]:
        crl = x509.load_pem_x509_crl((out / "ca" / "crl.pem").read_bytes())
        assert crl.is_signature_valid(ca.public_key())
        return {r.serial_number for r in crl}

    issue_identity(out, "pi-c", Role.NODE)  # a new node: the ACL's patterns already cover it
    assert serial("pi-c") != serial("pi-a")
    with pytest.raises(InputError, match="--rotate"):
        issue_identity(out, "pi-c", Role.NODE)
    old = serial("pi-c")
    issue_identity(out, "pi-c", Role.NODE, rotate=True)
    assert serial("pi-c") != old
    assert revoked() == {old}

    issue_identity(out, "watch", Role.OBSERVER)
    assert "user watch" in (out / "acl").read_text()
    revoke_identity(out, "pi-a")
    assert revoked() == {old, serial("pi-a")}
    acl = Acl.parse((out / "acl").read_text())
    assert not acl.allows("pi-a", "write", T.telemetry("pi-a"))
    assert acl.allows("pi-c", "write", T.telemetry("pi-c"))
    with pytest.raises(InputError, match="no live identity"):
        revoke_identity(out, "pi-a")
    saved = BrokerState.model_validate_json((out / "broker.json").read_text())
    assert saved.identities["pi-a"].revoked


def test_revoking_a_password_identity_removes_its_entry(tmp_path: Path) -> None:
    out = tmp_path / "broker"
    init_broker(state(auth=Auth.PASSWORD, **{"pi-a": Role.NODE, "pi-b": Role.NODE}), out)
    revoke_identity(out, "pi-a")
    users = [line.split(":")[0] for line in (out / "passwords").read_text().splitlines()]
    assert users == ["pi-b"]


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--node", "pi-a", "--hub", "pi-a"], "given twice"),
        (["--node", "pi.a"], "identity"),
        (["--node", "pi-a", "--io-topic", "ea/v1/plant-3/node/+/obs/#"], "fleet tree"),
        (["--node", "pi-a", "--io-topic", "sensors/a+b"], "whole level"),
        (["--node", "broker"], "listener"),
        (["--node", "pi-a", "--bind", "0.0.0.0"], "--host"),
    ],
)
def test_init_refuses_what_would_weaken_or_break_the_acl(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], problem: str
) -> None:
    argv = ["broker", "init", "--fleet", FLEET, "--port", "8883", "--out", str(tmp_path / "b")]
    if problem == "identity":  # argparse refuses the name: usage error
        with pytest.raises(SystemExit, match="2"):
            cli.main([*argv, *args])
    else:
        assert cli.main([*argv, *args]) == 1
    assert problem in capsys.readouterr().err
    assert not (tmp_path / "b" / "ca").exists()


def test_init_never_overwrites_a_broker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["broker", "init", "--fleet", FLEET, "--node", "pi-a", "--port", "8883"]
    assert cli.main([*argv, "--out", str(tmp_path / "b")]) == 0
    key = (tmp_path / "b" / "ca" / "ca.key").read_bytes()
    capsys.readouterr()
    assert cli.main([*argv, "--out", str(tmp_path / "b")]) == 1
    assert "already holds a broker" in capsys.readouterr().err
    assert (tmp_path / "b" / "ca" / "ca.key").read_bytes() == key


def test_init_says_where_the_hub_s_two_signing_keys_go(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/fleet.md's two key directories: the hub's command key to the nodes' hub_keys_dir,
    its learning key (the bundle key learned rounds are signed with) to trusted_keys_dir; said
    by init and in the hub's and the nodes' snippets."""
    out = tmp_path / "b"
    argv = ["broker", "init", "--fleet", FLEET, "--node", "pi-a", "--port", "8883"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line for line in printed if "key:" in line] == [
        "  hub command key:  edge-agent-host keygen --out KEYS --name hub; hub.pub into the "
        "nodes' [mqtt] hub_keys_dir, hub.key is the hub service's [rollouts] key_file",
        "  hub learning key: edge-agent-host keygen --out KEYS --name learning; learning.pub into "
        "the nodes' [daemon] trusted_keys_dir (beside the CI's), learning.key is its [learning] "
        "key_file",
    ]
    hub = (out / "clients" / "hub" / "hub.toml").read_text()
    assert "# (its .pub in the nodes' [mqtt] hub_keys_dir), and [learning] key_file" in hub
    assert (
        "# hub_keys_dir, the directory of the hub's command key"
        in (out / "clients" / "pi-a" / "mqtt.toml").read_text()
    )


# -------------------------------------------------------------------------------- the hub
@pytest.mark.parametrize("command", [["hub", "--db", "h.db"], ["tasks"]])
def test_the_hub_and_tasks_take_a_client_certificate(command: list[str]) -> None:
    tls = ["--ca-file", "ca.crt", "--cert-file", "hub.crt", "--key-file", "hub.key"]
    sub = "list" if command[0] == "tasks" else "fleet"
    args = cli.build_parser().parse_args([command[0], *tls, *command[1:], sub])
    assert (args.ca_file, args.cert_file, args.key_file) == (
        Path("ca.crt"),
        Path("hub.crt"),
        Path("hub.key"),
    )


def test_hub_client_uses_the_certificate_for_mutual_tls(tmp_path: Path) -> None:
    init_broker(fleet(), tmp_path)
    files = [str(tmp_path / "clients" / "hub" / n) for n in ("ca.crt", "hub.crt", "hub.key")]
    hub = FleetClient(fleet=FLEET, ca_file=files[0], cert_file=files[1], key_file=files[2])
    tls = hub.transport.settings.tls  # type: ignore[attr-defined]
    assert [tls.ca_file, tls.cert_file, tls.key_file] == files
    assert FleetClient(fleet=FLEET).transport.settings.tls is None  # type: ignore[attr-defined]
    with pytest.raises(FleetError, match="both"):
        FleetClient(fleet=FLEET, cert_file="hub.crt")
    # A file it cannot read is said before any connection, naming it.
    with pytest.raises(FleetError, match=r"ca_file ca\.crt: cannot read: No such file"):
        FleetClient(fleet=FLEET, ca_file="ca.crt", cert_file=files[1], key_file=files[2])

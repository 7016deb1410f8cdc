"""``edge-agent-host broker``: a mosquitto on which every client can be only itself.

``init`` writes, into one directory, a mosquitto configuration with a TLS listener, a CA, the
broker's certificate, an ACL, and per identity (each node, each hub, observers, sensors) the
files that identity connects with and the ``[mqtt]`` snippet of its daemon config::

    edge-agent-host broker init --fleet F --node ID [--node ID ...] --port P --out DIR
        [--hub NAME ...] [--observer NAME ...] [--sensor NAME ...]
        [--host NAME] [--bind ADDR] [--san NAME ...] [--auth cert|password]
        [--validity-days N] [--io-topic FILTER ...] [--io-read FILTER ...]
        [--device-dir PATH] [--run-as USER]
    edge-agent-host broker issue --out DIR --node ID | --hub NAME | ... [--rotate]
    edge-agent-host broker revoke --out DIR NAME

``DIR`` then holds ``mosquitto.conf`` (run ``mosquitto -c DIR/mosquitto.conf``), ``acl``,
``passwords`` (``--auth password``), ``broker.json`` (what was issued and revoked: ``issue``
and ``revoke`` read it), ``ca/`` (``ca.crt``, ``ca.key`` mode 0600, ``crl.pem``), ``broker/``
(the listener's certificate and key) and ``clients/NAME/`` (``ca.crt``, ``NAME.crt`` and
``NAME.key`` mode 0600, or ``password`` mode 0600; and ``mqtt.toml``, the ``[mqtt]`` of a node's
daemon config, or for a hub or an observer ``hub.toml``, the start of the hub service's config).

**Identity.** With ``--auth cert`` (the default) a client is the common name of its
certificate (``require_certificate``, ``use_identity_as_username``); with ``--auth password``
it is its user name, checked against ``passwords`` (PBKDF2-SHA512, the ``$7$`` format of
mosquitto 2's ``mosquitto_passwd``), over TLS all the same. ``use_username_as_clientid`` makes
the identity the MQTT client id too, so no client can take over another's session (and so fire
its will: "offline").

**ACL** (:func:`acl_text`): ``pattern`` lines bind the topics a node writes to its identity
(``%u``): every node-owned kind of :class:`~edge_agent.fleet.topics.Topics` (state, birth,
death, telemetry, event, result, beliefs, tasks, action). A node reads its inbox (cmd, rebirth,
obs) and the fleet's presence, beliefs and tasks, and may ask any node for a rebirth. A hub
reads the whole fleet and writes every node's ``cmd``; an observer only reads; a sensor writes
every node's ``obs``. ``--io-topic`` adds filters every identity may read and write (MQTT
sources and sinks outside the fleet tree, ``%u`` allowed as a whole level), ``--io-read``
filters it may read. Because patterns apply to every identity, each identity also holds the
node rights of its own name: names are unique across roles. ``docs/security.md`` explains it.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import getpass
import hashlib
import ipaddress
import json
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_agent.errors import InputError
from edge_agent.fleet.names import NAME_PATTERN
from edge_agent.fleet.topics import NODE_OWNED_KINDS, TopicKind, Topics
from edge_agent.fsutil import write_atomic

__all__ = [
    "IDENTITY_PATTERN",
    "PBKDF2_ITERATIONS",
    "Auth",
    "BrokerState",
    "Role",
    "acl_text",
    "client_snippet",
    "configure",
    "init_broker",
    "issue_identity",
    "mosquitto_conf",
    "password_line",
    "revoke_identity",
    "run",
]

IDENTITY_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
"""A broker identity: one topic level (``%u``) and a valid ``[mqtt] node_id`` (no dots)."""
_IDENTITY_RE: Final = re.compile(IDENTITY_PATTERN)
_FLEET_RE: Final = re.compile(NAME_PATTERN)

PBKDF2_ITERATIONS: Final = 1000
"""Iterations of the ``$7$`` hashes (mosquitto_passwd uses 101; the passwords are random)."""
_SALT_BYTES: Final = 12  # what mosquitto_passwd uses
CA_MIN_DAYS: Final = 3650
"""The CA (and its CRL) lives at least this long; leaf certificates ``--validity-days``."""
_CLOCK_SKEW: Final = dt.timedelta(minutes=5)

NODE_READS: Final = (
    TopicKind.STATE,
    TopicKind.BIRTH,
    TopicKind.DEATH,
    TopicKind.BELIEFS,
    TopicKind.TASKS,
)
"""What a node reads of every node: the coordination engine's subscriptions."""
NODE_INBOX: Final = (TopicKind.COMMAND, TopicKind.REBIRTH, TopicKind.OBS)
"""What a node reads of its own topics: ``Topics.node_inbox``."""


class Role(StrEnum):
    """What an identity may do (besides the node rights of its own name)."""

    NODE = "node"
    HUB = "hub"
    OBSERVER = "observer"
    SENSOR = "sensor"


class Auth(StrEnum):
    CERT = "cert"
    PASSWORD = "password"


class Identity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    serial: str = Field("", description="hex serial of the current certificate (cert auth)")
    issued_at: str = Field(description="UTC, ISO 8601")
    revoked: bool = False


class BrokerState(BaseModel):
    """``DIR/broker.json``: how the broker was set up and whom it knows."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    fleet: str = Field(pattern=NAME_PATTERN)
    port: int = Field(ge=1, le=65535)
    bind: str
    host: str
    sans: list[str] = Field(default_factory=list)
    auth: Auth
    validity_days: int = Field(ge=1, le=36500)
    io_topics: list[str] = Field(default_factory=list)
    io_reads: list[str] = Field(default_factory=list)
    device_dir: str | None = None
    run_as: str
    identities: dict[str, Identity] = Field(default_factory=dict)
    revoked_serials: dict[str, str] = Field(
        default_factory=dict, description="hex serial -> revocation time (UTC, ISO 8601)"
    )

    def names(self, role: Role) -> list[str]:
        return [n for n, i in self.identities.items() if i.role is role and not i.revoked]


# ------------------------------------------------------------------------------- pure renderers
def check_identity(name: str) -> str:
    if _IDENTITY_RE.fullmatch(name) is None:
        raise InputError(
            f"identity {name!r}: use 1-64 of A-Z a-z 0-9 _ -, starting with a letter or digit"
        )
    return name


def check_io_filter(text: str, *, writable: bool) -> str:
    """An MQTT topic filter for the ACL: ``%u`` only as a whole level; a writable one must stay
    out of the fleet tree (``ea/...``), where it would let a node write others' topics."""
    levels = text.split("/")
    if not text or any(c.isspace() for c in text) or len(text.encode()) > 1024:
        raise InputError(f"topic filter {text!r}: 1-1024 bytes without spaces")
    for i, level in enumerate(levels):
        if ("+" in level and level != "+") or ("#" in level and level != "#"):
            raise InputError(f"topic filter {text!r}: a wildcard must be a whole level")
        if level == "#" and i != len(levels) - 1:
            raise InputError(f"topic filter {text!r}: '#' must be the last level")
        if "%" in level and level not in ("%u", "%c"):
            raise InputError(f"topic filter {text!r}: %u must be a whole level")
    if writable and levels[0] in ("ea", "+", "#"):
        raise InputError(
            f"--io-topic {text!r} reaches into the fleet tree ea/...: give read access with "
            "--io-read; what nodes write there is fixed by the protocol"
        )
    return text


def _own(topics: Topics, kind: TopicKind) -> str:
    """``kind``'s topic (filter) of the connected identity: ``node/%u/...``."""
    return topics.all_nodes(kind).replace("/node/+/", "/node/%u/", 1)


def acl_text(state: BrokerState) -> str:
    """The mosquitto ``acl_file``: node rights as ``pattern`` lines, roles per ``user``."""
    t = Topics(state.fleet)
    writes = sorted(NODE_OWNED_KINDS, key=lambda k: k.value)
    lines = [
        f"# edge-agent fleet {state.fleet}: written by edge-agent-host broker (docs/security.md).",
        "# Nothing for anonymous clients (allow_anonymous false in mosquitto.conf).",
        "",
        "# Every identity (%u: its certificate's CN or user name) writes only its own topics,",
        "# and may ask any node for a rebirth.",
        *(f"pattern write {_own(t, kind)}" for kind in writes),
        f"pattern write {t.all_nodes(TopicKind.REBIRTH)}",
        "# ... reads its own inbox ...",
        *(f"pattern read {_own(t, kind)}" for kind in NODE_INBOX),
        "# ... and every node's presence, beliefs and task messages, and the hub's bundle",
        "# broadcasts (each chunk is checked against the signed deploy command's hashes).",
        *(f"pattern read {t.all_nodes(kind)}" for kind in NODE_READS),
        f"pattern read {t.all_bundles()}",
    ]
    if state.io_topics or state.io_reads:
        lines += ["", "# Agent I/O outside the fleet tree (--io-topic, --io-read)."]
        lines += [f"pattern readwrite {f}" for f in state.io_topics]
        lines += [f"pattern read {f}" for f in state.io_reads]
    grants: list[tuple[Role, str, list[str]]] = [
        (Role.HUB, "hub: reads the fleet, commands every node", [
            f"topic read {t.fleet_all()}",
            f"topic write {t.all_nodes(TopicKind.COMMAND)}",
            f"topic write {t.all_bundles()}",
        ]),
        (Role.OBSERVER, "observer: reads the fleet", [f"topic read {t.fleet_all()}"]),
        (Role.SENSOR, "sensor: observations into every node", [
            f"topic write {t.all_nodes(TopicKind.OBS)}",
        ]),
    ]  # fmt: skip
    for role, what, topic_lines in grants:
        for name in state.names(role):
            lines += ["", f"# {what}", f"user {name}", *topic_lines]
    for name, ident in state.identities.items():
        if ident.revoked:  # a session still open loses every right at the next reload
            lines += ["", f"# revoked {ident.role.value}", f"user {name}", "topic deny #"]
    return "\n".join(lines) + "\n"


MAX_QUEUED_MESSAGES: Final = 200_000
"""Per client: QoS 1 messages the broker queues beyond those in flight (a hub away for a while:
telemetry of 100 nodes every 10 s is 36,000 an hour); the broker drops what comes after."""
MAX_QUEUED_BYTES: Final = 128 * 2**20
"""Per client, the same bound in payload bytes (the first bound reached applies)."""
PERSISTENT_CLIENT_EXPIRATION: Final = "14d"
"""A session nobody resumed for this long is dropped (a retired hub's queue does not stay)."""
AUTOSAVE_INTERVAL_S: Final = 60
"""The broker writes its sessions and queues to ``data/`` this often (and when it stops), so a
broker that crashes loses at most this much of what it queued for an absent hub."""


def mosquitto_conf(state: BrokerState, out: Path) -> str:
    """``mosquitto.conf`` for ``state``, with absolute paths into ``out``."""
    out = out.resolve()
    lines = [
        f"# edge-agent fleet {state.fleet}: written by edge-agent-host broker (docs/security.md).",
        f"# Run: mosquitto -c {out / 'mosquitto.conf'}",
        "# Reload after issue/revoke (ACL, passwords, CRL): kill -HUP <pid>, or "
        "systemctl reload mosquitto",
        "per_listener_settings false",
        "allow_anonymous false",
        f"acl_file {out / 'acl'}",
    ]
    if state.auth is Auth.PASSWORD:
        lines.append(f"password_file {out / 'passwords'}")
    lines += [
        # The hub service's session outlives its process (docs/hub.md, "What a crash can
        # cost"): what the fleet publishes while it is away is queued for it, bounded, and kept
        # on disk across a broker restart (saved at exit and every autosave_interval).
        "persistence true",
        f"persistence_location {out / 'data'}/",
        f"autosave_interval {AUTOSAVE_INTERVAL_S}",
        f"max_queued_messages {MAX_QUEUED_MESSAGES}",
        f"max_queued_bytes {MAX_QUEUED_BYTES}",
        f"persistent_client_expiration {PERSISTENT_CLIENT_EXPIRATION}",
        "log_dest stderr",
        *(f"log_type {t}" for t in ("error", "warning", "notice", "information")),
        "connection_messages true",
        f"user {state.run_as}",
        "",
        f"listener {state.port} {state.bind}",
        "protocol mqtt",
        f"cafile {out / 'ca' / 'ca.crt'}",
        f"certfile {out / 'broker' / 'broker.crt'}",
        f"keyfile {out / 'broker' / 'broker.key'}",
        "tls_version tlsv1.2",
    ]
    if state.auth is Auth.CERT:
        lines += [
            "require_certificate true",
            "use_identity_as_username true",
            f"crlfile {out / 'ca' / 'crl.pem'}",
        ]
    else:
        lines.append("require_certificate false")
    lines.append("use_username_as_clientid true")
    return "\n".join(lines) + "\n"


def password_line(
    user: str, password: str, *, salt: bytes, iterations: int = PBKDF2_ITERATIONS
) -> str:
    """One ``passwords`` line: ``user:$7$iterations$salt$hash``, PBKDF2-HMAC-SHA512 with a
    64-byte hash, base64 -- what mosquitto 2's ``mosquitto_passwd`` writes."""
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    b64 = base64.b64encode
    return f"{user}:$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a TOML basic string for anything a path or name holds


SERVICE_ROLES: Final = frozenset({Role.HUB, Role.OBSERVER})
"""Roles whose snippet is the start of an ``edge-agent-hub`` config (``hub.toml``)."""


def snippet_name(role: Role) -> str:
    """The file of ``clients/NAME/`` that holds the identity's connection settings."""
    return "hub.toml" if role in SERVICE_ROLES else "mqtt.toml"


def client_snippet(state: BrokerState, name: str, files: Mapping[str, str]) -> str:
    """``clients/NAME/mqtt.toml``: the ``[mqtt]`` table of NAME's daemon config; for a hub or
    an observer ``clients/NAME/hub.toml``: the start of the hub service's config (``[hub] id``
    and ``[mqtt]``, keys ``edge-agent-hub`` reads), with the same connection as
    ``edge-agent-host hub`` arguments in a comment. ``files``: the paths of ``ca``,
    ``cert``/``key`` or ``password`` on the device."""
    role = state.identities[name].role
    if role in SERVICE_ROLES:
        return _service_snippet(state, name, files)
    lines = [
        f"# [mqtt] of {role.value} {name!r} in fleet {state.fleet!r} (edge-agent-host broker).",
        "# Install the files named here (the key or password readable by the daemon only; see",
        "# docs/security.md for systemd credentials) and append other [mqtt] keys below.",
    ]
    if state.auth is Auth.CERT:
        flags = f"--cert-file {files['cert']} --key-file {files['key']}"
    else:
        flags = f"--username {name} --password-file {files['password']}"
    if role is not Role.NODE:
        lines += [
            "# As hub arguments:",
            f"#   edge-agent-host hub --host {state.host} --port {state.port} "
            f"--fleet {state.fleet} --hub-id {name} --ca-file {files['ca']} {flags} ...",
        ]
    lines += [
        "[mqtt]",
        "enabled = true",
        f"host = {_toml_str(state.host)}",
        f"port = {state.port}",
        f"fleet = {_toml_str(state.fleet)}",
        f"node_id = {_toml_str(name)}",
        *_credentials(state, name, files),
    ]
    return "\n".join(lines) + "\n"


def _credentials(state: BrokerState, name: str, files: Mapping[str, str]) -> list[str]:
    """The ``[mqtt]`` keys of an identity's secret: the user name and password file, and TLS."""
    if state.auth is Auth.CERT:
        tls = (
            f"tls = {{ enabled = true, ca_file = {_toml_str(files['ca'])}, "
            f"cert_file = {_toml_str(files['cert'])}, key_file = {_toml_str(files['key'])} }}"
        )
        return [tls]
    return [
        f"username = {_toml_str(name)}",
        f"password_file = {_toml_str(files['password'])}",
        f"tls = {{ enabled = true, ca_file = {_toml_str(files['ca'])} }}",
    ]


def _service_snippet(state: BrokerState, name: str, files: Mapping[str, str]) -> str:
    """``clients/NAME/hub.toml`` (see :func:`client_snippet`)."""
    role = state.identities[name].role
    if state.auth is Auth.CERT:
        flags = f"--cert-file {files['cert']} --key-file {files['key']}"
    else:
        flags = f"--username {name} --password-file {files['password']}"
    can = (
        "it may carry rollouts ([rollouts] key_file) and send commands"
        if role is Role.HUB
        else "it only reads the fleet: no [rollouts] (an observer may not write commands)"
    )
    lines = [
        f"# edge-agent-hub config of {role.value} {name!r} in fleet {state.fleet!r}",
        "# (edge-agent-host broker; docs/hub.md): the service's broker connection. One process",
        f"# per identity; {can}.",
        "# Install the files named here (readable by the edge-agent-hub user only), add",
        "# [database], [rollouts], [http] below, and other [mqtt] keys under [mqtt].",
        "# The same connection as hub CLI arguments:",
        f"#   edge-agent-host hub --host {state.host} --port {state.port} "
        f"--fleet {state.fleet} --hub-id {name} --ca-file {files['ca']} {flags} ...",
        "[hub]",
        f"id = {_toml_str(name)}",
        "",
        "[mqtt]",
        f"host = {_toml_str(state.host)}",
        f"port = {state.port}",
        f"fleet = {_toml_str(state.fleet)}",
        *_credentials(state, name, files),
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------- PKI
def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())  # P-256: every TLS stack takes it


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),  # mosquitto and the daemon cannot ask for a passphrase
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _cn(name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


def make_ca(fleet: str, days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA that may sign certificates and CRLs, nothing else."""
    key = _new_key()
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_cn(f"edge-agent {fleet} CA"))
        .issuer_name(_cn(f"edge-agent {fleet} CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=max(days, CA_MIN_DAYS)))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue_cert(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    name: str,
    *,
    days: int,
    server_names: Sequence[str] = (),
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A leaf certificate for ``name`` (its CN): a server's with ``server_names`` (DNS names or
    IP addresses), else a client's."""
    key = _new_key()
    now = _now()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_cn(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in server_names]), critical=False
        )
    return key, builder.sign(ca_key, hashes.SHA256())


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_crl(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, revoked: Mapping[str, str]
) -> x509.CertificateRevocationList:
    """The CA's CRL of ``revoked`` (hex serial -> ISO time), valid as long as the CA: an
    expired CRL would lock every client out."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(_now() - _CLOCK_SKEW)
        .next_update(ca_cert.not_valid_after_utc)
    )
    for serial, when in sorted(revoked.items()):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(int(serial, 16))
            .revocation_date(dt.datetime.fromisoformat(when))
            .build()
        )
    return builder.sign(ca_key, hashes.SHA256())


# --------------------------------------------------------------------------------------- files
def _write(path: Path, data: bytes | str, *, private: bool = False) -> Path:
    raw = data.encode() if isinstance(data, str) else data
    write_atomic(path, raw, mode=0o600 if private else 0o644, mkdir=True)
    return path


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _load_state(out: Path) -> BrokerState:
    path = out / "broker.json"
    try:
        return BrokerState.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise InputError(f"{path} not found: run 'edge-agent-host broker init' first") from err
    except ValidationError as err:
        raise InputError(f"{path}: {err.errors()[0]['msg']}") from err


def _save_state(out: Path, state: BrokerState) -> None:
    _write(out / "broker.json", state.model_dump_json(indent=2) + "\n")


def _load_ca(out: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = serialization.load_pem_private_key((out / "ca" / "ca.key").read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InputError(f"{out / 'ca' / 'ca.key'} is not the EC key this tool writes")
    return key, x509.load_pem_x509_certificate((out / "ca" / "ca.crt").read_bytes())


def _device_path(state: BrokerState, out: Path, name: str, file: str) -> str:
    base = Path(state.device_dir) if state.device_dir else (out / "clients" / name).resolve()
    return str(base / file)


def _issue_files(
    state: BrokerState,
    out: Path,
    name: str,
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None,
) -> list[Path]:
    """Write ``clients/NAME/`` and record the identity's serial; returns the files written."""
    cdir = _private_dir(out / "clients" / name)
    written = [_write(cdir / "ca.crt", (out / "ca" / "ca.crt").read_bytes())]
    files = {"ca": _device_path(state, out, name, "ca.crt")}
    ident = state.identities[name]
    if state.auth is Auth.CERT:
        if ca is None:
            raise InputError("certificate authentication needs the CA (ca/ca.key)")
        key, cert = issue_cert(*ca, name, days=state.validity_days)
        written += [
            _write(cdir / f"{name}.crt", _cert_pem(cert)),
            _write(cdir / f"{name}.key", _key_pem(key), private=True),
        ]
        ident.serial = format(cert.serial_number, "x")
        files |= {
            "cert": _device_path(state, out, name, f"{name}.crt"),
            "key": _device_path(state, out, name, f"{name}.key"),
        }
    else:
        password = secrets.token_urlsafe(32)
        written.append(_write(cdir / "password", password + "\n", private=True))
        _set_password(out, name, password_line(name, password, salt=os.urandom(_SALT_BYTES)))
        files["password"] = _device_path(state, out, name, "password")
    written.append(_write(cdir / snippet_name(ident.role), client_snippet(state, name, files)))
    return written


def _set_password(out: Path, name: str, line: str | None) -> None:
    """Replace (or with ``line`` None remove) ``name``'s entry of ``passwords``."""
    path = out / "passwords"
    old = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    kept = [entry for entry in old if entry.split(":", 1)[0] != name]
    if line is not None:
        kept.append(line)
    _write(path, "".join(f"{entry}\n" for entry in kept), private=True)


def _server_names(host: str, bind: str, sans: Iterable[str]) -> list[str]:
    names = [host, *sans]
    if bind not in ("0.0.0.0", "::", host):
        names.append(bind)
    if "127.0.0.1" in names or "localhost" in names:
        names += ["127.0.0.1", "localhost"]
    return list(dict.fromkeys(names))


def init_broker(state: BrokerState, out: Path) -> list[Path]:
    """Write everything for a new broker into ``out`` (which must not hold one already)."""
    if not state.names(Role.NODE):
        raise InputError("a broker needs at least one node (--node ID)")
    if (out / "broker.json").exists() or (out / "ca").exists():
        raise InputError(f"{out} already holds a broker: use 'broker issue' or another --out")
    _check_roles(state)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data").mkdir(exist_ok=True)
    ca_key, ca_cert = make_ca(state.fleet, state.validity_days)
    ca_dir = _private_dir(out / "ca")
    written = [
        _write(ca_dir / "ca.key", _key_pem(ca_key), private=True),
        _write(ca_dir / "ca.crt", _cert_pem(ca_cert)),
    ]
    ca_dir.chmod(0o755)  # the broker (maybe another user) reads ca.crt and crl.pem
    if state.auth is Auth.CERT:
        written.append(_write(ca_dir / "crl.pem", _crl_pem(ca_key, ca_cert, {})))
    else:
        _write(out / "passwords", "", private=True)
        written.append(out / "passwords")
    server_names = _server_names(state.host, state.bind, state.sans)
    key, cert = issue_cert(
        ca_key, ca_cert, "broker", days=state.validity_days, server_names=server_names
    )
    written += [
        _write(out / "broker" / "broker.crt", _cert_pem(cert)),
        _write(out / "broker" / "broker.key", _key_pem(key), private=True),
    ]
    for name in state.identities:
        written += _issue_files(state, out, name, (ca_key, ca_cert))
    written += [
        _write(out / "acl", acl_text(state)),
        _write(out / "mosquitto.conf", mosquitto_conf(state, out)),
    ]
    _save_state(out, state)
    written.append(out / "broker.json")
    return written


def _crl_pem(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, revoked: Mapping[str, str]
) -> bytes:
    return make_crl(ca_key, ca_cert, revoked).public_bytes(serialization.Encoding.PEM)


def _check_roles(state: BrokerState) -> None:
    for name in state.identities:
        check_identity(name)
    if "broker" in state.identities:
        raise InputError("'broker' is the listener's certificate: choose another identity name")


def issue_identity(out: Path, name: str, role: Role, *, rotate: bool = False) -> list[Path]:
    """Add an identity to an existing broker directory, or with ``rotate`` give one a new key
    (its old certificate is revoked; a new password replaces the old one)."""
    state = _load_state(out)
    check_identity(name)
    current = state.identities.get(name)
    if current is not None and not current.revoked and not rotate:
        raise InputError(f"{name!r} exists ({current.role.value}): --rotate gives it a new key")
    if current is not None and current.role is not role:
        raise InputError(f"{name!r} is a {current.role.value}, not a {role.value}")
    if current is not None and current.serial and not current.revoked:
        state.revoked_serials[current.serial] = _now().isoformat()
    state.identities[name] = Identity(role=role, issued_at=_now().isoformat())
    _check_roles(state)
    ca = _load_ca(out) if state.auth is Auth.CERT else None
    written = _issue_files(state, out, name, ca)
    if ca is not None:
        written.append(_write(out / "ca" / "crl.pem", _crl_pem(*ca, state.revoked_serials)))
    written.append(_write(out / "acl", acl_text(state)))
    _save_state(out, state)
    return written


def revoke_identity(out: Path, name: str) -> list[Path]:
    """Lock ``name`` out: its certificate into the CRL, or its password entry removed (new
    connections fail), and every topic denied to it in the ACL (a session still open loses
    every right). Takes effect when mosquitto reloads (SIGHUP)."""
    state = _load_state(out)
    ident = state.identities.get(name)
    if ident is None or ident.revoked:
        raise InputError(f"no live identity {name!r} in {out / 'broker.json'}")
    ident.revoked = True
    written = [_write(out / "acl", acl_text(state))]
    if state.auth is Auth.CERT:
        state.revoked_serials[ident.serial] = _now().isoformat()
        written.append(
            _write(out / "ca" / "crl.pem", _crl_pem(*_load_ca(out), state.revoked_serials))
        )
    else:
        _set_password(out, name, None)
        written.append(out / "passwords")
    _save_state(out, state)
    return written


# ----------------------------------------------------------------------------------------- CLI
def _identity_arg(value: str) -> str:
    try:
        return check_identity(value)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _add_identity_args(p: argparse.ArgumentParser, *, node_required: bool) -> None:
    p.add_argument(
        "--node",
        action="append",
        default=[],
        type=_identity_arg,
        required=node_required,
        help="a node's id (repeatable): its [mqtt] node_id and certificate CN",
    )
    p.add_argument(
        "--hub",
        action="append",
        default=None,
        type=_identity_arg,
        help="a hub identity (repeatable; init default: hub). One connection per identity: "
        "give a second hub process its own",
    )
    p.add_argument(
        "--observer",
        action="append",
        default=[],
        type=_identity_arg,
        help="a read-only identity (repeatable): dashboards, 'hub watch'",
    )
    p.add_argument(
        "--sensor", action="append", default=[], type=_identity_arg,
        help="an identity that writes observations into every node (repeatable)",
    )  # fmt: skip


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``broker`` subcommands."""
    sub = parser.add_subparsers(dest="broker_command", required=True, metavar="SUBCOMMAND")
    init = sub.add_parser("init", help="write a mosquitto config, CA, ACL and client files")
    init.add_argument("--fleet", required=True, help="fleet name (topics ea/v1/FLEET/...)")
    _add_identity_args(init, node_required=True)
    init.add_argument("--port", type=int, required=True, help="TLS listener port (e.g. 8883)")
    init.add_argument("--out", type=Path, required=True, help="directory to write (new)")
    init.add_argument("--bind", default="127.0.0.1", help="listener address (0.0.0.0: all)")
    init.add_argument(
        "--host", default=None, help="the broker's name for clients (default: --bind)"
    )
    init.add_argument(
        "--san", action="append", default=[], help="another name in the broker's certificate"
    )
    init.add_argument(
        "--auth", choices=[a.value for a in Auth], default=Auth.CERT.value,
        help="cert: client certificates (mutual TLS); password: user names over TLS",
    )  # fmt: skip
    init.add_argument(
        "--validity-days", type=int, default=825, help="certificate lifetime (CA: >= 10 years)"
    )
    init.add_argument(
        "--io-topic", action="append", default=[],
        help="a topic filter outside ea/ every identity may read and write (MQTT sources and "
        "sinks; %%u: the identity)",
    )  # fmt: skip
    init.add_argument(
        "--io-read", action="append", default=[], help="a topic filter every identity may read"
    )
    init.add_argument(
        "--device-dir", default=None,
        help="where a client's files will be on its device (the paths in mqtt.toml and "
        "hub.toml; default: here)",
    )  # fmt: skip
    init.add_argument(
        "--run-as", default=None, help="user mosquitto drops to when started as root "
        "(default: you; it must read DIR)",
    )  # fmt: skip

    issue = sub.add_parser("issue", help="add an identity, or --rotate one's key")
    issue.add_argument("--out", type=Path, required=True, help="the broker directory")
    _add_identity_args(issue, node_required=False)
    issue.add_argument("--rotate", action="store_true", help="replace an existing identity's key")

    revoke = sub.add_parser("revoke", help="lock an identity out (then reload mosquitto)")
    revoke.add_argument("--out", type=Path, required=True, help="the broker directory")
    revoke.add_argument("name", type=_identity_arg, help="the identity")


def _roles(args: argparse.Namespace, default_hub: list[str]) -> dict[str, Role]:
    named = [
        *((n, Role.NODE) for n in args.node),
        *((n, Role.HUB) for n in (default_hub if args.hub is None else args.hub)),
        *((n, Role.OBSERVER) for n in args.observer),
        *((n, Role.SENSOR) for n in args.sensor),
    ]
    roles: dict[str, Role] = {}
    for name, role in named:
        if name in roles:
            raise InputError(f"identity {name!r} is given twice (names are unique across roles)")
        roles[name] = role
    return roles


def _run_init(args: argparse.Namespace) -> int:
    if _FLEET_RE.fullmatch(args.fleet) is None:
        raise InputError(f"fleet {args.fleet!r}: 1-64 of A-Z a-z 0-9 _ . -")
    if not 0 < args.port < 65536:
        raise InputError(f"port {args.port} is out of range")
    host = args.host or args.bind
    if host in ("0.0.0.0", "::"):
        raise InputError("--bind on every address: give --host, the name clients connect to")
    now = _now().isoformat()
    state = BrokerState(
        fleet=args.fleet,
        port=args.port,
        bind=args.bind,
        host=host,
        sans=list(args.san),
        auth=Auth(args.auth),
        validity_days=args.validity_days,
        io_topics=[check_io_filter(f, writable=True) for f in args.io_topic],
        io_reads=[check_io_filter(f, writable=False) for f in args.io_read],
        device_dir=args.device_dir,
        run_as=args.run_as or getpass.getuser(),
        identities={
            name: Identity(role=role, issued_at=now) for name, role in _roles(args, ["hub"]).items()
        },
    )
    init_broker(state, args.out)
    out = args.out.resolve()
    print(f"broker for fleet {state.fleet} in {out} ({state.auth.value} auth)")
    print(f"  run:     mosquitto -c {out / 'mosquitto.conf'}")
    for name, ident in state.identities.items():
        print(
            f"  {ident.role.value:<8} {name}: {out / 'clients' / name / snippet_name(ident.role)}"
        )
    print(f"  keep {out / 'ca' / 'ca.key'} offline once every identity is issued")
    return 0


def _run_issue(args: argparse.Namespace) -> int:
    roles = _roles(args, [])
    if len(roles) != 1:
        raise InputError("issue one identity at a time (--node, --hub, --observer or --sensor)")
    ((name, role),) = roles.items()
    issue_identity(args.out, name, role, rotate=args.rotate)
    print(f"{role.value} {name}: {args.out.resolve() / 'clients' / name / snippet_name(role)}")
    print("reload mosquitto: kill -HUP <pid> (or systemctl reload mosquitto)")
    return 0


def _run_revoke(args: argparse.Namespace) -> int:
    revoke_identity(args.out, args.name)
    print(f"{args.name} revoked; reload mosquitto: kill -HUP <pid> (or systemctl reload mosquitto)")
    print("then new connections of it fail, and a session it still has may neither read nor write")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``edge-agent-host broker SUBCOMMAND``."""
    runners: dict[str, Callable[[argparse.Namespace], int]] = {
        "init": _run_init,
        "issue": _run_issue,
        "revoke": _run_revoke,
    }
    try:
        return runners[args.broker_command](args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1

"""What mosquitto reads: the ACL (:func:`acl_text`), the configuration with its TLS listener
(:func:`mosquitto_conf`), password lines in mosquitto 2's ``$7$`` format (:func:`password_line`),
and per identity the ``[mqtt]`` snippet of its daemon config or the start of a hub's config
(:func:`client_snippet`). Pure renderers: nothing here writes a file.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from edge_agent.fleet.topics import NODE_OWNED_KINDS, TopicKind, Topics
from edge_agent_host.broker.identities import Auth, BrokerState, Role

PBKDF2_ITERATIONS: Final = 1000
"""Iterations of the ``$7$`` hashes (mosquitto_passwd uses 101; the passwords are random)."""
SALT_BYTES: Final = 12  # what mosquitto_passwd uses

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
        "# docs/security.md for systemd credentials) and append other [mqtt] keys below:",
        "# hub_keys_dir, the directory of the hub's command key (docs/fleet.md).",
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
        "# Two signing keys, on purpose (docs/fleet.md): [rollouts] key_file, the command key",
        "# (its .pub in the nodes' [mqtt] hub_keys_dir), and [learning] key_file, the bundle key",
        "# learned rounds are signed with (its .pub in the nodes' [daemon] trusted_keys_dir).",
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

"""The daemon config's ``[mqtt]`` table: the broker connection of the fleet protocol and of
MQTT sources and sinks (``[mqtt.tls]`` too). Part of :mod:`edge_agent.config.daemon`, whose
``DaemonConfig`` holds it; the hub's config (``tools/edge_agent_host/hub/config/hub_toml.py``) takes
its TLS record from here. ``docs/configuration.md`` documents every key.
"""

from __future__ import annotations

import os
import re
from dataclasses import field
from pathlib import Path
from typing import Annotated, Literal

from edge_agent.records import OPTIONAL_PATH, Record, Rule, raise_problems

__all__ = ["NAME_PATTERN", "MqttSection", "MqttTls"]

#: A fleet's or a group's name: what a topic level or a file name may hold.
NAME_PATTERN = r"^[a-z0-9_-]{1,32}$"


class MqttTls(Record):
    """``[mqtt.tls]``: TLS to the broker; without ``ca_file`` the system's CAs are used."""

    enabled: Annotated[bool, Rule(description="Connect with TLS.")] = False
    ca_file: Annotated[
        Path | None, Rule(description="CA bundle (PEM); empty: the system's CAs."), OPTIONAL_PATH
    ] = None
    cert_file: Annotated[
        Path | None, Rule(description="Client certificate (PEM) for mutual TLS."), OPTIONAL_PATH
    ] = None
    key_file: Annotated[
        Path | None, Rule(description="Client private key (PEM) for mutual TLS."), OPTIONAL_PATH
    ] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            other = "cert_file" if missing == "key_file" else "key_file"
            raise_problems("MqttTls", [((missing,), f"required when {other} is set")])


class MqttSection(Record):
    """``[mqtt]``: the broker connection used by the fleet protocol, MQTT sources and sinks."""

    enabled: Annotated[bool, Rule(description="Connect to the broker at all.")] = False
    host: Annotated[str, Rule(min_length=1, max_length=253, description="Broker host.")] = (
        "127.0.0.1"
    )
    port: Annotated[
        int, Rule(ge=1, le=65535, description="Broker port (8883 is usual for TLS).")
    ] = 1883
    fleet: Annotated[
        str, Rule(pattern=NAME_PATTERN, description="Fleet name: topics live under ea/v1/{fleet}/.")
    ] = "default"
    node_id: Annotated[
        str,
        Rule(
            pattern=r"^[A-Za-z0-9_-]{0,64}$",
            description="This node's id in topics; empty: the host name.",
        ),
    ] = ""
    labels: Annotated[
        dict[
            Annotated[str, Rule(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")],
            Annotated[str, Rule(max_length=256)],
        ],
        Rule(
            max_length=32,
            description='Labels in the node\'s birth (e.g. { site = "plant-3", ring = "canary" }): '
            "what the hub's rollouts select nodes by.",
        ),
    ] = field(default_factory=dict)
    keepalive_s: Annotated[int, Rule(ge=5, le=3600, description="MQTT keepalive (s).")] = 30
    username: Annotated[
        str, Rule(max_length=128, description="Broker user name; empty: anonymous.")
    ] = ""
    password_file: Annotated[
        Path | None,
        Rule(description="File whose first line is the broker password."),
        OPTIONAL_PATH,
    ] = None
    tls: Annotated[MqttTls, Rule(description="TLS settings.")] = field(default_factory=MqttTls)
    outbox_max_bytes: Annotated[
        int,
        Rule(
            ge=65_536,
            le=4 * 1024**3,
            description="Bound (bytes) of the durable store-and-forward outbox on disk.",
        ),
    ] = 8_000_000
    outbox_commit_interval_s: Annotated[
        float,
        Rule(
            ge=1,
            le=3600,
            description="How often telemetry and actions still unacknowledged are committed to "
            "storage (s): a crash loses at most this long of them; events, results and "
            "coordination messages are committed every tick (docs/fleet.md, durability).",
        ),
    ] = 300.0
    hub_keys_dir: Annotated[
        Path | None,
        Rule(
            description="Directory of *.pub ed25519 keys whose signed hub commands are obeyed "
            "(a hub announcing tasks with one owns their ids); empty: [daemon] "
            "trusted_keys_dir; neither: every command is refused."
        ),
        OPTIONAL_PATH,
    ] = None
    telemetry_interval_s: Annotated[
        float | None,
        Rule(ge=0.1, le=3600, description="Seconds between telemetry; default: the profile's."),
    ] = None
    action_qos: Annotated[
        Literal[0, 1],
        Rule(
            description="QoS of MQTT action sinks: 1 stores actions in the outbox "
            "until acknowledged; "
            "0 sends them only while connected (dropped and counted otherwise)."
        ),
    ] = 1
    command_max_ttl_s: Annotated[
        float,
        Rule(
            ge=1,
            le=7 * 86400,
            description="Refuse hub commands whose expiry lies further ahead than this (s).",
        ),
    ] = 3600.0
    reconnect_initial_s: Annotated[
        float,
        Rule(gt=0, le=60, description="First reconnect delay (s); doubles up to reconnect_max_s."),
    ] = 0.5
    reconnect_max_s: Annotated[
        float, Rule(gt=0, le=3600, description="Longest reconnect delay (s), before jitter.")
    ] = 60.0
    io_silent_after_s: Annotated[
        float,
        Rule(
            ge=1,
            le=86400,
            description="An MQTT source whose group still waits with nothing heard on its topic "
            "filter this long after connecting is named in the log, once (s): a broker may "
            "grant a subscription its ACL denies and deliver nothing (mosquitto does).",
        ),
    ] = 60.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.password_file is not None and not self.username:
            raise_problems("MqttSection", [(("password_file",), "requires username to be set")])
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise_problems(
                "MqttSection", [(("reconnect_max_s",), "must be >= reconnect_initial_s")]
            )

    def effective_node_id(self) -> str:
        """``node_id``, or the host name reduced to the characters a topic level may use."""
        if self.node_id:
            return self.node_id
        host = re.sub(r"[^A-Za-z0-9_-]", "-", os.uname().nodename.split(".")[0])[:64]
        return host or "node"

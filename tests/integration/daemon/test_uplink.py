"""The daemon's fleet uplink against a real mosquitto, driven pump by pump from the test.

The connectivity events follow the link's connects and disconnects, not ``online`` read once a
tick: a connection lost and made again between two pumps (a node whose tick was late while the
broker restarted) is reported as both, in order. The test holds the pumps back while the broker
restarts and the transport reconnects, so that case happens every run, not by chance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_agent.config.daemon import ConfigFile, parse_config
from edge_agent.config.toml_lines import TomlDocument
from edge_agent.daemon.uplink import FleetUplink
from edge_agent.fleet.protocol import Birth
from tests.integration.fleet.test_fleet_daemon import wait_until
from tests.support.broker import MosquittoBroker

pytestmark = pytest.mark.integration


def make_uplink(tmp_path: Path, port: int, events: list[tuple[str, str, str]]) -> FleetUplink:
    config = parse_config(
        f"""[daemon]
profile = "x86-dev"
state_dir = "{tmp_path}"
[[groups]]
name = "grid"
model = {{ type = "builtin", name = "grid10" }}
count = 1
source = {{ type = "sim" }}
sink = {{ type = "sim" }}
[mqtt]
enabled = true
host = "127.0.0.1"
port = {port}
node_id = "pi-1"
reconnect_initial_s = 0.05
reconnect_max_s = 0.2
""",
        "node.toml",
    )

    def record(kind: str, severity: str, detail: str, **_: Any) -> None:
        events.append((kind, severity, detail))

    return FleetUplink(
        config,
        ConfigFile(config, TomlDocument.parse("", "node.toml")),
        tmp_path,
        birth=Birth(software_version="0", profile="x86-dev", budget_bytes=1, groups={}),
        handlers={},
        event=record,
    )


def test_a_connection_lost_and_made_again_between_two_pumps_is_reported_both_ways(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    events: list[tuple[str, str, str]] = []
    uplink = make_uplink(tmp_path, mosquitto.port, events)
    where = f"127.0.0.1:{mosquitto.port}"
    connected = ("connectivity", "info", f"connected to {where}")
    lost = ("connectivity", "warning", f"lost {where}")
    uplink.start()
    try:

        def pumped_online() -> bool:
            uplink.before_tick()
            return uplink.online

        wait_until(pumped_online, "the first connection")
        assert events == [connected]
        transport = uplink.transport
        first = transport.session
        # No pump from here on until the transport is connected again.
        mosquitto.kill()
        wait_until(lambda: not transport.is_connected, "the transport to lose the broker")
        mosquitto.start()
        wait_until(
            lambda: transport.is_connected and transport.session > first,
            "the transport to connect again",
        )
        assert events == [connected]  # nothing was pumped yet
        uplink.before_tick()  # the loss and the new connection arrive in this one pump
        assert uplink.online
        assert events == [connected, lost, connected]
        assert uplink.link.counters["connects"] == 2
        assert uplink.link.counters["disconnects"] == 1
        uplink.before_tick()
        assert events == [connected, lost, connected]  # reported once
        # A plain loss (pumped while offline) is one 'lost', and its reconnect one 'connected'.
        mosquitto.kill()
        wait_until(lambda: not transport.is_connected, "the transport to lose the broker")
        wait_until(lambda: (uplink.before_tick(), not uplink.online)[1], "the link offline")
        assert events[3:] == [lost]
        mosquitto.start()
        wait_until(pumped_online, "the link online again")
        assert events[3:] == [lost, connected]
    finally:
        uplink.stop()

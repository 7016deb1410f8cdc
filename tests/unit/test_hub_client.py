"""The hub client (``tools/edge_agent_host/hub/client.py``) and the broker's answers: a command the
broker refuses fails at once with the reason by name, instead of waiting for a result that cannot
come."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edge_agent.fleet.comms.memory import MemoryBroker, MemoryTransport
from edge_agent_host.hub import HubClient, HubError
from edge_agent_host.keys import generate_keypair, load_signing_key


def test_a_refused_command_fails_at_once_with_the_reason(tmp_path: Path) -> None:
    broker = MemoryBroker()
    key = load_signing_key(generate_keypair(tmp_path, "hub").private_path)
    client = HubClient(fleet="f", key=key, transport=MemoryTransport(broker, "observer"))
    client.connect()
    broker.ack_reason_code = 0x87  # an identity whose ACL has no write on node/+/cmd
    started = time.monotonic()
    with pytest.raises(HubError, match=r"refused ea/v1/f/node/pi-1/cmd: 0x87 not authorized"):
        client.command("pi-1", "ping", timeout_s=30)
    assert time.monotonic() - started < 10
    client.close()


def test_an_accepted_command_waits_for_its_result_as_before(tmp_path: Path) -> None:
    broker = MemoryBroker()
    key = load_signing_key(generate_keypair(tmp_path, "hub").private_path)
    client = HubClient(fleet="f", key=key, transport=MemoryTransport(broker, "hub"))
    client.connect()
    with pytest.raises(HubError, match="no result to command"):
        client.command("pi-1", "ping", timeout_s=0.3)
    client.close()

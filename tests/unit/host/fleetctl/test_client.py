"""The operator's fleet client (``tools/edge_agent_host/fleetctl/client.py``) and the broker's
answers: a command the broker refuses fails at once with the reason by name, instead of waiting
for a result that cannot come."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.fleet.comms.memory import MemoryBroker, MemoryTransport
from edge_agent_host.fleetctl import FleetClient, FleetError, FleetMessage
from edge_agent_host.keys import generate_keypair, load_signing_key


def test_a_refused_command_fails_at_once_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = MemoryBroker()
    key = load_signing_key(generate_keypair(tmp_path, "hub").private_path)
    client = FleetClient(fleet="f", key=key, transport=MemoryTransport(broker, "observer"))
    client.connect()
    broker.ack_reason_code = 0x87  # an identity whose ACL has no write on node/+/cmd
    polls: list[float] = []
    poll = client.poll

    def counted(timeout_s: float = 0.0) -> list[FleetMessage]:
        polls.append(timeout_s)
        return poll(timeout_s)

    monkeypatch.setattr(client, "poll", counted)
    with pytest.raises(FleetError, match=r"refused ea/v1/f/node/pi-1/cmd: 0x87 not authorized"):
        client.command("pi-1", "ping", timeout_s=30)
    assert len(polls) == 1  # at once: the first look at the broker's answers, not a timeout
    client.close()


def test_an_accepted_command_waits_for_its_result_as_before(tmp_path: Path) -> None:
    broker = MemoryBroker()
    key = load_signing_key(generate_keypair(tmp_path, "hub").private_path)
    client = FleetClient(fleet="f", key=key, transport=MemoryTransport(broker, "hub"))
    client.connect()
    with pytest.raises(FleetError, match="no result to command"):
        client.command("pi-1", "ping", timeout_s=0.3)
    client.close()


def test_an_announcement_is_signed_and_acknowledged_before_the_cli_returns(
    tmp_path: Path,
) -> None:
    """``tasks announce`` publishes the hub's task key (retained) and the signed specs, and
    waits for the broker's acknowledgements (a CLI that exits at once would drop what is not
    sent yet); a spec verifies against the key it published."""
    from edge_agent.coordination.messages import TaskAnnounce, TaskKey
    from edge_agent.coordination.signing import PeerKeys, spec_bytes
    from edge_agent.fleet.protocol import decode
    from edge_agent_host.fleetctl.tasks import announce, make_specs

    broker = MemoryBroker()
    listener = MemoryTransport(broker, "node")
    listener.subscribe("ea/v1/f/node/+/tasks", 1)
    listener.connect()
    key = load_signing_key(generate_keypair(tmp_path, "hub").private_path)
    client = FleetClient(fleet="f", key=key, transport=MemoryTransport(broker, "hub"))
    client.connect()
    specs = make_specs({"t1": 3, "t2": 4}, capability="grid", announced_by="hub")
    assert announce(client, specs) == 1
    assert client.wait_acknowledged(10.0)
    client.close()
    bodies = [decode(m.payload).body for m in listener.incoming.drain()]
    assert isinstance(bodies[0], TaskKey)
    assert isinstance(bodies[1], TaskAnnounce)
    keys = PeerKeys(4)
    keys.learn("hub", bodies[0].key)
    for i, spec in enumerate(bodies[1].tasks):
        assert keys.verify("hub", spec_bytes("f", spec), bodies[1].signature(i))
    unsigned = FleetClient(fleet="f", transport=MemoryTransport(broker, "other"))
    unsigned.connect()
    with pytest.raises(FleetError, match="needs the hub's signing key"):
        announce(unsigned, specs)
    unsigned.close()


def test_close_waits_for_the_brokers_acknowledgements(tmp_path: Path) -> None:
    """A script that announces and closes at once (``with FleetClient(...) as c: announce(c,
    ...)``) loses nothing: closing waits until the broker acknowledged every message (mosquitto
    drops a connection whose PUBACK it cannot send, and the packets it has not read with it)."""
    from edge_agent_host.fleetctl.tasks import announce, make_specs

    broker = MemoryBroker()
    listener = MemoryTransport(broker, "node")
    listener.subscribe("ea/v1/f/node/+/tasks", 1)
    listener.connect()
    key = load_signing_key(generate_keypair(tmp_path, "hub").private_path)
    client = FleetClient(fleet="f", key=key, transport=MemoryTransport(broker, "hub"))
    client.connect()
    with client:
        announce(client, make_specs({"t1": 3}, capability="grid", announced_by="hub"))
        assert client.unacknowledged == 2  # the key and the announcement, not polled yet
    assert client.unacknowledged == 0
    assert len(listener.incoming.drain()) == 2


def test_a_node_s_retained_messages_do_not_make_a_gap_for_a_client_that_connects() -> None:
    """Issue 55: a node's retained task key (an old seq) came after its retained birth and
    was taken for its first live message: the next live one was a gap, and every node was
    asked for a rebirth whenever a client connected (each ``tasks announce``)."""
    from edge_agent.coordination.messages import TaskKey
    from edge_agent.fleet.protocol import Birth, Body, Envelope, Telemetry, encode

    client = FleetClient(fleet="f", transport=MemoryTransport(MemoryBroker(), "observer"))
    client.connect()

    def payload(body: Body, seq: int, bdseq: int = 1) -> bytes:
        return encode(Envelope(type=body.TYPE, node="pi-1", seq=seq, bdseq=bdseq, ts=1.0,
                               clock_synced=True,
                               body=body))  # fmt: skip

    topics = client.topics
    birth = Birth(software_version="1", profile="x86-dev", budget_bytes=1)
    key = TaskKey(key=bytes(32))
    telemetry = Telemetry(uptime_s=1.0, rss_bytes=1, budget_used_bytes=0, budget_total_bytes=1,
                          ticks=1, tick_p50_ms=1.0, tick_p99_ms=1.0, overruns=0)  # fmt: skip
    client._handle(topics.birth("pi-1"), payload(birth, 0), True)
    client._handle(topics.tasks("pi-1"), payload(key, 5), True)
    for seq in (40, 41, 42):
        client._handle(topics.telemetry("pi-1"), payload(telemetry, seq), False)
    view = client.nodes["pi-1"]
    assert view.gaps == 0
    assert view.rebirths_requested == 0
    # A real gap in the live messages is still one.
    client._handle(topics.telemetry("pi-1"), payload(telemetry, 50), False)
    assert view.gaps == 1
    assert view.rebirths_requested == 1
    client.close()

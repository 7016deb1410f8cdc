"""A flood of forged commands against a real daemon through a real mosquitto: refused before it
queues or touches storage, answered at a bounded rate, logged as a summary; a signed command
sent in the middle of it is answered."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from msgspec.structs import replace

from edge_agent.daemon.uplink import (
    REFUSAL_ANSWERS_HELD,
    REFUSAL_ANSWERS_PER_S,
    REFUSAL_LOG_INTERVAL_S,
)
from edge_agent.fleet.protocol import ResultCode, encode
from edge_agent.fleet.topics import Topics
from edge_agent_host.fleetctl import FleetClient
from tests.integration.fleet.test_fleet_daemon import FLEET, Node, _envelope, hub_for, hub_key
from tests.support.broker import MosquittoBroker

pytestmark = pytest.mark.integration
__all__ = ["hub_key"]  # the fixture, from the fleet tests

FLOOD = 4_500  # 3 s at 1,500 commands a second
RATE = 1_500.0


def flood(broker: MosquittoBroker, node: str, done: threading.Event, sent: list[int]) -> None:
    """Unsigned pings (an unknown key, no signature) on the node's command topic at RATE a
    second (QoS 1, not awaited)."""
    try:
        forger = FleetClient(fleet=FLEET, port=broker.port, key=Ed25519PrivateKey.generate())
        payloads = [
            encode(_envelope(replace(forger.make_command(node, "ping"), signature=b"")))
            for _ in range(FLOOD)
        ]
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="forger")
        client.max_queued_messages_set(0)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        topic = Topics(FLEET).command(node)
        start = time.monotonic()
        for i, payload in enumerate(payloads):
            wait = start + i / RATE - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            client.publish(topic, payload, qos=1)
            sent[0] = i + 1
        time.sleep(1.0)  # let the last ones leave
        client.loop_stop()
        client.disconnect()
    finally:
        done.set()


def test_a_forged_flood_is_refused_cheaply_and_a_signed_command_gets_through(
    mosquitto: MosquittoBroker, tmp_path: Path, hub_key: tuple[Path, Ed25519PrivateKey]
) -> None:
    keys_dir, key = hub_key
    node = Node(tmp_path, mosquitto, "pi-f1", keys_dir=keys_dir, telemetry_s=1.0)
    try:
        node.start()
        before = node.wait_status(lambda s: s["fleet"]["online"], "online")
        stored_before = int(before["fleet"]["link"].get("outbox.stored", 0))
        with hub_for(mosquitto, key, "pi-f1") as hub:
            done, sent = threading.Event(), [0]
            flooder = threading.Thread(target=flood, args=(mosquitto, "pi-f1", done, sent))
            started = time.monotonic()
            flooder.start()
            while sent[0] < FLOOD // 3 and not done.is_set():  # well into the flood
                time.sleep(0.01)
            assert sent[0] >= FLOOD // 3, "the flooder stopped early"
            answer = hub.command("pi-f1", "ping", timeout_s=30)
            assert answer.code is ResultCode.OK, answer
            assert done.wait(600)  # a hang guard: the flood takes 3 s at its pace
            flooder.join(10)
        status = node.wait_status(
            lambda s: s["fleet"]["refusals"]["screened"] >= 0.9 * FLOOD, "the flood refused"
        )
        # Everything the node answered it answered between the flood's start and this status
        # (written before it was read): the window the rate bounds, however slow the machine.
        window = time.monotonic() - started
        refusals = status["fleet"]["refusals"]
        commands = status["commands"]
        # Refused before the queue: none of the forged commands reached the processor's queue,
        # so none was dropped for lack of room, and each is counted by its code.
        assert commands["dropped"] == 0
        assert commands["refused"] == commands["refused.unknown_key"] == refusals["screened"]
        assert commands["ok"] >= 1
        # Answered at a bounded rate (a bucket of REFUSAL_ANSWERS_PER_S tokens refilled at that
        # rate), never through the outbox: the rest are counted, or still held (at most
        # REFUSAL_ANSWERS_HELD). The bound follows from the window, not from the machine's speed:
        # a node without the limit would answer the whole flood, thousands, where the window
        # allows a few dozen (or a few hundred on a crawling machine).
        assert refusals["answered"] <= REFUSAL_ANSWERS_PER_S * (window + 1.0), (refusals, window)
        assert refusals["answered"] + refusals["unanswered"] <= refusals["screened"]
        held = refusals["screened"] - refusals["answered"] - refusals["unanswered"]
        assert 0 <= held <= REFUSAL_ANSWERS_HELD + 1, refusals  # +1: one being counted as read
        stored = int(status["fleet"]["link"].get("outbox.stored", 0)) - stored_before
        # Telemetry (one a second), events, the ping's result: not the flood.
        assert stored < 100 + window, (stored, window)
        # A summary line at most a minute, not one per forged command.
        log = node.config.with_suffix(".log").read_text(errors="replace")
        summaries = refusals["logged_summaries"]
        assert 1 <= summaries <= 1 + window / REFUSAL_LOG_INTERVAL_S, (summaries, window)
        assert log.count("refused ") <= summaries + 2, log[-2000:]
        assert "refused command" not in log
    finally:
        node.close()

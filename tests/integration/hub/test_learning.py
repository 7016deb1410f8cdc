"""Fleet learning through the real hub service and a real mosquitto (docs/fleet-learning.md):
learning deltas published as nodes publish them (the protocol's encoder, each node on its own
topic) -> checked and stored by the service -> ``learn status`` shows them -> the docs' block as
written: ``learn build`` makes a signed bundle, ``learn publish`` starts its rollout."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_agent.bundle.loader import load_bundle
from edge_agent.bundle.signing import TrustedKeys
from edge_agent.fleet.protocol import Envelope, NodeState, encode
from edge_agent_host.hub.engines import SqliteEngine
from edge_agent_host.hub.learning_store import LearningStore
from edge_agent_host.hub.store import HubDatabase
from edge_agent_host.keys import generate_keypair
from tests.integration.fleet.test_fleet_daemon import TOPICS
from tests.integration.hub.test_hubd import Hub, sqlite_table
from tests.integration.hub.test_rollout_health_gate import shell
from tests.support.broker import MosquittoBroker
from tests.support.doc_blocks import doc_block
from tests.unit.host.hub.test_learning_store import LINE, LR, delta, deploy, increments
from tests.unit.host.hub.test_store import birth, health_body

NODES = ("pi-a", "pi-b", "pi-c")


def test_deltas_heard_stored_shown_built_and_published(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    keys = generate_keypair(tmp_path / "keys", "hub")
    hub = Hub(tmp_path, "hub-a", mosquitto,
              f'{sqlite_table()}\n[rollouts]\nkey_file = "{keys.private_path}"\n')  # fmt: skip
    hub.state.mkdir(parents=True)
    db = HubDatabase(SqliteEngine(hub.state / "hub.sqlite3"))
    db.open()
    sha = deploy(db)  # the line's bundle, as rollout start stores it
    db.close()
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="nodes",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    try:
        hub.start()
        client.connect(mosquitto.host, mosquitto.port)
        client.loop_start()

        def send(node: str, topic: str, body: Any, seq: int, *, retain: bool = False) -> None:
            env = Envelope(type=body.TYPE, node=node, seq=seq, bdseq=1, ts=time.time(),
                           clock_synced=True, body=body)  # fmt: skip
            client.publish(topic, encode(env), qos=1, retain=retain).wait_for_publish(10)

        bad = increments(9)
        bad["B0"].flat[0] = -LR
        for i, node in enumerate(NODES):
            send(node, TOPICS.node_state(node), NodeState(online=True), 0, retain=True)
            send(node, TOPICS.birth(node), birth(sha=sha), 1, retain=True)
            send(node, TOPICS.health(node), health_body(0.0), 2)
            send(node, TOPICS.learning(node), delta(sha, 1, increments(i)), 3)
        send("pi-a", TOPICS.learning("pi-a"), delta(sha, 1, increments(0)), 4)  # a re-send
        send("pi-a", TOPICS.learning("pi-a"), delta(sha, 2, bad), 5)
        hub.wait_status(
            lambda s: s.get("learning", {}).get("accepted") == 3
            and s["learning"].get("negative") == 1,
            "the deltas stored",
        )
        ran = shell(doc_block("docs/fleet-learning.md", 0), hub.dir)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        out = ran.stdout.splitlines()
        # learn status: the re-send was stored once, the negative delta refused and counted
        assert out[0] == (
            f"{LINE}: 3 deltas accepted (120 agent-ticks, 3 nodes), refused: negative 1; 0 capped"
        ), out
        built = next(line for line in out if line.startswith("round 1: built "))
        assert f"{LINE}@1.0.0+learn1" in built
        assert "3 deltas of 3 nodes, 120 agent-ticks merged" in built
        bundle = load_bundle(
            hub.dir / "tmaze-learn1.tar", trusted_keys=TrustedKeys.from_dir(tmp_path / "keys")
        )
        assert bundle.manifest.version == "1.0.0+learn1"
        rollout_id = next(line for line in out if line.startswith("rollout ")).split()[1]
        assert "  criterion excess_surprise:max_increase=0.2:min_samples=50:alpha=0.05" in out
        db = hub.database()
        try:
            published = LearningStore(db).latest_round(LINE)
        finally:
            db.close()
        assert published is not None
        assert (published["rollout"], published["bundle_sha256"]) == (rollout_id, bundle.sha256)
    finally:
        client.loop_stop()
        client.disconnect()
        hub.kill()
